package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// A rekey on the service of a cluster's node (here on the embedded store,
// which leads): the founder and two admitted nodes hold version 1; an
// accepted remove_node makes the service record a ledger.rekeyed entry
// naming the founder and the node that remains, each opening version 2;
// the service switches to it (its keyring is rewritten under it) and
// seals what follows under it, which the removed node's version 1 does
// not open; a node admitted after receives both versions; a handoff of
// version 1 is refused at apply time; and a restart holding only version
// 2 opens everything older by walking back the ledger's rekey.
func TestRekey(t *testing.T) {
	ctx := context.Background()
	chainDir := t.TempDir()
	na := simAdmission(t, chainDir, nil) // creates the simulated TEE
	founder := simNode(t, chainDir, nil)
	f, ms := newGovFixture(t, 1, gov.DevConstitution())
	// The fixture opened with a plain key; reopen as a cluster node.
	f.versions, f.identity = seal.NewVersions(), founder
	f.svc.Close()
	os.RemoveAll(f.dir)
	os.MkdirAll(f.dir, 0o700)
	f.open()
	na.Secrets = f.versions.Secret
	if _, err := f.svc.RecordFounder(ctx, na, "n1", founder); err != nil {
		t.Fatal(err)
	}
	b, c := simNode(t, chainDir, nil), simNode(t, chainDir, nil)
	held := map[string]*seal.Versions{}
	for _, n := range []struct {
		m  string
		id *node.Identity
	}{{"n2", b}, {"n3", c}} {
		m, nd := n.m, n.id
		e, err := f.svc.AdmitNode(ctx, na, m, nd.Public, nd.TLSKey, nd.Evidence)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := OpenHandoff(e, nd)
		if err != nil {
			t.Fatal(err)
		}
		held[m] = &seal.Versions{}
		if err := held[m].Install(blob); err != nil || held[m].Current() != 1 {
			t.Fatalf("%s holds version %d (%v)", m, held[m].Current(), err)
		}
	}
	before, err := f.svc.Rotate(ctx, "before")
	if err != nil {
		t.Fatal(err)
	}

	f.mustPropose(ms[0], act(gov.ActRemoveNode, map[string]string{"node_id": "n3"}))
	var rk *state.Rekey
	f.svc.Read(func(st *state.State) {
		if len(st.Rekeys) == 1 {
			rk = st.Rekeys[0]
		}
	})
	if rk == nil || rk.Version != 2 || rk.RemovedNode != "n3" {
		t.Fatalf("after remove_node: rekey %+v", rk)
	}
	if f.versions.Current() != 2 || f.svc.SecretVersion() != 2 {
		t.Fatalf("the service holds version %d, the ledger is at %d", f.versions.Current(), f.svc.SecretVersion())
	}
	e, err := f.svc.store.Get(rk.Seq)
	if err != nil {
		t.Fatal(err)
	}
	var r state.LedgerRekeyed
	if err := json.Unmarshal(e.Body, &r); err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, n := range r.Nodes {
		named[n.Member] = true
		if n.NodeID == b.ID {
			blob, err := b.Open(n.Secrets)
			if err != nil {
				t.Fatal(err)
			}
			held["n2"].AddPrevious(2, r.Previous)
			if err := held["n2"].Install(blob); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Open(n.Secrets); err == nil {
			t.Fatal("the removed node opened a copy of the new version")
		}
	}
	if !named["n1"] || !named["n2"] || named["n3"] || held["n2"].Current() != 2 {
		t.Fatalf("the rekey names %v; n2 holds version %d", named, held["n2"].Current())
	}
	raw, err := os.ReadFile(filepath.Join(f.dir, keyring.FileName))
	if err != nil || seal.BlobVersion(raw) != 2 {
		t.Fatalf("the keyring is sealed under version %d (%v), want 2 at once", seal.BlobVersion(raw), err)
	}

	after, err := f.svc.Rotate(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		k    *state.Key
		want uint32
	}{{before, 1}, {after, 2}} {
		e, err := f.svc.store.Get(tc.k.Seq)
		if err != nil {
			t.Fatal(err)
		}
		ad := ledger.SealAD(e.Seq, e.Type)
		if v := seal.BlobVersion(e.Sealed); v != tc.want {
			t.Errorf("key %s sealed under version %d, want %d", tc.k.Kid, v, tc.want)
		}
		if _, err := held["n2"].Open(e.Sealed, ad); err != nil {
			t.Errorf("n2 cannot open key %s: %v", tc.k.Kid, err)
		}
		_, err = held["n3"].Open(e.Sealed, ad)
		if tc.want == 2 && !errors.Is(err, seal.ErrUnknownVersion) {
			t.Errorf("the removed node opens key %s, written after its removal: %v", tc.k.Kid, err)
		}
	}
	if _, err := keyring.Open(f.dir, held["n3"]); err == nil {
		t.Error("the removed node opens the keyring")
	}

	// A node admitted now receives both versions; a handoff of version
	// 1, made before the rekey, is refused at apply time.
	d := simNode(t, chainDir, nil)
	e, err = f.svc.AdmitNode(ctx, na, "n4", d.Public, d.TLSKey, d.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	var nj state.NodeJoined
	json.Unmarshal(e.Body, &nj)
	blob, err := OpenHandoff(e, d)
	if err != nil || nj.SecretVersion != 2 || len(blob) != 2*seal.SecretSize {
		t.Fatalf("a handoff after the rekey: version %d, %d bytes, %v", nj.SecretVersion, len(blob), err)
	}
	stale := simNode(t, chainDir, nil)
	eh := sha256.Sum256(stale.Evidence)
	old, _ := json.Marshal(state.NodeJoined{
		Member: "n5", NodeID: stale.ID, NodeKey: stale.Public, Evidence: stale.Evidence,
		EvidenceSHA256: hex.EncodeToString(eh[:]), Secrets: []byte("sealed"), SecretVersion: 1,
	})
	err = f.svc.checkApply(&ledger.Entry{Seq: f.svc.Seq() + 1, Type: ledger.TypeNodeJoined, Body: old})
	if !errors.Is(err, state.ErrStaleSecret) {
		t.Fatalf("a handoff of version 1 after the rekey, at apply time: %v, want ErrStaleSecret", err)
	}

	// A restart holding only the current version: the ledger's rekey
	// leads back to version 1 (the log key's entry, sealed at genesis).
	cur, _ := f.versions.Secret()
	only2 := &seal.Versions{}
	if err := only2.Install(cur[seal.SecretSize:]); err != nil || only2.Current() != 2 {
		t.Fatal(err)
	}
	f.svc.Close()
	f.versions, f.identity = only2, simNode(t, chainDir, nil)
	f.open()
	if _, err := f.svc.PrivateKey(before.Kid); err != nil {
		t.Fatalf("after a restart with version 2 only, the key from before the rekey: %v", err)
	}
	if all, _ := only2.Secret(); !bytes.Equal(all, cur) {
		t.Fatal("walking back did not recover version 1")
	}
}

// A removal's rekey across a leader change, in a cluster of four
// services: the removal is accepted through a follower and the leader
// stops before it rekeys; the next leader carries the rekey out (it stays
// a pending effect until its entry is applied), every node that remains
// switches to version 2, and a key created after is sealed under it,
// which the removed node's version does not open.
func TestRekeyLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("four raft nodes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	clk := &clock{t: t0}
	na := simAdmission(t, dir, nil) // the nodes' simulated TEE, in dir
	m := newMember(t, "a")
	founder := &versionedNode{
		versions: seal.NewVersions(), identity: simNode(t, dir, nil),
		gov: &GovInit{Members: []gov.Member{m.m}, Constitution: gov.DevConstitution()},
	}
	na.Secrets = founder.versions.Secret
	n1 := openClusterNodeWith(t, filepath.Join(dir, "n1"), "n1", nil, clk, "", founder)
	waitUntil(t, "n1 to lead", n1.svc.IsLeader)
	if _, err := n1.svc.RecordFounder(ctx, na, "n1", founder.identity); err != nil {
		t.Fatal(err)
	}
	nodes := []*clusterNode{n1}
	held := []*seal.Versions{founder.versions}
	for _, id := range []string{"n2", "n3", "n4"} {
		vn := &versionedNode{versions: &seal.Versions{}, identity: simNode(t, dir, nil)}
		nodes = append(nodes, openClusterNodeWith(t, filepath.Join(dir, id), id, nil, clk, n1.addr, vn))
		held = append(held, vn.versions)
	}
	defer func() {
		for _, n := range nodes {
			n.svc.Close()
		}
	}()
	waitUntil(t, "four voters", func() bool { return len(n1.rs.Status().Nodes) == 4 })
	for _, v := range held {
		if v.Current() != 1 {
			t.Fatalf("a node holds version %d before the rekey", v.Current())
		}
	}

	// remove_node n4, accepted through a follower; the leader does not
	// tick (no scheduler runs here), so the rekey stays pending.
	raw, err := m.SignProposal([]gov.Action{act(gov.ActRemoveNode, map[string]string{"node_id": "n4"})}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := nodes[1].svc.Propose(ctx, raw, false)
	if err != nil || p.Status != state.ProposalAccepted {
		t.Fatalf("remove_node: %+v, %v", p, err)
	}
	waitUntil(t, "the removal on n2", func() bool {
		var due bool
		nodes[1].svc.Read(func(st *state.State) { _, due = st.RekeyDue() })
		return due
	})
	if v := nodes[1].svc.SecretVersion(); v != 1 {
		t.Fatalf("rekeyed before the leader changed: version %d", v)
	}
	// The leader stops; one of n2, n3 takes over and carries the rekey out.
	n1.svc.Close()
	rest := nodes[1:3]
	nodes = nodes[1:]
	var lead *clusterNode
	waitUntil(t, "a new leader", func() bool {
		for _, n := range rest {
			if n.svc.IsLeader() {
				lead = n
			}
		}
		return lead != nil
	})
	waitUntil(t, "the rekey", func() bool {
		if _, err := lead.svc.Tick(ctx); err != nil {
			t.Log(err)
		}
		return held[1].Current() == 2 && held[2].Current() == 2
	})
	if held[3].Current() != 1 {
		t.Fatalf("the removed node took version %d", held[3].Current())
	}
	k, err := lead.svc.Rotate(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range rest {
		waitUntil(t, "the key on "+n.id, func() bool { _, err := n.svc.PrivateKey(k.Kid); return err == nil })
	}
	e, err := lead.svc.store.Get(k.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if v := seal.BlobVersion(e.Sealed); v != 2 {
		t.Fatalf("the key after the rekey is sealed under version %d", v)
	}
	if _, err := held[3].Open(e.Sealed, ledger.SealAD(e.Seq, e.Type)); !errors.Is(err, seal.ErrUnknownVersion) {
		t.Fatalf("the removed node's version opens the key created after the rekey: %v", err)
	}
}
