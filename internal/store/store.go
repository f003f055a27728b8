// Package store keeps the ledger in one bbolt file, with group commit.
//
// Appends from many goroutines are collected by one committer goroutine and
// written in a single bbolt transaction, so they share one fsync. Append
// returns only after its entries are durable and after the OnCommit hook
// (the state machine) has seen them, in sequence order.
//
// Every record carries a CRC-32C (see package ledger); Open verifies every
// record and refuses a file with a corrupt or unknown one, never truncating
// it. A snapshot of the derived state may be stored beside the entries so
// that start-up does not have to replay the whole ledger.
//
// The store also keeps the transparency log's Merkle tree (see package
// translog): in the transaction that writes entries it writes the RFC 6962
// hashes that golang.org/x/mod/sumdb/tlog stores for them, so the tree head
// of every durable batch is known at once and proofs never need a rebuild.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/mod/sumdb/tlog"
)

// FileName is the name of the ledger file inside the data directory.
const FileName = "ledger.db"

var (
	bucketMeta     = []byte("meta")
	bucketEntries  = []byte("entries")
	bucketSnapshot = []byte("snapshot")
	bucketHashes   = []byte("hashes") // tlog stored hash index (8 bytes BE) -> hash
	keyFormat      = []byte("format")
	keySnapshot    = []byte("latest")
	keyTreeSize    = []byte("tree_size") // in meta: leaves whose hashes are stored
)

// Errors.
var (
	// ErrRejected: a replicated ledger refused the entry at apply time
	// (ReplicaHooks.Check): the state in force when it was ordered no
	// longer allows it. Nothing was written.
	ErrRejected = errors.New("store: entry refused at apply time")
	// ErrSeq: Write was given entries that do not directly follow the
	// last one.
	ErrSeq      = errors.New("store: entries out of sequence")
	ErrClosed   = errors.New("store: closed")
	ErrInUse    = errors.New("store: the data directory is in use by another tkms process")
	ErrReadOnly = errors.New("store: opened read-only")
	// ErrTooLarge: the entry's public part would not fit in one log leaf
	// (ledger.MaxLeafSize).
	ErrTooLarge = errors.New("its public part exceeds the log's leaf size limit")
	// ErrWriteFailed: a write transaction on the ledger file failed (disk
	// full, file system turned read-only, I/O error), or the caller
	// reported with Fail that a write beside it did. What reached the
	// disk is unknown, so the store refuses every later write until it is
	// reopened, when Open re-reads what is really there. Reads go on.
	ErrWriteFailed = errors.New("store: write failed, refusing further writes until restart")
)

// A Proposal is an entry before the store gives it a sequence number.
type Proposal struct {
	Time time.Time
	Type ledger.Type
	Body []byte
	// Secret, if set, is sealed under the master key with the entry's
	// sequence number and type as associated data, and stored as the
	// entry's sealed part. Its bytes are zeroed once sealed.
	Secret []byte
	// DataKey, if set, is the data key (package keyring) that the
	// secret of a key.created entry is sealed under. It is not part of
	// the entry: the embedded store ignores it (the keyring beside it
	// already holds it); a replicated store carries it, sealed under the
	// master key, to every replica's keyring.
	DataKey []byte
}

// Ledger is what the service needs of the storage of its ledger. Store,
// the embedded single-node file, implements it; so does
// internal/raftstore, the ledger replicated over a raft cluster. Both pass
// the conformance suite of package storetest.
type Ledger interface {
	// Start begins accepting appends; onCommit is called with every
	// durable (committed) batch, in order, before the appends that
	// made it return. On a replica, it is also called with batches
	// written by other nodes.
	Start(onCommit func(Batch))
	// Append writes proposals as consecutive entries and returns them
	// once they are durable (see Store.Append).
	Append(ctx context.Context, props ...Proposal) ([]*ledger.Entry, error)
	Get(seq uint64) (*ledger.Entry, error)
	Scan(from uint64, fn func(*ledger.Entry) error) error
	Last() uint64
	Unseal(e *ledger.Entry) ([]byte, error)
	TreeHead() (int64, tlog.Hash)
	ReadHashes(indexes []int64) ([]tlog.Hash, error)
	ReadLeaves(start, n int64) ([][]byte, error)
	SaveSnapshot(seq uint64, data []byte) error
	LoadSnapshot() (seq uint64, data []byte, err error)
	Fail(cause error) error
	WriteErr() error
	ReleaseMemory() error
	// Backup writes a consistent copy of the ledger file (see
	// Store.Backup); a replicated ledger writes its node's copy.
	Backup(w io.Writer) (int64, error)
	Close() error
}

