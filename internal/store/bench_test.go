package store_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
)

// BenchmarkAppendParallel64 measures durable appends with 64 concurrent
// writers, each appending one small entry at a time, as releases do. One
// op is one acknowledged (fsynced) append.
func BenchmarkAppendParallel64(b *testing.B) {
	const writers = 64
	var batches atomic.Int64
	s := openStore(b, b.TempDir(), newSealer(b), func([]*ledger.Entry) { batches.Add(1) })
	body := []byte(`{"kid":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG_1","reason":"released"}`)
	ctx := context.Background()

	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := s.Append(ctx, store.Proposal{Time: t0, Type: ledger.TypeKeyPublished, Body: body}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(b.N)/float64(batches.Load()), "entries/commit")
}

// BenchmarkFdatasync is the hardware floor for BenchmarkAppendParallel64: one
// 4 KiB page written and fdatasynced (what bbolt does on Linux), on the same
// file system. A bbolt commit syncs twice (data pages, then the meta page),
// so the append ceiling is entries/commit / (2 x this).
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}
