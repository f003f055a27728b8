package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeJWT is a JWT-shaped token with the given claims and no valid
// signature: what token sources read without verifying.
func fakeJWT(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	p, _ := json.Marshal(claims)
	return h + "." + base64.RawURLEncoding.EncodeToString(p) + ".c2ln"
}

// testClock is an injected clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeIMDS behaves like IMDS's managed identity endpoint: GET only, the
// "Metadata: true" header required (400 otherwise, with IMDS's error
// body), api-version and resource required, and tokens numbered in
// order with expires_in as a string.
type fakeIMDS struct {
	requests  atomic.Int32
	expiresIn string
	status    int    // when not 0, answer this status ...
	body      string // ... with this body
	gate      chan struct{}
	lastQuery atomic.Value
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.requests.Add(1)
	f.lastQuery.Store(r.URL.Query())
	if f.gate != nil {
		<-f.gate
	}
	w.Header().Set("Content-Type", "application/json")
	fail := func(status int, code, desc string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	switch {
	case r.URL.Path != "/metadata/identity/oauth2/token":
		fail(http.StatusNotFound, "not_found", "no such path")
	case r.Method != http.MethodGet:
		fail(http.StatusMethodNotAllowed, "invalid_request", "GET only")
	case r.Header.Get("Metadata") != "true":
		fail(http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
	case r.URL.Query().Get("api-version") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
	case r.URL.Query().Get("resource") == "":
		fail(http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
	case f.status != 0:
		w.WriteHeader(f.status)
		fmt.Fprint(w, f.body)
	default:
		exp := f.expiresIn
		if exp == "" {
			exp = "3600"
		}
		json.NewEncoder(w).Encode(map[string]string{
			"access_token": fmt.Sprintf("imds-token-%d", n),
			"expires_in":   exp,
			"expires_on":   "1700003600",
			"resource":     r.URL.Query().Get("resource"),
			"token_type":   "Bearer",
		})
	}
}

func TestFakeIMDSRequiresMetadataHeader(t *testing.T) {
	srv := httptest.NewServer(&fakeIMDS{})
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d without the Metadata header, want 400", resp.StatusCode)
	}
}

func TestIMDSTokenSource(t *testing.T) {
	f := &fakeIMDS{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ts, err := NewIMDSTokenSource(IMDSOptions{BaseURL: srv.URL + "/", Resource: "https://management.azure.com/", ClientID: "client-1", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := ts.Token(ctx)
	if err != nil || tok != "imds-token-1" {
		t.Fatalf("%q %v", tok, err)
	}
	q := f.lastQuery.Load().(url.Values)
	if q["api-version"][0] != "2018-02-01" || q["resource"][0] != "https://management.azure.com/" || q["client_id"][0] != "client-1" {
		t.Errorf("query %v", q)
	}
	clock.Add(54 * time.Minute) // refreshed 5 minutes before the hour
	if tok, _ := ts.Token(ctx); tok != "imds-token-1" {
		t.Errorf("after 54 min: %q, want the cached token", tok)
	}
	clock.Add(2 * time.Minute)
	if tok, _ := ts.Token(ctx); tok != "imds-token-2" {
		t.Errorf("after 56 min: %q, want a new token", tok)
	}
	if n := f.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	// IMDS fails: the cached token serves until it expires, and every
	// call tries again.
	f.status, f.body = http.StatusInternalServerError, "down"
	clock.Add(56 * time.Minute)
	if tok, err := ts.Token(ctx); tok != "imds-token-2" || err != nil {
		t.Errorf("IMDS down, token unexpired: %q %v, want the cached token", tok, err)
	}
	clock.Add(5 * time.Minute)
	if _, err := ts.Token(ctx); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("IMDS down, token expired: %v, want the error", err)
	}
	if n := f.requests.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

// Concurrent callers share one request; a caller that gives up does not
// fail the others.
func TestIMDSTokenSourceSharesOneFetch(t *testing.T) {
	f := &fakeIMDS{gate: make(chan struct{})}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ts, err := NewIMDSTokenSource(IMDSOptions{BaseURL: srv.URL, Resource: "r"})
	if err != nil {
		t.Fatal(err)
	}
	impatient, cancel := context.WithCancel(context.Background())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := ts.Token(impatient)
		impatientErr <- err
	}()
	for f.requests.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-impatientErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	var wg sync.WaitGroup
	toks := make([]string, 20)
	for i := range toks {
		wg.Go(func() {
			tok, err := ts.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	time.Sleep(20 * time.Millisecond)
	close(f.gate)
	wg.Wait()
	for _, tok := range toks {
		if tok != "imds-token-1" {
			t.Errorf("token %q, want imds-token-1", tok)
		}
	}
	if n := f.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestIMDSTokenSourceErrors(t *testing.T) {
	secret := fakeJWT(map[string]any{"exp": 1})
	tests := []struct {
		name   string
		status int
		body   string
		err    string
	}{
		{"IMDS error", 400, `{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named x was not found"}`, "400 Bad Request: invalid_resource: AADSTS500011"},
		{"throttled", 429, `{"error":"too_many_requests","error_description":"slow down"}`, "429 Too Many Requests: too_many_requests: slow down"},
		{"not JSON", 500, "<html>oops</html>", "IMDS answered 500 Internal Server Error"},
		{"no token", 200, `{"expires_in":"3600"}`, "without an access_token"},
		{"not a token response", 200, `["` + secret + `"]`, "not a token response"},
		{"other type", 200, `{"access_token":"` + secret + `","token_type":"pop"}`, `type "pop"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(&fakeIMDS{status: tt.status, body: tt.body})
			defer srv.Close()
			ts, err := NewIMDSTokenSource(IMDSOptions{BaseURL: srv.URL, Resource: "r"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = ts.Token(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Error("the error quotes the token")
			}
		})
	}
	for _, o := range []IMDSOptions{{}, {Resource: "r", BaseURL: "ftp://x"}, {Resource: "r", BaseURL: "::"}} {
		if _, err := NewIMDSTokenSource(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestIMDSExpiry(t *testing.T) {
	start := time.Unix(1700000000, 0)
	jwtExp := fakeJWT(map[string]any{"exp": 1700000600})
	tests := []struct {
		name string
		tok  imdsToken
		want time.Time
	}{
		{"expires_in", imdsToken{AccessToken: jwtExp, ExpiresIn: "3599", ExpiresOn: "1"}, start.Add(3599 * time.Second)},
		{"expires_on", imdsToken{AccessToken: jwtExp, ExpiresOn: "1700001000"}, time.Unix(1700001000, 0)},
		{"bad expires_in, JWT exp", imdsToken{AccessToken: jwtExp, ExpiresIn: "soon"}, time.Unix(1700000600, 0)},
		{"nothing known", imdsToken{AccessToken: "opaque"}, start},
	}
	for _, tt := range tests {
		if got := imdsExpiry(tt.tok, start); !got.Equal(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRefreshMargin(t *testing.T) {
	for _, tt := range []struct{ life, margin time.Duration }{
		{time.Hour, 5 * time.Minute},
		{24 * time.Hour, 5 * time.Minute},
		{10 * time.Minute, time.Minute},
		{0, 0},
	} {
		if got := refreshMargin(tt.life); got != tt.margin {
			t.Errorf("refreshMargin(%v) = %v, want %v", tt.life, got, tt.margin)
		}
	}
}

func TestUnverifiedJWTExpiry(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name, tok string
		want      int64 // 0: not ok
	}{
		{"exp", fakeJWT(map[string]any{"exp": 1700000000, "sub": "x"}), 1700000000},
		{"fractional exp", fakeJWT(map[string]any{"exp": 1700000000.5}), 1700000000},
		{"padded payload", "e30." + enc([]byte(`{"exp":1700000000}`)) + "==.c2ln", 1700000000},
		{"no exp", fakeJWT(map[string]any{"sub": "x"}), 0},
		{"string exp", fakeJWT(map[string]any{"exp": "1700000000"}), 0},
		{"negative exp", fakeJWT(map[string]any{"exp": -5}), 0},
		{"huge exp", fakeJWT(map[string]any{"exp": 1e300}), 0},
		{"two parts", "e30.e30", 0},
		{"not base64", "e30.!!!.c2ln", 0},
		{"not JSON", "e30." + enc([]byte("exp")) + ".c2ln", 0},
		{"opaque", "imds-token-1", 0},
	}
	for _, tt := range tests {
		got, ok := unverifiedJWTExpiry(tt.tok)
		if ok != (tt.want != 0) || (ok && got.Unix() != tt.want) {
			t.Errorf("%s: %v %v, want %d", tt.name, got, ok, tt.want)
		}
	}
}

func TestFileTokenSource(t *testing.T) {
	clock := &testClock{t: time.Unix(1700000000, 0)}
	path := filepath.Join(t.TempDir(), "azure-identity-token")
	write := func(tok string, mod time.Time) {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	ts := NewFileTokenSource(path, FileTokenOptions{Now: clock.Now})
	if _, err := ts.Token(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	tok1 := fakeJWT(map[string]any{"exp": 1700003600, "n": 1})
	write(tok1, time.Unix(1700000000, 0))
	if got, err := ts.Token(ctx); got != tok1 || err != nil {
		t.Fatalf("%q %v", got, err)
	}
	// Rewritten in place with the same modification time and size: the
	// cached token stays (nothing says it changed) until refresh time.
	tok1b := fakeJWT(map[string]any{"exp": 1700003600, "n": 2})
	write(tok1b, time.Unix(1700000000, 0))
	if got, _ := ts.Token(ctx); got != tok1 {
		t.Error("re-read an unchanged file")
	}
	clock.Add(56 * time.Minute) // past refresh time: read again
	if got, _ := ts.Token(ctx); got != tok1b {
		t.Error("did not re-read a token due for refresh")
	}
	// A new modification time: read again at once.
	tok2 := fakeJWT(map[string]any{"exp": 1700007200, "n": 3})
	write(tok2, time.Unix(1700003000, 0))
	if got, _ := ts.Token(ctx); got != tok2 {
		t.Error("did not re-read a modified file")
	}
	clock.Add(3 * time.Hour)
	if _, err := ts.Token(ctx); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("expired token: %v", err)
	}
	write("", time.Unix(1700020000, 0))
	if _, err := ts.Token(ctx); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	write("opaque-token", time.Unix(1700030000, 0)) // no exp: kept until the file changes
	if got, err := ts.Token(ctx); got != "opaque-token" || err != nil {
		t.Errorf("%q %v", got, err)
	}
}

func TestStaticTokenSource(t *testing.T) {
	if tok, err := StaticTokenSource("t").Token(context.Background()); tok != "t" || err != nil {
		t.Errorf("%q %v", tok, err)
	}
	if _, err := StaticTokenSource("").Token(context.Background()); err == nil {
		t.Error("empty static token accepted")
	}
}

// TestCachingTokenSource: a token is fetched once and kept until shortly
// before its exp; a token without exp is kept for good.
func TestCachingTokenSource(t *testing.T) {
	clock := &testClock{t: time.Unix(1_800_000_000, 0)}
	var fetches int
	jwtWithExp := func(exp int64) string {
		payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d,"n":%d}`, exp, fetches))
		return "e30." + payload + ".sig"
	}
	ts := NewCachingTokenSource(func(context.Context) (string, error) {
		fetches++
		return jwtWithExp(clock.Now().Add(time.Hour).Unix()), nil
	}, CachingOptions{Now: clock.Now})
	a, err := ts.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := ts.Token(context.Background()); b != a || fetches != 1 {
		t.Fatalf("not cached: %d fetches", fetches)
	}
	clock.Add(59 * time.Minute)
	if b, _ := ts.Token(context.Background()); b == a || fetches != 2 {
		t.Fatalf("not refreshed before expiry: %d fetches", fetches)
	}
	opaque := NewCachingTokenSource(func(context.Context) (string, error) { fetches++; return "opaque", nil }, CachingOptions{Now: clock.Now})
	opaque.Token(context.Background())
	clock.Add(1000 * time.Hour)
	if tok, _ := opaque.Token(context.Background()); tok != "opaque" || fetches != 3 {
		t.Fatalf("token without exp: %q, %d fetches", tok, fetches)
	}
}