var _ Ledger = (*Store)(nil)

// Options configure Open.
type Options struct {
	// Sealer seals the secret parts of proposals. Required for writing.
	Sealer seal.Sealer
	// ReadOnly opens the file for inspection while no server runs. It takes
	// a shared lock, so it fails with ErrInUse while a writer has the file
	// open. Append fails with ErrReadOnly.
	ReadOnly bool
	// MaxBatch bounds the entries written in one transaction (default 1024).
	MaxBatch int
	// Timeout bounds the wait for the file lock (default 1s).
	Timeout time.Duration
	// OnWriteFailure, if set, is called once, with the error, when the
	// store starts refusing writes (see ErrWriteFailed).
	OnWriteFailure func(error)
	// Logger receives warnings about a damaged file that Open recovers
	// from. Defaults to slog.Default().
	Logger *slog.Logger

	// Replica is what a replicated ledger (internal/raftstore) asks of
	// the service that applies it. The embedded store ignores it.
	Replica ReplicaHooks
}

// ReplicaHooks are called by a replicated ledger as it applies committed
// entries, on every node, in log order.
type ReplicaHooks struct {
	// Check re-checks an entry against the state in force just before it
	// would be applied; an entry it refuses is not written, and the
	// append that proposed it fails with the error (a release decided on
	// a node whose state was behind).
	Check func(e *ledger.Entry) error
	// KeepDataKey stores the data key that came with a key.created entry
	// before the entry is written.
	KeepDataKey func(e *ledger.Entry, dataKey []byte) error
	// DataKey returns the data key of a key.created entry, nil if it was
	// erased, for a snapshot that a new node restores.
	DataKey func(e *ledger.Entry) ([]byte, error)
	// Applied is called after an entry is written and applied (a
	// follower erases a destroyed key's data key).
	Applied func(e *ledger.Entry)
	// Removed reports whether governance removed a node from the cluster
	// (remove_node): the leader takes it out, and it may not join again.
	Removed func(nodeID string) bool
}

// Store is an open ledger file.
type Store struct {
	db       *bolt.DB
	sealer   seal.Sealer
	maxBatch int
	readOnly bool

	reqs     chan *appendReq
	done     chan struct{}
	closeMu  sync.RWMutex
	closed   bool
	onCommit func(Batch)
	running  bool
	onFail   func(error)

	mu   sync.Mutex // guards last, err, tree, root
	last uint64
	err  error // sticky write failure, wraps ErrWriteFailed
	tree int64 // leaves whose hashes are stored (== last once Open returns, unless read-only)
	root tlog.Hash
}

// A Batch is what the committer hands to the OnCommit hook: the entries
// that just became durable, in order, and the log's tree head after them.
type Batch struct {
	Entries  []*ledger.Entry
	TreeSize int64     // == the last entry's seq
	Root     tlog.Hash // RFC 6962 root of the tree of TreeSize leaves
}

type appendReq struct {
	props   []Proposal
	written []*ledger.Entry // Write: entries numbered and sealed elsewhere
	entries []*ledger.Entry
	err     error
	done    chan struct{}
}

