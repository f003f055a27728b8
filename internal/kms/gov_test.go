package kms

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

type member struct {
	*gov.Signer
	m gov.Member
}

func newMember(t *testing.T, name string) member {
	t.Helper()
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := gov.NewFileSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gov.NewMember(name, string(pub), "")
	if err != nil {
		t.Fatal(err)
	}
	return member{s, m}
}

const initialPolicy = `{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`

// newGovFixture opens a new ledger governed by n members under c.
func newGovFixture(t *testing.T, n int, c *gov.Constitution) (*fixture, []member) {
	t.Helper()
	var ms []member
	f := newFixtureWith(t, func(f *fixture) {
		f.release = []byte(initialPolicy)
		f.gov = &GovInit{Constitution: c}
		for i := range n {
			m := newMember(t, string(rune('a'+i)))
			ms = append(ms, m)
			f.gov.Members = append(f.gov.Members, m.m)
		}
	})
	return f, ms
}

func act(name string, args any) gov.Action {
	b, _ := json.Marshal(args)
	return gov.Action{Name: name, Args: b}
}

func addClaim(v string) gov.Action {
	return act(gov.ActSetKeyReleasePolicy, map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-launchmeasurement": v}})
}

func (f *fixture) propose(m member, actions ...gov.Action) (*state.Proposal, error) {
	f.t.Helper()
	raw, err := m.SignProposal(actions, f.clock.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	p, e, err := f.svc.Propose(context.Background(), raw, false)
	if err == nil && (e.Type != ledger.TypeGovProposal || e.Seq != p.Seq) {
		f.t.Fatalf("Propose returned entry %d %s for proposal at %d", e.Seq, e.Type, p.Seq)
	}
	return p, err
}

func (f *fixture) mustPropose(m member, actions ...gov.Action) *state.Proposal {
	f.t.Helper()
	p, err := f.propose(m, actions...)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) vote(m member, id string, approve bool) (*state.Proposal, error) {
	f.t.Helper()
	raw, err := m.SignBallot(id, approve, f.clock.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	p, _, err := f.svc.Ballot(context.Background(), id, raw)
	return p, err
}

func (f *fixture) withdraw(m member, id string) (*state.Proposal, error) {
	f.t.Helper()
	raw, err := m.SignWithdrawal(id, f.clock.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	p, _, err := f.svc.Withdraw(context.Background(), id, raw)
	return p, err
}

func (f *fixture) releasePolicy() (string, uint64) {
	var p string
	var seq uint64
	f.svc.Read(func(st *state.State) { p, seq = string(st.ReleasePolicy), st.ReleasePolicySeq })
	return p, seq
}

// wantGovError checks that err is a *GovError with code and that nothing
// was written.
func (f *fixture) wantGovError(what string, err error, code string, seq uint64) {
	f.t.Helper()
	var ge *GovError
	if !errors.As(err, &ge) || ge.Code != code {
		f.t.Errorf("%s: error %v, want %s", what, err, code)
		return
	}
	if f.svc.Seq() != seq {
		f.t.Errorf("%s: refused, but the ledger grew from %d to %d", what, seq, f.svc.Seq())
	}
}

// TestGovGenesis: a new governed ledger records its initial policies, then
// gov.init.
func TestGovGenesis(t *testing.T) {
	f, _ := newGovFixture(t, 1, gov.DevConstitution())
	var types []ledger.Type
	for _, e := range f.entries() {
		types = append(types, e.Type)
	}
	want := []ledger.Type{ledger.TypeGenesis, ledger.TypeLogKey, ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy,
		ledger.TypeKeyReleasePolicy, ledger.TypeGovInit}
	if !slices.Equal(types, want) {
		t.Fatalf("ledger %v, want %v", types, want)
	}
	if !f.svc.Governed() {
		t.Fatal("not governed")
	}
	if g := newFixture(t); g.svc.Governed() {
		t.Fatal("a ledger without governance is governed")
	}
}

// TestGovThroughKMS: proposals, ballots and withdrawals with real
// signatures; the policy changes at the deciding ballot; every refused
// message leaves the ledger as it was, with the code of docs/governance.md.
func TestGovThroughKMS(t *testing.T) {
	f, ms := newGovFixture(t, 3, gov.DefaultConstitution())
	f.at(0)
	before, beforeSeq := f.releasePolicy()

	p := f.mustPropose(ms[0], addClaim("aa"))
	if p.Status != state.ProposalOpen || p.Needed != 2 || len(p.Approvals) != 1 {
		t.Fatalf("proposal %+v", p)
	}
	if now, _ := f.releasePolicy(); now != before {
		t.Fatal("an open proposal changed the policy")
	}
	f.clock.Set(t0.Add(time.Minute))
	p, err := f.vote(ms[1], p.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	after, afterSeq := f.releasePolicy()
	if p.Status != state.ProposalAccepted || afterSeq != p.DecidedSeq || afterSeq == beforeSeq || after == before {
		t.Fatalf("after the second approval: %+v; policy at %d: %s", p, afterSeq, after)
	}
	accepted := p.ID

	// Withdrawal of an open proposal by its proposer.
	w := f.mustPropose(ms[2], addClaim("bb"))
	seq := f.svc.Seq()
	_, err = f.withdraw(ms[0], w.ID)
	f.wantGovError("withdrawal by another member", err, CodeForbidden, seq)
	if p, err := f.withdraw(ms[2], w.ID); err != nil || p.Status != state.ProposalWithdrawn {
		t.Fatalf("withdrawal: %+v, %v", p, err)
	}

	// Refusals.
	seq = f.svc.Seq()
	outsider := newMember(t, "x")
	_, err = f.propose(outsider, addClaim("cc"))
	f.wantGovError("proposal of a non-member", err, CodeNotAMember, seq)

	raw, _ := ms[0].SignProposal([]gov.Action{addClaim("dd")}, f.clock.Now())
	open, _, err := f.svc.Propose(context.Background(), raw, true)
	if err != nil || !open.Compat {
		t.Fatalf("compat proposal: %+v, %v", open, err)
	}
	seq = f.svc.Seq()
	_, _, err = f.svc.Propose(context.Background(), raw, false)
	f.wantGovError("replayed proposal", err, CodeDuplicate, seq)
	_, err = f.vote(ms[0], open.ID, true)
	f.wantGovError("ballot of the proposer", err, CodeDuplicate, seq)
	_, err = f.vote(ms[2], accepted, false)
	f.wantGovError("ballot for a decided proposal", err, CodeProposalClosed, seq)
	_, err = f.vote(ms[2], "00000000000000000000000000000000000000000000000000000000000000aa", false)
	f.wantGovError("ballot for an unknown proposal", err, CodeProposalNotFound, seq)
	ballot, _ := ms[2].SignBallot(open.ID, true, f.clock.Now())
	_, _, err = f.svc.Ballot(context.Background(), accepted, ballot)
	f.wantGovError("ballot for another proposal than its URL's", err, gov.CodeInvalidMessage, seq)
	_, _, err = f.svc.Ballot(context.Background(), open.ID, raw)
	f.wantGovError("proposal as a ballot", err, gov.CodeInvalidMessage, seq)
	_, _, err = f.svc.Propose(context.Background(), []byte("not cose"), false)
	f.wantGovError("garbage", err, gov.CodeInvalidMessage, seq)
	bad := slices.Clone(ballot)
	bad[len(bad)-1] ^= 1
	_, _, err = f.svc.Ballot(context.Background(), open.ID, bad)
	f.wantGovError("flipped signature", err, gov.CodeBadSignature, seq)
	_, err = f.propose(ms[0], act(gov.ActDestroyKey, map[string]any{"kid": "abc_9"}))
	f.wantGovError("destroy of an unknown key", err, gov.CodeInvalidAction, seq)
	_, err = f.propose(ms[0], act(gov.ActSetConstitution, map[string]any{
		"rules": map[string]any{"default": map[string]any{"approvals": 4}}, "proposal_ttl_seconds": 3600, "created_at_window_seconds": 60, "withdraw": "proposer",
	}))
	f.wantGovError("unsatisfiable constitution", err, gov.CodeUnsafeConstitution, seq)
	f.clock.Set(t0.Add(time.Hour))
	_, _, err = f.svc.Ballot(context.Background(), open.ID, ballot)
	f.wantGovError("stale ballot", err, gov.CodeStale, seq)
	f.clock.Set(t0.Add(8 * day))
	_, err = f.vote(ms[2], open.ID, true)
	f.wantGovError("ballot for an expired proposal", err, CodeProposalClosed, seq)
}

// TestGovEffectsRun: an accepted rotate_key_now or destroy_key is carried
// out before Propose returns, in entries that name the proposal.
func TestGovEffectsRun(t *testing.T) {
	f, ms := newGovFixture(t, 1, gov.DevConstitution())
	f.at(0)
	k1 := f.primary()
	rot := f.mustPropose(ms[0], act(gov.ActRotateKeyNow, map[string]any{"reason": "drill"}))
	ks := f.keys()
	if len(ks) != 2 || ks[1].Reason != state.GovernanceReason+rot.ID {
		t.Fatalf("after rotate_key_now: %+v", ks)
	}
	del := f.mustPropose(ms[0], act(gov.ActDestroyKey, map[string]any{"kid": k1}))
	if f.phase(k1) != state.Destroyed {
		t.Fatalf("after destroy_key: %s", f.phase(k1))
	}
	if _, err := f.svc.PrivateKey(k1); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("PrivateKey of a destroyed key: %v", err)
	}
	if slices.Contains(f.svc.keyring.Kids(), k1) {
		t.Fatal("the data key of a destroyed key is still in the keyring")
	}
	es := f.entries()
	last := es[len(es)-1]
	var ev state.KeyEvent
	json.Unmarshal(last.Body, &ev)
	if last.Type != ledger.TypeKeyDestroyed || ev.Kid != k1 || ev.Reason != state.GovernanceReason+del.ID {
		t.Fatalf("last entry %s %s", last.Type, last.Body)
	}
	var pending int
	f.svc.Read(func(st *state.State) { pending = len(st.PendingEffects) })
	if pending != 0 {
		t.Fatalf("%d effects still pending", pending)
	}
	// Destroy and rotate in one proposal: the destruction runs first, so
	// the new key is published at once.
	k2 := f.primary()
	if k2 != "" {
		t.Fatalf("primary %s while the rotated key awaits its publish delay", k2)
	}
	f.at(3 * day)
	k2 = f.primary()
	both := f.mustPropose(ms[0], act(gov.ActRotateKeyNow, map[string]any{}), act(gov.ActDestroyKey, map[string]any{"kid": k2}))
	ks = f.keys()
	if p := f.primary(); f.phase(k2) != state.Destroyed || p != ks[len(ks)-1].Kid || ks[len(ks)-1].Reason != state.GovernanceReason+both.ID {
		t.Fatalf("after destroy and rotate: primary %q, keys %+v", p, ks)
	}
}

// TestGovEffectWaitsForIDs: a rotate_key_now that finds the ids reserved
// for scheduled rotation taken stays pending, and the scheduler carries it
// out once ids are free.
func TestGovEffectWaitsForIDs(t *testing.T) {
	f, ms := newGovFixture(t, 1, gov.DevConstitution())
	f.at(0)
	for {
		if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); errors.Is(err, ErrKeyLimit) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.CheckForcedRotation(); !errors.Is(err, ErrKeyLimit) {
		t.Fatalf("CheckForcedRotation at the limit: %v", err)
	}
	n := len(f.keys())
	p := f.mustPropose(ms[0], act(gov.ActRotateKeyNow, map[string]any{}))
	if p.Status != state.ProposalAccepted || len(f.keys()) != n {
		t.Fatalf("rotation at the id limit: %s, %d keys (had %d)", p.Status, len(f.keys()), n)
	}
	f.at(20 * day)
	ks := f.keys()
	var done bool
	for _, k := range ks[n:] {
		done = done || k.Reason == state.GovernanceReason+p.ID
	}
	if !done {
		t.Fatal("the pending rotation was not carried out once ids were free")
	}
}

// TestGovBootstrapIgnoresConfig: on a governed ledger a different policy
// in the configuration is ignored, not recorded.
func TestGovBootstrapIgnoresConfig(t *testing.T) {
	f, _ := newGovFixture(t, 1, gov.DevConstitution())
	f.at(0)
	n := len(f.entries())
	f.policy.Suite = "mlkem768-x25519"
	f.release = []byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":true}}`)
	f.gov = &GovInit{Members: []gov.Member{newMember(t, "other").m}, Constitution: gov.DevConstitution()}
	f.reopen()
	if got := len(f.entries()); got != n {
		t.Fatalf("reopening a governed ledger with other policies appended %d entries", got-n)
	}
	f.svc.Read(func(st *state.State) {
		if st.Rotation.Suite != "x25519" || len(st.Members) != 1 {
			t.Fatalf("configuration applied: suite %s, %d members", st.Rotation.Suite, len(st.Members))
		}
	})
}

// TestGovInitOnExistingLedger: a ledger written before governance becomes
// governed when opened with Governance.
func TestGovInitOnExistingLedger(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	m := newMember(t, "a")
	f.gov = &GovInit{Members: []gov.Member{m.m}, Constitution: gov.DevConstitution()}
	f.reopen()
	if !f.svc.Governed() {
		t.Fatal("not governed")
	}
	f.gov = &GovInit{Members: []gov.Member{m.m}, Constitution: &gov.Constitution{}}
	f.reopen() // ignored: governed already
	// An invalid governance configuration on an ungoverned ledger fails
	// to open and writes nothing.
	g := newFixture(t)
	n := len(g.entries())
	g.gov = &GovInit{Members: []gov.Member{m.m}, Constitution: &gov.Constitution{}}
	if err := g.svc.Close(); err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(g.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Config{DataDir: g.dir, Sealer: sealer, ServiceName: "test", RotationPolicy: g.policy,
		Settings: state.Settings{Service: state.ServiceSettings{Name: "test"}}, Governance: g.gov, Now: g.clock.Now}); err == nil {
		t.Fatal("opened with an unsafe constitution")
	}
	g.gov = nil
	g.open()
	if len(g.entries()) != n || g.svc.Governed() {
		t.Fatal("a refused gov.init was written")
	}
}

// TestGovRestart: members, proposals, the constitution and the decisions
// survive a restart, from the ledger and from a snapshot.
func TestGovRestart(t *testing.T) {
	f, ms := newGovFixture(t, 3, gov.DefaultConstitution())
	f.at(0)
	p := f.mustPropose(ms[0], addClaim("aa"))
	if _, err := f.vote(ms[1], p.ID, true); err != nil {
		t.Fatal(err)
	}
	open := f.mustPropose(ms[2], act(gov.ActSetNodePolicy, map[string]any{"claims": map[string]any{"x": []string{"1"}}}))
	snap := func() string {
		var b []byte
		f.svc.Read(func(st *state.State) { b, _ = st.Marshal() })
		return string(b)
	}
	want := snap()
	f.reopen()
	if got := snap(); got != want {
		t.Fatalf("after replay:\n%s\nwant\n%s", got, want)
	}
	if err := f.svc.Snapshot(); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if got := snap(); got != want {
		t.Fatalf("after a snapshot:\n%s\nwant\n%s", got, want)
	}
	// The open proposal can still be decided.
	f.clock.Set(t0.Add(time.Minute))
	if p, err := f.vote(ms[0], open.ID, true); err != nil || p.Status != state.ProposalAccepted {
		t.Fatalf("ballot after restart: %+v, %v", p, err)
	}
}
