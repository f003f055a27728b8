package kms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// clusterNode is a Service over a node of a raft cluster in this process.
type clusterNode struct {
	id    string
	addr  string
	svc   *Service
	rs    *raftstore.Store
	admit atomic.Pointer[Service] // svc, once open, for raftstore's Admit
}

func openClusterNode(t *testing.T, dir, id string, key []byte, clk *clock, join string) *clusterNode {
	t.Helper()
	return openClusterNodeWith(t, dir, id, key, clk, join, nil)
}

// versionedNode makes a cluster node of the test a node of a real
// cluster: its ledger secret is versions (the founder's, or installed
// from its handoff), it has a node identity, and the founder governs the
// ledger with gov.
type versionedNode struct {
	versions *seal.Versions
	identity *node.Identity
	gov      *GovInit
}

func openClusterNodeWith(t *testing.T, dir, id string, key []byte, clk *clock, join string, vn *versionedNode) *clusterNode {
	t.Helper()
	var sealer seal.Sealer
	if vn == nil {
		s, err := seal.New(key)
		if err != nil {
			t.Fatal(err)
		}
		sealer = s
	} else {
		sealer = vn.versions
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The nodes share one simulated TEE (the chain in dir's parent).
	na := simAdmission(t, filepath.Dir(dir), key)
	if vn != nil {
		na.Secrets = vn.versions.Secret
	}
	n := &clusterNode{id: id, addr: ln.Addr().String()}
	cfg := raftstore.Config{
		NodeID: id, Listener: ln, Logger: quiet, Bootstrap: join == "",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		Admit: func(ctx context.Context, req raftstore.JoinRequest) ([]byte, error) {
			svc := n.admit.Load()
			if svc == nil {
				return nil, raftstore.ErrNoLeader
			}
			e, err := svc.AdmitNode(ctx, na, req.NodeID, req.NodeKey, req.TLSKey, req.Evidence)
			if err != nil {
				return nil, err
			}
			return ledger.MarshalRecord(e), nil
		},
	}
	if join != "" {
		ident := simNode(t, filepath.Dir(dir), nil)
		if vn != nil {
			ident = vn.identity
		}
		req := raftstore.JoinRequest{NodeID: id, Address: ln.Addr().String(), NodeKey: ident.Public, TLSKey: ident.TLSKey, Evidence: ident.Evidence}
		for range 100 {
			cfg.Joined, err = raftstore.Join(context.Background(), join, req, nil)
			if !errors.Is(err, raftstore.ErrNoLeader) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.UnmarshalRecord(cfg.Joined.Handoff)
		if err != nil {
			t.Fatal(err)
		}
		mk, err := OpenHandoff(e, ident)
		if vn != nil && err == nil {
			err = vn.versions.Install(mk)
		} else if err == nil && !bytes.Equal(mk, key) {
			err = errors.New("another master key")
		}
		if err != nil {
			t.Fatalf("the join handed over another master key (%v)", err)
		}
	}
	cfg2 := Config{
		DataDir: dir, Sealer: sealer, ServiceName: "cluster", RotationPolicy: testPolicy(),
		Now: clk.Now, Logger: quiet, Joined: join != "",
		OpenLedger: func(dir string, opts store.Options) (store.Ledger, error) {
			rs, err := raftstore.Open(dir, opts, cfg)
			n.rs = rs
			return rs, err
		},
	}
	if vn != nil {
		cfg2.Versions, cfg2.Identity, cfg2.Governance = vn.versions, vn.identity, vn.gov
	}
	svc, err := Open(context.Background(), cfg2)
	if err != nil {
		t.Fatal(err)
	}

	n.svc = svc
	n.admit.Store(svc)
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A cluster of three services: any node records releases, only the leader
// rotates, every node has the key material and signs the same checkpoint
// with the one log key, a release decided on stale state is refused at
// apply time by every node, and the cluster goes on when its leader stops.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	dir := t.TempDir()
	key := seal.NewKey()
	clk := &clock{t: t0}
	n1 := openClusterNode(t, filepath.Join(dir, "n1"), "n1", key, clk, "")
	waitUntil(t, "n1 to lead", n1.svc.IsLeader)
	if _, err := n1.svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	nodes := []*clusterNode{n1}
	for _, id := range []string{"n2", "n3"} {
		nodes = append(nodes, openClusterNode(t, filepath.Join(dir, id), id, key, clk, n1.addr))
	}
	defer func() {
		for _, n := range nodes {
			n.svc.Close()
		}
	}()
	converged := func(ns []*clusterNode) func() bool {
		return func() bool {
			want := ns[0].svc.Checkpoint()
			for _, n := range ns[1:] {
				if got := n.svc.Checkpoint(); got.Size != want.Size || !bytes.Equal(got.Note, want.Note) {
					return false
				}
			}
			return want.Size > 0
		}
	}
	waitUntil(t, "the joined nodes to catch up", converged(nodes))

	// A follower's scheduler does nothing; the leader's rotates.
	n2 := nodes[1]
	seq := n2.svc.Seq()
	if _, err := n2.svc.Tick(context.Background()); err != nil || n2.svc.Seq() != seq {
		t.Fatalf("a follower's tick: %v, wrote %d entries", err, n2.svc.Seq()-seq)
	}
	k, err := n1.svc.Rotate(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new key on every node", converged(nodes))

	// Followers hold the key's private half (its data key came with it)
	// and record releases through the leader.
	want, err := n1.svc.PrivateKey(k.Kid)
	if err != nil {
		t.Fatal(err)
	}
	var pseq uint64
	n2.svc.Read(func(st *state.State) { pseq = st.ReleasePolicySeq })
	for _, n := range nodes[1:] {
		got, err := n.svc.PrivateKey(k.Kid)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: private key: %v", n.id, err)
		}
		rel := state.KeyReleased{Kids: []string{k.Kid}, API: "v1/release", Issuer: "https://issuer", Identity: n.id, EvidenceType: "snp", PolicySeq: pseq}
		e, err := n.svc.RecordRelease(context.Background(), rel)
		if err != nil {
			t.Fatalf("%s: release: %v", n.id, err)
		}
		if _, err := n.svc.Receipt(e.Seq); err != nil {
			t.Fatalf("%s: receipt of its own release: %v", n.id, err)
		}
	}

	// A release ordered after a state that no longer allows it (here: a
	// policy that is not in force) is refused by the apply-time check.
	before := n1.svc.Seq()
	stale, _ := json.Marshal(state.KeyReleased{Kids: []string{k.Kid}, API: "v1/release", Issuer: "https://issuer", Identity: "stale", EvidenceType: "snp", PolicySeq: pseq + 99})
	_, err = n2.svc.store.Append(context.Background(), store.Proposal{Time: clk.Now(), Type: ledger.TypeKeyReleased, Body: stale})
	if !errors.Is(err, store.ErrRejected) {
		t.Fatalf("a stale release: %v, want store.ErrRejected", err)
	}
	if n1.svc.Seq() != before {
		t.Fatal("the refused release was written")
	}

	// The leader stops: another takes over and the cluster goes on.
	waitUntil(t, "three voters", func() bool {
		f := n1.rs.Raft().GetConfiguration()
		if f.Error() != nil {
			return false
		}
		voters := 0
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
			}
		}
		return voters == 3
	})
	n1.svc.Close()
	rest := nodes[1:]
	nodes = rest
	waitUntil(t, "a new leader", func() bool { return rest[0].svc.IsLeader() || rest[1].svc.IsLeader() })
	for _, n := range rest {
		rel := state.KeyReleased{Kids: []string{k.Kid}, API: "v1/release", Issuer: "https://issuer", Identity: "after-" + n.id, EvidenceType: "snp", PolicySeq: pseq}
		for i := 0; ; i++ {
			_, err := n.svc.RecordRelease(context.Background(), rel)
			if err == nil {
				break
			}
			if !errors.Is(err, raftstore.ErrNoLeader) || i > 100 {
				t.Fatalf("%s: release after the leader stopped: %v", n.id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitUntil(t, "the two nodes to converge", converged(rest))
	cp := rest[0].svc.Checkpoint()
	if _, err := rest[0].svc.Receipt(uint64(cp.Size)); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged at %d entries", cp.Size)
}
