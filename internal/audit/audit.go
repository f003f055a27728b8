// Package audit checks a tkms transparency log without trusting its
// operator: anyone holding the log's verifier key can run it against the
// service's /log/ endpoints or against an offline mirror of them.
//
// Run verifies the log's signed checkpoint (C2SP tlog-checkpoint,
// https://c2sp.org/tlog-checkpoint), compares it with the checkpoint the
// previous audit verified (a smaller tree is a rollback, a different root
// for the same entries a fork), reads every entry bundle (C2SP tlog-tiles,
// https://c2sp.org/tlog-tiles), recomputes the RFC 6962 tree with
// golang.org/x/mod/sumdb/tlog and checks it against the checkpoint and the
// log's own hash tiles, so that a modified, dropped or reordered entry is
// named. It then replays the entries through the tkms state machine and
// checks what the service promises: every entry valid, keys released only
// while releasable and under the key release policy in force (evaluated
// again on the recorded claims), one scheduled key per rotation slot, and
// no period without a published key while the service was up.
//
// docs/transparency.md ("Auditing") describes what an audit establishes.
package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// Options configure an audit.
type Options struct {
	// Source serves the log (HTTPSource or DirSource).
	Source Source
	// LogKey is the log's note verifier key, as served at /v1/log/key and
	// obtained from a source the auditor trusts: checkpoints must verify
	// against it.
	LogKey string
	// StateFile, if set, holds the checkpoint the previous audit verified;
	// it is compared with the current one and replaced by it when the
	// audit passes. A missing file means a first audit.
	StateFile string
	// Mirror, if set, is a directory into which everything fetched is
	// copied, laid out so that a later audit can read it with DirSource.
	Mirror string
	// Progress, if set, receives a progress line (rewritten with \r) a few
	// times per second.
	Progress io.Writer
	// Parallel bounds the tiles fetched at once (default 8).
	Parallel int
	// Now is the clock that stamps the state file. Defaults to time.Now.
	Now func() time.Time
	// NodePolicy, if set, is the auditor's node policy: every node the
	// ledger's secrets were handed to (node.joined) must satisfy it.
	NodePolicy *policy.Policy
	// Head, if set, is a tree head the caller computed itself from a copy
	// of the ledger it holds (a recovering node, whose log key is still
	// sealed): the source's checkpoint is not fetched, and the entries are
	// checked against Head instead. The state file is read, never written.
	Head *translog.Checkpoint
}

// Errors of Run. A violation is not an error: it is in the Report.
var (
	// ErrCheckpoint: the checkpoint does not verify against the log key.
	ErrCheckpoint = errors.New("audit: the checkpoint does not verify against the log key")
	// ErrStateFile: the state file cannot be used.
	ErrStateFile = errors.New("audit: state file")
)

