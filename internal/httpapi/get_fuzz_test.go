package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// FuzzServerGET sends arbitrary GET and HEAD request targets (paths and
// query parameters: ?fmt=, ?kid=, ?all=, ?index=&size=, ?from=&to=,
// ?state=, tile paths) with an arbitrary Authorization header through the
// whole server (its mux and middleware) of a log of 300 entries. Nothing
// may panic; no answer is a 500; every failure is the JSON error shape
// with its x-ms-kms-error-code; and a 200 proof answer verifies: an
// inclusion proof against the tree hash it names, which is the log's, and
// a consistency proof between its two tree hashes. GET requests change
// no state, so a run does not grow the data directory.
func FuzzServerGET(f *testing.F) {
	for _, target := range []string{
		"/v1/log/proof/inclusion?index=7", "/v1/log/proof/inclusion?index=0&size=1", "/v1/log/proof/inclusion?index=299&size=300",
		"/v1/log/proof/inclusion?index=-1", "/v1/log/proof/inclusion?index=01&size=2", "/v1/log/proof/inclusion?index=9223372036854775807",
		"/v1/log/proof/consistency?from=1&to=300", "/v1/log/proof/consistency?from=300", "/v1/log/proof/consistency?from=5&to=4",
		"/log/checkpoint", "/v1/log/key", "/log/tile/0/000.p/7", "/log/tile/entries/001.p/44",
		"/app/listpubkeys", "/app/pubkey?fmt=tink", "/app/pubkey?fmt=jwk&kid=x_1", "/app/keyReleasePolicy", "/app/auth",
		"/v1/keys?all=true", "/v1/keys/ohttp", "/v1/nonce", "/v1/attestation", "/v1/gov/proposals?state=open", "/v1/gov/members",
		"/metrics", "/app/heartbeat", "/nope", "/v1/keys/%zz/release", "//app//listpubkeys", "/app/pubkey?fmt=%",
	} {
		f.Add(target, "", false)
		f.Add(target, "Bearer a.b.c", true)
	}
	s, svc := newLogServer(f, 300)
	hashes := svc.LogHashes()
	f.Fuzz(func(t *testing.T, target, authorization string, head bool) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return // net/http answers 400 itself before any handler
		}
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		r := httptest.NewRequest(method, "/", nil)
		r.URL, r.RequestURI = u, target
		if authorization != "" && !strings.ContainsAny(authorization, "\r\n\x00") {
			r.Header.Set("Authorization", authorization)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		switch {
		case w.Code >= 500 && w.Code != http.StatusServiceUnavailable && w.Code != http.StatusNotImplemented:
			t.Fatalf("%s %q: status %d: %s", method, target, w.Code, w.Body)
		case w.Code >= 400:
			if w.Header().Get("x-ms-kms-error-code") == "" {
				t.Fatalf("%s %q: status %d without an error code", method, target, w.Code)
			}
			if !head {
				var eb errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
					t.Fatalf("%s %q: status %d with body %q", method, target, w.Code, w.Body)
				}
			}
		case w.Code == http.StatusOK && !head && u.Path == "/v1/log/proof/inclusion":
			var p LogInclusionProof
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			root, err := tlog.TreeHash(p.Size, hashes)
			if err != nil || root != p.Root || tlog.CheckRecord(p.Proof, p.Size, p.Root, p.Index, p.LeafHash) != nil {
				t.Fatalf("%q: inclusion proof %+v does not verify against the log", target, p)
			}
		case w.Code == http.StatusOK && !head && u.Path == "/v1/log/proof/consistency":
			var p LogConsistencyProof
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if tlog.CheckTree(p.Proof, p.To, p.RootTo, p.From, p.RootFrom) != nil {
				t.Fatalf("%q: consistency proof %+v does not verify", target, p)
			}
		}
	})
}
