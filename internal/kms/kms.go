// Package kms is the core of tkms: it owns the ledger store, the state
// machine that replays it, the keyring of per-key data keys, and the key
// rotation scheduler.
//
// Writers build entries (taking the time once, from the injected clock) and
// append them to the store; the store's committer applies each durable batch
// to the state before the append returns. Readers take a consistent view of
// the state through Read.
package kms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// Config configures a Service.
type Config struct {
	// DataDir holds the ledger file and the keyring.
	DataDir string
	// Sealer protects secrets under the master key.
	Sealer seal.Sealer
	// ServiceName names the instance in the genesis entry.
	ServiceName string
	// RotationPolicy and Settings are the policies to put in force. At
	// genesis they are recorded; later, if they differ from the ledger's,
	// an entry records the change, unless the ledger is governed: then a
	// difference is logged and ignored (it must be proposed).
	RotationPolicy state.RotationPolicy
	Settings       state.Settings
	// RotationDefault and SettingsDefault say that the configuration did
	// not name that policy (RotationPolicy or Settings is a default): a
	// governed ledger then keeps its own without a warning.
	RotationDefault, SettingsDefault bool
	// ReleasePolicy (JSON of either grammar of internal/policy) and JWT,
	// if set, are recorded the same way. Unset leaves the ledger's.
	ReleasePolicy []byte
	JWT           *state.JWTPolicy
	// Governance, if set, makes a ledger that is not yet governed
	// governed: its gov.init entry follows the initial policies (at
	// genesis) or the policy changes. On a governed ledger it is ignored.
	Governance *GovInit
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SnapshotEvery is the number of entries between state snapshots
	// (default 10000).
	SnapshotEvery uint64
	// MaxBatch bounds entries per store transaction (default 1024).
	MaxBatch int
	// LogOrigin names the transparency log in its checkpoints (C2SP
	// tlog-checkpoint origin line), e.g. "kms.sro.example/depa". It is
	// fixed at genesis; by default "tkms/<service name>/<8 random hex>".
	LogOrigin string
	// OpenLedger opens the storage of the ledger in the data directory.
	// By default it is the embedded single-node file (store.Open);
	// internal/raftstore replicates it over a cluster.
	OpenLedger func(dir string, opts store.Options) (store.Ledger, error)
	// Joined says the ledger comes from a cluster this node joined: Open
	// writes no genesis and no policy entries (the cluster's ledger
	// rules), and the log key is loaded when its entry is applied.
	Joined bool
	// Versions, on a node of a cluster, is its ledger secret (also its
	// Sealer), and Identity its node identity: the node follows the
	// ledger's rekeys, opening its copy of each new version with its
	// node key, and, leading, makes the rekey a removal calls for
	// (rekey.go). Nil on a single node, whose master key never changes.
	Versions *seal.Versions
	Identity *node.Identity
}

// Service is an open tkms instance.
type Service struct {
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	store   store.Ledger
	keyring *keyring.Keyring

	mu    sync.RWMutex // guards st
	st    *state.State
	seq   atomic.Uint64 // st.Seq, readable without the lock
	wake  chan struct{}
	apply chan struct{} // closed and replaced whenever the state changes

	// writeMu serialises lifecycle and policy writers (rotation, markers,
	// policies: Lock) against release records (RLock): a release is
	// checked and stamped under the read lock, so no marker or policy
	// change can land between the check and the record.
	writeMu sync.RWMutex

	privMu sync.Mutex
	priv   map[string][]byte // kid -> private key, cache of unsealed keys

	logMu     sync.Mutex                      // serialises checkpoint signing
	logSigner note.Signer                     // nil until the log key is known
	logVKey   string                          // the verifier key of logSigner
	cosigners []note.Signer                   // the log keys before each recovery: they cosign checkpoints
	head      atomic.Pointer[treeHead]        // the log's latest durable tree head
	cp        atomic.Pointer[translog.Signed] // the latest signed checkpoint

	snapMu      sync.Mutex
	snapSeq     uint64
	snapRunning bool
	snapClosed  bool           // set by Close: no new snapshot starts
	snapWG      sync.WaitGroup // the background snapshot writer, waited for by Close
}

