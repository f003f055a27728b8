package raftstore_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/store/storetest"
)

// TestFootprint measures the disk of a three-node cluster's nodes against
// the embedded store after TKMS_FOOTPRINT_ENTRIES entries (BENCHMARKS.md,
// "A cluster"); it is skipped without it.
func TestFootprint(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TKMS_FOOTPRINT_ENTRIES"))
	if n == 0 {
		t.Skip("set TKMS_FOOTPRINT_ENTRIES")
	}
	sealer, key := newKey(t)
	dir := t.TempDir()
	c := startCluster(t, dir, sealer, key, store.Options{}, nil)
	defer c.Close()
	single, err := store.Open(filepath.Join(dir, "single"), store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	single.Start(nil)
	defer single.Close()
	fill := func(l store.Ledger) {
		const writers, batch = 16, 64
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w * batch; i < n; i += writers * batch {
					props := make([]store.Proposal, min(batch, n-i))
					for j := range props {
						props[j] = storetest.Published(i + j)
					}
					if _, err := l.Append(context.Background(), props...); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	fill(single)
	fill(c)
	deadline := time.Now().Add(5 * time.Minute)
	for _, nd := range c.nodes {
		for nd.Last() != single.Last() {
			if time.Now().After(deadline) {
				t.Fatalf("node %s holds %d entries of %d (applied index %d, commit index %d)", nd.id, nd.Last(), single.Last(), nd.Raft().AppliedIndex(), nd.Raft().CommitIndex())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	size := func(path string) int64 {
		var total int64
		filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
				}
			}
			return nil
		})
		return total
	}
	base := size(filepath.Join(dir, "single", store.FileName))
	t.Logf("%d entries: single node ledger.db %d bytes", single.Last(), base)
	for _, nd := range c.nodes {
		l, r := size(filepath.Join(nd.dir, store.FileName)), size(filepath.Join(nd.dir, "raft"))
		t.Logf("node %s: ledger.db %d, raft/ %d, total %.2f x the single node", nd.id, l, r, float64(l+r)/float64(base))
	}
}
