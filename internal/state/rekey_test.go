package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
)

func nodeID(key []byte) string {
	h := sha256.Sum256(key)
	return hex.EncodeToString(h[:])
}

func TestApplyRekeyed(t *testing.T) {
	ka, kb, kc := make([]byte, 32), make([]byte, 32), make([]byte, 32)
	kb[0], kc[0] = 1, 2
	s := New()
	seq := uint64(0)
	apply := func(typ ledger.Type, body []byte) error {
		seq++
		e := &ledger.Entry{Seq: seq, Time: time.Unix(int64(seq), 0), Type: typ, Body: body}
		if typ == ledger.TypeNodeJoined {
			return s.applyNodeJoined(e)
		}
		return s.applyRekeyed(e)
	}
	if err := apply(ledger.TypeNodeJoined, nodeBody("a", ka, func(n *NodeJoined) { n.Founder, n.Secrets = true, nil })); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name string
		key  []byte
	}{{"b", kb}, {"c", kc}} {
		if err := apply(ledger.TypeNodeJoined, nodeBody(m.name, m.key, func(n *NodeJoined) { n.SecretVersion = 1 })); err != nil {
			t.Fatal(err)
		}
	}
	// remove_node as governance applies it: c is removed, a rekey is due.
	seq++
	if err := s.applyAction("p1", gov.Action{Name: gov.ActRemoveNode, Args: json.RawMessage(`{"node_id":"c"}`)}, seq); err != nil {
		t.Fatal(err)
	}
	ef, ok := s.RekeyDue()
	if !ok || ef.Node != "c" || ef.Seq != seq {
		t.Fatalf("rekey due: %+v %v", ef, ok)
	}
	a, b := s.Node(nodeID(ka)), s.Node(nodeID(kb))
	good := LedgerRekeyed{
		Version: 2, ProposalID: "p1", RemovedNode: "c", RemoveSeq: seq, Previous: []byte("prev"),
		Nodes: []RekeyedNode{{Member: "a", NodeID: a.NodeID, Secrets: []byte("s")}, {Member: "b", NodeID: b.NodeID, Secrets: []byte("s")}},
	}
	for _, tc := range []struct {
		name  string
		mod   func(*LedgerRekeyed)
		err   string
		stale bool
	}{
		{"version skipped", func(r *LedgerRekeyed) { r.Version = 3 }, "want 2", true},
		{"no previous", func(r *LedgerRekeyed) { r.Previous = nil }, "previous", false},
		{"no removal", func(r *LedgerRekeyed) { r.ProposalID = "p9" }, "no pending removal", false},
		{"removed node named", func(r *LedgerRekeyed) {
			r.Nodes = append(r.Nodes, RekeyedNode{Member: "c", NodeID: nodeID(kc), Secrets: []byte("s")})
		}, "trusted nodes", true},
		{"a node left out", func(r *LedgerRekeyed) { r.Nodes = r.Nodes[:1] }, "trusted nodes", true},
		{"no secret", func(r *LedgerRekeyed) { r.Nodes = []RekeyedNode{r.Nodes[0], {Member: "b", NodeID: b.NodeID}} }, "without its secret", false},
	} {
		r := good
		r.Nodes = append([]RekeyedNode(nil), good.Nodes...)
		tc.mod(&r)
		body, _ := json.Marshal(r)
		err := apply(ledger.TypeLedgerRekeyed, body)
		if err == nil || !strings.Contains(err.Error(), tc.err) || errors.Is(err, ErrStaleSecret) != tc.stale {
			t.Errorf("%s: %v, want %q (stale %v)", tc.name, err, tc.err, tc.stale)
		}
	}
	if s.SecretVersion() != 1 {
		t.Fatal("a refused rekey changed the version")
	}
	body, _ := json.Marshal(good)
	if err := apply(ledger.TypeLedgerRekeyed, body); err != nil {
		t.Fatal(err)
	}
	at := seq
	if s.SecretVersion() != 2 || s.SecretVersionAt(at-1) != 1 || s.SecretVersionAt(at) != 2 {
		t.Fatalf("versions %d %d %d", s.SecretVersion(), s.SecretVersionAt(at-1), s.SecretVersionAt(at))
	}
	if _, ok := s.RekeyDue(); ok {
		t.Fatal("the rekey did not clear the removal's effect")
	}
	if err := apply(ledger.TypeLedgerRekeyed, body); err == nil {
		t.Fatal("the same rekey applied twice")
	}
	// A node admitted with the version before the rekey is refused.
	kd := make([]byte, 32)
	kd[0] = 4
	err := apply(ledger.TypeNodeJoined, nodeBody("d", kd, func(n *NodeJoined) { n.SecretVersion = 1 }))
	if !errors.Is(err, ErrStaleSecret) {
		t.Fatalf("a handoff of version 1 after the rekey: %v, want ErrStaleSecret", err)
	}
	if err := apply(ledger.TypeNodeJoined, nodeBody("d", kd, func(n *NodeJoined) { n.SecretVersion = 2 })); err != nil {
		t.Fatal(err)
	}
	// The chain survives a snapshot.
	raw, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	u, err := Unmarshal(raw)
	if err != nil || len(u.Rekeys) != 1 || string(u.Rekeys[0].Previous) != "prev" || u.SecretVersion() != 2 {
		t.Fatalf("after a snapshot: %+v %v", u.Rekeys, err)
	}
}
