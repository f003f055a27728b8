// Package raftstore replicates the tkms ledger over a cluster of nodes
// with hashicorp/raft: it is the second implementation of store.Ledger,
// beside the embedded single-node file of package store, and passes the
// same conformance suite (package storetest).
//
// Every ledger entry travels in a raft log entry. The leader numbers the
// entries of each append and seals their secrets (the sealed part is bound
// to the entry's sequence number, and its hash is in the public leaf, so it
// must be the same on every node); the FSM of every node writes committed
// entries to its own copy of the ledger, a store.Store in the data
// directory, whose committer applies them to the service state. Apply is
// deterministic: times, keys and randomness come in the entry. An entry
// whose sequence number no longer follows the ledger (proposed by a leader
// that lost its place) is skipped by every node alike and proposed again
// with a new number; an entry the service's Check hook refuses at apply
// time is skipped and its append fails.
//
// The raft log, its stable store (raft-boltdb) and raft's snapshots live
// in the "raft" directory beside the ledger. A raft snapshot is the
// ledger itself: its entries, with the data keys of the live keys sealed
// under the master key, so a node that lost its data, or joins late,
// restores the whole log.
//
// A node that is not the leader forwards appends to the leader over the
// cluster's HTTP API (mutual TLS, the same port as raft) and returns once
// its own copy has applied them, so a writer reads its own write.
package raftstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Errors.
var (
	// ErrNoLeader: the cluster has no leader this node can reach (an
	// election is under way, or this node is in a minority partition).
	// Nothing was written; the client should retry after a short wait.
	ErrNoLeader = errors.New("raftstore: the cluster has no leader (no quorum): retry shortly")
	// ErrRejected: the entry was refused at apply time (Check).
	ErrRejected = store.ErrRejected
	// ErrFounding: the founder of a cluster on an existing ledger admits
	// no node until its raft snapshot of that ledger is taken (a node
	// that joined before would get the raft log without the entries
	// before it). A large ledger takes a while; the joining node should
	// retry.
	ErrFounding = fmt.Errorf("%w: the founding node is still taking the raft snapshot of the ledger it founded the cluster with (a large ledger takes a while)", ErrNoLeader)
)

