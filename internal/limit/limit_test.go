package limit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for Keyed.now: the buckets then refill exactly
// as the test says.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)} }
func keyed(t *testing.T, c KeyedConfig, clk *clock) *Keyed {
	t.Helper()
	k, err := NewKeyed(c)
	if err != nil {
		t.Fatal(err)
	}
	k.now = clk.now
	return k
}

func TestNewKeyedConfig(t *testing.T) {
	for _, tc := range []struct {
		c       KeyedConfig
		off, ok bool
	}{
		{KeyedConfig{}, true, true},
		{KeyedConfig{Rate: 0, Burst: 5}, true, true},
		{KeyedConfig{Rate: 1, Burst: 1}, false, true},
		{KeyedConfig{Rate: 0.5, Burst: 3, MaxKeys: 10}, false, true},
		{KeyedConfig{Rate: -1, Burst: 1}, false, false},
		{KeyedConfig{Rate: 1, Burst: 0}, false, false},
		{KeyedConfig{Rate: 1, Burst: 1, MaxKeys: -1}, false, false},
	} {
		k, err := NewKeyed(tc.c)
		if (err == nil) != tc.ok || (err == nil && (k == nil) != tc.off) {
			t.Errorf("NewKeyed(%+v) = %v, %v", tc.c, k, err)
		}
	}
}

