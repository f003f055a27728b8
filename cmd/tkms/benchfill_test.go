package main

import (
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	devSettingsPolicy(cfg.SettingsPolicy) // as cmdDev does
	return *cfg.SettingsPolicy
}

// TestFillManyKeysForBench makes a `tkms serve` data directory with
// TKMS_BENCH_FILL_KEYS keys rotated on a one-hour schedule over the hours
// before now (most of them expired and destroyed by now, as a long-lived
// service's are) and TKMS_BENCH_FILL_ENTRIES ledger entries in all, the
// rest releases of the key live at each moment: the size of issue 7's
// memory target. The master key is DIR/master.key; DIR/tkms.json serves
// it. Skipped unless TKMS_BENCH_FILL_KEYS is set.
func TestFillManyKeysForBench(t *testing.T) {
	dir := os.Getenv("TKMS_BENCH_FILL_DIR")
	nkeys, _ := strconv.Atoi(os.Getenv("TKMS_BENCH_FILL_KEYS"))
	if dir == "" || nkeys <= 0 {
		t.Skip("set TKMS_BENCH_FILL_DIR, TKMS_BENCH_FILL_KEYS and TKMS_BENCH_FILL_ENTRIES")
	}
	n, err := strconv.Atoi(os.Getenv("TKMS_BENCH_FILL_ENTRIES"))
	if err != nil || n <= 0 {
		t.Fatalf("TKMS_BENCH_FILL_ENTRIES=%q", os.Getenv("TKMS_BENCH_FILL_ENTRIES"))
	}
	data := filepath.Join(dir, "data")
	sealer, err := seal.CreateFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	rot := state.RotationPolicy{
		RotationInterval: state.Seconds(time.Hour), PublishDelay: state.Seconds(10 * time.Minute),
		GracePeriod: state.Seconds(10 * time.Minute), Retention: state.Seconds(10 * time.Minute), Suite: "x25519",
	}
	start := time.Now().Add(-time.Duration(nkeys) * time.Hour).Truncate(time.Second)
	var mu sync.Mutex
	now := start
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: data, Sealer: sealer, ServiceName: "bench", RotationPolicy: rot,
		Settings: state.Settings{Service: state.ServiceSettings{Name: "bench"}}, ReleasePolicy: []byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`),
		Now: clock, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	per := max((n-int(svc.Seq()))/nkeys-6, 0) // releases per hour, besides the lifecycle entries
	rel := state.KeyReleased{API: "v1/release", Issuer: "bench", Identity: "bench-workload", EvidenceType: "snp-aci",
		Measurement: strings.Repeat("ab", 48), HostData: strings.Repeat("00", 32), ReportSHA256: strings.Repeat("cd", 32),
		WrappingKeySHA256: strings.Repeat("ef", 32), Claims: map[string]any{"x-ms-sevsnpvm-is-debuggable": false}}
	svc.Read(func(st *state.State) {
		p, _ := policy.Parse(st.ReleasePolicy)
		h := policy.Hash(p)
		rel.PolicySeq, rel.PolicySHA256 = st.ReleasePolicySeq, hex.EncodeToString(h[:])
	})
	begin := time.Now()
	for h := 0; h < nkeys; h++ {
		mu.Lock()
		now = start.Add(time.Duration(h) * time.Hour)
		mu.Unlock()
		if _, err := svc.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		var kid string
		svc.Read(func(st *state.State) {
			if k := st.Newest(); k != nil {
				kid = k.Kid
			}
		})
		r := rel
		r.Kids = []string{kid}
		var wg sync.WaitGroup
		var left atomic.Int64
		left.Store(int64(per))
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					if _, err := svc.RecordRelease(context.Background(), r); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	mu.Lock()
	now = time.Now()
	mu.Unlock()
	if _, err := svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	var keys int
	svc.Read(func(st *state.State) { keys = len(st.Keys) })
	t.Logf("%d keys, %d ledger entries written in %v", keys, svc.Seq(), time.Since(begin).Round(time.Millisecond))
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	writeJSONFile(t, filepath.Join(dir, "tkms.json"), map[string]any{
		"listen": "127.0.0.1:0", "data_dir": data, "master_key_file": filepath.Join(dir, "master.key"),
		"service_name": "bench", "key_rotation_policy": rot,
	})
}