// Config configures a node.
type Config struct {
	// NodeID names this node in the cluster; it never changes for a
	// data directory.
	NodeID string
	// Listener accepts the connections of the other nodes (raft and the
	// cluster API). Its address, or Advertise, is this node's address.
	Listener net.Listener
	// Advertise is the host:port the other nodes dial (default: the
	// listener's address).
	Advertise string
	// TLS, if set, makes node-to-node traffic mutual TLS (transport.go):
	// it holds this node's certificate (Certificates, or GetCertificate
	// and GetClientCertificate when it changes, as when a restarted
	// node's key is endorsed). With CheckPeer set, peers are verified by
	// CheckPeer alone; without, by the config's RootCAs and ClientCAs
	// (with ClientAuth tls.RequireAndVerifyClientCert). Nil means plain
	// TCP, for tests on loopback only.
	TLS *tls.Config
	// CheckPeer decides whether a peer may speak raft and the cluster API
	// with this node, from its TLS connection state (its certificate):
	// at every handshake, both ways, and each second on the open
	// connections, which are closed once it refuses (a removed node).
	CheckPeer func(cs tls.ConnectionState) error
	// JoinTLS, if set, is the server configuration of joins (ALPN
	// ProtoJoin): the certificate shown to a joining node and how its
	// client certificate is checked (an operator's CA, as an outer
	// layer). Nil: TLS's certificate, and no client certificate. A
	// joining node is authenticated by its evidence (Admit).
	JoinTLS *tls.Config
	// Vouch, if set, is shown the join request of a node that restarts as
	// a member of the cluster's configuration, on whichever node receives
	// it, before it is forwarded or decided: it may accept the node's
	// TLS key for a while, once its evidence passes, since a cluster that
	// lost its quorum may need the node's vote to elect the leader that
	// admits it.
	Vouch func(ctx context.Context, req JoinRequest)
	// URL is this node's API, as shown in its Status.
	URL string
	// Bootstrap starts a new cluster of this one node when the data
	// directory holds no raft state.
	Bootstrap bool
	// Joined, if set, is the answer of Join: the node was added as a
	// non-voter and asks to be promoted to a voter once it has applied
	// the cluster's log up to Joined.CommitIndex.
	Joined *JoinResult
	// Admit decides, when this node leads, whether a joining node
	// receives the ledger's secrets, and returns its handoff (see
	// handoff.go): opaque bytes for the joining node. An error refuses
	// the node, and its message goes to the node.
	Admit func(ctx context.Context, req JoinRequest) (handoff []byte, err error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Timing (cluster.raft, and tests); zero values take raft's
	// defaults, 1 s each.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// SnapshotThreshold is how many raft log entries trigger a snapshot
	// (and the log's trimming); default 8192.
	SnapshotThreshold uint64
	// TrailingLogs is how many raft log entries a snapshot leaves in the
	// log, for followers a little behind; default 1024.
	TrailingLogs uint64
	// SnapshotInterval is how often raft checks whether SnapshotThreshold
	// is reached (each check after a random wait of one to two
	// intervals); default raft's, 120 s.
	SnapshotInterval time.Duration
}

// Store is one node's replicated ledger.
type Store struct {
	cfg    Config
	opts   store.Options
	log    *slog.Logger
	local  *store.Store
	sealer seal.Sealer

	mux       *mux
	raft      *raft.Raft
	boltStore *raftboltdb.BoltStore
	trans     *raft.NetworkTransport
	httpSrv   *http.Server
	joinSrv   *http.Server
	client    *http.Client
	peers     peerConns

	// started gates the FSM: before Start it writes to the local ledger
	// without an onCommit hook; Start swaps the hook in.
	startMu  sync.Mutex
	onCommit func(store.Batch)
	started  bool
	// closedBeforeStart: the service never started, its hooks must not
	// be called.
	closedBeforeStart bool

	reqs     chan *pending
	inflight chan *flight
	ready    atomic.Bool // leader, and its FSM has applied every earlier entry
	// caughtUpFloor is a raft index this node must have applied before
	// WaitCaughtUp reports it caught up: the leader's commit index when
	// it (re)admitted the node. A follower's own commit index grows one
	// AppendEntries batch at a time, so it alone says too early that a
	// fresh node caught up.
	caughtUpFloor atomic.Uint64
	closing       chan struct{}
	closeMu       sync.RWMutex
	closed        bool
	wg            sync.WaitGroup
	applied       chan struct{} // closed and replaced after each apply
	appliedM      sync.Mutex
	// appliedSeq is the last entry the service has applied (onCommit
	// returned), which a forwarded append waits for.
	appliedSeq uint64
	fsmMu      sync.Mutex // held by the FSM while it applies or restores
	renumber   atomic.Bool
	// founding: this node founded the cluster on an existing ledger and
	// has not taken its raft snapshot yet; it admits no node meanwhile.
	founding atomic.Bool

	peerMu   sync.Mutex
	peerURLs map[string]string // the URL each member last reported (status.go)
	// peerViews is what the other members last reported of themselves,
	// shared by concurrent GET /v1/cluster requests (status.go).
	peerViewMu sync.Mutex
	peerViews  map[raft.ServerID]peerView
	nodeAsks   atomic.Int64 // POST /cluster/v1/node requests served
}

var _ store.Ledger = (*Store)(nil)

// Open opens the node's ledger in dir and starts its raft node, which
// joins the cluster it was part of (or, with Bootstrap, starts one).
// Committed entries are written to the ledger at once; the service sees
// them (onCommit) from Start on, and reads the ledger as it stands before
// that.
func Open(dir string, opts store.Options, cfg Config) (*Store, error) {
	if cfg.NodeID == "" || cfg.Listener == nil {
		return nil, errors.New("raftstore: a node needs an id and a listener")
	}
	if opts.Sealer == nil {
		return nil, errors.New("raftstore: no master key")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 8192
	}
	local, err := store.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg: cfg, opts: opts, log: cfg.Logger.With("node", cfg.NodeID), local: local, sealer: opts.Sealer,
		reqs: make(chan *pending, 4096), inflight: make(chan *flight, 64), closing: make(chan struct{}),
		applied: make(chan struct{}),
	}
	s.appliedSeq = local.Last()
	local.Start(s.localCommit)
	s.fsmMu.Lock() // released by Start: the service reads the ledger first
	if err := s.startRaft(dir); err != nil {
		s.shutdown()
		return nil, err
	}
	return s, nil
}

