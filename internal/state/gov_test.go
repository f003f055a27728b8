package state

import (
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/veraison/go-cose"
)

// A signer is a member's key for the tests, and the member it makes.
type signer struct {
	*gov.Signer
	m gov.Member
}

func newSigner(t *testing.T, name string) signer {
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
	return signer{s, m}
}

// govFixture is a governed ledger: genesis, a release policy, gov.init.
type govFixture struct {
	*builder
	signers []signer
	now     time.Time // the time of the next entry
}

const testPolicy = `{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`

func newGovFixture(t *testing.T, n int, c *gov.Constitution) *govFixture {
	t.Helper()
	f := &govFixture{builder: newBuilder(t), now: t0.Add(time.Minute)}
	f.must(ledger.TypeKeyReleasePolicy, t0, json.RawMessage(testPolicy), nil)
	var members []gov.Member
	for i := range n {
		s := newSigner(t, string(rune('a'+i)))
		f.signers = append(f.signers, s)
		members = append(members, s.m)
	}
	f.must(ledger.TypeGovInit, t0, GovInit{Members: members, Constitution: c}, nil)
	return f
}

func action(name string, args any) gov.Action {
	b, err := json.Marshal(args)
	if err != nil {
		panic(err)
	}
	return gov.Action{Name: name, Args: b}
}

