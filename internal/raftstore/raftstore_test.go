package raftstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/store/storetest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A node of a test cluster: the listener's port is kept in the data
// directory so that a node restarted on it has the address the cluster
// knows.
type node struct {
	id  string
	dir string
	*raftstore.Store
}

func listen(t *testing.T, dir string) net.Listener {
	t.Helper()
	addrFile := filepath.Join(dir, "addr")
	addr := "127.0.0.1:0"
	if b, err := os.ReadFile(addrFile); err == nil {
		addr = string(b)
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a node just closed may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir, 0o700)
	if err := os.WriteFile(addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return ln
}

func startNode(t *testing.T, dir, id string, sealer seal.Sealer, key []byte, opts store.Options, join string) *node {
	t.Helper()
	ln := listen(t, dir)
	cfg := raftstore.Config{
		NodeID: id, Listener: ln, Logger: quiet,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		MasterKey: func() ([]byte, error) { return append([]byte(nil), key...), nil },
	}
	_, err := os.Stat(filepath.Join(dir, "raft", "raft.db"))
	fresh := errors.Is(err, os.ErrNotExist)
	switch {
	case fresh && join == "":
		cfg.Bootstrap = true
	case fresh:
		res, err := joinRetry(join, id, ln.Addr().String())
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		cfg.Joined = res
	}
	opts.Sealer = sealer
	opts.Logger = quiet
	s, err := raftstore.Open(dir, opts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &node{id: id, dir: dir, Store: s}
}

func joinRetry(addr, id, adv string) (*raftstore.JoinResult, error) {
	var err error
	for range 100 {
		var res *raftstore.JoinResult
		res, err = raftstore.Join(context.Background(), addr, id, adv, nil)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, raftstore.ErrNoLeader) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

func (n *node) addr() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "addr"))
	return string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newKey(t *testing.T) (*seal.AESGCM, []byte) {
	key := seal.NewKey()
	s, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s, key
}

// A one-node cluster passes the conformance suite of the embedded store.
func TestConformanceOneNode(t *testing.T) {
	sealer, key := newKey(t)
	storetest.Run(t, func(t *testing.T, dir string, onCommit func(store.Batch)) store.Ledger {
		n := startNode(t, dir, "n1", sealer, key, store.Options{}, "")
		n.Start(onCommit)
		waitFor(t, "a leader", n.IsLeader)
		return n.Store
	})
}

// cluster is three nodes seen as one ledger through a follower: appends
// are forwarded to the leader.
type cluster struct {
	*raftstore.Store
	nodes []*node
}

func (c *cluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.Store.Close())
	}
	return errors.Join(errs...)
}

func startCluster(t *testing.T, dir string, sealer seal.Sealer, key []byte, onCommit func(store.Batch)) *cluster {
	c := &cluster{}
	first := startNode(t, filepath.Join(dir, "n1"), "n1", sealer, key, store.Options{}, "")
	first.Start(nil)
	c.nodes = append(c.nodes, first)
	for i := 2; i <= 3; i++ {
		n := startNode(t, filepath.Join(dir, fmt.Sprint("n", i)), fmt.Sprint("n", i), sealer, key, store.Options{}, first.addr())
		c.nodes = append(c.nodes, n)
	}
	c.nodes[1].Start(onCommit)
	c.nodes[2].Start(nil)
	waitFor(t, "a leader", func() bool {
		for _, n := range c.nodes {
			if n.IsLeader() {
				return true
			}
		}
		return false
	})
	// The ledger under test is the second node, a follower unless an
	// election made it the leader.
	c.Store = c.nodes[1].Store
	return c
}

// Three nodes pass the suite through a follower that forwards its appends
// to the leader.
func TestConformanceThreeNodesFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	sealer, key := newKey(t)
	storetest.Run(t, func(t *testing.T, dir string, onCommit func(store.Batch)) store.Ledger {
		return startCluster(t, dir, sealer, key, onCommit)
	})
}

func TestJoinRefusesNodeIDInUse(t *testing.T) {
	sealer, key := newKey(t)
	dir := t.TempDir()
	n1 := startNode(t, filepath.Join(dir, "n1"), "n1", sealer, key, store.Options{}, "")
	defer n1.Close()
	n1.Start(nil)
	waitFor(t, "a leader", n1.IsLeader)
	ln := listen(t, filepath.Join(dir, "x"))
	defer ln.Close()
	_, err := raftstore.Join(context.Background(), n1.addr(), "n1", ln.Addr().String(), nil)
	if !errors.Is(err, raftstore.ErrNodeIDInUse) && (err == nil || !strings.Contains(err.Error(), "node id is in use")) {
		t.Fatalf("join with the leader's id: %v", err)
	}
}
