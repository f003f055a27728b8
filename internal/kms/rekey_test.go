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
		e, err := f.svc.AdmitNode(ctx, na, m, nd.Public, nd.Evidence)
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
	e, err = f.svc.AdmitNode(ctx, na, "n4", d.Public, d.Evidence)
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
