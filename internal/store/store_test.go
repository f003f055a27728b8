package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
	bolt "go.etcd.io/bbolt"
)

// The bucket and key names of the ledger file. They are spelled out here
// rather than taken from the package so that a change to the file layout
// fails these tests.
var (
	bucketMeta     = []byte("meta")
	bucketEntries  = []byte("entries")
	bucketSnapshot = []byte("snapshot")
	keyFormat      = []byte("format")
	keySnapshot    = []byte("latest")
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newSealer(t testing.TB) *seal.AESGCM {
	t.Helper()
	s, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openStore opens the store in dir with sealer and starts it, with onCommit
// as its hook. The store is closed when the test ends.
func openStore(t testing.TB, dir string, sealer seal.Sealer, onCommit func([]*ledger.Entry)) *store.Store {
	t.Helper()
	s, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if onCommit == nil {
		s.Start(nil)
	} else {
		s.Start(func(b store.Batch) { onCommit(b.Entries) })
	}
	return s
}

func mustAppend(t testing.TB, s *store.Store, props ...store.Proposal) []*ledger.Entry {
	t.Helper()
	es, err := s.Append(context.Background(), props...)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(props) {
		t.Fatalf("Append of %d proposals returned %d entries", len(props), len(es))
	}
	return es
}

func published(i int) store.Proposal {
	return store.Proposal{Time: t0.Add(time.Duration(i) * time.Second), Type: ledger.TypeKeyPublished, Body: fmt.Appendf(nil, `{"kid":"k_%d"}`, i)}
}

// scanAll returns every entry of s, in order.
func scanAll(t testing.TB, s *store.Store) []*ledger.Entry {
	t.Helper()
	var out []*ledger.Entry
	if err := s.Scan(1, func(e *ledger.Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func assertSameEntry(t testing.TB, got, want *ledger.Entry) {
	t.Helper()
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Type != want.Type ||
		!bytes.Equal(got.Body, want.Body) || !bytes.Equal(got.Sealed, want.Sealed) {
		t.Fatalf("entry = %+v, want %+v", got, want)
	}
}

// assertDense fails unless es are entries 1..n in order.
func assertDense(t testing.TB, es []*ledger.Entry, n int) {
	t.Helper()
	if len(es) != n {
		t.Fatalf("%d entries, want %d", len(es), n)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i+1, e.Seq)
		}
	}
}

// updateFile changes the closed ledger file in dir with bbolt itself.
func updateFile(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// rawValues returns every value of the entries bucket of the closed ledger
// file in dir, read with bbolt itself.
func rawValues(t *testing.T, dir string) [][]byte {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var vs [][]byte
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			vs = append(vs, bytes.Clone(v))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func TestAppendGetScan(t *testing.T) {
	s := openStore(t, t.TempDir(), newSealer(t), nil)
	if s.Last() != 0 {
		t.Fatalf("new store: Last() = %d", s.Last())
	}
	first := mustAppend(t, s, published(1), published(2), published(3))
	second := mustAppend(t, s, store.Proposal{Time: t0.In(time.FixedZone("X", 3600)), Type: ledger.TypeKeyRetired})
	all := append(first, second...)
	assertDense(t, all, 4)
	if s.Last() != 4 {
		t.Fatalf("Last() = %d, want 4", s.Last())
	}
	if all[3].Time.Location() != time.UTC {
		t.Errorf("entry time in %v, want UTC", all[3].Time.Location())
	}

	for _, want := range all {
		got, err := s.Get(want.Seq)
		if err != nil {
			t.Fatal(err)
		}
		assertSameEntry(t, got, want)
	}
	for _, seq := range []uint64{0, 5, 1 << 40} {
		if e, err := s.Get(seq); err == nil {
			t.Errorf("Get(%d) = %+v, want an error", seq, e)
		}
	}

	got := scanAll(t, s)
	for i := range all {
		assertSameEntry(t, got[i], all[i])
	}
	var from3 []uint64
	s.Scan(3, func(e *ledger.Entry) error { from3 = append(from3, e.Seq); return nil })
	if fmt.Sprint(from3) != "[3 4]" {
		t.Errorf("Scan(3) visited %v, want [3 4]", from3)
	}
	stop := errors.New("stop")
	var visited int
	if err := s.Scan(1, func(*ledger.Entry) error { visited++; return stop }); err != stop || visited != 1 {
		t.Errorf("Scan with a failing fn: err = %v after %d entries, want stop after 1", err, visited)
	}
}

func TestSequenceIsDenseAcrossReopen(t *testing.T) {
	dir, sealer := t.TempDir(), newSealer(t)
	var n int
	for round := range 3 {
		s, err := store.Open(dir, store.Options{Sealer: sealer})
		if err != nil {
			t.Fatal(err)
		}
		if s.Last() != uint64(n) {
			t.Fatalf("round %d: Last() after Open = %d, want %d", round, s.Last(), n)
		}
		s.Start(nil)
		for range round + 1 {
			n++
			if es := mustAppend(t, s, published(n)); es[0].Seq != uint64(n) {
				t.Fatalf("round %d: appended seq %d, want %d", round, es[0].Seq, n)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dir, sealer, nil)
	assertDense(t, scanAll(t, s), n)
}

// Many goroutines append at once. Every acknowledged entry must be durable,
// the entries of one call consecutive, and the hook must see every entry
// once, in order, before the Append that wrote it returns.
func TestConcurrentAppends(t *testing.T) {
	const writers, calls = 64, 200
	dir, sealer := t.TempDir(), newSealer(t)

	var hooked []*ledger.Entry // written only by the committer
	var hookedUpTo atomic.Uint64
	s := openStore(t, dir, sealer, func(es []*ledger.Entry) {
		hooked = append(hooked, es...)
		hookedUpTo.Store(es[len(es)-1].Seq)
	})

	type call struct{ writer, call int }
	bySeq := make([]map[uint64]call, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		bySeq[w] = map[uint64]call{}
		wg.Go(func() {
			for c := range calls {
				var props []store.Proposal
				for i := range 1 + (w+c)%3 {
					props = append(props, store.Proposal{Time: t0, Type: ledger.TypeKeyPublished, Body: fmt.Appendf(nil, "%d/%d/%d", w, c, i)})
				}
				es, err := s.Append(context.Background(), props...)
				if err != nil {
					errs <- err
					return
				}
				if hookedUpTo.Load() < es[len(es)-1].Seq {
					errs <- fmt.Errorf("append of %d returned before the hook saw it", es[len(es)-1].Seq)
					return
				}
				for i, e := range es {
					if e.Seq != es[0].Seq+uint64(i) || !bytes.Equal(e.Body, props[i].Body) {
						errs <- fmt.Errorf("call %d/%d: entry %d has seq %d body %q; want seq %d body %q", w, c, i, e.Seq, e.Body, es[0].Seq+uint64(i), props[i].Body)
						return
					}
					bySeq[w][e.Seq] = call{w, c}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	last := s.Last()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	assertDense(t, hooked, int(last))
	owner := map[uint64]call{}
	for _, m := range bySeq {
		for seq, c := range m {
			if _, dup := owner[seq]; dup {
				t.Fatalf("seq %d returned to two calls", seq)
			}
			owner[seq] = c
		}
	}
	if len(owner) != int(last) {
		t.Fatalf("%d entries acknowledged, Last() = %d", len(owner), last)
	}

	s = openStore(t, dir, sealer, nil)
	durable := scanAll(t, s)
	assertDense(t, durable, int(last))
	for i, e := range durable {
		c := owner[e.Seq]
		if !bytes.HasPrefix(e.Body, fmt.Appendf(nil, "%d/%d/", c.writer, c.call)) {
			t.Fatalf("entry %d holds %q, but was acknowledged to call %d/%d", e.Seq, e.Body, c.writer, c.call)
		}
		if !bytes.Equal(e.Body, hooked[i].Body) {
			t.Fatalf("entry %d: hook saw %q, file holds %q", e.Seq, hooked[i].Body, e.Body)
		}
	}
}

func TestSecretsAreSealed(t *testing.T) {
	dir, sealer := t.TempDir(), newSealer(t)
	s := openStore(t, dir, sealer, nil)

	secret := make([]byte, 48)
	rand.Read(secret)
	secret = append([]byte("TKMS-TEST-SECRET:"), secret...)
	want := bytes.Clone(secret)
	p := store.Proposal{Time: t0, Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k_1"}`), Secret: secret}
	es := mustAppend(t, s, published(0), p)
	e := es[1]

	if !bytes.Equal(p.Secret, make([]byte, len(want))) {
		t.Errorf("Proposal.Secret not zeroed after Append: %q", p.Secret)
	}
	if len(e.Sealed) == 0 || bytes.Contains(e.Sealed, want) {
		t.Fatalf("sealed part %x is empty or holds the secret", e.Sealed)
	}
	if es[0].Sealed != nil {
		t.Errorf("entry without secret has sealed part %x", es[0].Sealed)
	}
	if got, err := s.Unseal(e); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Unseal = (%q, %v), want the secret", got, err)
	}
	// The sealed part is bound to its entry.
	moved := *e
	moved.Seq = es[0].Seq
	if _, err := s.Unseal(&moved); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Unseal of a sealed part moved to another entry: err = %v, want ErrOpen", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("TKMS-TEST-SECRET")) {
		t.Fatal("ledger file contains the secret's plaintext")
	}
	for i := 0; i+8 <= len(want); i++ {
		if bytes.Contains(raw, want[i:i+8]) {
			t.Fatalf("ledger file contains bytes %d..%d of the secret", i, i+8)
		}
	}
	if !bytes.Contains(raw, e.Sealed) {
		t.Fatal("ledger file does not contain the sealed part; is this the file the store wrote?")
	}

	s = openStore(t, dir, sealer, nil)
	stored, err := s.Get(e.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Unseal(stored); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Unseal after reopen = (%q, %v), want the secret", got, err)
	}
	s.Close()
	other, err := store.Open(dir, store.Options{Sealer: newSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Unseal(stored); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Unseal with another master key: err = %v, want ErrOpen", err)
	}
}

// fileState is what must not change when Open refuses a file.
type fileState struct {
	size    int64
	entries [][]byte
}

func stateOf(t *testing.T, dir string) fileState {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return fileState{fi.Size(), rawValues(t, dir)}
}

func (a fileState) equal(b fileState) bool {
	if a.size != b.size || len(a.entries) != len(b.entries) {
		return false
	}
	for i := range a.entries {
		if !bytes.Equal(a.entries[i], b.entries[i]) {
			return false
		}
	}
	return true
}

// writeLedger writes n entries to a new ledger in a new directory and
// returns the directory.
func writeLedger(t *testing.T, sealer seal.Sealer, n int) string {
	t.Helper()
	dir := t.TempDir()
	s := openStore(t, dir, sealer, nil)
	for i := range n {
		p := published(i)
		if i%2 == 1 {
			p = store.Proposal{Time: t0, Type: ledger.TypeKeyCreated, Body: []byte("{}"), Secret: []byte("secret")}
		}
		mustAppend(t, s, p)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// reseal sets the version byte of a record and recomputes its checksum.
func reseal(rec []byte, version byte) []byte {
	b := bytes.Clone(rec[:len(rec)-4])
	b[0] = version
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// Open refuses a ledger that does not verify, says why and where, and
// leaves the file as it was.
func TestOpenRefusesBadLedger(t *testing.T) {
	sealer := newSealer(t)
	tests := map[string]struct {
		change func(tx *bolt.Tx) error
		is     error
		says   []string
	}{
		"flipped byte in a record": {
			change: func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketEntries)
				v := bytes.Clone(b.Get(seqKey(3)))
				v[len(v)/2] ^= 0x01
				return b.Put(seqKey(3), v)
			},
			is: ledger.ErrCorrupt, says: []string{"entry 3", "checksum mismatch"},
		},
		"truncated record": {
			change: func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketEntries)
				return b.Put(seqKey(4), bytes.Clone(b.Get(seqKey(4))[:10]))
			},
			is: ledger.ErrCorrupt, says: []string{"entry 4"},
		},
		"record of a newer version": {
			change: func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketEntries)
				return b.Put(seqKey(2), reseal(b.Get(seqKey(2)), 2))
			},
			is: ledger.ErrVersion, says: []string{"entry 2", "a newer tkms wrote this data"},
		},
		"record under another entry's key": {
			change: func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketEntries)
				return b.Put(seqKey(2), bytes.Clone(b.Get(seqKey(3))))
			},
			is: ledger.ErrCorrupt, says: []string{"entry 2", "record says seq 3"},
		},
		"missing entry": {
			change: func(tx *bolt.Tx) error { return tx.Bucket(bucketEntries).Delete(seqKey(3)) },
			is:     ledger.ErrCorrupt, says: []string{"expected entry 3"},
		},
		"newer meta format": {
			change: func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{2}) },
			says:   []string{"format 2", "a newer tkms wrote this data"},
		},
		"no format marker": {
			change: func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyFormat) },
			is:     ledger.ErrCorrupt,
		},
		"no entries bucket": {
			change: func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketEntries) },
			says:   []string{"not a tkms ledger"},
		},
		"another application's file": {
			change: func(tx *bolt.Tx) error {
				for _, name := range [][]byte{bucketMeta, bucketEntries, bucketSnapshot} {
					if err := tx.DeleteBucket(name); err != nil {
						return err
					}
				}
				_, err := tx.CreateBucket([]byte("other"))
				return err
			},
			says: []string{"not a tkms ledger"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := writeLedger(t, sealer, 5)
			updateFile(t, dir, tc.change)
			before := stateOf(t, dir)
			for _, readOnly := range []bool{false, true} {
				s, err := store.Open(dir, store.Options{Sealer: sealer, ReadOnly: readOnly})
				if err == nil {
					s.Close()
					t.Fatalf("ReadOnly=%v: Open accepted the file", readOnly)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("ReadOnly=%v: err = %v, want %v", readOnly, err, tc.is)
				}
				for _, want := range append(tc.says, filepath.Join(dir, store.FileName)) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("ReadOnly=%v: error %q does not say %q", readOnly, err, want)
					}
				}
				if after := stateOf(t, dir); !after.equal(before) {
					t.Fatalf("ReadOnly=%v: refused Open changed the file: size %d -> %d, %d -> %d entries",
						readOnly, before.size, after.size, len(before.entries), len(after.entries))
				}
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	dir, sealer := t.TempDir(), newSealer(t)
	s := openStore(t, dir, sealer, nil)
	if seq, data, err := s.LoadSnapshot(); seq != 0 || data != nil || err != nil {
		t.Fatalf("LoadSnapshot of a new store = (%d, %q, %v), want none", seq, data, err)
	}
	mustAppend(t, s, published(1), published(2), published(3))
	for _, snap := range []struct {
		seq  uint64
		data []byte
	}{
		{2, []byte(`{"state":"after 2"}`)},
		{3, []byte(`{"state":"after 3"}`)},
		{3, []byte{}},
	} {
		if err := s.SaveSnapshot(snap.seq, snap.data); err != nil {
			t.Fatal(err)
		}
		seq, data, err := s.LoadSnapshot()
		if err != nil || seq != snap.seq || data == nil || !bytes.Equal(data, snap.data) {
			t.Fatalf("LoadSnapshot = (%d, %q, %v), want (%d, %q)", seq, data, err, snap.seq, snap.data)
		}
	}
	if err := s.SaveSnapshot(3, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openStore(t, dir, sealer, nil)
	if seq, data, err := s.LoadSnapshot(); err != nil || seq != 3 || string(data) != "kept" {
		t.Fatalf("LoadSnapshot after reopen = (%d, %q, %v), want (3, kept)", seq, data, err)
	}
}

func TestSnapshotCorruptionIsReported(t *testing.T) {
	sealer := newSealer(t)
	dir := writeLedger(t, sealer, 2)
	s, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(2, []byte(`{"state":"after 2"}`)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var good []byte
	updateFile(t, dir, func(tx *bolt.Tx) error {
		good = bytes.Clone(tx.Bucket(bucketSnapshot).Get(keySnapshot))
		return nil
	})

	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x04
		assertSnapshotRefused(t, dir, sealer, bad, fmt.Sprintf("byte %d flipped", i))
	}
	for _, n := range []int{0, 4, 11, len(good) - 1} {
		assertSnapshotRefused(t, dir, sealer, bytes.Clone(good[:n]), fmt.Sprintf("truncated to %d bytes", n))
	}
}

func assertSnapshotRefused(t *testing.T, dir string, sealer seal.Sealer, v []byte, what string) {
	t.Helper()
	updateFile(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketSnapshot).Put(keySnapshot, v) })
	s, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatalf("%s: a bad snapshot made Open fail: %v", what, err)
	}
	defer s.Close()
	seq, data, err := s.LoadSnapshot()
	if !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("%s: LoadSnapshot = (%d, %q, %v), want an error about the snapshot", what, seq, data, err)
	}
}

