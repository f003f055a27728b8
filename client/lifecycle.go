package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// lifecycle tracks the goroutines of a Keys (Run and shared fetches) so
// that Close can stop them and wait until they have ended. Its zero value
// is a Keys not made by NewKeys: closed from the start.
type lifecycle struct {
	mu      sync.Mutex
	started bool
	closed  bool
	wg      sync.WaitGroup
	ctx     context.Context // done at Close
	cancel  context.CancelFunc
}

func (l *lifecycle) start() {
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.started = true
}

// made reports whether NewKeys made the Keys.
func (l *lifecycle) made() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started
}

// open reports whether the Keys was made and is not closed.
func (l *lifecycle) open() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started && !l.closed
}

// add registers a goroutine that Close waits for; false once closed.
func (l *lifecycle) add() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

func (l *lifecycle) done() { l.wg.Done() }

// spawn runs f on a goroutine that Close waits for; false once closed.
func (l *lifecycle) spawn(f func()) bool {
	if !l.add() {
		return false
	}
	go func() {
		defer l.done()
		f()
	}()
	return true
}

// bind returns a context that also ends at Close, and the function that
// releases it.
func (l *lifecycle) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(l.ctx, cancel)
	return c, func() { stop(); cancel() }
}

// close ends every bound context and waits for every registered goroutine.
func (l *lifecycle) close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.cancel()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// A failure is a remembered failed request of one flight key ("list",
// "all" or "kid:"+kid): until until, callers get err without a new request.
type failure struct {
	n     int // failures in a row
	until time.Time
	err   error
}

// A rememberedError is a failure returned again during its backoff.
type rememberedError struct {
	err   error
	until time.Time
}

func (e *rememberedError) Error() string {
	return e.err.Error() + " (remembered; next try after " + e.until.UTC().Format(time.RFC3339) + ")"
}
func (e *rememberedError) Unwrap() error { return e.err }

// permanent reports whether a failure will recur unchanged: a permanent
// KMS denial or an answer this client rejects.
func permanent(err error) bool {
	var ke *KMSError
	return errors.As(err, &ke) && ke.Permanent() || errors.Is(err, ErrRejected)
}

// recentFailure returns the remembered failure of a flight key while its
// backoff lasts, else nil.
func (k *Keys) recentFailure(key string) error {
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	f := k.fails[key]
	if f == nil || !now.Before(f.until) {
		return nil
	}
	k.remembered.Add(1)
	return &rememberedError{err: f.err, until: f.until}
}

// remember records the outcome of a request of a flight key: a success
// forgets its failures, a failure is remembered for MinBackoff doubled for
// each failure in a row (with jitter, up to MaxBackoff), or MaxBackoff at
// once when it is permanent. Failures caused by Close are not remembered.
func (k *Keys) remember(key string, err error) {
	if err != nil && !k.life.open() {
		return
	}
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		delete(k.fails, key)
		return
	}
	f := k.fails[key]
	if f == nil {
		f = &failure{}
		k.fails[key] = f
	}
	wait := backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, f.n)
	if permanent(err) {
		wait = k.cfg.MaxBackoff
	}
	f.n++
	f.err, f.until = err, now.Add(wait)
}

// forgetOld drops failures whose backoff ended more than MaxBackoff ago
// (their count no longer matters). k.mu is held.
func (k *Keys) forgetOld(now time.Time) {
	for key, f := range k.fails {
		if now.Sub(f.until) > k.cfg.MaxBackoff {
			delete(k.fails, key)
		}
	}
}

// remembering runs fn as the shared flight of key, unless a failure of key
// is remembered, and remembers its outcome.
func (k *Keys) remembering(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	if err := k.recentFailure(key); err != nil {
		return nil, err
	}
	return k.flights.do(ctx, key, k.detached(ctx), func(ctx context.Context) (any, error) {
		v, err := fn(ctx)
		k.remember(key, err)
		return v, err
	})
}

// retryIn is how long Run waits after a failed refresh: until the first
// remembered failure may be tried again (at least MinBackoff, at most
// RefreshInterval, so that one denied key does not stop the others' refreshes), or, with
// none remembered, the backoff of its failures in a row.
func (k *Keys) retryIn(failures int) time.Duration {
	now := k.cfg.Now()
	var first time.Time
	k.mu.Lock()
	for _, f := range k.fails {
		if f.until.After(now) && (first.IsZero() || f.until.Before(first)) {
			first = f.until
		}
	}
	k.mu.Unlock()
	if first.IsZero() {
		return backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, failures)
	}
	return min(max(first.Sub(now), k.cfg.MinBackoff), k.cfg.RefreshInterval)
}

// A prefixedError is an error with this package's prefix and what failed,
// around an error whose own "client: " prefix is dropped from the message
// (never "client: release: client: ...").
type prefixedError struct {
	msg string
	err error
}

func (e *prefixedError) Error() string { return e.msg }
func (e *prefixedError) Unwrap() error { return e.err }

// failedTo returns err as "client: what: " and err's message.
func failedTo(what string, err error) error {
	return &prefixedError{msg: "client: " + what + ": " + strings.TrimPrefix(err.Error(), "client: "), err: err}
}
