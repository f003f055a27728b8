package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// The public-key benchmarks call Server.ServeHTTP directly, without a
// network or net/http's connection handling: they measure what tkms adds
// per request (middleware, routing, view lookup, headers). Each iteration
// uses a fresh httptest.ResponseRecorder, whose own allocations count in
// allocs/op: 7 of them (the recorder, its header map and body buffer, and
// the header snapshot it takes at WriteHeader). BENCHMARKS.md has the
// end-to-end wrk comparison with nginx.

// newBenchServer opens a real Service on a temporary data directory with
// the default rotation policy, creates the first key and returns the HTTP
// handler.
func newBenchServer(b *testing.B) *httpapi.Server {
	b.Helper()
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	svc, err := kms.Open(ctx, kms.Config{
		DataDir:        b.TempDir(),
		Sealer:         sealer,
		ServiceName:    "bench",
		RotationPolicy: state.DefaultRotationPolicy(),
		Settings:       state.Settings{Service: state.ServiceSettings{Name: "bench"}},
		Logger:         quiet,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	if _, err := svc.Tick(ctx); err != nil {
		b.Fatal(err)
	}
	return httpapi.New(svc, httpapi.Options{Logger: quiet})
}

// get serves r and returns the recorder, or nil if the status is not want.
// r is reused from one iteration to the next; ServeHTTP may wrap r.Body,
// so the body is reset first.
func get(h http.Handler, r *http.Request, want int) *httptest.ResponseRecorder {
	r.Body = http.NoBody
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != want {
		return nil
	}
	return rec
}

func newGet(path string, header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

// check serves one request before timing and verifies the response is the
// full one the benchmark means to measure.
func check(b *testing.B, h http.Handler, r *http.Request, want int, bodyHas string) *httptest.ResponseRecorder {
	b.Helper()
	rec := get(h, r, want)
	if rec == nil {
		b.Fatalf("GET %s: status is not %d", r.URL, want)
	}
	for _, name := range []string{"x-ms-kms-request-id", "Date", "Cache-Control"} {
		if rec.Header().Get(name) == "" {
			b.Fatalf("GET %s: no %s header", r.URL, name)
		}
	}
	if !strings.Contains(rec.Body.String(), bodyHas) {
		b.Fatalf("GET %s: body %q does not contain %q", r.URL, rec.Body.String(), bodyHas)
	}
	return rec
}

func benchSerial(b *testing.B, h http.Handler, r *http.Request, want int) {
	b.ReportAllocs()
	for b.Loop() {
		if get(h, r, want) == nil {
			b.Fatalf("GET %s: status is not %d", r.URL, want)
		}
	}
}

func benchParallel(b *testing.B, h http.Handler, path string, want int, header ...string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := newGet(path, header...) // ServeMux writes to the request: one per goroutine
		for pb.Next() {
			if get(h, r, want) == nil {
				b.Errorf("GET %s: status is not %d", path, want)
				return
			}
		}
	})
}

func BenchmarkListPubKeys(b *testing.B) {
	h := newBenchServer(b)
	r := newGet("/app/listpubkeys")
	check(b, h, r, http.StatusOK, `"key":"`)
	benchSerial(b, h, r, http.StatusOK)
}

func BenchmarkListPubKeysParallel(b *testing.B) {
	h := newBenchServer(b)
	check(b, h, newGet("/app/listpubkeys"), http.StatusOK, `"key":"`)
	benchParallel(b, h, "/app/listpubkeys", http.StatusOK)
}

func BenchmarkV1Keys(b *testing.B) {
	h := newBenchServer(b)
	r := newGet("/v1/keys")
	check(b, h, r, http.StatusOK, `"state":"primary"`)
	benchSerial(b, h, r, http.StatusOK)
}

func BenchmarkV1KeysParallel(b *testing.B) {
	h := newBenchServer(b)
	check(b, h, newGet("/v1/keys"), http.StatusOK, `"state":"primary"`)
	benchParallel(b, h, "/v1/keys", http.StatusOK)
}

// BenchmarkV1KeysNotModified is a client revalidating its cached copy:
// If-None-Match with the current ETag, answered 304 without a body.
func BenchmarkV1KeysNotModified(b *testing.B) {
	h := newBenchServer(b)
	etag := check(b, h, newGet("/v1/keys"), http.StatusOK, `"state":"primary"`).Header().Get("ETag")
	if etag == "" {
		b.Fatal("GET /v1/keys: no ETag")
	}
	r := newGet("/v1/keys", "If-None-Match", etag)
	check(b, h, r, http.StatusNotModified, "")
	benchSerial(b, h, r, http.StatusNotModified)
}

func BenchmarkV1KeysNotModifiedParallel(b *testing.B) {
	h := newBenchServer(b)
	etag := check(b, h, newGet("/v1/keys"), http.StatusOK, `"state":"primary"`).Header().Get("ETag")
	if etag == "" {
		b.Fatal("GET /v1/keys: no ETag")
	}
	benchParallel(b, h, "/v1/keys", http.StatusNotModified, "If-None-Match", etag)
}
