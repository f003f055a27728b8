package main

// The ledger secret of a dev cluster, across a rekey: no version of it is
// on disk or in a log but in the first node's dev-only master key file,
// and the version a removed node kept opens nothing written after its
// removal.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// testNode is a cluster node the test itself plays, to learn the ledger
// secret the way a node does and no other way: it joins with a node key
// of its own (attested by the dev cluster's simulated TEE), opens its
// handoff, and opens its copy of each later version from the rekey entry
// that names it. It runs no raft: the cluster lists it as a non-voter
// that never catches up, which changes nothing else.
type testNode struct {
	id *node.Identity
	ln net.Listener
}

func joinTestNode(t *testing.T, first *devNode) (*testNode, []byte) {
	t.Helper()
	att, err := devtee.NewAttester(first.data, devtee.AttesterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := node.New(context.Background(), att)
	if err != nil {
		t.Fatal(err)
	}
	// It joins as a node does: with the first node's dev certificate
	// (joins are mutual TLS under the dev cluster's CA) and its own
	// attested TLS key.
	cn := &clusterNode{id: id, cfg: &ClusterConfig{
		CertFile: filepath.Join(first.data, devNodeCertFile), KeyFile: filepath.Join(first.data, devNodeKeyFile),
		CAFile: filepath.Join(first.data, devCACertFile),
	}}
	if err := cn.setupTLS(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // its raft address, never served
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := strings.TrimSpace(string(readFile(t, filepath.Join(first.data, devClusterAddrFile))))
	req := raftstore.JoinRequest{NodeID: "test-node", Address: ln.Addr().String(), NodeKey: id.Public, TLSKey: id.TLSKey, Evidence: id.Evidence}
	var res *raftstore.JoinResult
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err = raftstore.Join(context.Background(), addr, req, cn.joinClient)
		if err == nil || !errors.Is(err, raftstore.ErrNoLeader) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the test's node joining: %v", err)
	}
	_, blob, err := cn.openHandoff(res.Handoff)
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{id: id, ln: ln}, blob
}

// rekeyEntry polls the log at base until it holds a ledger.rekeyed entry
// and returns it.
func rekeyEntry(t *testing.T, base string) (uint64, state.LedgerRekeyed) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	next := 0
	for {
		for ; ; next++ {
			resp, body := do(t, http.MethodGet, fmt.Sprintf("%s/v1/log/entries/%d", base, next), nil)
			if resp.StatusCode != http.StatusOK {
				break
			}
			var e struct {
				Seq  uint64          `json:"seq"`
				Type ledger.Type     `json:"type"`
				Body json.RawMessage `json:"body"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatal(err)
			}
			if e.Type == ledger.TypeLedgerRekeyed {
				var r state.LedgerRekeyed
				if err := json.Unmarshal(e.Body, &r); err != nil {
					t.Fatal(err)
				}
				return e.Seq, r
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no ledger.rekeyed entry after the node's removal")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterSecretsNotOnDisk runs a three-node dev cluster through key
// rotations, releases on both APIs, a node's removal by governance and
// the rekey that follows, more rotations and releases, then searches every
// file of every node's data directory and every process's output for
// every version of the ledger secret in every encoding (raw, hex, base64
// standard and URL, padded or not): none may appear but version 1 in the
// first node's dev-only master.key. Then, with the ledger files of the
// nodes that remain, the version the removed node held opens none of the
// sealed parts written after the rekey, nor their keyrings, while the
// versions they hold open everything.
func TestClusterSecretsNotOnDisk(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"log_level": "debug", "limits": map[string]any{"per_address_rate": 0, "per_identity_rate": 0}})
	nodes := startDevCluster(t, dir, cfg, 3, nil)
	procs := []*proc{}
	for _, n := range nodes {
		procs = append(procs, n.p)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("stderr of %s:\n%s", n.id, n.p.stderr)
			}
		})
	}
	tn, v1blob := joinTestNode(t, nodes[0])
	if v, _, err := seal.ParseSecret(v1blob); err != nil || v != 1 {
		t.Fatalf("the handoff holds version %d (%v), want 1", v, err)
	}
	// Version 1 is the dev founder's master key file.
	mk, err := seal.ReadKeyFile(filepath.Join(nodes[0].data, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, k1, _ := seal.ParseSecret(v1blob); string(k1) != string(mk) {
		t.Fatal("the handoff's version 1 is not the dev founder's master key")
	}

	var acks ackLog
	rel := newReleaser(t, nodes[0].data, &acks)
	token := readDevJSON(t, nodes[0].data).WorkloadToken
	for i := range 2 {
		refresh(t, nodes[i].p.URL, "")
		rel.releaseOnce(t, nodes[i].p.URL, token, "app")
		rel.releaseOnce(t, nodes[i].p.URL, token, "v1")
	}

	// Governance removes the third node: the leader rekeys.
	gone := nodes[2]
	proposeRemoveNode(t, nodes[1], gone.id)
	rekeySeq, rk := rekeyEntry(t, nodes[0].p.URL)
	if rk.Version != 2 || rk.RemovedNode != gone.id {
		t.Fatalf("the rekey: version %d, removed %q", rk.Version, rk.RemovedNode)
	}
	var v2blob []byte
	for _, n := range rk.Nodes {
		if n.Member == gone.id {
			t.Fatalf("the rekey names the removed node: %+v", rk.Nodes)
		}
		if n.NodeID == tn.id.ID {
			if v2blob, err = tn.id.Open(n.Secrets); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(rk.Nodes) != 3 || v2blob == nil {
		t.Fatalf("the rekey names %d nodes (want the two that remain and the test's), the test's copy: %v", len(rk.Nodes), v2blob != nil)
	}
	if v, _, err := seal.ParseSecret(v2blob); err != nil || v != 2 {
		t.Fatalf("the rekey holds version %d (%v), want 2", v, err)
	}
	waitCluster(t, "the removed node out", nodes[0].p.URL, func(s clusterStatus) bool {
		for _, m := range s.Nodes {
			if m.NodeID == gone.id {
				return false
			}
		}
		return s.Leader != ""
	})
	for i := range 2 {
		refresh(t, nodes[i].p.URL, "")
		rel.releaseOnce(t, nodes[i].p.URL, token, "app")
		rel.releaseOnce(t, nodes[i].p.URL, token, "v1")
	}
	// A restart of each node that remains: it is admitted again and
	// takes the current version; the first node too, although its
	// dev-only master.key holds version 1 (its ledger holds a rekey).
	for _, n := range []*devNode{nodes[1], nodes[0]} {
		n.p.stopClean(syscall.SIGTERM)
		n.start(t)
		procs = append(procs, n.p)
		waitConverged(t, "after the restart of "+n.id, nodes[:2])
	}
	if !strings.Contains(nodes[0].p.stderr.String(), "rekeyed since the dev master key file was written") {
		t.Fatal("the first node, restarted after the rekey, was not admitted again first")
	}
	rel.releaseOnce(t, nodes[1].p.URL, token, "v1")
	waitConverged(t, "after the last release", nodes[:2])
	for _, n := range nodes {
		n.p.stopClean(syscall.SIGTERM)
	}

	var sec secretSet
	_, k1, _ := seal.ParseSecret(v1blob)
	_, k2, _ := seal.ParseSecret(v2blob)
	sec.bytes("ledger secret v1", k1)
	sec.bytes("ledger secret v1 (blob)", v1blob)
	sec.bytes("ledger secret v2", k2)
	sec.bytes("ledger secret v2 (blob)", v2blob)
	pl := &places{texts: map[string][]byte{}, exempt: map[string][]string{}}
	for _, pr := range procs {
		pl.proc(pr)
	}
	for i, n := range nodes {
		var exempt map[string][]string
		if i == 0 {
			exempt = map[string][]string{"master.key": {"ledger secret v1"}}
		}
		pl.tree(t, n.data, exempt)
	}
	if !holds(pl.texts[filepath.Join(nodes[0].data, "master.key")], sec, "ledger secret v1") {
		t.Fatal("master.key does not hold version 1: the search would miss it")
	}
	checkNoSecrets(t, pl, sec)

	// What the removed node held (version 1) opens nothing written after
	// the rekey; what the nodes that remain hold opens everything.
	removed, current := &seal.Versions{}, &seal.Versions{}
	if err := removed.Install(v1blob); err != nil {
		t.Fatal(err)
	}
	if err := current.Install(v2blob); err != nil {
		t.Fatal(err)
	}
	current.AddPrevious(2, rk.Previous)
	for _, n := range nodes[:2] {
		st, err := store.Open(n.data, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		before, after := 0, 0
		err = st.Scan(1, func(e *ledger.Entry) error {
			if len(e.Sealed) == 0 {
				return nil
			}
			ad := ledger.SealAD(e.Seq, e.Type)
			if _, err := current.Open(e.Sealed, ad); err != nil {
				t.Errorf("%s: entry %d (%s) does not open with the current version: %v", n.id, e.Seq, e.Type, err)
			}
			_, err := removed.Open(e.Sealed, ad)
			if e.Seq < rekeySeq {
				before++
				if err != nil {
					t.Errorf("%s: entry %d (%s), before the rekey, does not open with version 1: %v", n.id, e.Seq, e.Type, err)
				}
				return nil
			}
			after++
			if !errors.Is(err, seal.ErrUnknownVersion) {
				t.Errorf("%s: entry %d (%s), after the rekey, opened by the removed node's version: %v", n.id, e.Seq, e.Type, err)
			}
			if v := seal.BlobVersion(e.Sealed); v != 2 {
				t.Errorf("%s: entry %d (%s) sealed under version %d, want 2", n.id, e.Seq, e.Type, v)
			}
			return nil
		})
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		if before == 0 || after == 0 {
			t.Fatalf("%s: %d sealed entries before the rekey, %d after: the test checks nothing", n.id, before, after)
		}
		if _, err := keyring.Open(n.data, removed); err == nil {
			t.Errorf("%s: the keyring opens with the removed node's version", n.id)
		}
		if kr, err := keyring.Open(n.data, current); err != nil || len(kr.Kids()) == 0 {
			t.Errorf("%s: the keyring does not open with the current version: %v", n.id, err)
		}
		t.Logf("%s: %d sealed entries before the rekey at %d, %d after", n.id, before, rekeySeq, after)
	}
}
