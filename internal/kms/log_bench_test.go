package kms

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// benchLogSize is the size of the log the log benchmarks run against:
// TKMS_BENCH_LOG_ENTRIES (BENCHMARKS.md uses 1,000,000), default 20,000.
func benchLogSize(b *testing.B) int {
	if v := os.Getenv("TKMS_BENCH_LOG_ENTRIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			b.Fatalf("TKMS_BENCH_LOG_ENTRIES=%q", v)
		}
		return n
	}
	return 20000
}

// BenchmarkLog measures what the transparency log costs at a given size:
// a receipt (what a release answer adds), inclusion and consistency proofs
// (what /v1/log/proof serves), tiles, and signing a checkpoint (what every
// group-commit batch adds). The log is filled with release records the
// size of a real one.
func BenchmarkLog(b *testing.B) {
	n := benchLogSize(b)
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		b.Fatal(err)
	}
	svc, err := Open(context.Background(), Config{
		DataDir: b.TempDir(), Sealer: sealer, ServiceName: "bench", RotationPolicy: testPolicy(),
		Now: (&clock{t: t0}).Now, SnapshotEvery: 1 << 40, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.Tick(context.Background()); err != nil {
		b.Fatal(err)
	}
	kid := svc.st.Keys[0].Kid
	body, _ := json.Marshal(state.KeyReleased{
		Kids: []string{kid}, API: "app/unwrapKey", Format: "jwk", Issuer: "https://login.microsoftonline.com/tenant/v2.0",
		Identity: "3fa85f64-5717-4562-b3fc-2c963f66afa6", EvidenceType: "snp-aci",
		Measurement: strings.Repeat("ab", 48), HostData: strings.Repeat("cd", 32), ReportSHA256: strings.Repeat("ef", 32),
		WrappingKeySHA256: strings.Repeat("01", 32), PolicySeq: 3, PolicySHA256: strings.Repeat("23", 32),
		Claims: map[string]any{"x-ms-sevsnpvm-hostdata": strings.Repeat("cd", 32), "x-ms-sevsnpvm-is-debuggable": false,
			"x-ms-sevsnpvm-launchmeasurement": strings.Repeat("ab", 48), "x-ms-sevsnpvm-guestsvn": 2, "x-ms-attestation-type": "sevsnpvm"},
	})
	start := time.Now()
	for int(svc.Seq()) < n {
		props := make([]store.Proposal, min(1024, n-int(svc.Seq())))
		for i := range props {
			props[i] = store.Proposal{Time: t0, Type: ledger.TypeKeyReleased, Body: body}
		}
		if _, err := svc.store.Append(context.Background(), props...); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("log of %d entries (%d-byte release bodies) written in %v", svc.Seq(), len(body), time.Since(start).Round(time.Millisecond))
	cp := svc.Checkpoint()
	size := cp.Size
	v, err := translog.NewVerifier(svc.LogVerifierKey())
	if err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))

	b.Run("receipt", func(b *testing.B) {
		for b.Loop() {
			r, err := svc.Receipt(uint64(rnd.Int64N(size)) + 1)
			if err != nil {
				b.Fatal(err)
			}
			_ = r.Marshal()
		}
	})
	b.Run("receipt-verify", func(b *testing.B) {
		r, err := svc.Receipt(uint64(size))
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, _, err := r.Verify(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inclusion-proof", func(b *testing.B) {
		for b.Loop() {
			if _, err := tlog.ProveRecord(size, rnd.Int64N(size), svc.LogHashes()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("consistency-proof", func(b *testing.B) {
		for b.Loop() {
			if _, err := tlog.ProveTree(size, 1+rnd.Int64N(size-1), svc.LogHashes()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hash-tile", func(b *testing.B) {
		for b.Loop() {
			t := tlog.TileForIndex(translog.TileHeight, tlog.StoredHashIndex(0, rnd.Int64N(size-translog.TileWidth)))
			t.W = translog.TileWidth
			if _, err := translog.ReadTile(t, size, svc.LogHashes(), svc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("entries-tile", func(b *testing.B) {
		for b.Loop() {
			t := tlog.Tile{H: translog.TileHeight, L: -1, N: rnd.Int64N(size/translog.TileWidth - 1), W: translog.TileWidth}
			if _, err := translog.ReadTile(t, size, svc.LogHashes(), svc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sign-checkpoint", func(b *testing.B) {
		var s = svc.logSigner
		for b.Loop() {
			if _, err := translog.Sign(cp.Checkpoint, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
