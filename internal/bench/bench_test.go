package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, 1<<62 + 12345, math.MaxInt64} {
		i := bucket(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if i < prev {
			t.Errorf("bucket(%d) = %d < %d: not monotonic", v, i, prev)
		}
		prev = i
		if i >= nBuckets {
			t.Fatalf("bucket(%d) = %d, beyond %d buckets", v, i, nBuckets)
		}
		if v >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/half+1e-12 {
			t.Errorf("bucket %d = [%d, %d] is wider than 1/%d of its values", i, lo, hi, half)
		}
	}
	// Consecutive buckets touch.
	for i := 1; i < nBuckets; i++ {
		_, hiPrev := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if lo != hiPrev+1 {
			t.Fatalf("bucket %d starts at %d, bucket %d ends at %d", i, lo, i-1, hiPrev)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := NewHistogram()
	// 1..10000 microseconds, once each: the q-quantile is q*10000 µs.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != 10000 || h.Min() != time.Microsecond || h.Max() != 10*time.Millisecond {
		t.Fatalf("count %d min %v max %v", h.Count(), h.Min(), h.Max())
	}
	if m := h.Mean(); m < 5000*time.Microsecond || m > 5001*time.Microsecond {
		t.Errorf("mean %v, want 5000.5µs", m)
	}
	prev := time.Duration(0)
	for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 1} {
		got := h.Quantile(q)
		want := time.Duration(q*10000) * time.Microsecond
		if got < want || float64(got-want) > float64(want)/half {
			t.Errorf("Quantile(%v) = %v, want %v (+%.1f%%)", q, got, want, 100.0/half)
		}
		if got < prev {
			t.Errorf("Quantile(%v) = %v < the previous quantile %v", q, got, prev)
		}
		prev = got
	}
	if h.Quantile(1) != h.Max() {
		t.Errorf("Quantile(1) = %v, want the max %v", h.Quantile(1), h.Max())
	}
}

func TestHistogramSmallValuesExact(t *testing.T) {
	h := NewHistogram()
	for _, v := range []time.Duration{3, 1, 2, 200, 100} {
		h.Record(v)
	}
	for q, want := range map[float64]time.Duration{0.2: 1, 0.4: 2, 0.6: 3, 0.8: 100, 1: 200} {
		if got := h.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	h.Record(-5)
	if h.Min() != 0 {
		t.Errorf("a negative duration recorded as %v, want 0", h.Min())
	}
}

func TestHistogramMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 1000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Error("merged count, min, max or mean differ")
	}
	empty := NewHistogram()
	if empty.Quantile(0.5) != 0 || empty.Min() != 0 || empty.Mean() != 0 {
		t.Error("an empty histogram reports values")
	}
}

func TestScheduleArrivals(t *testing.T) {
	start := time.Unix(1000, 0)
	s := &schedule{start: start, rate: 3} // every 333.33 ms
	for i, want := range []time.Duration{0, 333333333, 666666666, time.Second} {
		if got := s.at(int64(i)).Sub(start); got != want {
			t.Errorf("at(%d) = start+%v, want start+%v", i, got, want)
		}
	}
	if n := s.due(start, start.Add(10*time.Second)); n != 30 {
		t.Errorf("due over 10 s at 3/s = %d, want 30", n)
	}
	if n := s.due(start.Add(time.Second), start.Add(2*time.Second)); n != 3 {
		t.Errorf("due in [1s, 2s) = %d, want 3", n)
	}
	if n := s.due(start.Add(-time.Second), start); n != 0 {
		t.Errorf("due before start = %d, want 0", n)
	}
	for i := range int64(5) {
		if got, at := s.claim(); got != i || !at.Equal(s.at(i)) {
			t.Errorf("claim %d = %d at %v", i, got, at)
		}
	}
}

