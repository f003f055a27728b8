// Package storetest is the conformance suite of store.Ledger: every
// storage of the ledger (the embedded file of package store, the raft
// cluster of package raftstore) must pass it, so that the service above
// behaves the same on either. It follows the storage test of
// golang.org/x/mod/sumdb/storage: one exported function that a storage's
// own test calls with a way to open it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// An Opener opens the storage kept in dir (creating it if dir is empty)
// and starts it with onCommit, as the service does. The same dir is opened
// again after Close to check that what was acknowledged is still there.
// The opener registers nothing with t.Cleanup: the suite closes what it
// opens.
type Opener func(t *testing.T, dir string, onCommit func(store.Batch)) store.Ledger

// Run runs the conformance suite against the storage that open opens.
func Run(t *testing.T, open Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"AppendGetScan", testAppendGetScan},
		{"ConcurrentAppends", testConcurrentAppends},
		{"Secrets", testSecrets},
		{"Refusals", testRefusals},
		{"Snapshot", testSnapshot},
		{"Reopen", testReopen},
		{"Backup", testBackup},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// Published returns the proposal of an entry with a small body, i.
func Published(i int) store.Proposal {
	return store.Proposal{Time: t0.Add(time.Duration(i) * time.Second), Type: ledger.TypeKeyPublished, Body: fmt.Appendf(nil, `{"kid":"k%d"}`, i)}
}

// recorder keeps what onCommit saw.
type recorder struct {
	mu      sync.Mutex
	entries []*ledger.Entry
	bad     error
}

func (r *recorder) onCommit(b store.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range b.Entries {
		if n := len(r.entries); n > 0 && e.Seq != r.entries[n-1].Seq+1 && r.bad == nil {
			r.bad = fmt.Errorf("onCommit saw entry %d after %d", e.Seq, r.entries[n-1].Seq)
		}
		r.entries = append(r.entries, e)
	}
	if n := len(r.entries); n > 0 && b.TreeSize != int64(r.entries[n-1].Seq) && r.bad == nil {
		r.bad = fmt.Errorf("onCommit batch tree size %d after entry %d", b.TreeSize, r.entries[n-1].Seq)
	}
}

func (r *recorder) check(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != nil {
		t.Fatal(r.bad)
	}
	if len(r.entries) != n {
		t.Fatalf("onCommit saw %d entries, want %d", len(r.entries), n)
	}
}