func (s *Store) startRaft(dir string) error {
	rdir := filepath.Join(dir, "raft")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{s.log}})
	var err error
	s.boltStore, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(rdir, "raft.db")})
	if err != nil {
		return fmt.Errorf("raftstore: raft log: %w", err)
	}
	logs, err := raft.NewLogCache(512, s.boltStore)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(rdir, 1, hlog)
	if err != nil {
		return fmt.Errorf("raftstore: snapshots: %w", err)
	}
	adv := s.cfg.Advertise
	if adv == "" {
		adv = s.cfg.Listener.Addr().String()
	}
	advAddr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		return fmt.Errorf("raftstore: advertise address %q: %w", adv, err)
	}
	var serverTLS, clientTLS *tls.Config
	if tc := s.newTLSConfigs(); tc != nil {
		serverTLS, clientTLS = tc.server, tc.client
	}
	s.mux = newMux(s.cfg.Listener, serverTLS, &s.peers, s.log)
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{subListener: s.mux.raft, advertise: advAddr, tls: clientTLS, peers: &s.peers},
		MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
	})
	tr := &http.Transport{ForceAttemptHTTP2: false}
	if clientTLS != nil {
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.peers.dial(ctx, &net.Dialer{Timeout: 10 * time.Second}, addr, clientTLS)
		}
	}
	s.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.httpSrv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	go s.httpSrv.Serve(s.mux.http)
	joins := http.NewServeMux()
	joins.HandleFunc("POST /cluster/v1/join", s.serveJoin)
	s.joinSrv = &http.Server{Handler: joins, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	go s.joinSrv.Serve(s.mux.join)
	if s.cfg.TLS != nil && s.cfg.CheckPeer != nil {
		// The node-to-node connections whose peer CheckPeer refuses now
		// (a node removed by governance) are closed.
		s.wg.Add(1)
		go s.every(time.Second, func() { s.peers.recheck(s.cfg.CheckPeer, s.log) })
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.TrailingLogs = s.cfg.TrailingLogs
	if rc.TrailingLogs == 0 {
		rc.TrailingLogs = 1024
	}
	if s.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = s.cfg.SnapshotInterval
	}
	rc.NoSnapshotRestoreOnStart = true // the ledger file is the FSM's durable state
	if s.cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
		rc.LeaderLeaseTimeout = s.cfg.HeartbeatTimeout / 2
	}
	if s.cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = s.cfg.ElectionTimeout
	}
	existing, err := raft.HasExistingState(logs, s.boltStore, snaps)
	if err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	s.raft, err = raft.NewRaft(rc, &fsm{s}, logs, s.boltStore, snaps, s.trans)
	if err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	if !existing && s.cfg.Bootstrap {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: s.trans.LocalAddr()}}})
		if err := f.Error(); err != nil {
			return fmt.Errorf("raftstore: bootstrap: %w", err)
		}
		if s.local.Last() > 0 {
			// A cluster founded on an existing ledger: its entries are in
			// no raft log entry, so a joining node must get them from a
			// snapshot, and no node joins before it is taken.
			s.founding.Store(true)
			s.wg.Add(1)
			go s.snapshotFoundingLedger()
		}
	}
	s.wg.Add(4)
	go s.every(time.Second, s.removeNodes)
	go s.watchLeadership()
	go s.propose()
	go s.await()
	if s.cfg.Joined != nil {
		s.RaiseCaughtUpFloor(s.cfg.Joined.CommitIndex)
		s.wg.Add(1)
		go s.promoteWhenCaughtUp(s.cfg.Joined.CommitIndex)
	}
	return nil
}

