package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"github.com/tkms-dev/tkms/internal/ledger"
)

// fsm applies committed raft log entries to the node's ledger.
type fsm struct{ s *Store }

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	s := f.s
	s.fsmMu.Lock()
	defer s.fsmMu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = s.applyCommand(l.Index, l.Data)
		}
	}
	return out
}

// applyCommand writes the groups of a command that follow the ledger and
// pass the service's check. Every node decides alike: from the ledger and
// the state derived from it, both the same on every node at this index.
func (s *Store) applyCommand(index uint64, data []byte) applyResult {
	c, groups, err := decodeCommand(data)
	if err != nil {
		s.log.Error("raft: skipping a malformed log entry", "index", index, "err", err)
		return nil
	}
	res := make(applyResult, len(groups))
	for gi, es := range groups {
		last := s.local.Last()
		switch first := es[0].Seq; {
		case first <= last:
			// Replayed after a restart (the ledger is durable before
			// raft learns it was applied), or numbered by a leader
			// that lost its place.
			if s.holds(es) {
				res[gi].entries = es
			} else {
				res[gi].err = errStale
			}
			continue
		case first != last+1:
			// Numbered after a group refused at apply time (proposed
			// again), or by a leader whose ledger this node lacks part
			// of (which the founding snapshot prevents: no node joins before it).
			s.log.Debug("raft: an entry numbered past this node's ledger", "index", index, "seq", first, "last", last)
			res[gi].err = errStale
			continue
		}
		if err := s.check(es); err != nil {
			res[gi].err = fmt.Errorf("%w: %w", ErrRejected, err)
			continue
		}
		if err := s.keepDataKeys(es, c.Groups[gi].DataKeys); err != nil {
			res[gi].err = s.local.Fail(err)
			continue
		}
		if err := s.local.Write(context.Background(), es); err != nil {
			s.log.Error("raft: cannot write committed entries to the ledger", "index", index, "seq", es[0].Seq, "err", err)
			res[gi].err = err
			continue
		}
		if h := s.opts.Replica.Applied; h != nil {
			for _, e := range es {
				h(e)
			}
		}
		res[gi].entries = es
	}
	return res
}

// holds reports whether the ledger holds exactly es.
func (s *Store) holds(es []*ledger.Entry) bool {
	for _, e := range es {
		got, err := s.local.Get(e.Seq)
		if err != nil || !bytes.Equal(ledger.MarshalRecord(got), ledger.MarshalRecord(e)) {
			return false
		}
	}
	return true
}

func (s *Store) check(es []*ledger.Entry) error {
	if s.opts.Replica.Check == nil {
		return nil
	}
	for _, e := range es {
		if err := s.opts.Replica.Check(e); err != nil {
			return err
		}
	}
	return nil
}

// keepDataKeys opens the data keys that came with es and hands them to the
// service, before the entries that need them are written.
func (s *Store) keepDataKeys(es []*ledger.Entry, sealed map[int][]byte) error {
	for i, sk := range sealed {
		if err := s.keepDataKey(es[i], sk); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) keepDataKey(e *ledger.Entry, sealed []byte) error {
	if s.opts.Replica.KeepDataKey == nil || len(sealed) == 0 {
		return nil
	}
	dk, err := s.sealer.Open(sealed, dataKeyAD(e.Seq))
	if err != nil {
		return fmt.Errorf("raftstore: data key of entry %d: %w", e.Seq, err)
	}
	defer clear(dk)
	return s.opts.Replica.KeepDataKey(e, dk)
}

// Snapshots. A raft snapshot is the ledger up to the last applied entry:
// a header line, then for each entry its record and its data key sealed
// under the master key (empty for most), each preceded by its length as a
// uvarint.

const snapshotHeader = "tkms-raftstore-snapshot/v1\n"

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.s.fsmMu.Lock()
	defer f.s.fsmMu.Unlock()
	// After a failed write the ledger may lack entries raft counts as
	// applied: no snapshot may then let raft trim them from its log (a
	// restart applies them again).
	if err := f.s.local.WriteErr(); err != nil {
		return nil, err
	}
	return &snapshot{s: f.s, last: f.s.local.Last()}, nil
}

type snapshot struct {
	s    *Store
	last uint64
}