func TestOpenInUse(t *testing.T) {
	dir, sealer := t.TempDir(), newSealer(t)
	first, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	for _, readOnly := range []bool{false, true} {
		s, err := store.Open(dir, store.Options{Sealer: sealer, ReadOnly: readOnly, Timeout: 20 * time.Millisecond})
		if !errors.Is(err, store.ErrInUse) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("ReadOnly=%v: second Open: err = %v, want ErrInUse", readOnly, err)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(dir, store.Options{Sealer: sealer, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the first store closed: %v", err)
	}
	s.Close()
}

func TestReadOnly(t *testing.T) {
	sealer := newSealer(t)
	dir := writeLedger(t, sealer, 2)
	before := stateOf(t, dir)

	s, err := store.Open(dir, store.Options{Sealer: sealer, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Last() != 2 {
		t.Errorf("Last() = %d, want 2", s.Last())
	}
	e, err := s.Get(2)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := s.Unseal(e); err != nil || string(pt) != "secret" {
		t.Errorf("Unseal = (%q, %v)", pt, err)
	}
	assertDense(t, scanAll(t, s), 2)

	s.Start(nil)
	if es, err := s.Append(context.Background(), published(3)); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Append = (%v, %v), want ErrReadOnly", es, err)
	}
	if err := s.SaveSnapshot(2, []byte("x")); err == nil {
		t.Fatal("SaveSnapshot on a read-only store succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := stateOf(t, dir); !after.equal(before) {
		t.Fatal("read-only use changed the file")
	}

	// A read-only open never creates a ledger.
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := store.Open(missing, store.Options{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only Open of a missing directory: err = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("read-only Open created the data directory")
	}
}

func TestAppendRefusals(t *testing.T) {
	ctx := context.Background()
	dir, sealer := t.TempDir(), newSealer(t)

	s, err := store.Open(dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, published(1)); err == nil {
		t.Error("Append before Start succeeded")
	}
	s.Start(nil)
	mustAppend(t, s, published(1))

	refused := map[string]store.Proposal{
		"unknown type":   {Time: t0, Type: "key.frobnicated", Body: []byte("{}")},
		"empty type":     {Time: t0, Body: []byte("{}")},
		"zero time":      {Type: ledger.TypeKeyPublished, Body: []byte("{}")},
		"year 2300":      {Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), Type: ledger.TypeKeyPublished},
		"body too large": {Time: t0, Type: ledger.TypeSettingsPolicy, Body: make([]byte, ledger.MaxBodySize+1)},
	}
	for name, p := range refused {
		// A refused proposal refuses the whole call.
		if es, err := s.Append(ctx, published(2), p); err == nil {
			t.Errorf("%s: Append = %v, want an error", name, es)
		}
	}
	if _, err := s.Append(ctx, refused["unknown type"]); !errors.Is(err, ledger.ErrUnknownType) {
		t.Errorf("unknown type: err = %v, want ErrUnknownType", err)
	}
	if es, err := s.Append(ctx); es != nil || err != nil {
		t.Errorf("Append of nothing = (%v, %v), want (nil, nil)", es, err)
	}
	if es := mustAppend(t, s, published(2)); es[0].Seq != 2 {
		t.Errorf("after refused appends, next seq = %d, want 2", es[0].Seq)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Append(ctx, published(3)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Append after Close: err = %v, want ErrClosed", err)
	}

	noSealer, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer noSealer.Close()
	noSealer.Start(nil)
	if _, err := noSealer.Append(ctx, published(3)); err == nil {
		t.Error("Append without a sealer succeeded")
	}
	assertDense(t, scanAll(t, noSealer), 2)
}

// Close waits for appends in flight: each either completes durably or
// reports ErrClosed.
func TestCloseDuringAppends(t *testing.T) {
	dir, sealer := t.TempDir(), newSealer(t)
	s := openStore(t, dir, sealer, nil)
	var acked atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := s.Append(context.Background(), published(i))
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				acked.Add(1)
			}
		})
	}
	for acked.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	s = openStore(t, dir, sealer, nil)
	if n := len(scanAll(t, s)); int64(n) != acked.Load() {
		t.Fatalf("%d appends acknowledged, %d entries in the file", acked.Load(), n)
	}
}

// TestReleaseMemory: dropping the pages start-up read from the resident
// set changes nothing the store reads or writes afterwards.
func TestReleaseMemory(t *testing.T) {
	dir := t.TempDir()
	sealer := newSealer(t)
	s := openStore(t, dir, sealer, nil)
	for i := range 50 {
		mustAppend(t, s, published(i+1))
	}
	if err := s.ReleaseMemory(); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.Scan(1, func(e *ledger.Entry) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("scan after ReleaseMemory: %d entries, %v", n, err)
	}
	mustAppend(t, s, published(51))
	if _, err := s.ReadLeaves(0, 51); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.ReleaseMemory(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("ReleaseMemory after Close: %v", err)
	}
}

// TestReleaseMemoryWhileWriting: a cluster node releases the pages a raft
// snapshot read while entries are written (and the file grows, so bbolt
// maps it again): every entry is still read back whole.
func TestReleaseMemoryWhileWriting(t *testing.T) {
	sealer := newSealer(t)
	s := openStore(t, t.TempDir(), sealer, nil)
	defer s.Close()
	done := make(chan struct{})
	released := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-done:
				released <- err
				return
			default:
			}
			if e := s.ReleaseMemory(); e != nil && err == nil {
				err = e
			}
		}
	}()
	const n = 2000
	for i := 0; i < n; i += 100 {
		props := make([]store.Proposal, 100)
		for j := range props {
			props[j] = published(i + j + 1)
			props[j].Body = append(props[j].Body, bytes.Repeat([]byte(" "), 2000)...) // grow the file
		}
		if _, err := s.Append(context.Background(), props...); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if got := len(scanAll(t, s)); got != n {
		t.Fatalf("%d entries read back, want %d", got, n)
	}
}
