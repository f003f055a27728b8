package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchReport is the part of `tkms bench --json` the smoke tests read.
type benchReport struct {
	Scenario     string            `json:"scenario"`
	Mode         string            `json:"mode"`
	Operations   uint64            `json:"operations"`
	Requests     uint64            `json:"requests"`
	Keys         uint64            `json:"keys"`
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code"`
	Verified     int               `json:"verified"`
	KeysInKMS    int               `json:"keys_in_kms"`
	Latency      struct {
		Count                    uint64
		P50, P90, P99, P999, Max float64
	} `json:"latency"`
	Server *struct {
		PID   int     `json:"pid"`
		RSSMB float64 `json:"rss_mb"`
	} `json:"server"`
	Floor *struct {
		OpsPerSec float64 `json:"ops_per_s"`
		Ratio     float64 `json:"ratio"`
	} `json:"floor"`
	Open *struct {
		TargetRate float64 `json:"target_rate"`
		Due        int64   `json:"due"`
		Started    int64   `json:"started"`
	} `json:"open_loop"`
	Flood *struct {
		Workers     int               `json:"workers"`
		SourceAddrs []string          `json:"source_addrs"`
		Offered     uint64            `json:"offered"`
		Answered    uint64            `json:"answered"`
		ByStatus    map[string]uint64 `json:"by_status"`
		ByCode      map[string]uint64 `json:"by_code"`
		OK          uint64            `json:"ok"`
		BadShape    uint64            `json:"bad_shape"`
		FirstBad    string            `json:"first_bad"`
	} `json:"flood"`
}

func (r *benchReport) UnmarshalJSON(b []byte) error {
	type plain benchReport
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	// The latency field names carry their unit.
	var lat struct {
		Latency struct {
			Count uint64  `json:"count"`
			P50   float64 `json:"p50_ms"`
			P90   float64 `json:"p90_ms"`
			P99   float64 `json:"p99_ms"`
			P999  float64 `json:"p99_9_ms"`
			Max   float64 `json:"max_ms"`
		} `json:"latency"`
	}
	if err := json.Unmarshal(b, &lat); err != nil {
		return err
	}
	*r = benchReport(p)
	l := lat.Latency
	r.Latency.Count, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.P999, r.Latency.Max = l.Count, l.P50, l.P90, l.P99, l.P999, l.Max
	return nil
}

// runBench runs `tkms bench --json` against its own tkms dev and checks
// what holds whatever the machine's speed: it ran, without errors, with
// ordered percentiles. No timing is asserted.
func runBench(t *testing.T, args ...string) benchReport {
	t.Helper()
	args = append([]string{"bench", "--json", "--duration", "1s", "--warmup", "0", "--floor-iterations", "10"}, args...)
	stdout, stderr, code := runTkms(t, args...)
	if code != 0 {
		t.Fatalf("tkms %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if r.Operations == 0 || r.Requests < r.Operations || r.Latency.Count != r.Operations {
		t.Errorf("%d operations, %d requests, %d latencies", r.Operations, r.Requests, r.Latency.Count)
	}
	if r.Errors != 0 || len(r.ErrorsByCode) != 0 {
		t.Errorf("errors %d: %v\n%s", r.Errors, r.ErrorsByCode, stderr)
	}
	l := r.Latency
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("percentiles not ordered: %+v", l)
	}
	if r.Server == nil || r.Server.PID <= 0 || r.Server.RSSMB <= 0 {
		t.Errorf("no server CPU and RSS from its own tkms dev: %+v", r.Server)
	}
	if !strings.Contains(stderr, "tkms bench: started tkms dev") {
		t.Errorf("stderr does not say it started tkms dev:\n%s", stderr)
	}
	return r
}