// Open opens (creating if needed) the ledger file in dir and verifies every
// record. It does not start accepting appends until Start is called, so the
// caller can replay the ledger first.
func Open(dir string, opts Options) (s *Store, err error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	path := filepath.Join(dir, FileName)
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	meta := readMeta(path)
	if err := meta.short(path); err != nil {
		return nil, err
	}
	// A file cut short faults when bbolt reads its mapping past the end:
	// make that a panic, recovered below, rather than a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bolt.DB
	defer func() {
		recoverCorrupt(path, &err, recover())
		if err != nil && db != nil {
			defer func() { recover() }() // closing a damaged file
			db.Close()
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w (%s)", ErrInUse, path)
	}
	if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) {
		return nil, fmt.Errorf("store: %s: %w: both of its meta pages are damaged (%w)", path, ledger.ErrCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if d := meta.damage(path); d != "" {
		opts.Logger.Warn("ledger file damaged: "+d, "file", path)
	}
	s = &Store{db: db, sealer: opts.Sealer, maxBatch: opts.MaxBatch, readOnly: opts.ReadOnly, reqs: make(chan *appendReq, 4096), done: make(chan struct{}), onFail: opts.OnWriteFailure}
	if err := s.init(); err != nil {
		return nil, err
	}
	if err := s.initLog(); err != nil {
		return nil, err
	}
	return s, nil
}

// initLog reads the log's tree head, first storing the hashes of entries
// written before the store kept them (a ledger of an earlier tkms, or the
// tail of one; read-only stores skip this and serve the hashed prefix).
func (s *Store) initLog() error {
	if err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		s.tree, err = treeSize(tx)
		return err
	}); err != nil {
		return err
	}
	if s.tree > int64(s.last) {
		return fmt.Errorf("store: %s: %w: the log holds %d leaves but the ledger %d entries", s.db.Path(), ledger.ErrCorrupt, s.tree, s.last)
	}
	if !s.readOnly && s.tree < int64(s.last) {
		for s.tree < int64(s.last) {
			end := min(s.tree+4096, int64(s.last))
			err := s.db.Update(func(tx *bolt.Tx) error {
				if _, err := tx.CreateBucketIfNotExists(bucketHashes); err != nil {
					return err
				}
				var entries []*ledger.Entry
				if err := scanTx(tx, uint64(s.tree)+1, func(e *ledger.Entry) error {
					if int64(e.Seq) > end {
						return errStopScan
					}
					entries = append(entries, e)
					return nil
				}); err != nil && err != errStopScan {
					return err
				}
				return storeHashes(tx, entries)
			})
			if err != nil {
				return fmt.Errorf("store: %s: storing the log's hashes: %w", s.db.Path(), err)
			}
			s.tree = end
		}
	}
	return s.db.View(func(tx *bolt.Tx) error {
		var err error
		s.root, err = tlog.TreeHash(s.tree, txHashes(tx))
		return err
	})
}

var errStopScan = errors.New("stop")

// treeSize reads the number of leaves whose hashes are stored.
func treeSize(tx *bolt.Tx) (int64, error) {
	v := tx.Bucket(bucketMeta).Get(keyTreeSize)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 || tx.Bucket(bucketHashes) == nil {
		return 0, fmt.Errorf("store: %w: log tree size %x", ledger.ErrCorrupt, v)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// storeHashes stores the log hashes of entries, which must directly follow
// the leaves already hashed, and the new tree size. It returns nothing but
// an error: the root is computed by the caller when needed.
func storeHashes(tx *bolt.Tx, entries []*ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	b := tx.Bucket(bucketHashes)
	b.FillPercent = 1 // append-only keys
	r := txHashes(tx)
	var k [8]byte
	for _, e := range entries {
		n := int64(e.Seq) - 1
		hs, err := tlog.StoredHashesForRecordHash(n, tlog.RecordHash(ledger.LeafBytes(e)), r)
		if err != nil {
			return fmt.Errorf("hashes of leaf %d: %w", n, err)
		}
		idx := tlog.StoredHashIndex(0, n)
		for i, h := range hs {
			binary.BigEndian.PutUint64(k[:], uint64(idx+int64(i)))
			if err := b.Put(k[:], h[:]); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketMeta).Put(keyTreeSize, binary.BigEndian.AppendUint64(nil, entries[len(entries)-1].Seq))
}

// txHashes reads stored hashes within tx.
func txHashes(tx *bolt.Tx) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		b := tx.Bucket(bucketHashes)
		out := make([]tlog.Hash, len(indexes))
		var k [8]byte
		for i, idx := range indexes {
			var v []byte
			if b != nil && idx >= 0 {
				binary.BigEndian.PutUint64(k[:], uint64(idx))
				v = b.Get(k[:])
			}
			if len(v) != tlog.HashSize {
				return nil, fmt.Errorf("store: log hash %d: %w", idx, errNoHash)
			}
			copy(out[i][:], v)
		}
		return out, nil
	})
}

var errNoHash = errors.New("not stored")

// TreeHead returns the log's tree size and root hash: those of the last
// durable entry.
func (s *Store) TreeHead() (int64, tlog.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tree, s.root
}