// TestKeyedAllow: each key has its own bucket of Burst tokens refilled at
// Rate; a refused event learns when the next token comes.
func TestKeyedAllow(t *testing.T) {
	type step struct {
		advance time.Duration
		key     string
		allowed bool
		retry   time.Duration // for a refusal
	}
	for _, tc := range []struct {
		name  string
		c     KeyedConfig
		steps []step
	}{
		{"burst then refusal", KeyedConfig{Rate: 1, Burst: 2}, []step{
			{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", false, time.Second},
			{500 * time.Millisecond, "a", false, 500 * time.Millisecond},
			{500 * time.Millisecond, "a", true, 0},
		}},
		{"keys are independent", KeyedConfig{Rate: 1, Burst: 1}, []step{
			{0, "a", true, 0}, {0, "a", false, time.Second}, {0, "b", true, 0}, {0, "b", false, time.Second},
		}},
		{"slow rate", KeyedConfig{Rate: 0.1, Burst: 1}, []step{
			{0, "a", true, 0}, {time.Second, "a", false, 9 * time.Second}, {9 * time.Second, "a", true, 0},
		}},
		{"fast rate", KeyedConfig{Rate: 1000, Burst: 1}, []step{
			{0, "a", true, 0}, {0, "a", false, time.Millisecond}, {time.Millisecond, "a", true, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			k := keyed(t, tc.c, clk)
			for i, s := range tc.steps {
				clk.advance(s.advance)
				d := k.Allow(s.key)
				if d.Allowed != s.allowed || (!s.allowed && (d.RetryAfter < s.retry-time.Millisecond || d.RetryAfter > s.retry+time.Millisecond)) {
					t.Fatalf("step %d (%s): %+v, want allowed %v retry %v", i, s.key, d, s.allowed, s.retry)
				}
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {9500 * time.Millisecond, 10}} {
		if got := RetryAfterSeconds(tc.d); got != tc.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestKeyedBoundedKeys: however many distinct keys an attacker makes up,
// the buckets held stay at MaxKeys; idle buckets (full again) are
// forgotten first, and a key seen recently keeps its (empty) bucket while
// fewer than MaxKeys other keys come.
func TestKeyedBoundedKeys(t *testing.T) {
	clk := newClock()
	k := keyed(t, KeyedConfig{Rate: 1, Burst: 1, MaxKeys: 100}, clk)
	k.Allow("victim")
	for i := range 10_000 {
		k.Allow(fmt.Sprintf("random-%d", i))
		if n := k.Stats().Keys; n > 100 {
			t.Fatalf("%d keys held after %d random keys", n, i+1)
		}
	}
	if st := k.Stats(); st.Keys != 100 || st.Evicted == 0 || st.Allowed != 10_001 {
		t.Fatalf("stats %+v", st)
	}

	// Within MaxKeys keys, an emptied bucket stays empty.
	k = keyed(t, KeyedConfig{Rate: 1, Burst: 1, MaxKeys: 100}, clk)
	k.Allow("a")
	for i := range 50 {
		k.Allow(fmt.Sprintf("other-%d", i))
	}
	if k.Allow("a").Allowed {
		t.Fatal("a got a token back while its bucket was held")
	}

	// Idle buckets go without evictions: after the refill time, new keys
	// replace them.
	k = keyed(t, KeyedConfig{Rate: 10, Burst: 10, MaxKeys: 1000}, clk)
	for i := range 500 {
		k.Allow(fmt.Sprintf("old-%d", i))
	}
	clk.advance(2 * time.Second)
	for i := range 500 {
		k.Allow(fmt.Sprintf("new-%d", i))
	}
	if st := k.Stats(); st.Keys != 500 || st.Evicted != 0 {
		t.Fatalf("after idle keys: %+v, want 500 keys and no eviction", st)
	}
}

func TestKeyedNilIsOff(t *testing.T) {
	var k *Keyed
	for range 1000 {
		if !k.Allow("x").Allowed {
			t.Fatal("a nil Keyed refused")
		}
	}
	if st := k.Stats(); st != (KeyedStats{}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestKeyedConcurrent(t *testing.T) {
	k, err := NewKeyed(KeyedConfig{Rate: 1e-3, Burst: 5, MaxKeys: 10})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				k.Allow(fmt.Sprint((g*1000 + i) % 3))
			}
		})
	}
	wg.Wait()
	if st := k.Stats(); st.Allowed != 15 || st.Limited != 8000-15 {
		t.Fatalf("stats %+v: want 15 allowed (3 keys x burst 5)", st)
	}
}

func TestNewPoolConfig(t *testing.T) {
	for _, tc := range []struct {
		c       PoolConfig
		off, ok bool
	}{
		{PoolConfig{}, true, true},
		{PoolConfig{Concurrency: 2, Queue: 8, Wait: time.Second}, false, true},
		{PoolConfig{Concurrency: 1}, false, true},
		{PoolConfig{Concurrency: -1}, false, false},
		{PoolConfig{Concurrency: 1, Queue: -1, Wait: time.Second}, false, false},
		{PoolConfig{Concurrency: 1, Queue: 1}, false, false},
	} {
		p, err := NewPool(tc.c)
		if (err == nil) != tc.ok || (err == nil && (p == nil) != tc.off) {
			t.Errorf("NewPool(%+v) = %v, %v", tc.c, p, err)
		}
	}
}

// TestPool: N run, Q wait, the next is refused at once; a waiter gets the
// first slot freed; a waiter whose wait runs out, or whose context ends,
// leaves the queue.
func TestPool(t *testing.T) {
	ctx := context.Background()
	p, err := NewPool(PoolConfig{Concurrency: 2, Queue: 1, Wait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r1, err1 := p.Acquire(ctx)
	r2, err2 := p.Acquire(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	got := make(chan error, 1)
	go func() {
		r, err := p.Acquire(ctx)
		if err == nil {
			r()
		}
		got <- err
	}()
	waitFor(t, func() bool { return p.Stats().Waiting == 1 })
	start := time.Now()
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("a 4th caller with the queue full: %v, want ErrBusy", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v: it must be at once", d)
	}
	r1()
	if err := <-got; err != nil {
		t.Fatalf("the waiter: %v", err)
	}
	r2()
	st := p.Stats()
	if st.Admitted != 3 || st.Queued != 1 || st.Busy != 1 || st.InFlight != 0 || st.Waiting != 0 {
		t.Fatalf("stats %+v", st)
	}

	// The wait runs out.
	p, _ = NewPool(PoolConfig{Concurrency: 1, Queue: 4, Wait: 20 * time.Millisecond})
	r, _ := p.Acquire(ctx)
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("after the wait: %v, want ErrBusy", err)
	}
	// The context ends.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Acquire(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	r()
	if st := p.Stats(); st.Busy != 1 || st.Canceled != 1 || st.Waiting != 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
	if p.RetryAfter() != time.Second {
		t.Fatalf("RetryAfter %v, want at least 1 s", p.RetryAfter())
	}

	// No queue: refused at once when every slot is taken.
	p, _ = NewPool(PoolConfig{Concurrency: 1})
	r, _ = p.Acquire(ctx)
	if _, err := p.Acquire(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("no queue: %v", err)
	}
	r()
}

// TestPoolBound: many callers never hold more than N slots at once.
func TestPoolBound(t *testing.T) {
	p, _ := NewPool(PoolConfig{Concurrency: 3, Queue: 100, Wait: time.Minute})
	var mu sync.Mutex
	cur, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			r, err := p.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
			r()
		})
	}
	wg.Wait()
	if peak > 3 || peak == 0 {
		t.Fatalf("peak %d in flight, want 1..3", peak)
	}
}

func TestPoolNilIsOff(t *testing.T) {
	var p *Pool
	for range 100 {
		r, err := p.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached within 10 s")
}