// TestBenchSmoke runs every scenario of `tkms bench` for a second, as CI
// does, so that the tool keeps working.
func TestBenchSmoke(t *testing.T) {
	for _, sc := range []string{"pubkeys", "release-app", "release-v1", "release-batch", "mixed"} {
		t.Run(sc, func(t *testing.T) {
			t.Parallel()
			r := runBench(t, "--scenario", sc, "--workers", "2")
			if r.Scenario != sc || r.Mode != "closed" {
				t.Errorf("scenario %q mode %q", r.Scenario, r.Mode)
			}
			switch sc {
			case "pubkeys", "mixed":
				if r.Floor != nil && r.Floor.Ratio != 0 {
					t.Errorf("%s has a floor ratio", sc)
				}
				if sc == "mixed" && r.Verified == 0 {
					t.Error("no release answer was verified")
				}
			default:
				if r.Floor == nil || r.Floor.OpsPerSec <= 0 || r.Floor.Ratio <= 0 {
					t.Errorf("no floor or ratio: %+v", r.Floor)
				}
				if r.Verified == 0 || r.Keys < r.Operations {
					t.Errorf("verified %d, keys %d of %d releases", r.Verified, r.Keys, r.Operations)
				}
			}
			if sc == "release-batch" && (r.KeysInKMS < 4 || r.Keys != r.Operations*uint64(r.KeysInKMS)) {
				t.Errorf("batch: %d keys in the KMS, %d keys in %d releases", r.KeysInKMS, r.Keys, r.Operations)
			}
		})
	}
	// The flood scenario, with the default limits: the public keys are
	// served without error while every flood request is refused with a
	// 4xx or 503 in the JSON error shape (429 and 503 with Retry-After),
	// and none is granted.
	t.Run("flood", func(t *testing.T) {
		t.Parallel()
		r := runBench(t, "--scenario", "flood", "--rate", "200", "--workers", "4", "--flood-workers", "4")
		f := r.Flood
		if r.Scenario != "flood" || r.Mode != "open" || f == nil {
			t.Fatalf("scenario %q mode %q flood %+v", r.Scenario, r.Mode, f)
		}
		if f.Workers != 4 || f.Answered == 0 || f.Offered < f.Answered {
			t.Errorf("flood: %d workers, %d offered, %d answered", f.Workers, f.Offered, f.Answered)
		}
		if f.OK != 0 || f.BadShape != 0 {
			t.Errorf("flood: %d granted, %d answers of the wrong shape (first: %s)", f.OK, f.BadShape, f.FirstBad)
		}
		var n uint64
		for status, c := range f.ByStatus {
			if status != "400" && status != "429" && status != "503" {
				t.Errorf("flood: %d answers of status %s", c, status)
			}
			n += c
		}
		if n != f.Answered {
			t.Errorf("flood: %d answers by status, %d answered", n, f.Answered)
		}
		for code := range f.ByCode {
			if code != "WRAPPING_KEY_HASH_MISMATCH" && code != "RATE_LIMITED" && code != "SERVER_BUSY" {
				t.Errorf("flood: answers with code %s: %v", code, f.ByCode)
			}
		}
	})
	t.Run("open-loop", func(t *testing.T) {
		t.Parallel()
		r := runBench(t, "--scenario", "release-v1", "--rate", "20", "--workers", "4")
		if r.Mode != "open" || r.Open == nil || r.Open.TargetRate != 20 || r.Open.Due != 20 || r.Open.Started == 0 {
			t.Errorf("open loop: mode %q, %+v", r.Mode, r.Open)
		}
	})
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--url", "http://127.0.0.1:1", "--dev"},
		{"bench", "--duration", "0s"},
		{"bench", "--scenario", "nope", "--url", "http://127.0.0.1:1"},
		{"bench", "--scenario", "release-app", "--url", "http://127.0.0.1:1"},
	} {
		_, stderr, code := runTkms(t, args...)
		if code == 0 || !strings.Contains(stderr, "tkms bench:") {
			t.Errorf("tkms %s: exit %d, %s", strings.Join(args, " "), code, stderr)
		}
	}
}