// Open opens or creates the service in cfg.DataDir: it verifies and replays
// the ledger, reconciles the keyring with it, writes genesis on a new data
// directory and records policy changes.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Sealer == nil {
		return nil, errors.New("kms: no master key")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 10000
	}
	if err := cfg.RotationPolicy.Validate(); err != nil {
		return nil, err
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkLedgerPresent(cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.OpenLedger == nil {
		cfg.OpenLedger = func(dir string, opts store.Options) (store.Ledger, error) { return store.Open(dir, opts) }
	}
	// The replica hooks are called from Start on, once s is complete.
	var s *Service
	hooks := store.ReplicaHooks{
		Check:       func(e *ledger.Entry) error { return s.checkApply(e) },
		KeepDataKey: func(e *ledger.Entry, dk []byte) error { return s.keepDataKey(e, dk) },
		DataKey:     func(e *ledger.Entry) ([]byte, error) { return s.dataKey(e) },
		Applied:     func(e *ledger.Entry) { s.applied(e) },
		Removed:     func(id string) bool { return s.nodeRemoved(id) },
	}
	st, err := cfg.OpenLedger(cfg.DataDir, store.Options{Sealer: cfg.Sealer, MaxBatch: cfg.MaxBatch, OnWriteFailure: storageFailed(cfg.Logger, cfg.DataDir), Logger: cfg.Logger, Replica: hooks})
	if errors.Is(err, ledger.ErrCorrupt) {
		return nil, fmt.Errorf("%w; restore the data directory from a backup (keep this copy for analysis) and check it with tkms audit", err)
	}
	if err != nil {
		return nil, err
	}
	s = &Service{
		cfg: cfg, now: cfg.Now, log: cfg.Logger, store: st,
		wake: make(chan struct{}, 1), apply: make(chan struct{}),
		priv: map[string][]byte{},
	}
	if err := s.replay(); err != nil {
		st.Close()
		return nil, err
	}
	s.learnRekeys()
	// The log key first: it is the first sealed entry, so a wrong master
	// key is reported as such rather than as an unreadable keyring.
	if err := s.loadLogKey(); err != nil {
		st.Close()
		return nil, err
	}
	s.keyring, err = keyring.Open(cfg.DataDir, cfg.Sealer)
	if err == nil {
		err = s.checkKeyring()
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("%w; restore the keyring that goes with this ledger from a backup (check the result with tkms audit)", err)
	}
	// Start-up read every record (verification, replay): let those pages
	// go from the resident set before serving. Nothing writes yet, so
	// the file's mapping is stable.
	if err := st.ReleaseMemory(); err != nil {
		s.log.Warn("cannot release the ledger's pages after start-up", "err", err)
	}
	st.Start(s.onCommit)
	if err := s.reconcileKeyring(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.bootstrap(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// replay rebuilds the state from the latest snapshot and the entries after
// it.
func (s *Service) replay() error {
	start := time.Now()
	st := state.New()
	snapSeq, data, err := s.store.LoadSnapshot()
	if err != nil {
		// A snapshot is only a shortcut: the ledger is the state.
		s.log.Warn("ignoring corrupt snapshot; replaying the whole ledger", "err", err)
		snapSeq, data = 0, nil
	}
	if data != nil && snapSeq <= s.store.Last() {
		if snap, err := state.Unmarshal(data); err == nil && snap.Seq == snapSeq {
			st = snap
		} else {
			s.log.Warn("ignoring unreadable snapshot; replaying the whole ledger", "snapshot_seq", snapSeq, "err", err)
			snapSeq = 0
		}
	} else {
		snapSeq = 0
	}
	err = st.Replay(s.store.Scan, func(e *ledger.Entry, err error) {
		s.log.Warn("ledger entry rejected by the state machine", "seq", e.Seq, "type", e.Type, "err", err)
	})
	if err != nil {
		return fmt.Errorf("kms: replay: %w", err)
	}
	s.st = st
	s.seq.Store(st.Seq)
	s.snapSeq = snapSeq
	s.log.Info("ledger replayed", "entries", st.Seq, "from_snapshot", snapSeq, "keys", len(st.Keys), "duration", time.Since(start))
	return nil
}

// onCommit is the store's hook: it applies each durable batch, in order,
// and signs the log's new checkpoint, both before the appends return.
func (s *Service) onCommit(b store.Batch) {
	entries := b.Entries
	var rekeys []*ledger.Entry
	s.mu.Lock()
	for _, e := range entries {
		if err := s.st.Apply(e); err != nil {
			s.log.Error("ledger entry rejected by the state machine", "seq", e.Seq, "type", e.Type, "err", err)
		} else if e.Type == ledger.TypeLedgerRekeyed {
			rekeys = append(rekeys, e)
		}
	}
	seq := s.st.Seq
	s.seq.Store(seq)
	var snap *state.State
	if seq-s.snapSeq >= s.cfg.SnapshotEvery {
		snap = s.st.Clone()
	}
	logKey := s.st.LogKey
	effects := len(s.st.PendingEffects) > 0
	close(s.apply)
	s.apply = make(chan struct{})
	s.mu.Unlock()
	for _, e := range rekeys {
		s.followRekey(e)
	}
	if logKey != nil && (s.cfg.Joined && !s.hasLogSigner() || s.hasLogSigner() && s.loadedLogKey() != logKey.VerifierKey) {
		// A joined node learns the log key from the cluster's ledger,
		// and every node the new one of a recovery.
		if err := s.loadLogKey(); err != nil {
			s.log.Error("cannot load the log key of the cluster's ledger", "err", err)
		}
	}
	s.setHead(logKey, b.TreeSize, b.Root)
	if _, replicated := s.store.(leader); effects && replicated {
		// Accepted on another node: the scheduler of this one, if it
		// leads, carries the effects out.
		s.poke()
	}
	if snap != nil {
		s.snapshot(snap)
	}
}

// snapshot writes snap in the background, one at a time.
func (s *Service) snapshot(snap *state.State) {
	s.snapMu.Lock()
	if s.snapRunning || s.snapClosed {
		s.snapMu.Unlock()
		return
	}
	s.snapRunning = true
	s.snapSeq = snap.Seq
	s.snapWG.Add(1)
	s.snapMu.Unlock()
	go func() {
		defer s.snapWG.Done()
		defer func() { s.snapMu.Lock(); s.snapRunning = false; s.snapMu.Unlock() }()
		data, err := snap.Marshal()
		if err == nil {
			err = s.store.SaveSnapshot(snap.Seq, data)
		}
		if err != nil {
			s.log.Warn("snapshot failed", "seq", snap.Seq, "err", err)
			return
		}
		s.log.Debug("snapshot saved", "seq", snap.Seq, "bytes", len(data))
	}()
}

// Snapshot writes a snapshot of the current state now, synchronously.
func (s *Service) Snapshot() error {
	s.mu.RLock()
	snap := s.st.Clone()
	s.mu.RUnlock()
	data, err := snap.Marshal()
	if err != nil {
		return err
	}
	return s.store.SaveSnapshot(snap.Seq, data)
}

// reconcileKeyring removes data keys that no live key needs: those of
// destroyed keys (a crash may have come between the destroy entry and the
// keyring update) and orphans (a crash between the keyring update and the
// key.created entry).
func (s *Service) reconcileKeyring() error {
	var drop []string
	s.mu.RLock()
	for _, kid := range s.keyring.Kids() {
		if k := s.st.Key(kid); k == nil || k.DestroyedSeq != 0 {
			drop = append(drop, kid)
		}
	}
	s.mu.RUnlock()
	if len(drop) > 0 {
		s.log.Info("removing data keys not needed by any live key", "kids", drop)
	}
	return s.keyring.Delete(drop...)
}

// bootstrap writes genesis on an empty ledger and records policy changes.
// On a governed ledger, a policy of the configuration that differs from the
// ledger's is reported and ignored: only an accepted proposal changes it.
func (s *Service) bootstrap(ctx context.Context) error {
	if s.cfg.Joined {
		s.log.Info("cluster node: genesis and policies come from the cluster's ledger; the configuration's policies are not recorded (change them by governance)")
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.now()
	var props []store.Proposal
	var cur *state.State
	s.Read(func(st *state.State) { cur = st.Clone() })
	if cur.Genesis == nil {
		g, _ := json.Marshal(state.Genesis{Service: s.cfg.ServiceName, Format: ledger.FormatVersion})
		props = append(props, store.Proposal{Time: now, Type: ledger.TypeGenesis, Body: g})
	}
	if cur.LogKey == nil {
		p, err := s.newLogKey(now)
		if err != nil {
			return err
		}
		props = append(props, p)
	} else if s.cfg.LogOrigin != "" && s.cfg.LogOrigin != cur.LogKey.Origin {
		return fmt.Errorf("kms: log_origin %q: the log's origin was fixed at genesis as %q", s.cfg.LogOrigin, cur.LogKey.Origin)
	}
	governed := cur.Governed()
	change := func(what string, typ ledger.Type, body []byte, defaulted bool) {
		if governed {
			if defaulted {
				return
			}
			s.log.Warn("the configuration's "+what+" differs from the ledger's and is ignored: the ledger is governed; propose it (tkms gov propose)", "type", typ)
			return
		}
		props = append(props, store.Proposal{Time: now, Type: typ, Body: body})
	}
	if cur.Genesis == nil || cur.Rotation != s.cfg.RotationPolicy {
		b, _ := json.Marshal(s.cfg.RotationPolicy)
		change("key rotation policy", ledger.TypeKeyRotationPolicy, b, s.cfg.RotationDefault)
	}
	if cur.Genesis == nil || !cur.Settings.Equal(s.cfg.Settings) {
		b, _ := json.Marshal(s.cfg.Settings)
		change("settings policy", ledger.TypeSettingsPolicy, b, s.cfg.SettingsDefault)
	}
	if s.cfg.ReleasePolicy != nil {
		p, err := policy.Parse(s.cfg.ReleasePolicy)
		if err != nil {
			return fmt.Errorf("key release policy: %w", err)
		}
		if b := policy.Marshal(p); !bytes.Equal(b, cur.ReleasePolicy) {
			change("key release policy", ledger.TypeKeyReleasePolicy, b, false)
		}
	}
	if s.cfg.JWT != nil {
		if err := s.cfg.JWT.Validate(); err != nil {
			return fmt.Errorf("jwt policy: %w", err)
		}
		b, err := json.Marshal(s.cfg.JWT)
		if err != nil {
			return fmt.Errorf("jwt policy: %w", err)
		}
		if old, _ := json.Marshal(cur.JWT); cur.JWT == nil || !bytes.Equal(b, old) {
			change("jwt policy (issuers and claims)", ledger.TypeJWTPolicy, b, false)
		}
	}
	if g := s.cfg.Governance; g != nil && !governed {
		b, err := json.Marshal(state.GovInit{Members: g.Members, Constitution: g.Constitution})
		if err != nil {
			return fmt.Errorf("kms: governance: %w", err)
		}
		props = append(props, store.Proposal{Time: now, Type: ledger.TypeGovInit, Body: b})
	} else if g != nil {
		s.log.Info("the ledger is governed since seq " + fmt.Sprint(cur.GovSeq) + ": the configured members and constitution are ignored")
	}
	if len(props) == 0 {
		return nil
	}
	// What the state machine would refuse is never written.
	for i, p := range props {
		e := &ledger.Entry{Seq: cur.Seq + 1, Time: p.Time, Type: p.Type, Body: p.Body, Sealed: p.Secret}
		if err := cur.Apply(e); err != nil {
			return fmt.Errorf("kms: start: entry %d of %d: %w", i+1, len(props), err)
		}
	}
	if _, err := s.store.Append(ctx, props...); err != nil {
		return err
	}
	for _, p := range props {
		s.log.Info("ledger: recorded", "type", p.Type)
	}
	return nil
}

// Errors of RecordRelease: the release was decided, but by the time it is
// recorded it is no longer allowed; nothing may be released.
var (
	ErrNotReleasable = errors.New("kms: the key is no longer released")
	ErrPolicyChanged = errors.New("kms: the key release policy changed while the release was decided")
)

// RecordRelease appends a key.released entry and returns once it is
// durable: a release is never answered before it is in the ledger.
//
// The record is checked and stamped atomically with respect to lifecycle
// markers and policy changes: every kid must still be released at the
// entry's time (not expired or destroyed) and r.PolicySeq must still be
// the policy in force, or it fails with ErrNotReleasable or
// ErrPolicyChanged and writes nothing. So an auditor replaying the log
// finds every release allowed at the position and time it was recorded.
func (s *Service) RecordRelease(ctx context.Context, r state.KeyReleased) (*ledger.Entry, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	now := s.now()
	s.Read(func(st *state.State) { err = releasable(st, r, now) })
	if err != nil {
		return nil, err
	}
	es, err := s.store.Append(ctx, store.Proposal{Time: now, Type: ledger.TypeKeyReleased, Body: body})
	if errors.Is(err, store.ErrRejected) {
		// Decided on a replica whose state was behind the cluster's.
		return nil, fmt.Errorf("%w: %w", ErrPolicyChanged, err)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: record release: %w", err)
	}
	return es[0], nil
}

// releasable checks that release r may be recorded at now in state st:
// its policy is the one in force and every key is still released.
func releasable(st *state.State, r state.KeyReleased, now time.Time) error {
	if st.ReleasePolicySeq != r.PolicySeq {
		return ErrPolicyChanged
	}
	for _, kid := range r.Kids {
		if k := st.Key(kid); k == nil || k.Phase(now) >= state.Expired {
			return fmt.Errorf("%w: %s", ErrNotReleasable, kid)
		}
	}
	return nil
}

// RecordDenial appends a release.denied entry.
func (s *Service) RecordDenial(ctx context.Context, d state.ReleaseDenied) error {
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = s.store.Append(ctx, store.Proposal{Time: s.now(), Type: ledger.TypeReleaseDenied, Body: body})
	return err
}

// Entry returns the ledger entry with sequence number seq.
func (s *Service) Entry(seq uint64) (*ledger.Entry, error) { return s.store.Get(seq) }

// Read calls fn with the current state, under a read lock. fn must not keep
// st or anything in it after returning, nor call back into the Service's
// writers.
func (s *Service) Read(fn func(st *state.State)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(s.st)
}

// Changed returns a channel that is closed the next time the state changes.
func (s *Service) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.apply
}

// Seq returns the sequence number of the last applied entry.
func (s *Service) Seq() uint64 { return s.seq.Load() }

// Now returns the service clock's time.
func (s *Service) Now() time.Time { return s.now() }

// Close stops appends and closes the ledger. It does not stop Run; cancel
// its context first.
func (s *Service) Close() error {
	s.snapMu.Lock()
	s.snapClosed = true
	s.snapMu.Unlock()
	s.snapWG.Wait()
	err := s.store.Close()
	s.privMu.Lock()
	for kid, k := range s.priv {
		clear(k)
		delete(s.priv, kid)
	}
	s.privMu.Unlock()
	return err
}
