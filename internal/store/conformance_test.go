package store_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/internal/ledger"
	"testing"

	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/store/storetest"
)

// The embedded store passes the conformance suite that every storage of
// the ledger must pass (internal/raftstore runs it too).
func TestConformance(t *testing.T) {
	sealer := newSealer(t)
	storetest.Run(t, func(t *testing.T, dir string, onCommit func(store.Batch)) store.Ledger {
		s, err := store.Open(dir, store.Options{Sealer: sealer})
		if err != nil {
			t.Fatal(err)
		}
		s.Start(onCommit)
		return s
	})
}

// Write takes entries numbered and sealed by a cluster's leader: in
// sequence, or not at all.
func TestWrite(t *testing.T) {
	sealer := newSealer(t)
	var seen []uint64
	s := openStore(t, t.TempDir(), sealer, func(es []*ledger.Entry) {
		for _, e := range es {
			seen = append(seen, e.Seq)
		}
	})
	sealed, err := sealer.Seal([]byte("secret"), ledger.SealAD(2, ledger.TypeKeyCreated))
	if err != nil {
		t.Fatal(err)
	}
	es := []*ledger.Entry{
		{Seq: 1, Time: storetest.Published(1).Time, Type: ledger.TypeKeyPublished, Body: []byte(`{}`)},
		{Seq: 2, Time: storetest.Published(2).Time, Type: ledger.TypeKeyCreated, Body: []byte(`{}`), Sealed: sealed},
	}
	if err := s.Write(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), []*ledger.Entry{{Seq: 4, Time: es[0].Time, Type: ledger.TypeKeyPublished, Body: []byte(`{}`)}}); !errors.Is(err, store.ErrSeq) {
		t.Fatalf("Write with a gap: %v, want ErrSeq", err)
	}
	if err := s.Write(context.Background(), es[1:]); !errors.Is(err, store.ErrSeq) {
		t.Fatalf("Write of an entry already written: %v, want ErrSeq", err)
	}
	if s.Last() != 2 || fmt.Sprint(seen) != "[1 2]" {
		t.Fatalf("last %d, committed %v", s.Last(), seen)
	}
	got, _ := s.Get(2)
	if p, err := s.Unseal(got); err != nil || string(p) != "secret" {
		t.Fatalf("Unseal: %q, %v", p, err)
	}
	if err := s.WriteErr(); err != nil {
		t.Fatalf("a refused Write made the store refuse writes: %v", err)
	}
}