func (sn *snapshot) Persist(sink raft.SnapshotSink) error {
	err := sn.write(sink)
	// Writing the snapshot read the whole ledger file: its pages leave
	// the resident set (they stay in the page cache).
	if rerr := sn.s.local.ReleaseMemory(); rerr != nil {
		sn.s.log.Warn("raft: cannot release the ledger pages the snapshot read", "err", rerr)
	}
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (sn *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.WriteString(snapshotHeader)
	var buf []byte
	// Each data key is sealed under the ledger-secret version in force at
	// its entry: a node that restores the snapshot holds the versions up
	// to its handoff's, and takes each later one from its ledger.rekeyed
	// entry before the entries that follow it (Restore).
	version := uint32(1)
	err := sn.s.local.Scan(1, func(e *ledger.Entry) error {
		if e.Seq > sn.last {
			return errStop
		}
		if e.Type == ledger.TypeLedgerRekeyed {
			var r struct {
				Version uint32 `json:"version"`
			}
			if err := json.Unmarshal(e.Body, &r); err != nil {
				return fmt.Errorf("entry %d: %w", e.Seq, err)
			}
			version = r.Version
		}
		var dk []byte
		if e.Type == ledger.TypeKeyCreated && sn.s.opts.Replica.DataKey != nil {
			k, err := sn.s.opts.Replica.DataKey(e)
			if err != nil {
				return err
			}
			if k != nil {
				dk, err = sn.s.sealAt(version, k, dataKeyAD(e.Seq))
				clear(k)
				if err != nil {
					return err
				}
			}
		}
		rec := ledger.MarshalRecord(e)
		buf = binary.AppendUvarint(buf[:0], uint64(len(rec)))
		buf = append(buf, rec...)
		buf = binary.AppendUvarint(buf, uint64(len(dk)))
		buf = append(buf, dk...)
		_, err := bw.Write(buf)
		return err
	})
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("raftstore: snapshot: %w", err)
	}
	return bw.Flush()
}

func (sn *snapshot) Release() {}

// sealAt seals under ledger-secret version v when the sealer has
// versions (a cluster node's seal.Versions), else under its one key.
func (s *Store) sealAt(v uint32, plaintext, ad []byte) ([]byte, error) {
	if vs, ok := s.sealer.(interface {
		SealVersion(v uint32, plaintext, ad []byte) ([]byte, error)
	}); ok {
		return vs.SealVersion(v, plaintext, ad)
	}
	return s.sealer.Seal(plaintext, ad)
}

var errStop = errors.New("stop")

// Restore brings the ledger up to the snapshot: the entries it already
// holds must be the snapshot's (a node's ledger only ever holds committed
// entries), the rest are written as if they had been applied one by one.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := f.s
	s.fsmMu.Lock()
	defer s.fsmMu.Unlock()
	// New entries are written in batches, as a group commit would.
	var batch []*ledger.Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.local.Write(context.Background(), batch); err != nil {
			return err
		}
		if h := s.opts.Replica.Applied; h != nil {
			for _, e := range batch {
				h(e)
			}
		}
		batch = batch[:0]
		return nil
	}
	n, err := readSnapshot(rc, func(e *ledger.Entry, dk []byte) error {
		last := s.local.Last() + uint64(len(batch))
		if e.Seq <= s.local.Last() {
			if !s.holds([]*ledger.Entry{e}) {
				return fmt.Errorf("raftstore: snapshot entry %d differs from the ledger's: this node's ledger is not the cluster's", e.Seq)
			}
			return nil
		}
		if e.Seq != last+1 {
			return fmt.Errorf("raftstore: snapshot entry %d follows entry %d", e.Seq, last)
		}
		if err := s.keepDataKey(e, dk); err != nil {
			return err
		}
		batch = append(batch, e)
		if len(batch) == 1024 || e.Type == ledger.TypeLedgerRekeyed {
			// A rekey is applied (this node takes its new version)
			// before the data keys sealed under it are opened.
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	s.log.Info("raft: ledger restored from a snapshot", "entries", n, "last", s.local.Last())
	return nil
}

// readSnapshot parses a snapshot stream and calls fn for each entry, in
// order.
func readSnapshot(r io.Reader, fn func(e *ledger.Entry, dataKey []byte) error) (int, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	h := make([]byte, len(snapshotHeader))
	if _, err := io.ReadFull(br, h); err != nil || string(h) != snapshotHeader {
		return 0, fmt.Errorf("raftstore: not a tkms ledger snapshot")
	}
	readPart := func(max uint64) ([]byte, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if n > max {
			return nil, fmt.Errorf("raftstore: snapshot: a part of %d bytes", n)
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	var prev uint64
	count := 0
	for {
		rec, err := readPart(2*ledger.MaxBodySize + 1024)
		if err == io.EOF {
			return count, nil
		}
		if err != nil {
			return count, fmt.Errorf("raftstore: snapshot: %w", err)
		}
		dk, err := readPart(1024)
		if err != nil {
			return count, fmt.Errorf("raftstore: snapshot: %w", noEOF(err))
		}
		e, err := ledger.UnmarshalRecord(rec)
		if err != nil {
			return count, fmt.Errorf("raftstore: snapshot: %w", err)
		}
		if e.Seq != prev+1 {
			return count, fmt.Errorf("raftstore: snapshot: entry %d after %d", e.Seq, prev)
		}
		if len(dk) > 0 && e.Type != ledger.TypeKeyCreated {
			return count, fmt.Errorf("raftstore: snapshot: a data key with entry %d of type %s", e.Seq, e.Type)
		}
		prev = e.Seq
		if err := fn(e, dk); err != nil {
			return count, err
		}
		count++
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
