package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/ohttp"
)

// stepClock is a clock that moves only when told to.
type stepClock struct{ ns atomic.Int64 }

func newStepClock() *stepClock {
	c := &stepClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *stepClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *stepClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// ohttpRequest encapsulates msg to the first key configuration the env's
// KMS publishes.
func (e *keysEnv) ohttpRequest(msg []byte) []byte {
	e.t.Helper()
	resp, err := e.proxy.Client().Get(e.proxy.URL + "/v1/keys/ohttp")
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cfgs, err := ohttp.ParseKeyConfigs(b)
	if err != nil {
		e.t.Fatal(err)
	}
	req, _, err := ohttp.EncapsulateRequest(cfgs[0], cfgs[0].Suites[0], ohttp.OHTTP, msg)
	if err != nil {
		e.t.Fatal(err)
	}
	return req
}

// levelCounter is a slog.Handler that counts the records of each level.
type levelCounter struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (c *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *levelCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *levelCounter) WithGroup(string) slog.Handler            { return c }
func (c *levelCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[slog.Level]int{}
	}
	c.n[r.Level]++
	return nil
}

// count returns the records of level l and above.
func (c *levelCounter) count(l slog.Level) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for lv, k := range c.n {
		if lv >= l {
			n += k
		}
	}
	return n
}

// TestKeysReleaseStorm is the request-storm case: with a token the KMS
// rejects, requests for a listed but uncached key do not each cause a
// release; the failure is remembered (MaxBackoff, since a 401 is
// permanent) and Run shares it. The failure is logged once, not once per
// request.
func TestKeysReleaseStorm(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	clock := newStepClock()
	cfg := e.config("", "")
	cfg.Tokens = client.StaticTokenSource("not-a-token")
	cfg.Now = clock.Now
	logs := &levelCounter{}
	cfg.Logger = slog.New(logs)
	cfg.MinBackoff, cfg.MaxBackoff = time.Second, time.Hour
	k := e.newKeys(cfg)
	defer k.Close()
	gw := &ohttp.Gateway{Keys: k}
	req := e.ohttpRequest([]byte("GET /"))

	const n = 20
	for i := range n {
		_, _, err := gw.DecapsulateRequest(t.Context(), ohttp.OHTTP, req)
		var ke *client.KMSError
		if !errors.Is(err, ohttp.ErrKeyUnavailable) || errors.Is(err, ohttp.ErrUnknownKeyID) ||
			!errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ke) || ke.Status != http.StatusUnauthorized || !ke.Permanent() {
			t.Fatalf("request %d: %v; want ErrKeyUnavailable wrapping a permanent 401 KMSError", i, err)
		}
	}
	// Requests too short for their header never reach the key source.
	for range n {
		if _, _, err := gw.DecapsulateRequest(t.Context(), ohttp.OHTTP, req[:7]); !errors.Is(err, ohttp.ErrMalformed) {
			t.Fatalf("7-byte request: %v", err)
		}
	}
	if r := e.releases(); r != 1 {
		t.Fatalf("%d releases for %d requests under a rejected token, want 1", r, n)
	}
	if l := logs.count(slog.LevelInfo); l != 1 {
		t.Fatalf("%d log lines (info and above) for one failure and %d requests, want 1", l, 2*n)
	}

	// Run shares the remembered failure: its refresh makes no release.
	if _, err := k.Refresh(t.Context()); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Refresh = %v", err)
	}
	if r := e.releases(); r != 1 {
		t.Fatalf("%d releases after a refresh during the backoff, want 1", r)
	}
	st := k.State()
	var ke *client.KMSError
	if st.Failures != 1 || st.Remembered < n || !errors.As(st.LastError, &ke) || !ke.Permanent() {
		t.Fatalf("state: failures %d, remembered %d, last error %v", st.Failures, st.Remembered, st.LastError)
	}
	// A permanent denial waits MaxBackoff, not MinBackoff doubled.
	clock.Add(10 * time.Minute)
	gw.DecapsulateRequest(t.Context(), ohttp.OHTTP, req)
	if r := e.releases(); r != 1 {
		t.Fatalf("%d releases 10 minutes after a permanent denial, want 1", r)
	}
	clock.Add(time.Hour)
	gw.DecapsulateRequest(t.Context(), ohttp.OHTTP, req)
	if r := e.releases(); r != 2 {
		t.Fatalf("%d releases after MaxBackoff, want 2", r)
	}
}

