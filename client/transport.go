package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/api"
)

// maxAnswer bounds the KMS's answers (a batch of 100 hybrid keys is about
// 400 KiB).
const maxAnswer = 8 << 20

// do sends a request to the KMS and returns the body of a 200 answer. It
// retries transport errors and 5xx answers with backoff, 202 answers after
// their retry-after, and 429 and 503 answers after their retry-after or
// the backoff, whichever is longer (waits capped at MaxBackoff),
// MaxAttempts tries in all; other answers are a *KMSError at once.
func (k *Keys) do(ctx context.Context, method, path string, body []byte, token string) ([]byte, error) {
	var last error
	for attempt := 0; ; attempt++ {
		b, wait, err := k.try(ctx, method, path, body, token, attempt)
		if err == nil {
			return b, nil
		}
		last = err
		var ke *KMSError
		if wait < 0 || ctx.Err() != nil || attempt+1 >= k.cfg.MaxAttempts {
			if errors.As(err, &ke) || wait < 0 {
				return nil, err
			}
			return nil, fmt.Errorf("after %d attempts: %w", attempt+1, last)
		}
		k.retries.Add(1)
		k.log.Debug("retrying KMS request", "path", path, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// try makes one request. A negative wait means: do not retry.
func (k *Keys) try(ctx context.Context, method, path string, body []byte, token string, attempt int) ([]byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.cfg.KMS+path, rd)
	if err != nil {
		return nil, -1, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := k.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err == nil && len(b) > maxAnswer {
		err = fmt.Errorf("answer of more than %d bytes", maxAnswer)
	}
	switch {
	case resp.StatusCode == http.StatusOK && err == nil:
		return b, 0, nil
	case resp.StatusCode == http.StatusOK:
		return nil, backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt), fmt.Errorf("%s %s: %w", method, path, err)
	case resp.StatusCode == http.StatusAccepted:
		wait := k.cfg.MinBackoff
		if s, ok := retryAfter(resp); ok {
			wait = s
		}
		return nil, min(wait, k.cfg.MaxBackoff), kmsError(resp, b)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		// A rate limit (429 RATE_LIMITED) or a busy server (503
		// SERVER_BUSY) says when to come back. The replicas of a fleet
		// refused together would come back together, so the wait is
		// spread over up to half as long again.
		wait := backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt)
		if s, ok := retryAfter(resp); ok && s > 0 {
			wait = max(wait, s+time.Duration(mrand.Int64N(int64(s)/2+1)))
		} else if resp.StatusCode == http.StatusTooManyRequests {
			wait = max(wait, time.Second)
		}
		return nil, min(wait, k.cfg.MaxBackoff), kmsError(resp, b)
	}
	return nil, -1, kmsError(resp, b)
}

// retryAfter reads the Retry-After header in seconds (tkms never sends the
// HTTP-date form).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || s < 0 {
		return 0, false
	}
	return time.Duration(s) * time.Second, true
}

func kmsError(resp *http.Response, body []byte) *KMSError {
	e := &KMSError{
		Status: resp.StatusCode, Code: resp.Header.Get("x-ms-kms-error-code"),
		Message: resp.Header.Get("x-ms-kms-error-details"), RequestID: resp.Header.Get("x-ms-kms-request-id"),
	}
	var eb api.ErrorResponse
	if json.Unmarshal(body, &eb) == nil {
		if e.Code == "" {
			e.Code = eb.Error.Code
		}
		if eb.Error.Message != "" {
			e.Message = eb.Error.Message
		}
	}
	if len(e.Message) > 500 {
		e.Message = e.Message[:500] + "..."
	}
	return e
}

// backoff returns the wait before retry n (from 0): lo doubled n times, at
// most hi, less up to half of it at random (jitter, so that replicas that
// failed together do not retry together).
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for range min(n, 62) {
		if d >= hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d - time.Duration(mrand.Int64N(int64(d)/2+1))
}

// flightGroup collapses concurrent calls with one key into one execution
// (what golang.org/x/sync/singleflight does, without the dependency). The
// call runs on a context of its own (made by mk) so that a caller that
// gives up does not fail the others; each caller waits on its own context.
type flightGroup struct {
	// spawn runs a flight's function on a goroutine, or refuses to
	// (false: the group is closed); nil means a plain go statement.
	spawn func(func()) bool

	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

func (g *flightGroup) do(ctx context.Context, key string, mk func() (context.Context, context.CancelFunc), fn func(context.Context) (any, error)) (any, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	f, ok := g.m[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		fctx, cancel := mk()
		run := func() {
			defer cancel()
			f.val, f.err = fn(fctx)
			g.mu.Lock()
			delete(g.m, key)
			g.mu.Unlock()
			close(f.done)
		}
		if g.spawn == nil {
			go run()
		} else if !g.spawn(run) {
			g.mu.Unlock()
			cancel()
			return nil, ErrClosed
		}
		g.m[key] = f
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