// ReadHashes implements tlog.HashReader over the stored hashes.
func (s *Store) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	var out []tlog.Hash
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = txHashes(tx).ReadHashes(indexes)
		return err
	})
	return out, err
}

// ReadLeaves returns the log leaves (ledger.LeafBytes) start to start+n-1,
// that is the entries with sequence numbers start+1 to start+n.
func (s *Store) ReadLeaves(start, n int64) ([][]byte, error) {
	if start < 0 || n < 0 || start+n > int64(s.Last()) {
		return nil, fmt.Errorf("store: leaves %d+%d: beyond the ledger", start, n)
	}
	out := make([][]byte, 0, n)
	err := s.db.View(func(tx *bolt.Tx) error {
		return scanTx(tx, uint64(start)+1, func(e *ledger.Entry) error {
			if int64(len(out)) == n {
				return errStopScan
			}
			out = append(out, ledger.LeafBytes(e))
			return nil
		})
	})
	if err != nil && err != errStopScan {
		return nil, err
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("store: leaves %d+%d: found %d", start, n, len(out))
	}
	return out, nil
}

// init verifies the file, or sets up a new, empty one. It writes nothing
// to a file it refuses.
func (s *Store) init() error {
	var empty bool
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Cursor().First(); k == nil {
			empty = true
			return nil
		}
		return s.verify(tx)
	})
	if err != nil || !empty {
		return err
	}
	if s.readOnly {
		return fmt.Errorf("store: %s is not a tkms ledger (no meta bucket)", s.db.Path())
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketEntries, bucketSnapshot, bucketHashes} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyFormat, []byte{ledger.FormatVersion})
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", s.db.Path(), err)
	}
	return nil
}

// verify checks the format marker and every record: framing, checksum,
// version, known type, and that the sequence numbers are dense from 1.
func (s *Store) verify(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketEntries, bucketSnapshot} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("store: %s is not a tkms ledger (no %s bucket)", s.db.Path(), name)
		}
	}
	switch f := tx.Bucket(bucketMeta).Get(keyFormat); {
	case len(f) != 1:
		return fmt.Errorf("store: %s: %w: format marker %x", s.db.Path(), ledger.ErrCorrupt, f)
	case f[0] != ledger.FormatVersion:
		return fmt.Errorf("store: %s has ledger format %d; this build reads format %d (a newer tkms wrote this data)", s.db.Path(), f[0], ledger.FormatVersion)
	}
	c := tx.Bucket(bucketEntries).Cursor()
	var want uint64 = 1
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != want {
			return fmt.Errorf("store: %s: %w: expected entry %d, found key %x", s.db.Path(), ledger.ErrCorrupt, want, k)
		}
		if err := verifyRecord(v, want); err != nil {
			return fmt.Errorf("store: %s: entry %d: %w", s.db.Path(), want, err)
		}
		want++
	}
	s.last = want - 1
	return nil
}

// verifyRecord checks a record: the checksum, the version, the type and
// that it holds entry seq.
func verifyRecord(v []byte, seq uint64) error {
	e, err := ledger.UnmarshalRecord(v)
	if err != nil {
		return err
	}
	if e.Seq != seq {
		return fmt.Errorf("%w: record says seq %d", ledger.ErrCorrupt, e.Seq)
	}
	return nil
}

// Last returns the sequence number of the last durable entry (0 if empty).
func (s *Store) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Start begins accepting appends. onCommit, if not nil, is called by the
// committer with each durable batch, in order, before the appends return.
// Start may be called once; onCommit must not call Append.
func (s *Store) Start(onCommit func(Batch)) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.running || s.closed {
		return
	}
	s.onCommit = onCommit
	s.running = true
	go s.run()
}

// Append writes the proposals as consecutive entries and returns them with
// their sequence numbers once they are durable. Proposals from concurrent
// calls share a transaction and an fsync; the entries of one call are
// consecutive. If ctx ends before the batch is written the append may still
// happen; the caller cannot assume it did not. Appending no proposals does
// nothing.
func (s *Store) Append(ctx context.Context, props ...Proposal) ([]*ledger.Entry, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if s.sealer == nil {
		return nil, errors.New("store: opened without a sealer; cannot append")
	}
	if len(props) == 0 {
		return nil, nil
	}
	for _, p := range props {
		if err := CheckProposal(p); err != nil {
			return nil, err
		}
	}
	req := &appendReq{props: props, done: make(chan struct{})}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	if !s.running {
		s.closeMu.RUnlock()
		return nil, errors.New("store: append before Start")
	}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return nil, ctx.Err()
	}
	s.closeMu.RUnlock()
	<-req.done // durability cannot be abandoned halfway: wait for the outcome
	return req.entries, req.err
}