// TestOpenLoopCountsQueueing checks that the open loop measures latency
// from the due time: one worker whose operations take at least 20 ms,
// offered one every 5 ms, falls behind, and operation k (from 0) ends no
// earlier than (k+1) x 20 ms after the start while it was due at k x 5 ms,
// so its latency is at least 20 + 15k ms. A closed loop would report
// about 20 ms for each. The bounds hold however slow the machine is.
func TestOpenLoopCountsQueueing(t *testing.T) {
	const service = 20 * time.Millisecond
	start := time.Now()
	s := &schedule{start: start, rate: 200}
	w := window{start: start, measureFrom: start, end: start.Add(100 * time.Millisecond)}
	w.drainUntil = w.end.Add(50 * time.Millisecond)
	var mu sync.Mutex
	var lat []time.Duration
	var dues []time.Time
	st := runOpen(context.Background(), 1, s, w, func(ctx context.Context, id int, due time.Time, measured bool) {
		time.Sleep(service)
		mu.Lock()
		lat = append(lat, time.Since(due))
		dues = append(dues, due)
		mu.Unlock()
	}, time.Millisecond)
	if len(lat) == 0 || int64(len(lat)) != st.started {
		t.Fatalf("%d operations, %d started", len(lat), st.started)
	}
	for k, l := range lat {
		if want := service + time.Duration(k)*15*time.Millisecond; l < want {
			t.Errorf("operation %d: latency %v, want at least %v", k, l, want)
		}
		if !dues[k].Equal(s.at(int64(k))) {
			t.Errorf("operation %d was due at %v, want %v", k, dues[k], s.at(int64(k)))
		}
	}
	due := s.due(w.measureFrom, w.end)
	if due != 20 {
		t.Errorf("%d due in 100 ms at 200/s, want 20", due)
	}
	if st.started >= due {
		t.Errorf("one 20 ms worker started %d of %d in 150 ms", st.started, due)
	}
	if st.late == 0 || st.maxLag < service {
		t.Errorf("late %d, max lag %v: the backlog was not seen", st.late, st.maxLag)
	}
}

func TestClosedLoop(t *testing.T) {
	start := time.Now()
	w := window{start: start, measureFrom: start.Add(20 * time.Millisecond), end: start.Add(60 * time.Millisecond)}
	var mu sync.Mutex
	counts := map[bool]int{}
	runClosed(context.Background(), 3, w, func(ctx context.Context, id int, at time.Time, measured bool) {
		if measured != !at.Before(w.measureFrom) || !at.Before(w.end) {
			t.Errorf("operation at %v measured=%v", at.Sub(start), measured)
		}
		time.Sleep(time.Millisecond)
		mu.Lock()
		counts[measured]++
		mu.Unlock()
	})
	if counts[true] == 0 || counts[false] == 0 {
		t.Errorf("warm-up %d, measured %d operations", counts[false], counts[true])
	}
	if time.Since(start) < 60*time.Millisecond {
		t.Error("the closed loop ended before its end")
	}
}

func TestReadProcSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	a, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for time.Since(a.at) < 30*time.Millisecond {
		// burn CPU
	}
	b, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.rssKiB <= 0 || b.cpu < a.cpu || cpuPercent(a, b) < 0 {
		t.Errorf("samples %+v, %+v", a, b)
	}
}

// TestFloorInputs checks the floor's operations on the embedded real
// report and a token signed here.
func TestFloorInputs(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	input := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"
	d := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	tok := input + "." + base64.RawURLEncoding.EncodeToString(sig)
	f, err := newFloorInputs(tok, &k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f.rsaKey = &k.PublicKey
	f.payload = samePayloadSize(100)
	f.kid = "kid_1"
	pub, err := base64.StdEncoding.DecodeString("O6P4Rn4xd2rXyuqpvljOFPFaNcXMqIOYxQW/xakO0Ag=") // any X25519 point
	if err != nil {
		t.Fatal(err)
	}
	f.hpkePub = pub
	fl, err := measureFloor(f, floorPlan{evidence: 1, rsaWraps: 1, hpkeWraps: 2}, 2, 5, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if fl.OpsPerSec <= 0 || fl.KeysPerSec != 2*fl.OpsPerSec || len(fl.Primitives) != 4 {
		t.Errorf("floor %+v", fl)
	}
	// A flipped report byte must fail the floor's verification.
	f.report = append([]byte(nil), f.report...)
	f.report[0] ^= 1
	if f.verifyReport() == nil {
		t.Error("a modified report verifies")
	}
	bad := tok[:len(tok)-2] + "AA"
	if _, err := newFloorInputs(bad, &k.PublicKey); err == nil {
		t.Error("a token with a bad signature was accepted")
	}
}
