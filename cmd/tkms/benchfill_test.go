package main

import (
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// TestFillLedgerForBench makes a large dev data directory for the log
// benchmarks (scripts/bench-log.sh): `tkms dev` creates it, then
// TKMS_BENCH_FILL_ENTRIES releases, each one the dev release policy
// grants on the claims it records, are appended through the service's own
// RecordRelease by 256 concurrent writers (group commit), so the ledger is
// what a busy dev instance would have written, and `tkms audit` must pass
// on it. Skipped unless TKMS_BENCH_FILL_DIR is set.
func TestFillLedgerForBench(t *testing.T) {
	dir := os.Getenv("TKMS_BENCH_FILL_DIR")
	if dir == "" {
		t.Skip("set TKMS_BENCH_FILL_DIR (and TKMS_BENCH_FILL_ENTRIES) to make a data directory for scripts/bench-log.sh")
	}
	n, err := strconv.Atoi(os.Getenv("TKMS_BENCH_FILL_ENTRIES"))
	if err != nil || n <= 0 {
		t.Fatalf("TKMS_BENCH_FILL_ENTRIES=%q", os.Getenv("TKMS_BENCH_FILL_ENTRIES"))
	}
	data := filepath.Join(dir, "tkms-dev")
	if _, err := os.Stat(data); err == nil {
		t.Fatalf("%s exists; give an empty TKMS_BENCH_FILL_DIR", data)
	}
	p := startDev(t, data)
	p.stopClean(syscall.SIGINT)

	sealer, err := seal.LoadFile(filepath.Join(data, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: data, Sealer: sealer, ServiceName: "tkms-dev", RotationPolicy: state.DefaultRotationPolicy(),
		Settings: devSettings(t, data), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	var rel state.KeyReleased
	svc.Read(func(st *state.State) {
		p, err := policy.Parse(st.ReleasePolicy)
		if err != nil {
			t.Fatal(err)
		}
		h := policy.Hash(p)
		rel = state.KeyReleased{
			Kids: []string{st.Keys[0].Kid}, API: "v1/release", Issuer: "bench", Identity: "bench-workload",
			EvidenceType: "snp-aci", Simulated: true, Measurement: hex.EncodeToString([]byte(simsnp.DefaultMeasurement)),
			HostData: hex.EncodeToString(make([]byte, 32)), ReportSHA256: hex.EncodeToString(make([]byte, 32)),
			WrappingKeySHA256: hex.EncodeToString(make([]byte, 32)), PolicySeq: st.ReleasePolicySeq, PolicySHA256: hex.EncodeToString(h[:]),
			Claims: map[string]any{
				"x-ms-sevsnpvm-is-debuggable":     false,
				"x-ms-sevsnpvm-launchmeasurement": hex.EncodeToString([]byte(simsnp.DefaultMeasurement)),
				"x-ms-sevsnpvm-hostdata":          hex.EncodeToString(make([]byte, 32)),
				"x-ms-attestation-type":           "sevsnpvm",
			},
		}
	})
	start := time.Now()
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if _, err := svc.RecordRelease(context.Background(), rel); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d releases recorded in %v; ledger at %d entries", n, time.Since(start).Round(time.Millisecond), svc.Seq())
}

// devSettings is the settings policy tkms dev records, so that opening the
// directory here writes no policy change.
func devSettings(t *testing.T, data string) state.Settings {
	t.Helper()
	cfg := &Config{DataDir: data, ServiceName: "tkms-dev"}
	cfg.applyDefaults("text")
	cfg.SettingsPolicy.Service.Debug = true // as cmdDev sets it
	return *cfg.SettingsPolicy
}