// localCommit is the local ledger's hook: it passes batches to the
// service once it started and wakes appends waiting for their entries.
func (s *Store) localCommit(b store.Batch) {
	s.startMu.Lock()
	fn := s.onCommit
	s.startMu.Unlock()
	if fn != nil {
		fn(b)
	}
	s.appliedM.Lock()
	s.appliedSeq = uint64(b.TreeSize)
	close(s.applied)
	s.applied = make(chan struct{})
	s.appliedM.Unlock()
}

// Start hands every batch applied from now on to onCommit. The FSM
// applies nothing from Open to Start, so the service reads the ledger as
// it stands and misses no batch.
func (s *Store) Start(onCommit func(store.Batch)) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.started {
		return
	}
	s.onCommit = onCommit
	s.started = true
	s.fsmMu.Unlock()
}

// watchLeadership marks the node ready to propose once it is the leader
// and its FSM has applied every entry of earlier terms (a barrier), so
// that it numbers new entries after them.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	ch := s.raft.LeaderCh()
	for {
		select {
		case <-s.closing:
			return
		case isLeader := <-ch:
			s.ready.Store(false)
			if !isLeader {
				continue
			}
			if err := s.raft.Barrier(30 * time.Second).Error(); err != nil {
				s.log.Warn("raft: leader barrier failed", "err", err)
				continue
			}
			if s.raft.State() == raft.Leader {
				s.ready.Store(true)
				s.log.Info("raft: this node leads the cluster", "last", s.local.Last())
			}
		}
	}
}