// Write writes entries that were numbered and sealed elsewhere (by the
// leader of a cluster) and returns once they are durable, after the
// OnCommit hook has seen them, as Append does. The first must directly
// follow the last durable entry and the rest follow it densely, or Write
// fails with ErrSeq and writes nothing. A store that is written with
// Write is not appended to.
func (s *Store) Write(ctx context.Context, entries []*ledger.Entry) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if !e.Type.Known() {
			return fmt.Errorf("store: %w %q", ledger.ErrUnknownType, e.Type)
		}
	}
	req := &appendReq{written: entries, done: make(chan struct{})}
	s.closeMu.RLock()
	if s.closed || !s.running {
		s.closeMu.RUnlock()
		if s.closed {
			return ErrClosed
		}
		return errors.New("store: write before Start")
	}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	<-req.done
	return req.err
}

// CheckProposal refuses a proposal that no ledger may record: of an
// unknown type, with a time the record cannot keep, or too large.
func CheckProposal(p Proposal) error {
	if !p.Type.Known() {
		return fmt.Errorf("store: %w %q", ledger.ErrUnknownType, p.Type)
	}
	// The record keeps Unix nanoseconds: refuse a time (such as the
	// zero Time) that would come back as another one.
	if !time.Unix(0, p.Time.UnixNano()).Equal(p.Time) {
		return fmt.Errorf("store: entry of type %s: time %v cannot be recorded", p.Type, p.Time)
	}
	if len(p.Body) > ledger.MaxBodySize || len(p.Secret) > ledger.MaxBodySize/2 || ledger.LeafSize(p.Type, p.Body) > ledger.MaxLeafSize {
		return fmt.Errorf("store: entry of type %s is too large (%w)", p.Type, ErrTooLarge)
	}
	return nil
}

func (s *Store) run() {
	defer close(s.done)
	for req := range s.reqs {
		batch := []*appendReq{req}
		n := len(req.props) + len(req.written)
	drain:
		for n < s.maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
				n += len(r.props) + len(r.written)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*appendReq) {
	s.mu.Lock()
	err, next := s.err, s.last+1
	s.mu.Unlock()
	var all []*ledger.Entry
	if err == nil {
		all, err = s.seal(batch, next)
	}
	var root tlog.Hash
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEntries)
			b.FillPercent = 1 // append-only keys: pack pages full
			var k [8]byte
			for _, e := range all {
				binary.BigEndian.PutUint64(k[:], e.Seq)
				if err := b.Put(k[:], ledger.MarshalRecord(e)); err != nil {
					return err
				}
			}
			if err := storeHashes(tx, all); err != nil {
				return err
			}
			var err error
			root, err = tlog.TreeHash(int64(all[len(all)-1].Seq), txHashes(tx))
			return err
		})
		if err != nil {
			// The outcome of a failed commit on disk is not known to
			// us (a failed fsync may or may not have reached the
			// platter), so refuse all further writes until restart,
			// when Open re-reads what is really there.
			err = s.Fail(err)
		}
	}
	if err == nil {
		s.mu.Lock()
		s.last = all[len(all)-1].Seq
		s.tree, s.root = int64(s.last), root
		s.mu.Unlock()
		if s.onCommit != nil {
			s.onCommit(Batch{Entries: all, TreeSize: int64(s.last), Root: root})
		}
	}
	for _, r := range batch {
		if err != nil {
			r.entries = nil
		}
		r.err = err
		close(r.done)
	}
}

// Fail makes the store refuse every later write, as after a failed commit:
// the caller reports a failed write to a file that goes with the ledger
// (such as the keyring), after which the data directory's state on disk is
// no longer known. It returns the sticky error, which wraps ErrWriteFailed
// and the first failure reported.
func (s *Store) Fail(cause error) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	s.err = fmt.Errorf("%w: %w", ErrWriteFailed, cause)
	err := s.err
	s.mu.Unlock()
	if s.onFail != nil {
		s.onFail(err)
	}
	return err
}

