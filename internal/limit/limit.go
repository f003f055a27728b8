// Package limit is admission control: it decides, before any costly work,
// whether a request may go on. It has two parts.
//
// Keyed is a set of token buckets (golang.org/x/time/rate), one per key —
// a client address, a caller identity — holding a bounded number of keys
// whatever the keys are: buckets idle long enough to be full again are
// forgotten (a full bucket is what a new key gets, so nothing is lost), and
// past the bound the least recently used bucket goes. A refused request
// learns how long to wait (RetryAfter, for the Retry-After header).
//
// Pool bounds concurrent work, the verification of evidence: at most N
// run, at most Q wait, none waits longer than W; beyond that a caller is
// refused at once (ErrBusy), so that a flood of requests costs the server
// a bounded amount of CPU and memory and leaves the rest to cheap requests.
//
// A nil *Keyed or *Pool is a limit turned off: it admits everything.
// Both count what they decide (Stats) for /metrics.
package limit

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the keys of a Keyed when KeyedConfig.MaxKeys is 0:
// about 4 MB of buckets. Buckets idle for Burst/Rate are dropped first, so
// the bound matters only when more keys than that are active at once.
const DefaultMaxKeys = 16384

// KeyedConfig configures a Keyed.
type KeyedConfig struct {
	// Rate is the sustained rate per key, in events per second. 0 turns
	// the limit off (NewKeyed returns nil).
	Rate float64
	// Burst is how many events a key may spend at once (at least 1).
	Burst int
	// MaxKeys bounds the buckets kept (default DefaultMaxKeys): about
	// 250 bytes each.
	MaxKeys int
}

// Keyed is a token bucket per key, with a bounded number of keys. It is
// safe for concurrent use. The nil *Keyed admits everything.
type Keyed struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	refill  time.Duration // time for an empty bucket to fill: an idle bucket older than this is forgotten
	now     func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element // of *bucket
	lru list.List                // front: most recently used

	allowed, limited, evicted atomic.Uint64
}

type bucket struct {
	key  string
	lim  *rate.Limiter
	last time.Time
}

// NewKeyed returns a Keyed, or nil (off) when c.Rate is 0. A negative
// rate, or a burst below 1 with a positive rate, is an error.
func NewKeyed(c KeyedConfig) (*Keyed, error) {
	switch {
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return nil, fmt.Errorf("limit: rate %v: want 0 (off) or a positive number per second", c.Rate)
	case c.Rate == 0:
		return nil, nil
	case c.Burst < 1:
		return nil, fmt.Errorf("limit: burst %d: want at least 1", c.Burst)
	case c.MaxKeys < 0:
		return nil, fmt.Errorf("limit: max keys %d: want a positive number (0: %d)", c.MaxKeys, DefaultMaxKeys)
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	refill := time.Duration(float64(c.Burst) / c.Rate * float64(time.Second))
	return &Keyed{
		limit: rate.Limit(c.Rate), burst: c.Burst, maxKeys: c.MaxKeys, refill: max(refill, time.Second),
		now: time.Now, m: make(map[string]*list.Element),
	}, nil
}

// Decision is the answer of Keyed.Allow.
type Decision struct {
	Allowed bool
	// RetryAfter, for a refused event, is when the key's bucket next
	// holds a token.
	RetryAfter time.Duration
}

// RetryAfterSeconds is d in whole seconds for a Retry-After header:
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}

// Allow takes one token from key's bucket, if it has one.
func (k *Keyed) Allow(key string) Decision {
	if k == nil {
		return Decision{Allowed: true}
	}
	now := k.now()
	k.mu.Lock()
	b := k.bucket(key, now)
	ok := b.lim.AllowN(now, 1)
	var wait time.Duration
	if !ok {
		// The bucket is short of one token by 1-tokens; it refills at
		// limit tokens a second.
		wait = time.Duration((1 - b.lim.TokensAt(now)) / float64(k.limit) * float64(time.Second))
	}
	k.mu.Unlock()
	if ok {
		k.allowed.Add(1)
		return Decision{Allowed: true}
	}
	k.limited.Add(1)
	return Decision{RetryAfter: max(wait, time.Millisecond)}
}

// bucket returns key's bucket, made fresh (full) if it has none, after
// forgetting buckets idle long enough to be full and, past maxKeys, the
// least recently used. k.mu is held.
func (k *Keyed) bucket(key string, now time.Time) *bucket {
	if e, ok := k.m[key]; ok {
		b := e.Value.(*bucket)
		b.last = now
		k.lru.MoveToFront(e)
		return b
	}
	// Idle buckets are at the back; a few go per new key, so the work
	// stays constant per call.
	for range 4 {
		e := k.lru.Back()
		if e == nil || now.Sub(e.Value.(*bucket).last) < k.refill {
			break
		}
		k.remove(e)
	}
	for len(k.m) >= k.maxKeys {
		k.remove(k.lru.Back())
		k.evicted.Add(1)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(k.limit, k.burst), last: now}
	k.m[key] = k.lru.PushFront(b)
	return b
}

