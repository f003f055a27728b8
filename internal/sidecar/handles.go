package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/ohttp"
)

// handleEntry is a response context waiting for its response.
type handleEntry struct {
	rc      *ohttp.GatewayContext
	variant string
	expires time.Time
}

// handleStore keeps the response contexts of decrypted requests, each for
// one use, at most max at once, each for at most ttl.
type handleStore struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]handleEntry
}

func newHandleStore(ttl time.Duration, max int, now func() time.Time) *handleStore {
	return &handleStore{ttl: ttl, max: max, now: now, m: map[string]handleEntry{}}
}

// errHandlesExhausted means max handles are waiting for their responses.
var errHandlesExhausted = errors.New("too many requests are waiting for their responses; answer them or retry later")

// put stores rc and returns its handle and expiry.
func (hs *handleStore) put(rc *ohttp.GatewayContext, variant string) (string, time.Time, error) {
	var b [16]byte
	rand.Read(b[:])
	h := base64.RawURLEncoding.EncodeToString(b[:])
	now := hs.now()
	exp := now.Add(hs.ttl)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.m) >= hs.max {
		hs.dropExpiredLocked(now)
		if len(hs.m) >= hs.max {
			return "", time.Time{}, errHandlesExhausted
		}
	}
	hs.m[h] = handleEntry{rc: rc, variant: variant, expires: exp}
	return h, exp, nil
}

// take removes and returns the live entry of h.
func (hs *handleStore) take(h string) (handleEntry, bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	e, ok := hs.m[h]
	if !ok {
		return handleEntry{}, false
	}
	delete(hs.m, h)
	if !hs.now().Before(e.expires) {
		return handleEntry{}, false
	}
	return e, true
}

func (hs *handleStore) len() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.m)
}

func (hs *handleStore) dropExpiredLocked(now time.Time) {
	for h, e := range hs.m {
		if !now.Before(e.expires) {
			delete(hs.m, h)
		}
	}
}

// sweep drops expired handles every ttl until ctx ends, so that response
// secrets do not outlive their use.
func (hs *handleStore) sweep(ctx context.Context) {
	t := time.NewTicker(hs.ttl)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hs.mu.Lock()
			hs.dropExpiredLocked(hs.now())
			hs.mu.Unlock()
		}
	}
}