// WriteErr returns the error that makes the store refuse writes (wrapping
// ErrWriteFailed), or nil while it accepts them.
func (s *Store) WriteErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// seal assigns sequence numbers from next and seals secrets.
func (s *Store) seal(batch []*appendReq, next uint64) ([]*ledger.Entry, error) {
	var all []*ledger.Entry
	for _, r := range batch {
		r.entries = make([]*ledger.Entry, len(r.props))
		if r.written != nil {
			for _, e := range r.written {
				if e.Seq != next {
					return nil, fmt.Errorf("%w: entry %d written after entry %d", ErrSeq, e.Seq, next-1)
				}
				next++
			}
			r.entries = r.written
			all = append(all, r.written...)
			continue
		}
		for i, p := range r.props {
			e := &ledger.Entry{Seq: next, Time: p.Time.UTC(), Type: p.Type, Body: p.Body}
			if len(p.Secret) > 0 {
				sealed, err := s.sealer.Seal(p.Secret, ledger.SealAD(e.Seq, e.Type))
				clear(p.Secret)
				if err != nil {
					return nil, fmt.Errorf("store: seal: %w", err)
				}
				e.Sealed = sealed
			}
			r.entries[i] = e
			all = append(all, e)
			next++
		}
	}
	return all, nil
}

// Get returns the entry with sequence number seq.
func (s *Store) Get(seq uint64) (*ledger.Entry, error) {
	var e *ledger.Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		v := tx.Bucket(bucketEntries).Get(k[:])
		if v == nil {
			return fmt.Errorf("store: no entry %d", seq)
		}
		var err error
		e, err = ledger.UnmarshalRecord(v)
		return err
	})
	return e, err
}

// Unseal opens the sealed part of e with the store's sealer.
func (s *Store) Unseal(e *ledger.Entry) ([]byte, error) {
	if s.sealer == nil {
		return nil, errors.New("store: opened without a sealer")
	}
	return s.sealer.Open(e.Sealed, ledger.SealAD(e.Seq, e.Type))
}

// Scan calls fn for every entry with sequence number >= from, in order.
func (s *Store) Scan(from uint64, fn func(*ledger.Entry) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return scanTx(tx, from, fn) })
}

func scanTx(tx *bolt.Tx, from uint64, fn func(*ledger.Entry) error) error {
	c := tx.Bucket(bucketEntries).Cursor()
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], from)
	for key, v := c.Seek(k[:]); key != nil; key, v = c.Next() {
		e, err := ledger.UnmarshalRecord(v)
		if err != nil {
			return fmt.Errorf("store: entry %x: %w", key, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SaveSnapshot stores data as the state after entry seq, replacing any
// earlier snapshot. The bytes are checksummed. It is a write like any
// other: refused after a write failure, and a failure of its own makes
// the store refuse writes.
func (s *Store) SaveSnapshot(seq uint64, data []byte) error {
	if err := s.WriteErr(); err != nil {
		return err
	}
	v := binary.BigEndian.AppendUint64(nil, seq)
	v = append(v, data...)
	v = binary.BigEndian.AppendUint32(v, crc32.Checksum(v, castagnoli))
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSnapshot).Put(keySnapshot, v)
	})
	if err != nil {
		return s.Fail(fmt.Errorf("snapshot: %w", err))
	}
	return nil
}

// LoadSnapshot returns the latest snapshot, or seq 0 and nil data if there
// is none. A snapshot that fails its checksum is an error.
func (s *Store) LoadSnapshot() (seq uint64, data []byte, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() { recoverCorrupt(s.db.Path(), &err, recover()) }()
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSnapshot)
		if b == nil {
			return nil
		}
		v := b.Get(keySnapshot)
		if v == nil {
			return nil
		}
		if len(v) < 12 || crc32.Checksum(v[:len(v)-4], castagnoli) != binary.BigEndian.Uint32(v[len(v)-4:]) {
			return fmt.Errorf("store: %s: snapshot: %w: checksum mismatch", s.db.Path(), ledger.ErrCorrupt)
		}
		seq = binary.BigEndian.Uint64(v)
		data = append([]byte{}, v[8:len(v)-4]...)
		return nil
	})
	return seq, data, err
}

// Close stops accepting appends, waits for pending ones and closes the file.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.closeMu.Unlock()
	if s.running {
		<-s.done
	}
	return s.db.Close()
}
