package kms

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/state"
)

// simAdmission admits nodes of the simulated TEE of chainDir whose
// measurement is simsnp's default, handing them key.
func simAdmission(t *testing.T, chainDir string, key []byte) *NodeAdmission {
	t.Helper()
	chain, err := simsnp.LoadOrCreate(chainDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := attest.Config{Simulated: true}
	chain.Trust(&cfg)
	v, err := attest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pol := `{"claims":{"x-ms-sevsnpvm-launchmeasurement":["` + hex.EncodeToString([]byte(simsnp.DefaultMeasurement)) + `"]}}`
	return &NodeAdmission{Verifier: v, DefaultPolicy: []byte(pol), Secrets: func() ([]byte, error) { return bytes.Clone(key), nil }}
}

// simNode is a node identity in the simulated TEE of chainDir.
func simNode(t *testing.T, chainDir string, measurement []byte) *node.Identity {
	t.Helper()
	a, err := devtee.NewAttester(chainDir, devtee.AttesterOptions{Measurement: measurement})
	if err != nil {
		t.Fatal(err)
	}
	id, err := node.New(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The admission of nodes on one service: a node the policy refuses gets
// nothing and leaves no entry; an admitted node's entry opens with its key
// only, names its evidence and claims, and holds no secret in clear; a
// retried join gets the same entry; a governed node policy replaces the
// default.
func TestAdmitNode(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	chainDir := t.TempDir()
	na := simAdmission(t, chainDir, f.key)

	bad := simNode(t, chainDir, bytes.Repeat([]byte{7}, 48))
	seq := f.svc.Seq()
	if _, err := f.svc.AdmitNode(ctx, na, "n2", bad.Public, bad.TLSKey, bad.Evidence); attest.Code(err) != node.CodePolicyDenied {
		t.Fatalf("another measurement: %v", err)
	}
	if f.svc.Seq() != seq {
		t.Fatal("a refused node left an entry")
	}

	good := simNode(t, chainDir, nil)
	e, err := f.svc.AdmitNode(ctx, na, "n2", good.Public, good.TLSKey, good.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != ledger.TypeNodeJoined || bytes.Contains(e.Body, f.key) || bytes.Contains(e.Body, []byte(hex.EncodeToString(f.key))) {
		t.Fatalf("entry %s holds the key in clear, or is not node.joined", e.Type)
	}
	var nj state.NodeJoined
	if err := json.Unmarshal(e.Body, &nj); err != nil || nj.Member != "n2" || nj.NodeID != good.ID || nj.Claims["x-ms-sevsnpvm-launchmeasurement"] == nil || nj.PolicySeq != 0 || nj.PolicySHA256 == "" {
		t.Fatalf("node.joined body %s (%v)", e.Body, err)
	}
	mk, err := OpenHandoff(e, good)
	if err != nil || !bytes.Equal(mk, f.key) {
		t.Fatalf("the node opens %x (%v), want the master key", mk, err)
	}
	if _, err := OpenHandoff(e, simNode(t, chainDir, nil)); err == nil {
		t.Fatal("another node opened the handoff")
	}
	// The entry holds the node certificate of the attested TLS key, which
	// the service identity signed and a peer accepts while the node is
	// trusted.
	if id, err := node.CheckPeer(nj.Certificate, f.svc.ServiceKey(), time.Now(), f.svc.TrustedTLSKey); err != nil || id != good.ID {
		t.Fatalf("the node certificate: %s, %v", id, err)
	}
	// A TLS key the evidence does not bind is refused.
	if _, err := f.svc.AdmitNode(ctx, na, "n4", good.Public, bad.TLSKey, good.Evidence); attest.Code(err) != node.CodeTLSKeyNotBound {
		t.Fatalf("an unattested TLS key: %v", err)
	}
	again, err := f.svc.AdmitNode(ctx, na, "n2", good.Public, good.TLSKey, good.Evidence)
	if err != nil || again.Seq != e.Seq {
		t.Fatalf("a retried join: entry %v, %v; want seq %d", again, err, e.Seq)
	}
	var nodes []*state.Node
	f.svc.Read(func(st *state.State) { nodes = st.TrustedNodes() })
	if len(nodes) != 1 || nodes[0].NodeID != good.ID {
		t.Fatalf("trusted nodes %+v", nodes)
	}
	// The state survives a restart (replay) as applied.
	f.reopen()
	f.svc.Read(func(st *state.State) { nodes = st.TrustedNodes() })
	if len(nodes) != 1 || nodes[0].Seq != e.Seq {
		t.Fatalf("after a restart: %+v", nodes)
	}
	// Without any node policy, no node is admitted.
	na.DefaultPolicy = nil
	if _, err := f.svc.AdmitNode(ctx, na, "n3", bad.Public, bad.TLSKey, bad.Evidence); attest.Code(err) != node.CodePolicyUnset {
		t.Fatalf("no node policy: %v", err)
	}
}

// With the constitution's node_trust "proposal", a node that satisfies the
// node policy waits for a trust_node proposal naming it.
func TestAdmitNodeTrustNode(t *testing.T) {
	c := gov.DevConstitution()
	c.NodeTrust = gov.NodeTrustProposal
	f, ms := newGovFixture(t, 1, c)
	ctx := context.Background()
	chainDir := t.TempDir()
	na := simAdmission(t, chainDir, f.key)
	n := simNode(t, chainDir, nil)
	seq := f.svc.Seq()
	_, err := f.svc.AdmitNode(ctx, na, "n2", n.Public, n.TLSKey, n.Evidence)
	if attest.Code(err) != node.CodeNotTrusted || !strings.Contains(err.Error(), n.ID) {
		t.Fatalf("an untrusted node: %v", err)
	}
	if f.svc.Seq() != seq {
		t.Fatal("a node waiting for trust left an entry")
	}
	p := f.mustPropose(ms[0], act(gov.ActTrustNode, map[string]any{"node_id": n.ID}))
	if p.Status != state.ProposalAccepted {
		t.Fatalf("trust_node: %s", p.Status)
	}
	e, err := f.svc.AdmitNode(ctx, na, "n2", n.Public, n.TLSKey, n.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	var nj state.NodeJoined
	if json.Unmarshal(e.Body, &nj) != nil || nj.TrustSeq == 0 {
		t.Fatalf("node.joined %s names no trust_node decision", e.Body)
	}
	// Trust names one node key: another process start is another node.
	other := simNode(t, chainDir, nil)
	if _, err := f.svc.AdmitNode(ctx, na, "n3", other.Public, other.TLSKey, other.Evidence); attest.Code(err) != node.CodeNotTrusted {
		t.Fatalf("another node: %v", err)
	}
}
