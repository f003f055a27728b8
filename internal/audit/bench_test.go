package audit

import (
	"context"
	"fmt"
	"io/fs"
	"runtime"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// genSource serves a large log without storing it: a real prefix (genesis,
// policies, a key) followed by releases of that key, one a millisecond,
// every tenth a denial, generated on demand.
type genSource struct {
	prefix   [][]byte
	size     int64
	start    time.Time
	release  []byte
	denial   []byte
	checkpnt []byte
}

func newGenSource(b *builder, size int64) *genSource {
	g := &genSource{prefix: b.leaves(), size: size, start: b.now}
	g.release = b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil).Body
	g.denial = b.add(ledger.TypeReleaseDenied, map[string]any{"iss": "https://issuer.test", "oid": "oid-2", "api": "app/unwrapKey", "code": "POLICY_DENIED", "suppressed": 3}).Body
	var hashes memHashes
	for i := range size {
		hs, err := tlog.StoredHashes(i, g.leaf(i), hashes)
		if err != nil {
			panic(err)
		}
		hashes = append(hashes, hs...)
	}
	root := must(tlog.TreeHash(size, hashes))
	g.checkpnt = must(translog.Sign(translog.Checkpoint{Origin: b.origin, Size: size, Root: root}, b.signer)).Note
	return g
}

func (g *genSource) leaf(i int64) []byte {
	if i < int64(len(g.prefix)) {
		return g.prefix[i]
	}
	e := &ledger.Entry{Seq: uint64(i) + 1, Time: g.start.Add(time.Duration(i) * time.Millisecond), Type: ledger.TypeKeyReleased, Body: g.release}
	if i%10 == 0 {
		e.Type, e.Body = ledger.TypeReleaseDenied, g.denial
	}
	return ledger.LeafBytes(e)
}

func (g *genSource) Fetch(ctx context.Context, path string) ([]byte, error) {
	if path == "checkpoint" {
		return g.checkpnt, nil
	}
	t, err := translog.ParseTilePath(path)
	if err != nil || !translog.TileInTree(t, g.size) || t.L > 0 {
		return nil, fs.ErrNotExist
	}
	var out []byte
	for i := t.N * translog.TileWidth; i < t.N*translog.TileWidth+int64(t.W); i++ {
		if t.L < 0 {
			out, _ = translog.AppendBundleEntry(out, g.leaf(i))
		} else {
			h := tlog.RecordHash(g.leaf(i))
			out = append(out, h[:]...)
		}
	}
	return out, nil
}

// BenchmarkAudit audits generated logs. The target is a million entries
// in under a minute on two cores:
//
//	go test -run X -bench 'Audit/entries=1000000' -benchtime 1x -cpu 2 ./internal/audit
func BenchmarkAudit(b *testing.B) {
	for _, size := range []int64{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", size), func(b *testing.B) {
			lb := newBuilder(testRotation())
			src := newGenSource(lb, size)
			runtime.GC()
			b.ResetTimer()
			for range b.N {
				r, err := Run(context.Background(), Options{Source: src, LogKey: lb.vkey})
				if err != nil {
					b.Fatal(err)
				}
				if !r.Passed() || r.Checkpoint.Size != size {
					b.Fatalf("audit failed:\n%s", text(r))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*size), "ns/entry")
		})
	}
}