// Run audits the log that opts.Source serves. It returns an error, and no
// report, when the audit cannot be completed (the checkpoint does not
// verify, a tile cannot be fetched, the state file is unreadable). Failed
// checks are violations in the report; the state file is updated only
// when there are none.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Source == nil {
		return nil, errors.New("audit: no source")
	}
	verifier, err := translog.NewVerifier(opts.LogKey)
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	var prev *savedState
	if opts.StateFile != "" {
		if prev, err = readState(opts.StateFile, verifier); err != nil {
			return nil, err
		}
	}
	src := opts.Source
	var mir *mirror
	if opts.Mirror != "" {
		mir = &mirror{src: src, dir: opts.Mirror}
		src = mir
	}

	var cp translog.Signed
	if opts.Head != nil {
		cp = translog.Signed{Checkpoint: *opts.Head}
	} else {
		msg, err := src.Fetch(ctx, "checkpoint")
		if err != nil {
			return nil, fmt.Errorf("audit: checkpoint: %w", err)
		}
		if cp, err = translog.Verify(msg, verifier); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
		}
	}
	r := &Report{Checkpoint: Checkpoint{Origin: cp.Origin, Size: cp.Size, Root: cp.Root, Note: string(cp.Note)}}
	c := newChecker(r, verifier)
	c.nodePolicy = opts.NodePolicy
	if prev != nil {
		r.Previous = &Checkpoint{Origin: prev.Origin, Size: prev.Size, Root: prev.Root, Time: prev.Time, Note: prev.Checkpoint}
		switch {
		case cp.Size < prev.Size:
			c.violation(0, "", "the log shrank from %d to %d entries: rollback (the checkpoint verified on %s had %d entries and root %s)",
				prev.Size, cp.Size, stamp(prev.Time), prev.Size, prev.Root)
		case cp.Size == prev.Size && cp.Root != prev.Root:
			c.violation(0, "", "the log forked: its %d entries now have root %s, but the checkpoint verified on %s for the same %d entries had root %s",
				cp.Size, cp.Root, stamp(prev.Time), prev.Size, prev.Root)
		}
	}

	s := &scan{ctx: ctx, src: src, size: cp.Size, parallel: opts.Parallel, c: c, progress: opts.Progress}
	if err := s.run(); err != nil {
		return nil, err
	}
	c.finish()
	s.finish(prev)
	c.sortFindings()

	if mir != nil {
		if err := mir.commit(); err != nil {
			return nil, err
		}
	}
	if opts.StateFile != "" && r.Passed() && opts.Head == nil {
		st := savedState{Origin: cp.Origin, Size: cp.Size, Root: cp.Root, Checkpoint: string(cp.Note), Time: opts.Now().UTC()}
		if err := writeState(opts.StateFile, &st); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// scan reads the log's tiles in order and checks its tree and its entries.
type scan struct {
	ctx      context.Context
	src      Source
	size     int64
	parallel int
	c        *checker
	progress io.Writer

	hashes   memHashes // every stored hash of the tree, recomputed
	replay   bool      // entries are still applied: the log is intact so far
	offset   int64     // leaf seq - (index+1) of the last leaf
	modified []leafMismatch
	done     int64 // leaves checked
	lastShow time.Time
	shown    bool
}

// leafMismatch is a leaf whose hash differs from the log's hash tile.
type leafMismatch struct {
	index int64
	seq   uint64
	typ   ledger.Type
	path  string // the hash tile
}

// memHashes is an in-memory tlog.HashReader: the stored hashes of the tree,
// by stored hash index.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("audit: hash %d not computed", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

// tileData is one tile's entries, fetched and pre-processed in parallel.
type tileData struct {
	n          int64 // tile number; leaves n*256 ...
	w          int   // leaves in the tile
	bundlePath string
	leaves     [][]byte
	splitErr   error
	hashes     []tlog.Hash    // RecordHash of each leaf
	decoded    []*ledger.Leaf // nil where the leaf does not decode
	decodeErr  []error
	hashPath   string
	hashTile   []byte // the log's level-0 hashes, w*32 bytes; nil if the tile has another size
	hashLen    int    // the size of the hash tile fetched
	err        error  // a fetch failed
}

func (s *scan) run() error {
	s.replay = true
	s.lastShow = time.Now()
	s.hashes = make(memHashes, 0, tlog.StoredHashCount(s.size))
	ntiles := (s.size + translog.TileWidth - 1) / translog.TileWidth
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	futures := make(chan chan *tileData, s.parallel)
	go func() {
		defer close(futures)
		for n := int64(0); n < ntiles; n++ {
			w := int(min(translog.TileWidth, s.size-n*translog.TileWidth))
			f := make(chan *tileData, 1)
			select {
			case futures <- f:
			case <-ctx.Done():
				return
			}
			go func() { f <- fetchEntries(ctx, s.src, n, w) }()
		}
	}()
	for f := range futures {
		td := <-f
		if td.err != nil {
			return td.err
		}
		s.tile(td)
		s.done += int64(td.w)
		s.showProgress(false)
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	s.showProgress(true)
	return nil
}

// fetchEntries fetches entry bundle n and its level-0 hash tile, splits,
// hashes and decodes the leaves.
func fetchEntries(ctx context.Context, src Source, n int64, w int) *tileData {
	td := &tileData{n: n, w: w}
	data, path, full, err := fetchTile(ctx, src, tlog.Tile{H: translog.TileHeight, L: -1, N: n, W: w})
	if err != nil {
		td.err = fmt.Errorf("audit: entry bundle: %w", err)
		return td
	}
	td.bundlePath = path
	hdata, hpath, hfull, err := fetchTile(ctx, src, tlog.Tile{H: translog.TileHeight, L: 0, N: n, W: w})
	if err != nil {
		td.err = fmt.Errorf("audit: hash tile: %w", err)
		return td
	}
	td.hashPath, td.hashLen = hpath, len(hdata)
	// A tile holds exactly its w hashes; only a full tile fetched in place
	// of a partial one holds more.
	if len(hdata) == w*tlog.HashSize || hfull && len(hdata) > w*tlog.HashSize {
		td.hashTile = hdata[:w*tlog.HashSize]
	}
	td.leaves, td.splitErr = translog.SplitBundle(data)
	if full && len(td.leaves) > w {
		td.leaves = td.leaves[:w]
	}
	td.hashes = make([]tlog.Hash, len(td.leaves))
	td.decoded = make([]*ledger.Leaf, len(td.leaves))
	td.decodeErr = make([]error, len(td.leaves))
	for i, l := range td.leaves {
		td.hashes[i] = tlog.RecordHash(l)
		td.decoded[i], td.decodeErr[i] = ledger.UnmarshalLeaf(l)
	}
	return td
}

// tile checks one tile's leaves, in order.
func (s *scan) tile(td *tileData) {
	c := s.c
	if td.splitErr != nil {
		c.violation(0, "", "entry bundle %s is malformed: %v", td.bundlePath, td.splitErr)
		s.stopReplay(td.n * translog.TileWidth)
	} else if len(td.leaves) != td.w {
		what := "entries were dropped"
		if len(td.leaves) > td.w {
			what = "entries were added"
		}
		c.violation(0, "", "entry bundle %s holds %d entries, want %d: %s", td.bundlePath, len(td.leaves), td.w, what)
	}
	if td.hashTile == nil {
		c.violation(0, "", "hash tile %s holds %d bytes, want %d (%d hashes)", td.hashPath, td.hashLen, td.w*tlog.HashSize, td.w)
	}
	for k := 0; k < td.w; k++ {
		index := td.n*translog.TileWidth + int64(k)
		var h tlog.Hash // a missing leaf hashes to zero: the root cannot match
		if k < len(td.hashes) {
			h = td.hashes[k]
		}
		hs, err := tlog.StoredHashesForRecordHash(index, h, s.hashes)
		if err != nil {
			panic(err) // the hashes of every earlier leaf are in memory
		}
		s.hashes = append(s.hashes, hs...)
		if k >= len(td.leaves) {
			continue
		}
		l, derr := td.decoded[k], td.decodeErr[k]
		if derr != nil {
			c.violation(0, "", "leaf %d (in %s) does not decode: %v", index, td.bundlePath, derr)
			s.stopReplay(index)
			continue
		}
		want := uint64(index) + 1
		if off := int64(l.Seq) - int64(want); off != 0 {
			if off != s.offset {
				c.violation(0, "", "leaf %d holds entry seq %d, want seq %d: an entry was dropped, added or reordered", index, l.Seq, want)
			}
			s.offset = off
			s.stopReplay(index)
			continue
		}
		s.offset = 0
		if td.hashTile != nil && !equalHash(td.hashTile[k*tlog.HashSize:], h) {
			s.modified = append(s.modified, leafMismatch{index: index, seq: l.Seq, typ: l.Type, path: td.hashPath})
		}
		if s.replay {
			c.entry(l)
		}
	}
}

func equalHash(b []byte, h tlog.Hash) bool { return tlog.Hash(b[:tlog.HashSize]) == h }

// stopReplay stops applying entries: beyond leaf index the log's entries
// are not those it committed to, and checking them would only add noise.
func (s *scan) stopReplay(index int64) {
	if s.replay {
		s.replay = false
		s.c.r.Notes = append(s.c.r.Notes, fmt.Sprintf("the entries from leaf %d on were not replayed: the log's entries are not intact there", index))
	}
}

// finish compares the recomputed tree with the checkpoint and the
// previous checkpoint, and names the leaves that differ from the log's
// hash tiles.
func (s *scan) finish(prev *savedState) {
	c, cp := s.c, s.c.r.Checkpoint
	root, err := tlog.TreeHash(cp.Size, s.hashes)
	if err != nil {
		panic(err)
	}
	rootOK := root == cp.Root
	if !rootOK {
		c.violation(0, "", "the log's entries hash to root %s, but the signed checkpoint of %d entries says %s: the entries served are not the ones the log committed to", root, cp.Size, cp.Root)
	}
	for _, m := range s.modified {
		if len(c.r.Violations) >= maxFindings {
			c.r.OmittedViolations++
			continue
		}
		if rootOK {
			// The entries match the signed root: the hash tile is wrong.
			c.violation(0, "", "hash tile %s does not match leaf %d (entry seq %d), which the signed checkpoint covers: the log serves corrupt hash tiles", m.path, m.index, m.seq)
		} else {
			c.violation(m.seq, m.typ, "leaf %d does not match the log's leaf hash in %s: modified after it was logged", m.index, m.path)
		}
	}
	for _, rc := range c.recovered {
		old, err := tlog.TreeHash(rc.cp.Size, s.hashes)
		if err != nil {
			panic(err)
		}
		if old != rc.cp.Root {
			c.violation(rc.seq, ledger.TypeServiceRecovered, "the last checkpoint of the recovered log (%d entries, root %s) is not the log's first %d entries (root %s): the service was recovered from another ledger", rc.cp.Size, rc.cp.Root, rc.cp.Size, old)
		}
	}
	if prev != nil && prev.Size < cp.Size {
		old, err := tlog.TreeHash(prev.Size, s.hashes)
		if err != nil {
			panic(err)
		}
		if old != prev.Root {
			c.violation(0, "", "the log's first %d entries now hash to root %s, but the checkpoint verified on %s had root %s for them: the log was forked or rewritten",
				prev.Size, old, stamp(prev.Time), prev.Root)
		}
	}
}

func (s *scan) showProgress(final bool) {
	if s.progress == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(s.lastShow) < 250*time.Millisecond {
		return
	}
	if final && !s.shown {
		return // short audits print nothing
	}
	s.lastShow, s.shown = now, true
	pct := int64(100)
	if s.size > 0 {
		pct = s.done * 100 / s.size
	}
	fmt.Fprintf(s.progress, "\rtkms audit: %d of %d entries (%d%%)", s.done, s.size, pct)
	if final {
		fmt.Fprintln(s.progress)
	}
}
