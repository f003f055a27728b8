package audit

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// TestAuditGoverned audits a governed ledger where a 2-of-3 decision
// changed the key release policy and a release then relied on it: the
// audit passes, lists the members and the decision, and names the
// proposal as the source of the policy version the release cites.
func TestAuditGoverned(t *testing.T) {
	clk := &clock{t: t0}
	var signers []*gov.Signer
	var members []gov.Member
	for _, name := range []string{"sro-a", "sro-b", "sro-c"} {
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
		signers, members = append(signers, s), append(members, m)
	}
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: t.TempDir(), Sealer: sealer, ServiceName: "audit-test", RotationPolicy: testRotation(),
		Settings: state.Settings{Service: state.ServiceSettings{Name: "audit-test"}}, ReleasePolicy: []byte(testPolicyJSON),
		Now: clk.Now, Logger: slog.New(slog.DiscardHandler), LogOrigin: "audit.test/service",
		Governance: &kms.GovInit{Members: members, Constitution: gov.DefaultConstitution()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-hostdata": "ab"}})
	raw, err := signers[0].SignProposal([]gov.Action{{Name: gov.ActSetKeyReleasePolicy, Args: args}}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := svc.Propose(context.Background(), raw, false)
	if err != nil {
		t.Fatal(err)
	}
	ballot, err := signers[1].SignBallot(p.ID, true, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p, _, err = svc.Ballot(context.Background(), p.ID, ballot); err != nil || p.Status != state.ProposalAccepted {
		t.Fatalf("ballot: %v, proposal %+v", err, p)
	}
	var kid string
	svc.Read(func(st *state.State) { kid = st.Keys[0].Kid })
	claims := goodClaims()
	claims["x-ms-sevsnpvm-hostdata"] = "ab" // what the decision added
	recordRelease(t, svc, kid, "oid-1", false, claims)

	dir := t.TempDir()
	if err := mirrorService(dir, svc); err != nil {
		t.Fatal(err)
	}
	r, err := auditDir(dir, svc.LogVerifierKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Passed() {
		t.Fatalf("governed log failed the audit:\n%s", text(r))
	}
	g := r.Governance
	if g == nil || len(g.Members) != 3 || len(g.Proposals) != 1 || g.Proposals[0].State != "accepted" || g.Proposals[0].Approvals != 2 {
		t.Fatalf("governance section %+v", g)
	}
	var fromProposal bool
	for _, pv := range r.Policies {
		if pv.Proposal == p.ID {
			fromProposal = true
		}
	}
	if !fromProposal {
		t.Errorf("no policy version names proposal %s: %+v", p.ID, r.Policies)
	}
	s := text(r)
	for _, want := range []string{"governance (since seq", "accepted, 2 of 2 approvals", "set_key_release_policy", "(proposal " + p.ID[:12] + ")"} {
		if !strings.Contains(s, want) {
			t.Errorf("the report lacks %q:\n%s", want, s)
		}
	}
}
