// Package answertest checks that every answer of tkms's HTTP API parses:
// it sends the endpoints every method, with bodies and credentials good
// and bad, and fails the test on an answer that is not JSON (but for the
// few successes that are not JSON by design) or an error that is not the
// JSON error shape. The in-process API tests and the end-to-end tests of
// `tkms dev` and `tkms serve` share it.
package answertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/api"
)

// NonJSON are the paths whose successful answers are not JSON, by
// design: metrics, the log's checkpoint, key and tiles, and the OHTTP key
// configurations.
var NonJSON = map[string]bool{"/metrics": true, "/log/checkpoint": true, "/v1/log/key": true, "/v1/keys/ohttp": true, "/log/tile/0/000": true}

// Paths are every endpoint of the API, with variants of their queries
// and path parameters that reach their error paths.
var Paths = []string{"/app/heartbeat", "/app/listpubkeys", "/app/pubkey", "/app/pubkey?fmt=tink", "/app/pubkey?kid=nope_1",
	"/app/pubkey?fmt=pem", "/app/key", "/app/key?fmt=tink", "/app/key?fmt=tink&all=true", "/app/key?kid=nope_1&fmt=jwk",
	"/app/unwrapKey", "/app/unwrapKey?fmt=tink", "/app/unwrapKey?fmt=bad", "/app/refresh", "/app/keyReleasePolicy",
	"/app/settingsPolicy", "/app/jwtValidationPolicy", "/app/keyRotationPolicy", "/app/auth", "/app/proposals",
	"/livez", "/readyz", "/metrics", "/v1/attestation", "/v1/keys", "/v1/keys?all=true", "/v1/keys/ohttp", "/v1/nonce",
	"/v1/release", "/v1/keys/nope_1/release", "/v1/gov/proposals", "/v1/gov/proposals?state=bogus",
	"/v1/gov/proposals/" + strings.Repeat("ab", 32), "/v1/gov/proposals/x/ballots", "/v1/gov/proposals/x/withdraw",
	"/v1/gov/members", "/v1/gov/constitution", "/log/checkpoint", "/log/tile/0/000", "/log/tile/x", "/v1/log/key",
	"/v1/log/entries/0", "/v1/log/entries/999999", "/v1/log/entries/x", "/v1/log/proof/inclusion?index=0",
	"/v1/log/proof/inclusion?index=x", "/v1/log/proof/consistency?from=1&to=2", "/no/such/endpoint", "/app/%2e%2e/heartbeat"}

// Body is a request body and its Content-Type ("" for none).
type Body struct {
	ContentType string
	Body        []byte
}

// Bodies are bodies that every endpoint must answer in JSON: none, an
// empty object, text, a truncated COSE_Sign1 and the invalid JSON that
// the deployed DEPA KMS once answered for an empty release policy.
var Bodies = []Body{{"", nil}, {"application/json", []byte(`{}`)}, {"application/json", []byte(`not json`)},
	{"application/cose", []byte{0xd2, 0x84}}, {"application/json", []byte(`{"type":"add",}`)}}

// Crawl sends base+path for every path with GET, POST, PUT and DELETE,
// POSTs with every body and the others without, each with every
// Authorization value of auths ("" for none) but those skip refuses
// (skip may be nil), and fails t unless every answer passes Check. It
// returns the number of answers.
func Crawl(t testing.TB, hc *http.Client, base string, paths []string, bodies []Body, auths []string, skip func(path, auth string) bool) int {
	t.Helper()
	n := 0
	for _, p := range paths {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			for bi, b := range bodies {
				if method != http.MethodPost && bi > 0 {
					break
				}
				for _, a := range auths {
					if skip != nil && skip(p, a) {
						continue
					}
					req, err := http.NewRequest(method, base+p, bytes.NewReader(b.Body))
					if err != nil {
						t.Fatal(err)
					}
					if b.ContentType != "" {
						req.Header.Set("Content-Type", b.ContentType)
					}
					if a != "" {
						req.Header.Set("Authorization", a)
					}
					resp, err := hc.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					n++
					Check(t, fmt.Sprintf("%s %s (%s %.16q, authorization of %d bytes)", method, p, b.ContentType, b.Body, len(a)), p, resp, body)
				}
			}
		}
	}
	return n
}

// Check fails t unless the answer to a request of path (what names the
// request) is empty, or JSON that parses, or a success of a NonJSON path;
// and, when it is an error, the JSON error shape whose code is the
// x-ms-kms-error-code header.
func Check(t testing.TB, what, path string, resp *http.Response, body []byte) {
	t.Helper()
	ct := resp.Header.Get("Content-Type")
	switch {
	case len(body) == 0:
	case strings.Contains(ct, "json"):
		if !json.Valid(body) {
			t.Fatalf("%s: %d, invalid JSON: %s", what, resp.StatusCode, body)
		}
	case resp.StatusCode >= 400:
		t.Fatalf("%s: %d, an error of type %q: %s", what, resp.StatusCode, ct, body)
	case !NonJSON[strings.SplitN(path, "?", 2)[0]]:
		t.Fatalf("%s: %d, an answer of type %q: %.200s", what, resp.StatusCode, ct, body)
	}
	if resp.StatusCode >= 400 {
		var e api.ErrorResponse
		if json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Code != resp.Header.Get("x-ms-kms-error-code") {
			t.Fatalf("%s: %d, not the error shape: %s", what, resp.StatusCode, body)
		}
	}
}
