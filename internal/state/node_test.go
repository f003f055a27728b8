package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
)

func nodeBody(member string, key []byte, mod func(*NodeJoined)) []byte {
	ev := []byte(`{"evidence":"` + member + `"}`)
	kh, eh := sha256.Sum256(key), sha256.Sum256(ev)
	n := NodeJoined{
		Member: member, NodeID: hex.EncodeToString(kh[:]), NodeKey: key, Evidence: ev,
		EvidenceSHA256: hex.EncodeToString(eh[:]), Secrets: []byte("sealed"),
	}
	if mod != nil {
		mod(&n)
	}
	b, _ := json.Marshal(n)
	return b
}

func k3() []byte {
	k := make([]byte, 32)
	k[0] = 3
	return k
}

func TestApplyNodeJoined(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	k2[0] = 1
	for _, tc := range []struct {
		name string
		body []byte
		err  string
	}{
		{"no member", nodeBody("", k1, nil), "no member"},
		{"short key", nodeBody("m", k1[:31], nil), "want 32"},
		{"node id of another key", nodeBody("m", k1, func(n *NodeJoined) { n.NodeID = strings.Repeat("0", 64) }), "not the SHA-256 of the node key"},
		{"evidence hash", nodeBody("m", k1, func(n *NodeJoined) { n.EvidenceSHA256 = "x" }), "evidence_sha256"},
		{"no evidence", nodeBody("m", k1, func(n *NodeJoined) { n.Evidence = nil }), "without evidence"},
		{"no secrets", nodeBody("m", k1, func(n *NodeJoined) { n.Secrets = nil }), "every other node does"},
		{"founder with secrets", nodeBody("m", k1, func(n *NodeJoined) { n.Founder = true }), "founder receives no secrets"},
		{"certificate not DER", nodeBody("m", k1, func(n *NodeJoined) { n.Certificate = []byte("x") }), "node certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			err := s.applyNodeJoined(&ledger.Entry{Seq: 1, Type: ledger.TypeNodeJoined, Body: tc.body})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
			if len(s.Nodes) != 0 {
				t.Fatal("a refused entry left a node")
			}
		})
	}
	s := New()
	apply := func(seq uint64, body []byte) error {
		return s.applyNodeJoined(&ledger.Entry{Seq: seq, Time: time.Unix(int64(seq), 0), Type: ledger.TypeNodeJoined, Body: body})
	}
	if err := apply(1, nodeBody("a", k1, func(n *NodeJoined) { n.Founder, n.Secrets = true, nil })); err != nil {
		t.Fatal(err)
	}
	if err := apply(2, nodeBody("a", k1, nil)); err == nil {
		t.Fatal("the same node joined twice")
	}
	if err := apply(3, nodeBody("b", k2, nil)); err != nil {
		t.Fatal(err)
	}
	if n := s.TrustedNodes(); len(n) != 2 {
		t.Fatalf("trusted %d nodes, want 2", len(n))
	}
	// A restart of a (a new node of its member) replaces its first node:
	// the ledger trusts the new one's TLS, not the old one's.
	k4 := make([]byte, 32)
	k4[0] = 4
	if err := apply(4, nodeBody("a", k4, nil)); err != nil {
		t.Fatal(err)
	}
	id := func(k []byte) string { h := sha256.Sum256(k); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name    string
		key     []byte
		trusted bool
	}{{"replaced by a restart", k1, false}, {"the restart", k4, true}, {"b", k2, true}, {"unknown", k3(), false}} {
		if got := s.TrustedNode(id(tc.key)) != nil; got != tc.trusted {
			t.Errorf("%s: trusted %v, want %v", tc.name, got, tc.trusted)
		}
	}
	s.RemovedNodes = map[string]uint64{"b": 4}
	if s.TrustedNode(id(k2)) != nil {
		t.Error("a removed node is trusted")
	}
	if n := s.TrustedNodes(); len(n) != 1 || n[0].Member != "a" {
		t.Fatalf("after b's removal: %+v", n)
	}
	if err := apply(5, nodeBody("b", k3(), nil)); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("a removed member joined again: %v", err)
	}
	c := s.Clone()
	c.Nodes = append(c.Nodes, &Node{})
	if len(s.Nodes) != 3 {
		t.Fatal("the clone shares its nodes")
	}
}

// TestNodesAfterRecovery: the nodes admitted before a recovery are not
// trusted after it (the recovery presumed them lost); those admitted
// after are.
func TestNodesAfterRecovery(t *testing.T) {
	old := &Node{NodeJoined: NodeJoined{Member: "kms-1", NodeID: "old"}, Seq: 3}
	s := &State{Nodes: []*Node{old}}
	if got := s.TrustedNodes(); len(got) != 1 || s.TrustedNode("old") == nil {
		t.Fatalf("before the recovery: %v", got)
	}
	s.Recoveries = []*ServiceRecovered{{RecoveryID: "r", Seq: 5}}
	if got := s.TrustedNodes(); len(got) != 0 || s.TrustedNode("old") != nil {
		t.Fatalf("a node admitted before the recovery is trusted after it: %v", got)
	}
	s.Nodes = append(s.Nodes, &Node{NodeJoined: NodeJoined{Member: "kms-1", NodeID: "new"}, Seq: 7})
	if got := s.TrustedNodes(); len(got) != 1 || got[0].NodeID != "new" || s.TrustedNode("new") == nil {
		t.Fatalf("the node admitted after the recovery: %v", got)
	}
}
