package raftstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
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
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	cfg := raftstore.Config{
		NodeID: id, Listener: ln, Logger: opts.Logger, URL: "https://" + id + ".test",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		Admit: func(_ context.Context, req raftstore.JoinRequest) ([]byte, error) {
			if string(req.Evidence) == "refused" {
				return nil, errors.New("NODE_POLICY_DENIED: the test refuses it")
			}
			return append([]byte(nil), key...), nil
		},
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
		res, err = raftstore.Join(context.Background(), addr, raftstore.JoinRequest{NodeID: id, Address: adv}, nil)
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

func startCluster(t *testing.T, dir string, sealer seal.Sealer, key []byte, opts store.Options, onCommit func(store.Batch)) *cluster {
	c := &cluster{}
	first := startNode(t, filepath.Join(dir, "n1"), "n1", sealer, key, opts, "")
	first.Start(nil)
	c.nodes = append(c.nodes, first)
	for i := 2; i <= 3; i++ {
		n := startNode(t, filepath.Join(dir, fmt.Sprint("n", i)), fmt.Sprint("n", i), sealer, key, opts, first.addr())
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

// waitAll waits until every node holds n entries.
func (c *cluster) waitAll(t *testing.T, n uint64) {
	t.Helper()
	waitFor(t, fmt.Sprint("every node at entry ", n), func() bool {
		for _, nd := range c.nodes {
			if nd.Last() != n {
				return false
			}
		}
		return true
	})
}

// Three nodes pass the suite through a follower that forwards its appends
// to the leader.
func TestConformanceThreeNodesFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	sealer, key := newKey(t)
	storetest.Run(t, func(t *testing.T, dir string, onCommit func(store.Batch)) store.Ledger {
		return startCluster(t, dir, sealer, key, store.Options{}, onCommit)
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
	_, err := raftstore.Join(context.Background(), n1.addr(), raftstore.JoinRequest{NodeID: "n1", Address: ln.Addr().String()}, nil)
	if !errors.Is(err, raftstore.ErrNodeIDInUse) && (err == nil || !strings.Contains(err.Error(), "node id is in use")) {
		t.Fatalf("join with the leader's id: %v", err)
	}
	// A node that Config.Admit refuses gets its reason, and is no member.
	_, err = raftstore.Join(context.Background(), n1.addr(), raftstore.JoinRequest{NodeID: "n2", Address: ln.Addr().String(), Evidence: []byte("refused")}, nil)
	if !errors.Is(err, raftstore.ErrNodeRefused) || !strings.Contains(err.Error(), "NODE_POLICY_DENIED") {
		t.Fatalf("a refused join: %v", err)
	}
	if st := n1.Status(); len(st.Nodes) != 1 {
		t.Fatalf("a refused node became a member: %+v", st.Nodes)
	}
}

// A follower whose data directory is wiped joins again under its id and
// address and gets the ledger through a raft snapshot (the leader's log was
// trimmed), data keys included.
func TestWipedFollowerRestoresFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	sealer, key := newKey(t)
	var kept []string
	opts := store.Options{Replica: store.ReplicaHooks{
		DataKey: func(e *ledger.Entry) ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil },
		KeepDataKey: func(e *ledger.Entry, dk []byte) error {
			kept = append(kept, fmt.Sprintf("%d:%s", e.Seq, dk))
			return nil
		},
	}}
	dir := t.TempDir()
	c := startCluster(t, dir, sealer, key, store.Options{Replica: store.ReplicaHooks{DataKey: opts.Replica.DataKey}}, nil)
	defer c.Close()
	var leader *node
	for _, n := range c.nodes {
		if n.IsLeader() {
			leader = n
		}
	}
	ctx := context.Background()
	if _, err := c.Append(ctx, store.Proposal{Time: time.Unix(1, 0), Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k"}`), Secret: []byte("s"), DataKey: []byte("0123456789abcdef0123456789abcdef")}); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := c.Append(ctx, storetest.Published(i)); err != nil {
			t.Fatal(err)
		}
	}
	snapshotTrimmed(t, leader)
	victim := c.nodes[2]
	if victim == leader {
		victim = c.nodes[1]
	}
	if err := victim.Store.Close(); err != nil {
		t.Fatal(err)
	}
	addr := victim.addr()
	if err := os.RemoveAll(victim.dir); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(victim.dir, 0o700)
	os.WriteFile(filepath.Join(victim.dir, "addr"), []byte(addr), 0o600)
	again := startNode(t, victim.dir, victim.id, sealer, key, opts, leader.addr())
	again.Start(nil)
	*victim = *again
	waitFor(t, "the wiped node to catch up", func() bool { return again.Last() == leader.Last() })
	s1, r1 := leader.TreeHead()
	s2, r2 := again.TreeHead()
	if s1 != s2 || r1 != r2 {
		t.Fatalf("tree heads differ: %d %x vs %d %x", s1, r1, s2, r2)
	}
	if len(kept) != 1 || kept[0] != "1:0123456789abcdef0123456789abcdef" {
		t.Fatalf("data keys restored: %q", kept)
	}
}

// snapshotTrimmed has the leader take a snapshot that leaves little of
// the log: raft sends a wiped node the snapshot rather than the log.
func snapshotTrimmed(t *testing.T, leader *node) {
	t.Helper()
	rc := leader.Raft().ReloadableConfig()
	rc.TrailingLogs = 2
	if err := leader.Raft().ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}
	if err := leader.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
}

// A cluster founded on a ledger written by the embedded store: a node that
// joins gets the entries written before the cluster (from the snapshot the
// founder takes), then those written since.
func TestFoundOnExistingLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("two raft nodes")
	}
	sealer, key := newKey(t)
	dir := t.TempDir()
	d1 := existingLedger(t, filepath.Join(dir, "n1"), sealer)
	n1 := startNode(t, d1, "n1", sealer, key, store.Options{}, "")
	defer n1.Close()
	n1.Start(nil)
	waitFor(t, "a leader", n1.IsLeader)
	waitFor(t, "the founding snapshot", func() bool { return n1.Raft().Stats()["last_snapshot_index"] != "0" })
	n2 := startNode(t, filepath.Join(dir, "n2"), "n2", sealer, key, store.Options{}, n1.addr())
	defer n2.Close()
	n2.Start(nil)
	if _, err := n2.Append(context.Background(), storetest.Published(6)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the joined node to hold every entry", func() bool { return n2.Last() == 6 && n1.Last() == 6 })
	s1, r1 := n1.TreeHead()
	s2, r2 := n2.TreeHead()
	if s1 != s2 || r1 != r2 {
		t.Fatalf("tree heads differ: %d %x vs %d %x", s1, r1, s2, r2)
	}
}

