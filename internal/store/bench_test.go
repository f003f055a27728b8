package store_test

import (
	"context"
	"sync"
	"sync/atomic"
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