// TestKeysOutageBackoff: a transient failure (503) is remembered for
// MinBackoff, doubled at each failure in a row, and forgotten on success.
func TestKeysOutageBackoff(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	clock := newStepClock()
	cfg := e.config("", "")
	cfg.Now = clock.Now
	cfg.MinBackoff, cfg.MaxBackoff, cfg.MaxAttempts = time.Minute, time.Hour, 1
	k := e.newKeys(cfg)
	defer k.Close()
	var down sync.Mutex
	outage := true
	e.setIntercept(func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		down.Lock()
		defer down.Unlock()
		if outage && isRelease(r.URL.Path) {
			w.Header().Set("x-ms-kms-error-code", "SERVER_BUSY")
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	try := func() error { _, err := k.ByKID(t.Context(), p.Kid); return err }
	for range 5 {
		var ke *client.KMSError
		if err := try(); !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrKeyNotFound) || !errors.As(err, &ke) || ke.Permanent() {
			t.Fatalf("during the outage: %v", err)
		}
	}
	if r := e.releases(); r != 1 {
		t.Fatalf("%d releases, want 1", r)
	}
	clock.Add(time.Minute) // past the first backoff (at most MinBackoff)
	try()
	if r := e.releases(); r != 2 {
		t.Fatalf("%d releases after MinBackoff, want 2", r)
	}
	clock.Add(time.Minute) // the second backoff is at least MinBackoff
	down.Lock()
	outage = false
	down.Unlock()
	try()
	if r := e.releases(); r != 2 {
		t.Fatalf("%d releases within the doubled backoff, want 2", r)
	}
	clock.Add(time.Minute)
	if err := try(); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// TestKeysErrorKinds: an unknown key is the caller's fault, a KMS that
// cannot be reached is the service's.
func TestKeysErrorKinds(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	k := e.newKeys(e.config("", ""))
	defer k.Close()
	_, err := k.ByOHTTPID(t.Context(), 0x99)
	if !errors.Is(err, client.ErrKeyNotFound) || errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("unknown OHTTP id: %v", err)
	}
	if _, err := k.OHTTPKey(t.Context(), 0x99); !errors.Is(err, ohttp.ErrUnknownKeyID) {
		t.Fatalf("OHTTPKey of an unknown id: %v", err)
	}
	if _, err := k.ByKID(t.Context(), "nope_1"); !errors.Is(err, client.ErrKeyNotFound) {
		t.Fatalf("unknown kid: %v", err)
	}

	cfg := e.config("", "")
	cfg.KMS, cfg.MaxAttempts = "http://127.0.0.1:1", 1
	down := e.newKeys(cfg)
	defer down.Close()
	_, err = down.ByOHTTPID(t.Context(), 0x99)
	if !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrKeyNotFound) {
		t.Fatalf("KMS down: %v", err)
	}
	if _, err := down.OHTTPKey(t.Context(), 0x99); errors.Is(err, ohttp.ErrUnknownKeyID) {
		t.Fatalf("OHTTPKey with the KMS down: %v", err)
	}
}

// TestKeysPrefetchedOnly: with PrefetchedOnly, requests never reach the
// KMS; a miss says whose fault it is.
func TestKeysPrefetchedOnly(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	cfg := e.config("", "")
	cfg.PrefetchedOnly = true
	k := e.newKeys(cfg)
	defer k.Close()
	id := byte(p.ID/10<<4 | p.ID%10)
	if _, err := k.ByOHTTPID(t.Context(), id); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("before any fetch: %v", err)
	}
	if r := e.releases(); r != 0 {
		t.Fatalf("%d releases before All", r)
	}
	if _, err := k.All(t.Context()); err != nil {
		t.Fatal(err)
	}
	if key, err := k.ByOHTTPID(t.Context(), id); err != nil || key.Kid != p.Kid {
		t.Fatalf("prefetched key: %v, %v", key, err)
	}
	if _, err := k.ByOHTTPID(t.Context(), 0x99); !errors.Is(err, client.ErrKeyNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := k.ByKID(t.Context(), "nope_1"); !errors.Is(err, client.ErrKeyNotFound) {
		t.Fatalf("unknown kid: %v", err)
	}
	if r := e.releases(); r != 1 {
		t.Fatalf("%d releases, want All's 1", r)
	}
}