// existingLedger writes five entries with the embedded store in dir, a
// ledger to found a cluster on, and returns dir.
func existingLedger(t *testing.T, dir string, sealer seal.Sealer) string {
	t.Helper()
	l, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	l.Start(nil)
	for i := range 5 {
		if _, err := l.Append(context.Background(), storetest.Published(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A node that asks to join a founder before its snapshot of the ledger
// it founded on is taken is told to come back (ErrFounding, not a
// refusal): had it joined, raft would have sent it the log without the
// entries before it. Once the snapshot is taken it joins and holds them.
func TestNoJoinBeforeFoundingSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("two raft nodes")
	}
	sealer, key := newKey(t)
	dir := t.TempDir()
	d1 := existingLedger(t, filepath.Join(dir, "n1"), sealer)
	release := raftstore.HoldFoundingSnapshot()
	defer release()
	n1 := startNode(t, d1, "n1", sealer, key, store.Options{}, "")
	defer n1.Close()
	n1.Start(nil)
	waitFor(t, "a leader", n1.IsLeader)
	ln := listen(t, filepath.Join(dir, "n2"))
	_, err := raftstore.Join(context.Background(), n1.addr(), raftstore.JoinRequest{NodeID: "n2", Address: ln.Addr().String()}, nil)
	ln.Close()
	if !errors.Is(err, raftstore.ErrFounding) || !errors.Is(err, raftstore.ErrNoLeader) {
		t.Fatalf("a join before the founding snapshot: %v, want ErrFounding", err)
	}
	if st := n1.Status(); len(st.Nodes) != 1 {
		t.Fatalf("a node joined before the founding snapshot: %+v", st.Nodes)
	}
	release()
	n2 := startNode(t, filepath.Join(dir, "n2"), "n2", sealer, key, store.Options{}, n1.addr())
	defer n2.Close()
	n2.Start(nil)
	if _, err := n2.Append(context.Background(), storetest.Published(6)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the joined node to hold every entry", func() bool { return n2.Last() == 6 })
	s1, r1 := n1.TreeHead()
	s2, r2 := n2.TreeHead()
	if s1 != s2 || r1 != r2 {
		t.Fatalf("tree heads differ: %d %x vs %d %x", s1, r1, s2, r2)
	}
}

// A raft log entry that does not decode (a malformed message from a peer
// that holds a node certificate) is skipped alike by every node: nothing
// is applied, and the cluster goes on. The cluster API refuses a request
// that does not parse.
func TestMalformedCommandIsSkipped(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	sealer, key := newKey(t)
	c := startCluster(t, t.TempDir(), sealer, key, store.Options{}, nil)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Append(ctx, storetest.Published(1)); err != nil {
		t.Fatal(err)
	}
	var leader *node
	for _, n := range c.nodes {
		if n.IsLeader() {
			leader = n
		}
	}
	for _, garbage := range [][]byte{[]byte("not json"), []byte(`{"groups":[{"records":["AAAA"]}]}`), []byte(`{"groups":[{"records":[]}]}`)} {
		f := leader.Raft().Apply(garbage, 10*time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Append(ctx, storetest.Published(2)); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, 2)
	resp, err := http.Post("http://"+leader.addr()+"/cluster/v1/append", "application/json", strings.NewReader(`{"proposals":[{"type":"key.published","body":"e30=","bogus":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a malformed append request: %s, want 400", resp.Status)
	}
}

// A malformed raft message on the node-to-node port (what a peer that
// holds a node certificate could send; without one, mutual TLS refuses
// it first): an RPC that does not decode, an RPC type raft does not know.
// Each node refuses it with a clear error in its log and closes the
// connection; nothing is applied, and the cluster goes on.
func TestMalformedRaftMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	sealer, key := newKey(t)
	var logs syncBuffer
	c := startCluster(t, t.TempDir(), sealer, key, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Append(ctx, storetest.Published(1)); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, 1)
	for _, msg := range []struct {
		name  string
		bytes []byte
		log   string
	}{
		// rpcAppendEntries (0), then a byte msgpack never uses.
		{"an AppendEntries that does not decode", []byte{0, 0xc1, 0xc1, 0xc1}, "failed to decode incoming command"},
		// rpcRequestVote (1), then a map whose key is not a string.
		{"a RequestVote that does not decode", []byte{1, 0x81, 0xc1, 0xc1}, "failed to decode incoming command"},
		{"an unknown RPC type", []byte{0x1f, 0, 0, 0}, "unknown rpc type 31"},
	} {
		for _, n := range c.nodes {
			logs.Reset()
			conn, err := net.Dial("tcp", n.addr())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(msg.bytes); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("%s to %s: the connection was not closed: %v", msg.name, n.id, err)
			}
			conn.Close()
			waitFor(t, msg.name+" logged by "+n.id, func() bool { return strings.Contains(logs.String(), msg.log) })
		}
	}
	for _, n := range c.nodes {
		if n.Last() != 1 {
			t.Fatalf("%s holds %d entries after the malformed messages, want 1", n.id, n.Last())
		}
	}
	if _, err := c.Append(ctx, storetest.Published(2)); err != nil {
		t.Fatal(err)
	}
	c.waitAll(t, 2)
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Reset()
}

// Every node's GET /v1/cluster lists every member with its URL, state and
// last index, as the member reports them, and the same leader.
func TestStatusOnEveryNode(t *testing.T) {
	sealer, key := newKey(t)
	c := startCluster(t, t.TempDir(), sealer, key, store.Options{}, nil)
	defer c.Close()
	var last string
	waitFor(t, "every node to see three voters and one leader", func() bool {
		leaders := map[string]bool{}
		for _, n := range c.nodes {
			st := n.Status()
			last = fmt.Sprintf("%+v", st)
			if st.NodeID != n.id || st.Leader == "" || len(st.Nodes) != 3 || st.CommitIndex == 0 {
				return false
			}
			leaders[st.Leader] = true
			nLeaders := 0
			for _, m := range st.Nodes {
				if m.URL != "https://"+m.NodeID+".test" || m.LastIndex == 0 || m.Suffrage != "voter" || m.Address == "" {
					return false
				}
				switch m.State {
				case "leader":
					nLeaders++
					if m.NodeID != st.Leader {
						return false
					}
				case "follower":
				default:
					return false
				}
			}
			if nLeaders != 1 {
				return false
			}
		}
		return len(leaders) == 1
	})
	t.Log(last)

	// Concurrent requests share their calls to the other members: 40 at
	// once cost each other member far fewer than 40 calls.
	before := make([]int64, len(c.nodes))
	for i, n := range c.nodes {
		before[i] = n.NodeAsks()
	}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			<-gate
			if st := c.nodes[0].Status(); len(st.Nodes) != 3 {
				t.Errorf("a concurrent status: %+v", st)
			}
		})
	}
	close(gate)
	wg.Wait()
	for i, n := range c.nodes[1:] {
		if asks := n.NodeAsks() - before[i+1]; asks < 1 || asks > 20 {
			t.Errorf("40 concurrent statuses at %s asked %s %d times; want between 1 and 20", c.nodes[0].id, n.id, asks)
		}
	}

	// A member that is down is unreachable; its URL is the one it last
	// reported.
	down := c.nodes[2]
	if down.IsLeader() {
		down = c.nodes[1]
	}
	down.Close()
	for _, n := range c.nodes {
		if n == down {
			continue
		}
		for _, m := range n.Status().Nodes {
			if m.NodeID == down.id && (m.State != "unreachable" || m.URL != "https://"+down.id+".test" || m.LastIndex != 0) {
				t.Errorf("%s sees the stopped %s as %+v", n.id, down.id, m)
			}
		}
	}
}

// A rekey in a cluster whose nodes hold versioned ledger secrets: what the
// leader seals after a ledger.rekeyed entry is sealed under its version
// (the leader waits for it to be applied first), and a wiped node that
// holds only the version before it restores a snapshot across it: each
// data key is sealed under the version of its entry, and the rekey is
// applied (here: its version installed, as the kms does) before the data
// keys that follow it are opened.
func TestSnapshotAcrossRekey(t *testing.T) {
	if testing.Short() {
		t.Skip("three raft nodes")
	}
	v1 := seal.NewVersions()
	v1blob, _ := v1.Secret()
	v2blob, prev, err := v1.Next()
	if err != nil {
		t.Fatal(err)
	}
	dk := func(seq uint64) []byte { return fmt.Appendf(nil, "data key of entry %016d", seq) }
	type member struct {
		vs   *seal.Versions
		kept map[uint64]string
		mu   sync.Mutex
	}
	mk := func() (*member, store.Options) {
		m := &member{vs: &seal.Versions{}, kept: map[uint64]string{}}
		if err := m.vs.Install(v1blob); err != nil {
			t.Fatal(err)
		}
		return m, store.Options{Replica: store.ReplicaHooks{
			DataKey: func(e *ledger.Entry) ([]byte, error) { return dk(e.Seq), nil },
			KeepDataKey: func(e *ledger.Entry, k []byte) error {
				m.mu.Lock()
				defer m.mu.Unlock()
				m.kept[e.Seq] = string(k)
				return nil
			},
			Applied: func(e *ledger.Entry) {
				if e.Type == ledger.TypeLedgerRekeyed {
					m.vs.AddPrevious(2, prev)
					if err := m.vs.Install(v2blob); err != nil {
						t.Error(err)
					}
				}
			},
		}}
	}
	dir := t.TempDir()
	var nodes []*node
	var members []*member
	for i := 1; i <= 3; i++ {
		m, opts := mk()
		join := ""
		if i > 1 {
			join = nodes[0].addr()
		}
		n := startNode(t, filepath.Join(dir, fmt.Sprint("n", i)), fmt.Sprint("n", i), m.vs, []byte("handoff"), opts, join)
		n.Start(nil)
		nodes, members = append(nodes, n), append(members, m)
	}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	var leader *node
	waitFor(t, "a leader", func() bool {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
			}
		}
		return leader != nil
	})
	ctx := context.Background()
	created := func(i int) store.Proposal {
		return store.Proposal{Time: time.Unix(1, 0), Type: ledger.TypeKeyCreated, Body: fmt.Appendf(nil, `{"kid":"k%d"}`, i), Secret: []byte("private key"), DataKey: dk(uint64(i))}
	}
	dkOf := map[uint64]uint64{} // seq -> the i of its data key
	var mu sync.Mutex
	var rekeySeq uint64
	appendOne := func(i int, p store.Proposal) {
		es, err := leader.Append(ctx, p)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if p.Type == ledger.TypeLedgerRekeyed {
			rekeySeq = es[0].Seq
		} else {
			dkOf[es[0].Seq] = uint64(i)
		}
	}
	appendOne(1, created(1))
	// The rekey and keys created at the same time: each key is sealed
	// under the version in force at its entry.
	var wg sync.WaitGroup
	wg.Go(func() {
		appendOne(0, store.Proposal{Time: time.Unix(2, 0), Type: ledger.TypeLedgerRekeyed, Body: []byte(`{"version":2}`)})
	})
	for i := 2; i < 8; i++ {
		wg.Go(func() { appendOne(i, created(i)) })
	}
	wg.Wait()
	appendOne(8, created(8))
	for i := range 20 {
		if _, err := leader.Append(ctx, storetest.Published(i)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := range dkOf {
		e, err := leader.Get(seq)
		if err != nil {
			t.Fatal(err)
		}
		want := uint32(1)
		if seq > rekeySeq {
			want = 2
		}
		if got := seal.BlobVersion(e.Sealed); got != want {
			t.Errorf("entry %d (%s) sealed under version %d, want %d (the rekey is entry %d)", e.Seq, e.Type, got, want, rekeySeq)
		}
	}
	snapshotTrimmed(t, leader)
	vi := 2
	if nodes[vi] == leader {
		vi = 1
	}
	victim := nodes[vi]
	if err := victim.Store.Close(); err != nil {
		t.Fatal(err)
	}
	addr := victim.addr()
	os.RemoveAll(victim.dir)
	os.MkdirAll(victim.dir, 0o700)
	os.WriteFile(filepath.Join(victim.dir, "addr"), []byte(addr), 0o600)
	m, opts := mk() // holds version 1 only
	again := startNode(t, victim.dir, victim.id, m.vs, []byte("handoff"), opts, leader.addr())
	again.Start(nil)
	nodes[vi], members[vi] = again, m
	waitFor(t, "the wiped node to catch up", func() bool { return again.Last() == leader.Last() })
	m.mu.Lock()
	defer m.mu.Unlock()
	for seq := range dkOf { // from the snapshot: the leader's DataKey hook's
		if m.kept[seq] != string(dk(seq)) {
			t.Errorf("entry %d: restored data key %q", seq, m.kept[seq])
		}
	}
	if m.vs.Current() != 2 {
		t.Errorf("the restored node holds version %d", m.vs.Current())
	}
}