func (k *Keyed) remove(e *list.Element) {
	k.lru.Remove(e)
	delete(k.m, e.Value.(*bucket).key)
}

// Rate returns the sustained rate per key (0: off) and the burst.
func (k *Keyed) Rate() (float64, int) {
	if k == nil {
		return 0, 0
	}
	return float64(k.limit), k.burst
}

// KeyedStats are a Keyed's counters since it was made.
type KeyedStats struct {
	Allowed, Limited uint64
	// Keys is the number of buckets held now; Evicted counts buckets
	// forgotten while not yet full because MaxKeys was reached.
	Keys    int
	Evicted uint64
}

// Stats returns the counters (zero for nil).
func (k *Keyed) Stats() KeyedStats {
	if k == nil {
		return KeyedStats{}
	}
	k.mu.Lock()
	n := len(k.m)
	k.mu.Unlock()
	return KeyedStats{Allowed: k.allowed.Load(), Limited: k.limited.Load(), Keys: n, Evicted: k.evicted.Load()}
}

// ErrBusy is the error of a Pool that refuses work: every slot is taken
// and the queue is full, or the wait for a slot ran out.
var ErrBusy = errors.New("limit: too much work in progress")

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Concurrency is the most work running at once. 0 turns the pool off
	// (NewPool returns nil).
	Concurrency int
	// Queue is the most callers waiting for a slot (0: none wait).
	Queue int
	// Wait is the longest a caller waits for a slot.
	Wait time.Duration
}

// Pool bounds concurrent work. It is safe for concurrent use. The nil
// *Pool admits everything.
type Pool struct {
	cfg     PoolConfig
	slots   chan struct{}
	waiting atomic.Int64

	admitted, queued, busy, canceled atomic.Uint64
}

// NewPool returns a Pool, or nil (off) when c.Concurrency is 0.
func NewPool(c PoolConfig) (*Pool, error) {
	switch {
	case c.Concurrency < 0:
		return nil, fmt.Errorf("limit: concurrency %d: want 0 (off) or more", c.Concurrency)
	case c.Concurrency == 0:
		return nil, nil
	case c.Queue < 0:
		return nil, fmt.Errorf("limit: queue %d: want 0 or more", c.Queue)
	case c.Wait < 0 || (c.Queue > 0 && c.Wait == 0):
		return nil, fmt.Errorf("limit: wait %v: want a positive time when callers may queue", c.Wait)
	}
	return &Pool{cfg: c, slots: make(chan struct{}, c.Concurrency)}, nil
}

// Acquire takes a slot, waiting in the queue if there is room in it, for
// at most the configured wait. It returns the function that gives the
// slot back (call it exactly once), or an error wrapping ErrBusy, or
// ctx's error if ctx ends first.
func (p *Pool) Acquire(ctx context.Context) (release func(), err error) {
	if p == nil {
		return func() {}, nil
	}
	select {
	case p.slots <- struct{}{}:
		p.admitted.Add(1)
		return p.release, nil
	default:
	}
	if n := p.waiting.Add(1); n > int64(p.cfg.Queue) {
		p.waiting.Add(-1)
		p.busy.Add(1)
		return nil, fmt.Errorf("%w: %d running and %d waiting", ErrBusy, p.cfg.Concurrency, p.cfg.Queue)
	}
	defer p.waiting.Add(-1)
	p.queued.Add(1)
	t := time.NewTimer(p.cfg.Wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		p.admitted.Add(1)
		return p.release, nil
	case <-t.C:
		p.busy.Add(1)
		return nil, fmt.Errorf("%w: no slot free within %v", ErrBusy, p.cfg.Wait)
	case <-ctx.Done():
		p.canceled.Add(1)
		return nil, ctx.Err()
	}
}

func (p *Pool) release() { <-p.slots }

// RetryAfter is the wait a refused caller is told: the pool's wait, at
// least a second.
func (p *Pool) RetryAfter() time.Duration {
	if p == nil {
		return 0
	}
	return max(p.cfg.Wait, time.Second)
}

// Config returns the pool's configuration (zero for nil).
func (p *Pool) Config() PoolConfig {
	if p == nil {
		return PoolConfig{}
	}
	return p.cfg
}

// PoolStats are a Pool's counters since it was made and its state now.
type PoolStats struct {
	// Admitted got a slot (Queued of them after waiting); Busy were
	// refused; Canceled gave up waiting (their context ended).
	Admitted, Queued, Busy, Canceled uint64
	// InFlight hold a slot now; Waiting wait for one.
	InFlight, Waiting int
}

// Stats returns the counters (zero for nil).
func (p *Pool) Stats() PoolStats {
	if p == nil {
		return PoolStats{}
	}
	return PoolStats{
		Admitted: p.admitted.Load(), Queued: p.queued.Load(), Busy: p.busy.Load(), Canceled: p.canceled.Load(),
		InFlight: len(p.slots), Waiting: int(p.waiting.Load()),
	}
}
