package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFloodClassifies: the flood counts as expected only refusals of the
// JSON error shape (4xx, or 503), with Retry-After on 429 and 503; a 200,
// a 5xx other than 503, a body that is not the error shape, or a missing
// Retry-After is a wrong answer. The answers come from a loopback server.
func TestFloodClassifies(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		code, body string
		retryAfter string
		bad        string // substring of the description; "" for a good refusal
	}{
		{"binding refused", 400, "WRAPPING_KEY_HASH_MISMATCH", `{"error":{"code":"WRAPPING_KEY_HASH_MISMATCH","message":"m"}}`, "", ""},
		{"rate limited", 429, "RATE_LIMITED", `{"error":{"code":"RATE_LIMITED","message":"m"}}`, "3", ""},
		{"busy", 503, "SERVER_BUSY", `{"error":{"code":"SERVER_BUSY","message":"m"}}`, "1", ""},
		{"granted", 200, "", `{"keys":[]}`, "", "200 OK"},
		{"server error", 500, "INTERNAL_ERROR", `{"error":{"code":"INTERNAL_ERROR","message":"m"}}`, "", "status 500"},
		{"not the shape", 400, "X", `nope`, "", "JSON error shape"},
		{"code mismatch", 400, "X", `{"error":{"code":"Y","message":"m"}}`, "", "JSON error shape"},
		{"429 without Retry-After", 429, "RATE_LIMITED", `{"error":{"code":"RATE_LIMITED","message":"m"}}`, "", "Retry-After"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" || r.Method != http.MethodPost {
					t.Errorf("request %s %v", r.Method, r.Header)
				}
				if tc.code != "" {
					w.Header().Set("x-ms-kms-error-code", tc.code)
				}
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			r := &runner{cfg: Config{URL: srv.URL}}
			f := &flood{path: "/v1/keys/k/release", body: []byte("{}"), token: "Bearer tok"}
			status, code, bad, err := f.send(context.Background(), r, srv.Client())
			if err != nil || status != tc.status || code != tc.code {
				t.Fatalf("%d %q %v", status, code, err)
			}
			if (tc.bad == "") != (bad == "") || !strings.Contains(bad, tc.bad) {
				t.Fatalf("bad %q, want %q", bad, tc.bad)
			}
		})
	}
}

func TestFloodAddrs(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:80", "https://kms.example", "://"} {
		if a := floodAddrs(u, 8); len(a) != 0 {
			t.Errorf("%s: %v, want none", u, a)
		}
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	a := floodAddrs(srv.URL, 3)
	if len(a) > 3 || (len(a) > 0 && a[0] != "127.0.0.2") {
		t.Errorf("%v", a)
	}
}