// snapshotFoundingLedger takes, once this node leads, a raft snapshot of
// the ledger it founded the cluster with and trims the raft log before it
// entirely, so that raft sends every joining node the snapshot (with the
// entries written before the cluster) rather than the log. Until it is
// taken (tried again while it fails) the node admits no node.
func (s *Store) snapshotFoundingLedger() {
	defer s.wg.Done()
	for !s.IsLeader() {
		select {
		case <-s.closing:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if hook := foundingSnapshotHook.Load(); hook != nil {
		(*hook)()
	}
	rc := s.raft.ReloadableConfig()
	trailing := rc.TrailingLogs
	for {
		rc.TrailingLogs = 0
		err := s.raft.ReloadConfig(rc)
		if err == nil {
			err = s.raft.Snapshot().Error()
		}
		rc.TrailingLogs = trailing
		if err := s.raft.ReloadConfig(rc); err != nil {
			s.log.Error("raft: cannot restore the raft log's trailing entries", "err", err)
		}
		if err == nil {
			s.founding.Store(false)
			s.log.Info("raft: the ledger the cluster was founded on is in a raft snapshot; nodes may join", "last", s.local.Last())
			return
		}
		s.log.Error("raft: cannot snapshot the founding ledger; no node joins until it is taken (trying again)", "err", err)
		select {
		case <-s.closing:
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// foundingSnapshotHook, if set (tests), runs before the founding snapshot.
var foundingSnapshotHook atomic.Pointer[func()]

// removed reports whether governance removed node id (false until the
// service started: the hook reads its state).
func (s *Store) removed(id string) bool {
	s.startMu.Lock()
	started := s.started && !s.closedBeforeStart
	s.startMu.Unlock()
	return started && s.opts.Replica.Removed != nil && s.opts.Replica.Removed(id)
}

// every runs fn each interval until the store closes.
func (s *Store) every(d time.Duration, fn func()) {
	defer s.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		fn()
	}
}

// removeNodes, on the leader, takes the nodes that governance removed
// (remove_node) out of the cluster's configuration, whichever node led
// when the proposal was accepted (each second, every).
func (s *Store) removeNodes() {
	if !s.IsLeader() {
		return
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, srv := range f.Configuration().Servers {
		if !s.removed(string(srv.ID)) {
			continue
		}
		if err := s.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
			s.log.Warn("raft: cannot remove a node that governance removed", "removed", srv.ID, "err", err)
			continue
		}
		s.log.Info("raft: node removed by governance", "removed", srv.ID)
	}
}

// IsLeader reports whether this node leads the cluster and may run work
// that must happen once (the rotation scheduler).
func (s *Store) IsLeader() bool { return s.ready.Load() && s.raft.State() == raft.Leader }

// Leader returns the id and address of the leader this node knows, if
// any.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// Raft returns the node's raft instance, for the cluster's status.
func (s *Store) Raft() *raft.Raft { return s.raft }

// A pending append.
type pending struct {
	ctx     context.Context
	props   []store.Proposal
	entries []*ledger.Entry
	err     error
	done    chan struct{}
}

func (p *pending) finish(es []*ledger.Entry, err error) {
	p.entries, p.err = es, err
	close(p.done)
}

// A flight is a command handed to raft and the appends in it.
type flight struct {
	f     raft.ApplyFuture
	batch []*pending
	next  uint64 // the seq after the command's last entry
}

// Append writes proposals as consecutive entries once the cluster has
// committed them and this node has applied them. On a node that is not
// the leader it forwards them to the leader.
func (s *Store) Append(ctx context.Context, props ...store.Proposal) ([]*ledger.Entry, error) {
	if len(props) == 0 {
		return nil, nil
	}
	for _, p := range props {
		if err := store.CheckProposal(p); err != nil {
			return nil, err
		}
	}
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	if closed {
		return nil, store.ErrClosed
	}
	if err := s.local.WriteErr(); err != nil {
		return nil, err
	}
	// During an election (a few heartbeats) the append waits for the
	// new leader rather than failing.
	deadline := time.Now().Add(s.leaderWait())
	for {
		if s.IsLeader() {
			return s.appendLocal(ctx, props)
		}
		es, err := s.forward(ctx, props)
		if err == nil {
			return es, s.waitApplied(ctx, es[len(es)-1].Seq)
		}
		// Retry only what surely wrote nothing: no leader known, or a
		// node that said it does not lead.
		if !isNotSent(err) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
			return nil, store.ErrClosed
		}
	}
}

// leaderWait is how long an append waits for a leader to be elected.
func (s *Store) leaderWait() time.Duration {
	return 5 * max(s.cfg.ElectionTimeout, time.Second)
}

// notSent marks forwarding errors after which nothing was written.
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

func isNotSent(err error) bool { var ns notSent; return errors.As(err, &ns) }

// appendLocal proposes on the leader.
func (s *Store) appendLocal(ctx context.Context, props []store.Proposal) ([]*ledger.Entry, error) {
	p := &pending{ctx: ctx, props: props, done: make(chan struct{})}
	select {
	case s.reqs <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, store.ErrClosed
	}
	<-p.done
	if p.err == nil {
		for _, pr := range props {
			clear(pr.Secret)
		}
	}
	return p.entries, p.err
}

// waitApplied waits until this node's ledger holds entry seq.
func (s *Store) waitApplied(ctx context.Context, seq uint64) error {
	for {
		s.appliedM.Lock()
		ch, done := s.applied, s.appliedSeq >= seq
		s.appliedM.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return store.ErrClosed
		}
	}
}

// propose numbers, seals and hands to raft the appends of the leader, as
// many as are waiting in one command.
func (s *Store) propose() {
	defer s.wg.Done()
	defer close(s.inflight)
	var next uint64    // 0: renumber from the ledger once nothing is in flight
	var last time.Time // the time of the entry before next
	var carry []*pending
	for {
		batch := carry
		carry = nil
		if len(batch) == 0 {
			select {
			case p := <-s.reqs:
				batch = append(batch, p)
			case <-s.closing:
				return
			}
		}
	drain:
		for len(batch) < 256 {
			select {
			case p := <-s.reqs:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		if !s.IsLeader() {
			for _, p := range batch {
				go func() { // forward what was queued before leadership moved
					es, err := s.forward(p.ctx, p.props)
					if err == nil {
						err = s.waitApplied(p.ctx, es[len(es)-1].Seq)
					}
					p.finish(es, err)
				}()
			}
			next = 0
			continue
		}
		batch, carry = splitAfterRekey(batch)
		if next == 0 || s.renumber.Swap(false) {
			next, last = s.settle()
		}
		cmd, start, end, err := s.encode(batch, next, last)
		if err != nil {
			for _, p := range batch {
				p.finish(nil, err)
			}
			continue
		}
		f := s.raft.Apply(cmd, 30*time.Second)
		if rekeys(batch[len(batch)-1]) {
			s.renumber.Store(true)
		}
		fl := &flight{f: f, batch: batch, next: start}
		next, last = start, end
		select {
		case s.inflight <- fl:
		case <-s.closing:
			for _, p := range batch {
				p.finish(nil, store.ErrClosed)
			}
			return
		}
	}
}

// splitAfterRekey cuts batch after its first append of a ledger.rekeyed
// entry. What follows a rekey is sealed under its new version, which this
// node installs when it applies the rekey: a rekey ends its command, and
// the next command waits for it to be applied (settle).
func splitAfterRekey(batch []*pending) (now, later []*pending) {
	if i := slices.IndexFunc(batch, rekeys); i >= 0 && i < len(batch)-1 {
		return batch[:i+1], batch[i+1:]
	}
	return batch, nil
}

// rekeys reports whether p appends a ledger.rekeyed entry.
func rekeys(p *pending) bool {
	return slices.ContainsFunc(p.props, func(pr store.Proposal) bool { return pr.Type == ledger.TypeLedgerRekeyed })
}

// settle waits for every command in flight to be applied and returns the
// seq after the ledger's last entry and that entry's time.
func (s *Store) settle() (uint64, time.Time) {
	if err := s.raft.Barrier(10 * time.Second).Error(); err != nil {
		s.log.Debug("raft: barrier before numbering", "err", err)
	}
	n := s.local.Last()
	var t time.Time
	if e, err := s.local.Get(n); err == nil {
		t = e.Time
	}
	return n + 1, t
}

// encode numbers the batch's entries from next, seals their secrets and
// data keys, and returns the command, the seq after its last entry and
// that entry's time. Entry times never go back: an entry proposed with a
// time before the one it follows (decided on another node, or by a node
// whose clock is behind, before entries committed meanwhile) is recorded
// at the time of the entry before it, and re-checked at that time when
// applied.
func (s *Store) encode(batch []*pending, next uint64, last time.Time) ([]byte, uint64, time.Time, error) {
	var c command
	for _, p := range batch {
		var g group
		for i, pr := range p.props {
			t := pr.Time.UTC()
			if t.Before(last) {
				t = last
			}
			last = t
			e := &ledger.Entry{Seq: next, Time: t, Type: pr.Type, Body: pr.Body}
			if len(pr.Secret) > 0 {
				sealed, err := s.sealer.Seal(pr.Secret, ledger.SealAD(e.Seq, e.Type))
				if err != nil {
					return nil, 0, last, fmt.Errorf("store: seal: %w", err)
				}
				e.Sealed = sealed
			}
			if len(pr.DataKey) > 0 {
				sk, err := s.sealer.Seal(pr.DataKey, dataKeyAD(e.Seq))
				if err != nil {
					return nil, 0, last, fmt.Errorf("store: seal: %w", err)
				}
				if g.DataKeys == nil {
					g.DataKeys = map[int][]byte{}
				}
				g.DataKeys[i] = sk
			}
			g.Records = append(g.Records, ledger.MarshalRecord(e))
			next++
		}
		c.Groups = append(c.Groups, g)
	}
	b, err := json.Marshal(c)
	return b, next, last, err
}

// groupResult is the FSM's answer for one group.
type groupResult struct {
	entries []*ledger.Entry
	err     error // errStale: proposed again with new numbers
}

type applyResult []groupResult

var errStale = errors.New("raftstore: entry numbered after a stale ledger")

// await delivers the outcome of each command in flight, in order, and
// sends appends whose numbers went stale back to be numbered again.
func (s *Store) await() {
	defer s.wg.Done()
	for fl := range s.inflight {
		err := fl.f.Error()
		var res applyResult
		if err == nil {
			res, _ = fl.f.Response().(applyResult)
			if len(res) != len(fl.batch) {
				err = fmt.Errorf("raftstore: apply answered %d groups of %d", len(res), len(fl.batch))
			}
		}
		for i, p := range fl.batch {
			switch {
			case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
				// Whether a command whose leader lost its place was
				// committed is not known: the append may have happened.
				p.finish(nil, fmt.Errorf("%w (%v)", ErrNoLeader, err))
			case errors.Is(err, raft.ErrRaftShutdown):
				p.finish(nil, store.ErrClosed)
			case err != nil:
				p.finish(nil, err)
			case errors.Is(res[i].err, errStale):
				s.renumber.Store(true)
				go func() {
					select {
					case s.reqs <- p:
					case <-s.closing:
						p.finish(nil, store.ErrClosed)
					}
				}()
			default:
				if res[i].err != nil {
					s.renumber.Store(true)
				}
				p.finish(res[i].entries, res[i].err)
			}
		}
	}
}

// Reads are served by the local copy of the ledger.

func (s *Store) Get(seq uint64) (*ledger.Entry, error) { return s.local.Get(seq) }
func (s *Store) Scan(from uint64, fn func(*ledger.Entry) error) error {
	return s.local.Scan(from, fn)
}
func (s *Store) Last() uint64                                     { return s.local.Last() }
func (s *Store) Unseal(e *ledger.Entry) ([]byte, error)           { return s.local.Unseal(e) }
func (s *Store) TreeHead() (int64, tlog.Hash)                     { return s.local.TreeHead() }
func (s *Store) ReadHashes(idx []int64) ([]tlog.Hash, error)      { return s.local.ReadHashes(idx) }
func (s *Store) ReadLeaves(start, n int64) ([][]byte, error)      { return s.local.ReadLeaves(start, n) }
func (s *Store) SaveSnapshot(seq uint64, data []byte) error       { return s.local.SaveSnapshot(seq, data) }
func (s *Store) LoadSnapshot() (seq uint64, data []byte, e error) { return s.local.LoadSnapshot() }
func (s *Store) Fail(cause error) error                           { return s.local.Fail(cause) }
func (s *Store) WriteErr() error                                  { return s.local.WriteErr() }
func (s *Store) ReleaseMemory() error                             { return s.local.ReleaseMemory() }
func (s *Store) Backup(w io.Writer) (int64, error)                { return s.local.Backup(w) }

// Close leaves the cluster's traffic (the node stays a member: started
// again on the same data directory it catches up) and closes the ledger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	return s.shutdown()
}

func (s *Store) shutdown() error {
	s.startMu.Lock()
	if !s.started {
		s.started, s.closedBeforeStart = true, true
		s.fsmMu.Unlock() // let raft's FSM goroutine end
	}
	s.startMu.Unlock()
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	var errs []error
	if s.raft != nil {
		errs = append(errs, s.raft.Shutdown().Error())
	}
	if s.joinSrv != nil {
		s.joinSrv.Close()
	}
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	if s.trans != nil {
		s.trans.Close()
	}
	if s.mux != nil {
		s.mux.Close()
	}
	s.wg.Wait()
	// Appends still queued never reached raft.
	for {
		select {
		case p := <-s.reqs:
			p.finish(nil, store.ErrClosed)
			continue
		default:
		}
		break
	}
	if s.boltStore != nil {
		errs = append(errs, s.boltStore.Close())
	}
	errs = append(errs, s.local.Close())
	return errors.Join(errs...)
}

// slogWriter passes raft's log lines to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(bytes.TrimSpace(p)))
	return len(p), nil
}

var _ io.Writer = slogWriter{}