func releaseChange(value string) gov.Action {
	return action(gov.ActSetKeyReleasePolicy, map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-launchmeasurement": value}})
}

// signProposal signs actions as s, created at the fixture's time.
func (f *govFixture) signProposal(s signer, actions ...gov.Action) []byte {
	f.t.Helper()
	raw, err := s.SignProposal(actions, f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

func proposalBody(t *testing.T, raw []byte) GovProposal {
	t.Helper()
	m, err := gov.ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	actions, err := gov.DecodeProposal(m)
	if err != nil {
		t.Fatal(err)
	}
	return GovProposal{ID: gov.ProposalID(raw), Proposer: m.Signer, CreatedAt: m.CreatedAt, Actions: actions, COSE: raw}
}

// apply applies an entry of typ with body at the fixture's time.
func (f *govFixture) apply(typ ledger.Type, body any) error {
	return f.st.Apply(f.entry(typ, f.now, body, nil))
}

func (f *govFixture) submit(raw []byte) (string, error) {
	b := proposalBody(f.t, raw)
	return b.ID, f.apply(ledger.TypeGovProposal, b)
}

// propose signs and submits a proposal, which must be recorded.
func (f *govFixture) propose(s signer, actions ...gov.Action) string {
	f.t.Helper()
	id, err := f.submit(f.signProposal(s, actions...))
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *govFixture) ballotRaw(s signer, id string, approve bool) []byte {
	f.t.Helper()
	raw, err := s.SignBallot(id, approve, f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	return raw
}

func (f *govFixture) submitBallot(raw []byte) error {
	m, err := gov.ParseMessage(raw)
	if err != nil {
		f.t.Fatal(err)
	}
	approve, err := gov.DecodeBallot(m)
	if err != nil {
		f.t.Fatal(err)
	}
	vote := gov.VoteReject
	if approve {
		vote = gov.VoteApprove
	}
	return f.apply(ledger.TypeGovBallot, GovBallot{ProposalID: m.ProposalID, Member: m.Signer, Vote: vote, CreatedAt: m.CreatedAt, COSE: raw})
}

func (f *govFixture) vote(s signer, id string, approve bool) error {
	return f.submitBallot(f.ballotRaw(s, id, approve))
}

func (f *govFixture) withdraw(s signer, id string) error {
	raw, err := s.SignWithdrawal(id, f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.apply(ledger.TypeGovWithdrawal, GovWithdrawal{ProposalID: id, Member: s.m.ID, CreatedAt: f.now, COSE: raw})
}

func (f *govFixture) state(id string) ProposalState {
	p := f.st.Proposal(id)
	if p == nil {
		return ""
	}
	return p.State(f.now)
}

func mustPolicy(t *testing.T, raw []byte) string {
	t.Helper()
	p, err := policy.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(policy.Marshal(p))
}

func majority() *gov.Constitution { return gov.DefaultConstitution() }

// TestGovCheats: every way a message may try to get around the rules is
// refused, and a refused entry changes nothing but the sequence number.
func TestGovCheats(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		c    *gov.Constitution
		// do prepares what it needs and returns the error of the entry
		// under test.
		do   func(f *govFixture) error
		want error
	}{
		{"proposal by a non-member", 3, majority(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(newSigner(t, "x"), releaseChange("aa")))
			return err
		}, ErrNotMember},
		{"ballot by a non-member", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			return f.vote(newSigner(t, "x"), id, true)
		}, ErrNotMember},
		{"ballot by a removed member", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			rm := f.propose(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": f.signers[2].m.ID}))
			if err := f.vote(f.signers[1], rm, true); err != nil {
				t.Fatal(err)
			}
			if f.state(rm) != ProposalAccepted {
				t.Fatalf("remove_member: %s", f.state(rm))
			}
			return f.vote(f.signers[2], id, true)
		}, ErrNotMember},
		{"proposal by a removed member", 3, majority(), func(f *govFixture) error {
			rm := f.propose(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": f.signers[2].m.ID}))
			if err := f.vote(f.signers[1], rm, true); err != nil {
				t.Fatal(err)
			}
			_, err := f.submit(f.signProposal(f.signers[2], releaseChange("aa")))
			return err
		}, ErrNotMember},
		{"second ballot of a member", 5, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			if err := f.vote(f.signers[1], id, false); err != nil {
				t.Fatal(err)
			}
			return f.vote(f.signers[1], id, true)
		}, ErrDuplicate},
		{"replayed ballot", 5, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			raw := f.ballotRaw(f.signers[1], id, true)
			if err := f.submitBallot(raw); err != nil {
				t.Fatal(err)
			}
			return f.submitBallot(raw)
		}, ErrDuplicate},
		{"ballot of the proposer", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			return f.vote(f.signers[0], id, true)
		}, ErrDuplicate},
		{"replayed proposal", 3, majority(), func(f *govFixture) error {
			raw := f.signProposal(f.signers[0], releaseChange("aa"))
			if _, err := f.submit(raw); err != nil {
				t.Fatal(err)
			}
			_, err := f.submit(raw)
			return err
		}, ErrDuplicate},
		{"replayed accepted proposal", 1, gov.DevConstitution(), func(f *govFixture) error {
			raw := f.signProposal(f.signers[0], releaseChange("aa"))
			if _, err := f.submit(raw); err != nil {
				t.Fatal(err)
			}
			_, err := f.submit(raw)
			return err
		}, ErrDuplicate},
		{"ballot for an unknown proposal", 3, majority(), func(f *govFixture) error {
			return f.vote(f.signers[1], "00000000000000000000000000000000000000000000000000000000000000aa", true)
		}, ErrProposalNotFound},
		{"ballot for an expired proposal", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			f.now = f.now.Add(7*24*time.Hour + time.Second)
			return f.vote(f.signers[1], id, true)
		}, ErrProposalClosed},
		{"ballot for an accepted proposal", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			if err := f.vote(f.signers[1], id, true); err != nil {
				t.Fatal(err)
			}
			return f.vote(f.signers[2], id, false)
		}, ErrProposalClosed},
		{"ballot for a rejected proposal", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			if err := f.vote(f.signers[1], id, false); err != nil {
				t.Fatal(err)
			}
			if err := f.vote(f.signers[2], id, false); err != nil {
				t.Fatal(err)
			}
			return f.vote(f.signers[2], id, true)
		}, ErrProposalClosed},
		{"ballot for a withdrawn proposal", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			if err := f.withdraw(f.signers[0], id); err != nil {
				t.Fatal(err)
			}
			return f.vote(f.signers[1], id, true)
		}, ErrProposalClosed},
		{"withdrawal by another member", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			return f.withdraw(f.signers[1], id)
		}, ErrForbidden},
		{"withdrawal when the constitution allows none", 3, func() *gov.Constitution {
			c := majority()
			c.Withdraw = gov.WithdrawNone
			return c
		}(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			return f.withdraw(f.signers[0], id)
		}, ErrForbidden},
		{"created_at too old", 3, majority(), func(f *govFixture) error {
			raw := f.signProposal(f.signers[0], releaseChange("aa"))
			f.now = f.now.Add(601 * time.Second)
			_, err := f.submit(raw)
			return err
		}, gov.ErrStale},
		{"created_at in the future", 3, majority(), func(f *govFixture) error {
			raw := f.signProposal(f.signers[0], releaseChange("aa"))
			f.now = f.now.Add(-601 * time.Second)
			_, err := f.submit(raw)
			return err
		}, gov.ErrStale},
		{"stale ballot", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			raw := f.ballotRaw(f.signers[1], id, true)
			f.now = f.now.Add(time.Hour)
			return f.submitBallot(raw)
		}, gov.ErrStale},
		{"signature over other bytes", 3, majority(), func(f *govFixture) error {
			a := f.signProposal(f.signers[0], releaseChange("aa"))
			b := f.signProposal(f.signers[0], releaseChange("bb"))
			_, err := f.submit(spliceSignature(t, a, b))
			return err
		}, gov.ErrBadSignature},
		{"another member's signature", 3, majority(), func(f *govFixture) error {
			// A message naming member 0 as signer, signed by member 1.
			a := f.signProposal(f.signers[0], releaseChange("aa"))
			b := f.signProposal(f.signers[1], releaseChange("aa"))
			_, err := f.submit(spliceSignature(t, a, b))
			return err
		}, gov.ErrBadSignature},
		{"body actions other than the message's", 3, majority(), func(f *govFixture) error {
			b := proposalBody(t, f.signProposal(f.signers[0], releaseChange("aa")))
			b.Actions = []gov.Action{releaseChange("bb")}
			return f.apply(ledger.TypeGovProposal, b)
		}, gov.ErrInvalidMessage},
		{"body id other than the message's", 3, majority(), func(f *govFixture) error {
			b := proposalBody(t, f.signProposal(f.signers[0], releaseChange("aa")))
			b.ID = "00000000000000000000000000000000000000000000000000000000000000aa"
			return f.apply(ledger.TypeGovProposal, b)
		}, gov.ErrInvalidMessage},
		{"a ballot as a proposal", 3, majority(), func(f *govFixture) error {
			id := f.propose(f.signers[0], releaseChange("aa"))
			return f.apply(ledger.TypeGovProposal, GovProposal{ID: id, Proposer: f.signers[1].m.ID, CreatedAt: f.now, COSE: f.ballotRaw(f.signers[1], id, true)})
		}, gov.ErrInvalidMessage},
		{"destroy of an unknown key", 3, majority(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActDestroyKey, map[string]any{"kid": "abc_1"})))
			return err
		}, gov.ErrInvalidAction},
		{"removal of a non-member", 3, majority(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": newSigner(t, "x").m.ID})))
			return err
		}, gov.ErrInvalidAction},
		{"claims for an untrusted issuer", 3, majority(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActSetJWTValidationPolicy, map[string]any{"issuer": "https://nobody.example", "claims": map[string]any{"a": "b"}})))
			return err
		}, gov.ErrInvalidAction},
		{"removal of an untrusted issuer", 1, gov.DevConstitution(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActSetJWTIssuer, map[string]any{"issuer": "https://nobody.example", "remove": true})))
			return err
		}, gov.ErrInvalidAction},
		{"adding an active member again", 1, gov.DevConstitution(), func(f *govFixture) error {
			m := f.signers[0].m
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActAddMember, map[string]any{"name": "again", "signing_key": m.SigningKey})))
			return err
		}, gov.ErrInvalidAction},
		{"one invalid action spoils an accepted proposal", 1, gov.DevConstitution(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], releaseChange("aa"), action(gov.ActDestroyKey, map[string]any{"kid": "abc_1"})))
			return err
		}, gov.ErrInvalidAction},
		{"constitution nobody can satisfy", 3, majority(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActSetConstitution, map[string]any{
				"rules": map[string]any{"default": map[string]any{"approvals": 4}}, "proposal_ttl_seconds": 3600, "created_at_window_seconds": 60, "withdraw": "proposer",
			})))
			return err
		}, gov.ErrUnsafeConstitution},
		{"removal that leaves a rule unsatisfiable", 3, func() *gov.Constitution {
			c := majority()
			c.Rules[gov.DefaultRule] = gov.Rule{Approvals: gov.Approvals{Kind: gov.ApproveN, N: 3}}
			return c
		}(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": f.signers[2].m.ID})))
			return err
		}, gov.ErrUnsafeConstitution},
		{"removal of the last member", 1, gov.DevConstitution(), func(f *govFixture) error {
			_, err := f.submit(f.signProposal(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": f.signers[0].m.ID})))
			return err
		}, gov.ErrUnsafeConstitution},
		{"policy entry in a governed ledger", 1, gov.DevConstitution(), func(f *govFixture) error {
			return f.apply(ledger.TypeKeyReleasePolicy, json.RawMessage(`{"claims":{"x":"y"}}`))
		}, ErrForbidden},
		{"rotation policy entry in a governed ledger", 1, gov.DevConstitution(), func(f *govFixture) error {
			return f.apply(ledger.TypeKeyRotationPolicy, DefaultRotationPolicy())
		}, ErrForbidden},
		{"second gov.init", 1, gov.DevConstitution(), func(f *govFixture) error {
			return f.apply(ledger.TypeGovInit, GovInit{Members: []gov.Member{newSigner(t, "x").m}, Constitution: gov.DevConstitution()})
		}, ErrDuplicate},
		{"governance key.created without a pending effect", 1, gov.DevConstitution(), func(f *govFixture) error {
			kc := f.keyCreated(f.now, 11)
			kc.Reason = GovernanceReason + "00000000000000000000000000000000000000000000000000000000000000aa"
			return f.st.Apply(f.entry(ledger.TypeKeyCreated, f.now, kc, []byte("s")))
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGovFixture(t, tc.n, tc.c)
			f.t = t
			err := tc.do(f)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			if !errors.Is(err, ErrInvalid) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestGovRefusedEntryChangesNothing: a refused governance entry leaves the
// state as it was (but for Seq), even one that got as far as applying
// actions.
func TestGovRefusedEntryChangesNothing(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	before, _ := f.st.Marshal()
	raw := f.signProposal(f.signers[0], releaseChange("aa"), action(gov.ActSetNodePolicy, map[string]any{"claims": map[string]any{"n": []string{"1"}}}),
		action(gov.ActDestroyKey, map[string]any{"kid": "abc_1"}))
	if _, err := f.submit(raw); err == nil {
		t.Fatal("accepted")
	}
	f.st.Seq--
	after, _ := f.st.Marshal()
	if string(before) != string(after) {
		t.Fatalf("refused entry changed the state\nbefore %s\nafter  %s", before, after)
	}
}

// TestGovOneOfOne: under the dev constitution a proposal is accepted by its
// own entry, which applies its actions.
func TestGovOneOfOne(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	id := f.propose(f.signers[0], releaseChange("aa"), action(gov.ActSetNodePolicy, map[string]any{"claims": map[string]any{"nodes": []string{"3"}}}))
	p := f.st.Proposal(id)
	if p.State(f.now) != ProposalAccepted || p.DecidedSeq != f.st.Seq || p.Needed != 1 || len(p.Approvals) != 1 {
		t.Fatalf("proposal %+v", p)
	}
	if f.st.ReleasePolicySeq != f.st.Seq {
		t.Fatalf("release policy seq %d, want %d", f.st.ReleasePolicySeq, f.st.Seq)
	}
	want := mustPolicy(t, []byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":false,"x-ms-sevsnpvm-launchmeasurement":"aa"}}`))
	if string(f.st.ReleasePolicy) != want {
		t.Fatalf("policy %s, want %s", f.st.ReleasePolicy, want)
	}
	if string(f.st.NodePolicy) != `{"claims":{"nodes":["3"]}}` || f.st.NodePolicySeq != f.st.Seq {
		t.Fatalf("node policy %s at %d", f.st.NodePolicy, f.st.NodePolicySeq)
	}
}

// TestGovTwoOfThree: under a majority of three, the release policy changes
// at the second approval, not before.
func TestGovTwoOfThree(t *testing.T) {
	f := newGovFixture(t, 3, majority())
	old := string(f.st.ReleasePolicy)
	oldSeq := f.st.ReleasePolicySeq
	id := f.propose(f.signers[1], releaseChange("aa"))
	if f.state(id) != ProposalOpen || string(f.st.ReleasePolicy) != old || f.st.Proposal(id).Needed != 2 {
		t.Fatalf("after the proposal: %s, policy %s", f.state(id), f.st.ReleasePolicy)
	}
	f.now = f.now.Add(time.Minute)
	if err := f.vote(f.signers[2], id, true); err != nil {
		t.Fatal(err)
	}
	p := f.st.Proposal(id)
	if p.State(f.now) != ProposalAccepted || p.DecidedSeq != f.st.Seq || f.st.ReleasePolicySeq != f.st.Seq || f.st.ReleasePolicySeq == oldSeq {
		t.Fatalf("after the second approval: %+v, policy seq %d", p, f.st.ReleasePolicySeq)
	}
	if string(f.st.ReleasePolicy) == old {
		t.Fatal("the policy did not change")
	}
	if len(p.Ballots) != 1 || p.Ballots[0].Member != f.signers[2].m.ID || p.Ballots[0].Vote != gov.VoteApprove {
		t.Fatalf("ballots %+v", p.Ballots)
	}
}

// TestGovRejection: a proposal is rejected as soon as the approvals it
// needs can no longer come.
func TestGovRejection(t *testing.T) {
	f := newGovFixture(t, 3, majority())
	id := f.propose(f.signers[0], releaseChange("aa"))
	if err := f.vote(f.signers[1], id, false); err != nil {
		t.Fatal(err)
	}
	if f.state(id) != ProposalOpen {
		t.Fatalf("after one rejection: %s", f.state(id))
	}
	if err := f.vote(f.signers[2], id, false); err != nil {
		t.Fatal(err)
	}
	if p := f.st.Proposal(id); p.State(f.now) != ProposalRejected || p.DecidedSeq != f.st.Seq || len(p.Rejections) != 2 {
		t.Fatalf("after two rejections: %+v", p)
	}
	if string(f.st.ReleasePolicy) != mustPolicy(t, []byte(testPolicy)) {
		t.Fatal("a rejected proposal changed the policy")
	}
}

// TestGovExpiry: a proposal expires by time alone; ballots are then refused.
func TestGovExpiry(t *testing.T) {
	c := majority()
	c.ProposalTTLSeconds = 60
	f := newGovFixture(t, 3, c)
	id := f.propose(f.signers[0], releaseChange("aa"))
	p := f.st.Proposal(id)
	if !p.ExpiresAt.Equal(f.now.Add(time.Minute)) {
		t.Fatalf("expires at %s", p.ExpiresAt)
	}
	if p.State(f.now.Add(59*time.Second)) != ProposalOpen || p.State(f.now.Add(time.Minute)) != ProposalExpired {
		t.Fatal("State by time")
	}
	f.now = f.now.Add(61 * time.Second)
	if err := f.vote(f.signers[1], id, true); !errors.Is(err, ErrProposalClosed) {
		t.Fatalf("ballot after expiry: %v", err)
	}
	if err := f.withdraw(f.signers[0], id); !errors.Is(err, ErrProposalClosed) {
		t.Fatalf("withdrawal after expiry: %v", err)
	}
	if p.Status != ProposalOpen {
		t.Fatal("expiry is derived, never stored")
	}
}

// TestGovWithdrawal: the proposer withdraws an open proposal.
func TestGovWithdrawal(t *testing.T) {
	f := newGovFixture(t, 3, majority())
	id := f.propose(f.signers[0], releaseChange("aa"))
	if err := f.withdraw(f.signers[0], id); err != nil {
		t.Fatal(err)
	}
	if p := f.st.Proposal(id); p.State(f.now) != ProposalWithdrawn || p.DecidedSeq != f.st.Seq {
		t.Fatalf("%+v", p)
	}
	if err := f.withdraw(f.signers[0], id); !errors.Is(err, ErrProposalClosed) {
		t.Fatalf("second withdrawal: %v", err)
	}
}

// TestGovMembers: add_member makes a member who can vote at once, under
// the active count of the moment; remove_member stops a member's votes
// from counting.
func TestGovMembers(t *testing.T) {
	f := newGovFixture(t, 2, majority())
	d := newSigner(t, "d")
	add := f.propose(f.signers[0], action(gov.ActAddMember, map[string]any{"name": d.m.Name, "signing_key": d.m.SigningKey}))
	if f.state(add) != ProposalOpen {
		t.Fatalf("add_member needs 2 of 2: %s", f.state(add))
	}
	if err := f.vote(f.signers[1], add, true); err != nil {
		t.Fatal(err)
	}
	m := f.st.Member(d.m.ID)
	if f.state(add) != ProposalAccepted || m == nil || !m.Active || m.AddedSeq != f.st.Seq || len(f.st.ActiveMembers()) != 3 {
		t.Fatalf("after add_member: %s, %+v", f.state(add), m)
	}
	// The new member's approval counts: 2 of 3.
	id := f.propose(d, releaseChange("aa"))
	if err := f.vote(f.signers[0], id, true); err != nil {
		t.Fatal(err)
	}
	if f.state(id) != ProposalAccepted {
		t.Fatalf("proposal of the new member: %s", f.state(id))
	}
	// Removal (2/3 of 3 = 2).
	rm := f.propose(f.signers[0], action(gov.ActRemoveMember, map[string]any{"member_id": d.m.ID}))
	if err := f.vote(f.signers[1], rm, true); err != nil {
		t.Fatal(err)
	}
	if m := f.st.Member(d.m.ID); m.Active || m.RemovedSeq != f.st.Seq {
		t.Fatalf("after remove_member: %+v", m)
	}
	if n := len(f.st.Members); n != 3 {
		t.Fatalf("%d members known, want all 3 ever added", n)
	}
}

// TestGovPolicies: the JWT, rotation, settings and constitution actions.
func TestGovPolicies(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	jwks := json.RawMessage(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`)
	rot := DefaultRotationPolicy()
	rot.RotationInterval = Seconds(24 * time.Hour)
	c := gov.DevConstitution()
	c.ProposalTTLSeconds = 3600
	f.propose(f.signers[0],
		action(gov.ActSetJWTIssuer, map[string]any{"issuer": "https://issuer.example", "audiences": []string{"api://a"}, "jwks": jwks}),
		action(gov.ActSetJWTValidationPolicy, map[string]any{"issuer": "https://issuer.example", "claims": map[string]any{"tid": "t1"}}),
		action(gov.ActSetKeyRotationPolicy, rot),
		action(gov.ActSetSettingsPolicy, Settings{Service: ServiceSettings{Name: "n", Version: "v"}}),
		action(gov.ActSetConstitution, c),
	)
	seq := f.st.Seq
	if f.st.JWTSeq != seq || len(f.st.JWT.Issuers) != 1 || f.st.JWT.Claims["https://issuer.example"]["tid"] != "t1" {
		t.Fatalf("jwt policy %+v at %d", f.st.JWT, f.st.JWTSeq)
	}
	if f.st.Rotation != rot || f.st.Settings.Service.Name != "n" {
		t.Fatalf("rotation %+v settings %+v", f.st.Rotation, f.st.Settings)
	}
	if f.st.Constitution.ProposalTTLSeconds != 3600 || f.st.ConstitutionSeq != seq {
		t.Fatalf("constitution %+v", f.st.Constitution)
	}
	f.now = f.now.Add(time.Minute)
	jp := f.st.JWT
	f.propose(f.signers[0], action(gov.ActSetJWTIssuer, map[string]any{"issuer": "https://issuer.example", "remove": true}))
	if len(f.st.JWT.Issuers) != 0 || len(f.st.JWT.Claims) != 0 || f.st.JWTSeq != f.st.Seq {
		t.Fatalf("after removal: %+v", f.st.JWT)
	}
	if len(jp.Issuers) != 1 {
		t.Fatal("the earlier JWT policy was modified in place")
	}
}

// TestGovEffects: rotate_key_now and destroy_key leave effects that only
// the key entries naming the proposal clear.
func TestGovEffects(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	f.must(ledger.TypeKeyCreated, f.now, f.keyCreated(f.now, 11), []byte("s"))
	kid := f.st.Keys[0].Kid
	id := f.propose(f.signers[0], action(gov.ActRotateKeyNow, map[string]any{"reason": "compromise"}), action(gov.ActDestroyKey, map[string]any{"kid": kid}))
	want := []Effect{
		{ProposalID: id, Action: gov.ActRotateKeyNow, Reason: "compromise", Seq: f.st.Seq},
		{ProposalID: id, Action: gov.ActDestroyKey, Kid: kid, Seq: f.st.Seq},
	}
	if !reflect.DeepEqual(f.st.PendingEffects, want) {
		t.Fatalf("effects %+v, want %+v", f.st.PendingEffects, want)
	}
	// A scheduled key does not clear the rotation.
	f.must(ledger.TypeKeyCreated, f.now, f.keyCreated(f.now, 12), []byte("s"))
	kc := f.keyCreated(f.now, 13)
	kc.Reason = GovernanceReason + id
	f.must(ledger.TypeKeyCreated, f.now, kc, []byte("s"))
	if len(f.st.PendingEffects) != 1 || f.st.PendingEffects[0].Action != gov.ActDestroyKey {
		t.Fatalf("after the rotation: %+v", f.st.PendingEffects)
	}
	kc = f.keyCreated(f.now, 14)
	kc.Reason = GovernanceReason + id
	if err := f.st.Apply(f.entry(ledger.TypeKeyCreated, f.now, kc, []byte("s"))); err == nil {
		t.Fatal("a second governance rotation for one rotate_key_now was accepted")
	}
	if err := f.apply(ledger.TypeKeyDestroyed, KeyEvent{Kid: f.st.Keys[1].Kid, Reason: GovernanceReason + id}); err == nil {
		t.Fatal("destruction of another key in the proposal's name was accepted")
	}
	f.must(ledger.TypeKeyDestroyed, f.now, KeyEvent{Kid: kid, Reason: GovernanceReason + id}, nil)
	if len(f.st.PendingEffects) != 0 || f.st.Key(kid).DestroyedSeq != f.st.Seq {
		t.Fatalf("after the destruction: %+v", f.st.PendingEffects)
	}
	// A destroy_key whose key is destroyed by retention first is cleared.
	kid2 := f.st.Keys[1].Kid
	f.propose(f.signers[0], action(gov.ActDestroyKey, map[string]any{"kid": kid2}))
	f.must(ledger.TypeKeyDestroyed, f.now, KeyEvent{Kid: kid2, Reason: "retention ended"}, nil)
	if len(f.st.PendingEffects) != 0 {
		t.Fatalf("effect of a key destroyed meanwhile: %+v", f.st.PendingEffects)
	}
	f.now = f.now.Add(time.Second) // not a replay of the proposal above
	if _, err := f.submit(f.signProposal(f.signers[0], action(gov.ActDestroyKey, map[string]any{"kid": kid2}))); !errors.Is(err, gov.ErrInvalidAction) {
		t.Fatalf("destroy_key of a destroyed key: %v", err)
	}
}

// TestGovSnapshotRoundTrip: a governed state survives a snapshot, and the
// restored state goes on deciding as the original does.
func TestGovSnapshotRoundTrip(t *testing.T) {
	f := newGovFixture(t, 3, majority())
	f.must(ledger.TypeKeyCreated, f.now, f.keyCreated(f.now, 11), []byte("s"))
	accepted := f.propose(f.signers[0], action(gov.ActSetNodePolicy, map[string]any{"claims": map[string]any{"a": []string{"1"}}}), action(gov.ActDestroyKey, map[string]any{"kid": f.st.Keys[0].Kid}))
	if err := f.vote(f.signers[1], accepted, true); err != nil {
		t.Fatal(err)
	}
	open := f.propose(f.signers[2], releaseChange("aa"))
	data, err := f.st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Marshal()
	if string(again) != string(data) {
		t.Fatalf("snapshot round trip changed the state\n%s\n%s", data, again)
	}
	if !got.Governed() || len(got.PendingEffects) != 1 || got.Proposal(open) == nil || got.Constitution == nil {
		t.Fatal("governance lost in the snapshot")
	}
	// Both go on alike.
	ballot := f.ballotRaw(f.signers[0], open, true)
	orig := f.st
	if err := f.submitBallot(ballot); err != nil {
		t.Fatal(err)
	}
	f.st = got
	if err := f.submitBallot(ballot); err != nil {
		t.Fatal(err)
	}
	a, _ := orig.Marshal()
	b, _ := got.Marshal()
	if string(a) != string(b) {
		t.Fatal("the restored state decided differently")
	}
	// A clone is independent of its original.
	c := got.Clone()
	c.Proposal(open).Approvals[0] = "x"
	c.Members[0].Active = false
	c.Constitution.Rules["x"] = gov.Rule{}
	if got.Proposal(open).Approvals[0] == "x" || !got.Members[0].Active || len(got.Constitution.Rules) != len(c.Constitution.Rules)-1 {
		t.Fatal("Clone shares governance state")
	}
	if _, err := Unmarshal([]byte(`{"gov_init_seq":3}`)); err == nil {
		t.Fatal("a governed snapshot without members accepted")
	}
}

// TestGovInitRefusals: gov.init must come with members and a constitution
// they can satisfy.
func TestGovInitRefusals(t *testing.T) {
	a := newSigner(t, "a")
	bad := a.m
	bad.ID = "00" + bad.ID[2:]
	for _, tc := range []struct {
		name string
		body GovInit
	}{
		{"no members", GovInit{Constitution: gov.DevConstitution()}},
		{"no constitution", GovInit{Members: []gov.Member{a.m}}},
		{"unsatisfiable", GovInit{Members: []gov.Member{a.m}, Constitution: func() *gov.Constitution {
			c := gov.DevConstitution()
			c.Rules[gov.DefaultRule] = gov.Rule{Approvals: gov.Approvals{Kind: gov.ApproveN, N: 2}}
			return c
		}()}},
		{"member id not of its key", GovInit{Members: []gov.Member{bad}, Constitution: gov.DevConstitution()}},
		{"member twice", GovInit{Members: []gov.Member{a.m, a.m}, Constitution: gov.DevConstitution()}},
	} {
		b := newBuilder(t)
		if err := b.st.Apply(b.entry(ledger.TypeGovInit, t0, tc.body, nil)); err == nil || b.st.Governed() {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// spliceSignature returns message a with the signature of message b.
func spliceSignature(t *testing.T, a, b []byte) []byte {
	t.Helper()
	var ma, mb cose.Sign1Message
	if err := ma.UnmarshalCBOR(a); err != nil {
		t.Fatal(err)
	}
	if err := mb.UnmarshalCBOR(b); err != nil {
		t.Fatal(err)
	}
	ma.Signature = mb.Signature
	out, err := ma.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGovMalleatedReplay: an ECDSA signature re-encoded as (r, n-s) still
// verifies and changes the message's bytes, hence its proposal id; the
// state machine refuses it as the replay it is, by what the signature
// covers.
func TestGovMalleatedReplay(t *testing.T) {
	f := newGovFixture(t, 3, majority())
	raw := f.signProposal(f.signers[0], releaseChange("aa"))
	if _, err := f.submit(raw); err != nil {
		t.Fatal(err)
	}
	var sm cose.Sign1Message
	if err := sm.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	n := elliptic.P256().Params().N
	size := len(sm.Signature) / 2
	s := new(big.Int).SetBytes(sm.Signature[size:])
	s.Sub(n, s)
	s.FillBytes(sm.Signature[size:])
	mall, err := sm.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	m, err := gov.ParseMessage(mall)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(f.signers[0].m); err != nil {
		t.Fatalf("the re-encoded signature does not verify (%v): the test no longer shows malleability", err)
	}
	if gov.ProposalID(mall) == gov.ProposalID(raw) {
		t.Fatal("re-encoding kept the proposal id")
	}
	if _, err := f.submit(mall); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("malleated replay: %v, want ErrDuplicate", err)
	}
}