func mustAppend(t *testing.T, l store.Ledger, props ...store.Proposal) []*ledger.Entry {
	t.Helper()
	es, err := l.Append(context.Background(), props...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(es) != len(props) {
		t.Fatalf("Append returned %d entries for %d proposals", len(es), len(props))
	}
	return es
}

func assertSame(t *testing.T, got, want *ledger.Entry) {
	t.Helper()
	if !bytes.Equal(ledger.MarshalRecord(got), ledger.MarshalRecord(want)) {
		t.Fatalf("entry %d: got %+v, want %+v", want.Seq, got, want)
	}
}

// checkLog checks that the tree head, hashes and leaves agree with the
// entries 1..n.
func checkLog(t *testing.T, l store.Ledger, n int) {
	t.Helper()
	size, root := l.TreeHead()
	if size != int64(n) || l.Last() != uint64(n) {
		t.Fatalf("tree size %d, last %d; want %d", size, l.Last(), n)
	}
	leaves, err := l.ReadLeaves(0, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	var hashes []tlog.Hash
	for i := range n {
		e, err := l.Get(uint64(i) + 1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(leaves[i], ledger.LeafBytes(e)) {
			t.Fatalf("leaf %d differs from entry %d", i, i+1)
		}
		hashes = append(hashes, tlog.RecordHash(leaves[i]))
	}
	// Every leaf is in the tree of that root at its place: the root is
	// that of exactly these leaves.
	for i := range n {
		p, err := tlog.ProveRecord(int64(n), int64(i), l)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, int64(n), root, int64(i), hashes[i]); err != nil {
			t.Fatalf("leaf %d of %d: %v", i, n, err)
		}
	}
}

func testAppendGetScan(t *testing.T, open Opener) {
	var rec recorder
	l := open(t, t.TempDir(), rec.onCommit)
	defer l.Close()
	if es, err := l.Append(context.Background()); err != nil || es != nil {
		t.Fatalf("empty Append: %v, %v", es, err)
	}
	es := mustAppend(t, l, Published(1), Published(2), Published(3))
	for i, e := range es {
		if e.Seq != uint64(i)+1 || e.Type != ledger.TypeKeyPublished || !e.Time.Equal(t0.Add(time.Duration(i+1)*time.Second)) {
			t.Fatalf("entry %d: %+v", i, e)
		}
		got, err := l.Get(e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		assertSame(t, got, e)
	}
	var scanned []uint64
	if err := l.Scan(2, func(e *ledger.Entry) error { scanned = append(scanned, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(scanned) != "[2 3]" {
		t.Fatalf("Scan(2): %v", scanned)
	}
	if _, err := l.Get(4); err == nil {
		t.Fatal("Get(4) of a 3-entry ledger succeeded")
	}
	rec.check(t, 3)
	checkLog(t, l, 3)
}

func testConcurrentAppends(t *testing.T, open Opener) {
	var rec recorder
	l := open(t, t.TempDir(), rec.onCommit)
	defer l.Close()
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := 1 + i%2
				props := make([]store.Proposal, n)
				for j := range props {
					props[j] = Published(w*1000 + i*10 + j)
				}
				es, err := l.Append(context.Background(), props...)
				if err == nil && (len(es) != n || (n == 2 && es[1].Seq != es[0].Seq+1)) {
					err = fmt.Errorf("entries of one append not consecutive: %v", es)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := writers * (each/2*1 + each/2*2)
	rec.check(t, total)
	checkLog(t, l, total)
}

func testSecrets(t *testing.T, open Opener) {
	l := open(t, t.TempDir(), nil)
	defer l.Close()
	secret := []byte("private key bytes")
	p := store.Proposal{Time: t0, Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k"}`), Secret: bytes.Clone(secret)}
	e := mustAppend(t, l, Published(1), p)[1]
	got, err := l.Get(e.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Sealed) == 0 || bytes.Contains(got.Sealed, secret) || bytes.Contains(ledger.MarshalRecord(got), secret) {
		t.Fatal("the secret is stored in clear, or not at all")
	}
	open1, err := l.Unseal(got)
	if err != nil || !bytes.Equal(open1, secret) {
		t.Fatalf("Unseal: %q, %v", open1, err)
	}
	// The sealed part is bound to the entry's place in the ledger.
	moved := *got
	moved.Seq = 1
	if _, err := l.Unseal(&moved); err == nil {
		t.Fatal("a sealed part opened as part of another entry")
	}
}

func testRefusals(t *testing.T, open Opener) {
	l := open(t, t.TempDir(), nil)
	defer l.Close()
	for name, p := range map[string]store.Proposal{
		"unknown type": {Time: t0, Type: "no.such", Body: []byte("{}")},
		"zero time":    {Type: ledger.TypeKeyPublished, Body: []byte("{}")},
		"too large":    {Time: t0, Type: ledger.TypeKeyPublished, Body: bytes.Repeat([]byte("x"), ledger.MaxLeafSize)},
	} {
		if _, err := l.Append(context.Background(), Published(1), p); err == nil {
			t.Errorf("%s: appended", name)
		}
	}
	if l.Last() != 0 {
		t.Fatalf("refused appends wrote %d entries", l.Last())
	}
	if _, err := l.Append(context.Background(), store.Proposal{Time: t0, Type: ledger.TypeKeyPublished, Body: bytes.Repeat([]byte("x"), ledger.MaxLeafSize)}); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("too large: %v, want ErrTooLarge", err)
	}
}

func testSnapshot(t *testing.T, open Opener) {
	l := open(t, t.TempDir(), nil)
	defer l.Close()
	if seq, data, err := l.LoadSnapshot(); seq != 0 || data != nil || err != nil {
		t.Fatalf("LoadSnapshot of a new ledger: %d, %q, %v", seq, data, err)
	}
	mustAppend(t, l, Published(1), Published(2))
	if err := l.SaveSnapshot(2, []byte("state after 2")); err != nil {
		t.Fatal(err)
	}
	seq, data, err := l.LoadSnapshot()
	if seq != 2 || string(data) != "state after 2" || err != nil {
		t.Fatalf("LoadSnapshot: %d, %q, %v", seq, data, err)
	}
	if l.WriteErr() != nil {
		t.Fatal(l.WriteErr())
	}
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	l := open(t, dir, nil)
	want := mustAppend(t, l, Published(1), Published(2), store.Proposal{Time: t0, Type: ledger.TypeKeyCreated, Body: []byte(`{}`), Secret: []byte("s")})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	l = open(t, dir, rec.onCommit)
	defer l.Close()
	for _, e := range want {
		got, err := l.Get(e.Seq)
		if err != nil {
			t.Fatalf("after reopening: %v", err)
		}
		assertSame(t, got, e)
	}
	if s, err := l.Unseal(want[2]); err != nil || string(s) != "s" {
		t.Fatalf("Unseal after reopening: %q, %v", s, err)
	}
	es := mustAppend(t, l, Published(4))
	if es[0].Seq != 4 {
		t.Fatalf("first append after reopening has seq %d, want 4", es[0].Seq)
	}
	checkLog(t, l, 4)
}

func testBackup(t *testing.T, open Opener) {
	l := open(t, t.TempDir(), nil)
	defer l.Close()
	want := mustAppend(t, l, Published(1), Published(2))
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := store.Open(dir, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer b.Close()
	for _, e := range want {
		got, err := b.Get(e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		assertSame(t, got, e)
	}
}

func testClosed(t *testing.T, open Opener) {
	l := open(t, t.TempDir(), nil)
	mustAppend(t, l, Published(1))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := l.Append(context.Background(), Published(2))
	if !errors.Is(err, store.ErrClosed) && (err == nil || !strings.Contains(err.Error(), "closed")) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