// TestKeysRefreshHookAndReady: OnRefresh sees each refresh; Ready follows
// the published key.
func TestKeysRefreshHookAndReady(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	var mu sync.Mutex
	var calls []error
	var last client.State
	cfg := e.config("", "")
	cfg.OnRefresh = func(st client.State, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls, last = append(calls, err), st
	}
	k := e.newKeys(cfg)
	defer k.Close()
	now := time.Now()
	if k.State().Ready(now) {
		t.Fatal("ready before any fetch")
	}
	if _, err := k.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(calls) != 1 || calls[0] != nil || len(last.Keys) != 1 {
		t.Fatalf("hook calls %v, state %+v", calls, last)
	}
	mu.Unlock()
	st := k.State()
	if !st.Ready(now) || st.Ready(st.Keys[0].NotAfter) {
		t.Fatalf("Ready: %+v", st)
	}
}

func TestStateReady(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := func(nb time.Time) client.KeyState {
		return client.KeyState{NotBefore: nb, NotAfter: nb.Add(24 * time.Hour), ReleaseUntil: nb.Add(48 * time.Hour)}
	}
	for _, tc := range []struct {
		name string
		st   client.State
		want bool
	}{
		{"empty", client.State{}, false},
		{"published", client.State{Keys: []client.KeyState{key(t0)}}, true},
		{"only upcoming", client.State{Keys: []client.KeyState{key(t0.Add(time.Hour))}}, false},
		{"only retired", client.State{Keys: []client.KeyState{key(t0.Add(-30 * time.Hour))}}, false},
		{"published one missing", client.State{Keys: []client.KeyState{key(t0.Add(-time.Hour))}, Missing: []client.KeyState{key(t0)}}, false},
		{"upcoming one missing", client.State{Keys: []client.KeyState{key(t0)}, Missing: []client.KeyState{key(t0.Add(time.Hour))}}, true},
	} {
		if got := tc.st.Ready(t0); got != tc.want {
			t.Errorf("%s: Ready = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKeysClose: Close stops Run and a fetch in flight, and no goroutine
// of Keys outlives it.
func TestKeysClose(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hold := make(chan struct{})
	e.setIntercept(func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		if isRelease(r.URL.Path) {
			select { // a release that hangs until the client gives up
			case <-r.Context().Done():
			case <-hold:
			}
			return true
		}
		return false
	})
	defer close(hold)
	k := e.newKeys(e.config("", ""))
	ran := make(chan error, 1)
	go func() { ran <- k.Run(context.Background()) }()
	fetched := make(chan error, 1)
	go func() { _, err := k.ByKID(context.Background(), p.Kid); fetched <- err }()
	waitFor(t, "a release in flight", func() bool { return e.releases() > 0 })
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Run after Close = %v", err)
	}
	if err := <-fetched; err == nil {
		t.Fatal("the fetch in flight succeeded after Close")
	}
	if _, err := k.ByKID(t.Context(), p.Kid); !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("ByKID after Close = %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	e.proxy.CloseClientConnections()
}

// TestKeysZero: a zero Keys does not panic; it is closed.
func TestKeysZero(t *testing.T) {
	var k client.Keys
	ctx := t.Context()
	if _, err := k.ByKID(ctx, "x_1"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("ByKID: %v", err)
	}
	if _, err := k.ByOHTTPID(ctx, 1); !errors.Is(err, client.ErrClosed) {
		t.Errorf("ByOHTTPID: %v", err)
	}
	if _, err := k.OHTTPKey(ctx, 1); !errors.Is(err, client.ErrClosed) {
		t.Errorf("OHTTPKey: %v", err)
	}
	if _, err := k.All(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("All: %v", err)
	}
	if _, err := k.Refresh(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Refresh: %v", err)
	}
	if err := k.Run(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Run: %v", err)
	}
	if k.Cached() != nil || k.State().Ready(time.Now()) || k.Close() != nil {
		t.Error("Cached, State or Close of a zero Keys")
	}
}

type failingAttester struct{}

func (failingAttester) Attest(context.Context, [64]byte) (*client.Evidence, error) {
	return nil, errors.New("client: obtaining a SEV-SNP report: no device")
}

// TestKeysErrorPrefix: an error says "client:" once, however deep.
func TestKeysErrorPrefix(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	cfg := e.config("", "")
	cfg.Attester = failingAttester{}
	k := e.newKeys(cfg)
	defer k.Close()
	_, err := k.All(t.Context())
	if err == nil || strings.Count(err.Error(), "client:") != 1 || !strings.Contains(err.Error(), "no device") {
		t.Fatalf("error %q: want one \"client:\" and the cause", err)
	}
}
