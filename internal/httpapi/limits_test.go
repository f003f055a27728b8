package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
)

// limitEnv is a loopback server with key release of the real ACI evidence
// (aci_snp.json, its RSA-4096 wrapping key, the real AMD roots) and the
// admission control the test asks for.
type limitEnv struct {
	srv    *httptest.Server
	iss    *oidcissuer.Issuer
	svc    *kms.Service
	body   []byte // a valid /app/unwrapKey body
	kid    string
	tokens map[string]string // by principal
}

func newLimitEnv(t *testing.T, opts Options, rc release.Config) *limitEnv {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	iss := releasetest.Issuer(t)
	hostData := "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}}})
	jwtPol := &state.JWTPolicy{Issuers: []state.JWTIssuer{{Issuer: iss.URL(), Audiences: []string{"api://t"}, DiscoveryURL: iss.DiscoveryURL()}}}
	svc := releasetest.KMS(t, kms.Config{ReleasePolicy: pol, JWT: jwtPol})
	av, _ := attest.New(attest.Config{})
	rc.KMS, rc.Auth, rc.Attest, rc.Logger = svc, releasetest.Auth(t, iss, "api://t"), av, log
	rel, err := release.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger, opts.Release = log, rel
	e := &limitEnv{srv: httptest.NewServer(New(svc, opts)), iss: iss, svc: svc, tokens: map[string]string{}}
	t.Cleanup(e.srv.Close)
	evidence, _ := os.ReadFile("../attest/snp/testdata/aci_snp.json")
	pubPEM, _ := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	svc.Read(func(st *state.State) { e.kid = st.Keys[0].Kid })
	e.body, _ = json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(pubPEM), "wrappedKid": e.kid, "wrapped": ""})
	return e
}

func (e *limitEnv) token(t *testing.T, principal string) string {
	t.Helper()
	if tok, ok := e.tokens[principal]; ok {
		return tok
	}
	tok, err := e.iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: "api://t", PrincipalID: principal, TenantID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	e.tokens[principal] = tok
	return tok
}

// clientFrom returns a client whose connections come from the loopback
// address from (127.0.0.x: Linux routes all of 127/8 to lo).
func clientFrom(t *testing.T, from string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type call struct {
	method, path, token string
	body                []byte
	header              map[string]string
}

func (e *limitEnv) do(t *testing.T, c *http.Client, k call) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(k.method, e.srv.URL+k.path, bytes.NewReader(k.body))
	if k.body == nil {
		req, _ = http.NewRequest(k.method, e.srv.URL+k.path, nil)
	}
	if k.token != "" {
		req.Header.Set("Authorization", "Bearer "+k.token)
	}
	for h, v := range k.header {
		req.Header.Set(h, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// wantRetry checks a refusal with the JSON error shape and a Retry-After of
// whole seconds, at least 1.
func wantRetry(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	wantError(t, resp, body, status, code)
	s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
}

func newKeyed(t *testing.T, rate float64, burst int) *limit.Keyed {
	t.Helper()
	k, err := limit.NewKeyed(limit.KeyedConfig{Rate: rate, Burst: burst})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func metricsOf(t *testing.T, e *limitEnv) string {
	t.Helper()
	_, b := e.do(t, e.srv.Client(), call{method: http.MethodGet, path: "/metrics"})
	return string(b)
}

// TestPerAddressLimit: past its burst, an address is refused its costly
// requests (POSTs, GET /app/auth) with 429 RATE_LIMITED, Retry-After and
// the JSON error shape, counted in /metrics; another address is not; and
// the public-key, log and heartbeat GETs of the limited address are
// always served.
func TestPerAddressLimit(t *testing.T) {
	e := newLimitEnv(t, Options{PerAddress: newKeyed(t, 0.01, 3)}, release.Config{})
	a, b := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	tok := e.token(t, "p1")
	costly := []call{
		{method: http.MethodPost, path: "/app/unwrapKey", token: tok, body: e.body},
		{method: http.MethodGet, path: "/app/auth", token: tok},
		{method: http.MethodPost, path: "/app/key", token: tok, body: e.body},
	}
	for _, k := range costly {
		if resp, body := e.do(t, a, k); resp.StatusCode != 200 {
			t.Fatalf("%s %s within the burst: %d %s", k.method, k.path, resp.StatusCode, body)
		}
	}
	for _, k := range append(costly,
		call{method: http.MethodPost, path: "/v1/release", token: tok, body: []byte("{}")},
		call{method: http.MethodPost, path: "/v1/keys/" + e.kid + "/release", token: tok, body: []byte("{}")},
		call{method: http.MethodPost, path: "/v1/gov/proposals", body: []byte("x")},
		call{method: http.MethodPost, path: "/app/refresh"},
	) {
		resp, body := e.do(t, a, k)
		wantRetry(t, resp, body, http.StatusTooManyRequests, CodeRateLimited)
		if s, _ := strconv.Atoi(resp.Header.Get("Retry-After")); s < 50 || s > 100 {
			t.Errorf("%s: Retry-After %d s at 0.01/s, want about 100", k.path, s)
		}
	}
	if resp, body := e.do(t, b, costly[1]); resp.StatusCode != 200 {
		t.Fatalf("another address: %d %s", resp.StatusCode, body)
	}
	for range 20 {
		for _, p := range []string{"/app/listpubkeys", "/app/pubkey", "/v1/keys", "/app/heartbeat", "/log/checkpoint", "/v1/log/key", "/app/keyReleasePolicy"} {
			if resp, body := e.do(t, a, call{method: http.MethodGet, path: p}); resp.StatusCode != 200 {
				t.Fatalf("GET %s from a limited address: %d %s", p, resp.StatusCode, body)
			}
		}
	}
	m := metricsOf(t, e)
	for _, want := range []string{
		`tkms_limit_requests_total{limit="address",result="limited"} 7` + "\n",
		`tkms_limit_requests_total{limit="address",result="allowed"} 4` + "\n",
		`tkms_http_errors_total{code="RATE_LIMITED"} 7` + "\n",
		`tkms_limit_rate{limit="address"} 0.01` + "\n",
		`tkms_limit_rate{limit="identity"} 0` + "\n",
		`tkms_limit_keys{limit="address"} 2` + "\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
}

// TestPerIdentityLimit: past its burst, an identity is refused with 429
// RATE_LIMITED and Retry-After, from any address, before its evidence is
// verified; another identity of the same issuer is served; nothing is
// recorded in the ledger for the refusals.
func TestPerIdentityLimit(t *testing.T) {
	pool, _ := limit.NewPool(limit.PoolConfig{Concurrency: 1, Queue: 4, Wait: 10 * time.Second})
	e := newLimitEnv(t, Options{}, release.Config{IdentityLimit: newKeyed(t, 0.01, 2), Verify: pool})
	a, b := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	p1, p2 := e.token(t, "p1"), e.token(t, "p2")
	unwrap := func(tok string) call {
		return call{method: http.MethodPost, path: "/app/unwrapKey", token: tok, body: e.body}
	}
	if resp, body := e.do(t, a, unwrap(p1)); resp.StatusCode != 200 {
		t.Fatalf("first release: %d %s", resp.StatusCode, body)
	}
	if resp, body := e.do(t, b, call{method: http.MethodGet, path: "/app/auth", token: p1}); resp.StatusCode != 200 {
		t.Fatalf("/app/auth within the burst: %d %s", resp.StatusCode, body)
	}
	seq := e.svc.Seq()
	verified := pool.Stats().Admitted
	for _, c := range []*http.Client{a, b} {
		resp, body := e.do(t, c, unwrap(p1))
		wantRetry(t, resp, body, http.StatusTooManyRequests, CodeRateLimited)
		if !strings.Contains(string(body), "identity") {
			t.Errorf("message does not say the identity is limited: %s", body)
		}
		resp, body = e.do(t, c, call{method: http.MethodGet, path: "/app/auth", token: p1})
		wantRetry(t, resp, body, http.StatusTooManyRequests, CodeRateLimited)
	}
	if got := pool.Stats().Admitted; got != verified {
		t.Errorf("%d verifications for refused requests", got-verified)
	}
	if e.svc.Seq() != seq {
		t.Errorf("the refusals wrote %d ledger entries", e.svc.Seq()-seq)
	}
	if resp, body := e.do(t, a, unwrap(p2)); resp.StatusCode != 200 {
		t.Fatalf("another identity: %d %s", resp.StatusCode, body)
	}
	m := metricsOf(t, e)
	for _, want := range []string{
		`tkms_limit_requests_total{limit="identity",result="limited"} 4` + "\n",
		`tkms_limit_requests_total{limit="identity",result="allowed"} 3` + "\n",
		`tkms_limit_keys{limit="identity"} 2` + "\n",
		"tkms_verify_concurrency 1\n",
		"tkms_verify_queue_capacity 4\n",
		`tkms_verify_requests_total{result="admitted"} 2` + "\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
}

// TestVerifyPoolBusy: with one verification slot and no queue, a release
// that arrives while the slot is held is refused at once with 503
// SERVER_BUSY and Retry-After, on every release endpoint, and recorded
// nowhere; once the slot is free the same request succeeds. The slot is
// held by the test itself, as a verification in progress would hold it.
func TestVerifyPoolBusy(t *testing.T) {
	pool, err := limit.NewPool(limit.PoolConfig{Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := newLimitEnv(t, Options{}, release.Config{Verify: pool})
	tok := e.token(t, "p1")
	var att map[string]json.RawMessage
	json.Unmarshal(e.body, &att)
	v1, _ := json.Marshal(map[string]any{"attestation": att["attestation"], "wrapping_key": map[string]any{"type": "hpke", "kem_id": 32, "public_key": "Ue6u8q6L8CfrfU1STLjD4pu4j0/U3ZltTnR/D9nF2kY="}})
	hold, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seq := e.svc.Seq()
	for _, k := range []call{
		{method: http.MethodPost, path: "/app/unwrapKey", token: tok, body: e.body},
		{method: http.MethodPost, path: "/app/key", token: tok, body: e.body},
		{method: http.MethodPost, path: "/v1/release", token: tok, body: func() []byte {
			var m map[string]any
			json.Unmarshal(v1, &m)
			m["all_valid"] = true
			b, _ := json.Marshal(m)
			return b
		}()},
		{method: http.MethodPost, path: "/v1/keys/" + e.kid + "/release", token: tok, body: v1},
	} {
		start := time.Now()
		resp, body := e.do(t, e.srv.Client(), k)
		wantRetry(t, resp, body, http.StatusServiceUnavailable, CodeServerBusy)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: refused after %v, want at once", k.path, d)
		}
	}
	if e.svc.Seq() != seq {
		t.Errorf("busy refusals wrote %d ledger entries", e.svc.Seq()-seq)
	}
	if st := pool.Stats(); st.Busy != 4 || st.InFlight != 1 {
		t.Errorf("pool %+v", st)
	}
	m := metricsOf(t, e)
	for _, want := range []string{`tkms_verify_requests_total{result="busy"} 4` + "\n", "tkms_verify_in_flight 1\n", `tkms_http_errors_total{code="SERVER_BUSY"} 4` + "\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m)
		}
	}
	hold()
	if resp, body := e.do(t, e.srv.Client(), call{method: http.MethodPost, path: "/app/unwrapKey", token: tok, body: e.body}); resp.StatusCode != 200 {
		t.Fatalf("after the slot is free: %d %s", resp.StatusCode, body)
	}
}

// TestTrustedProxies: behind a trusted proxy the client is the rightmost
// X-Forwarded-For hop that is not a trusted proxy: two clients behind one
// proxy have separate buckets, and a client cannot escape its bucket by
// prepending addresses. From an untrusted peer the header is ignored.
func TestTrustedProxies(t *testing.T) {
	proxies, err := ParseTrustedProxies([]string{"127.0.0.2/32", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	e := newLimitEnv(t, Options{PerAddress: newKeyed(t, 0.01, 1), TrustedProxies: proxies}, release.Config{})
	proxy, direct := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	tok := e.token(t, "p1")
	auth := func(xff string) call {
		return call{method: http.MethodGet, path: "/app/auth", token: tok, header: map[string]string{"X-Forwarded-For": xff}}
	}
	for i, step := range []struct {
		c      *http.Client
		xff    string
		status int
	}{
		{proxy, "203.0.113.5", 200},
		{proxy, "203.0.113.5", 429},
		{proxy, "198.51.100.1, 203.0.113.5", 429}, // a prepended hop is the client's own writing
		{proxy, "203.0.113.5, 10.1.2.3", 429},     // through a second trusted proxy
		{proxy, "203.0.113.6", 200},               // another client behind the proxy
		{proxy, "2001:db8:1:2::1", 200},           // IPv6: by /64
		{proxy, "[2001:db8:1:2::ffff]:443", 429},  // same /64, with a port
		{proxy, "garbage, 203.0.113.7", 200},      // the malformed hop is left of the client
		{direct, "192.0.2.1", 200},                // an untrusted peer: the header is ignored
		{direct, "192.0.2.2", 429},                // (the peer 127.0.0.3 is limited)
		{proxy, "", 200},                          // no header: the proxy itself
		{proxy, "not-an-address", 429},            // malformed: the proxy itself
	} {
		resp, body := e.do(t, step.c, auth(step.xff))
		if resp.StatusCode != step.status {
			t.Fatalf("step %d (XFF %q): %d %s, want %d", i, step.xff, resp.StatusCode, body, step.status)
		}
		if step.status == 429 {
			wantRetry(t, resp, body, 429, CodeRateLimited)
		}
	}
}

func TestClientAddr(t *testing.T) {
	proxies, _ := ParseTrustedProxies([]string{"10.0.0.0/8", "::1", "fd00::/8"})
	s := &Server{trustedProxies: proxies}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:1234", []string{"1.2.3.4"}, "192.0.2.1"},
		{"10.0.0.1:1234", nil, "10.0.0.1"},
		{"10.0.0.1:1234", []string{"1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.1:1234", []string{"9.9.9.9, 1.2.3.4, 10.0.0.2"}, "1.2.3.4"},
		{"10.0.0.1:1234", []string{"9.9.9.9", "1.2.3.4 , 10.0.0.2"}, "1.2.3.4"},
		{"10.0.0.1:1234", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"10.0.0.1:1234", []string{"1.2.3.4, bogus"}, "10.0.0.1"},
		{"[::1]:80", []string{"[2001:db8::1]:5"}, "2001:db8::1"},
		{"[::ffff:10.0.0.1]:80", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
		{"[fd00::1]:80", []string{"1.2.3.4, fd12::1"}, "1.2.3.4"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != nil {
			r.Header["X-Forwarded-For"] = tc.xff
		}
		if got := s.clientAddr(r); got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s %q: %v, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad prefix was accepted")
	}
}

// TestBodyCaps: each endpoint class has its cap; a body past it is 413
// REQUEST_TOO_LARGE naming the cap, and nothing is done. The real ACI
// release body fits its cap with room to spare.
func TestBodyCaps(t *testing.T) {
	e := newLimitEnv(t, Options{OperatorToken: operatorToken}, release.Config{})
	tok := e.token(t, "p1")
	if n := int64(len(e.body)); 3*n > DefaultReleaseBodyBytes {
		t.Errorf("the real release body (%d bytes) is more than a third of the release cap %d", n, DefaultReleaseBodyBytes)
	}
	over := func(n int64) []byte { return bytes.Repeat([]byte("a"), int(n)+1) }
	rel, govCap := int64(DefaultReleaseBodyBytes), int64(gov.MaxMessageSize)
	for _, tc := range []struct {
		path, ctype string
		body        []byte
		status      int
		code        string
		capName     string
	}{
		{"/app/unwrapKey", "", over(rel), 413, CodeBodyTooLarge, "release"},
		{"/app/key", "", over(rel), 413, CodeBodyTooLarge, "release"},
		{"/v1/release", "", over(rel), 413, CodeBodyTooLarge, "release"},
		{"/v1/keys/" + e.kid + "/release", "", over(rel), 413, CodeBodyTooLarge, "release"},
		{"/app/unwrapKey", "", bytes.Repeat([]byte(" "), int(rel)-10), 400, release.CodeInvalidRequest, ""}, // within the cap
		{"/v1/gov/proposals", "application/cose", over(govCap), 413, CodeBodyTooLarge, "governance"},
		{"/app/refresh", "application/cose", over(govCap), 413, CodeBodyTooLarge, "governance"},
	} {
		h := map[string]string{"Content-Type": tc.ctype}
		if tc.path == "/app/refresh" {
			h["Authorization"] = "Bearer " + operatorToken
		}
		resp, body := e.do(t, e.srv.Client(), call{method: http.MethodPost, path: tc.path, token: tok, body: tc.body, header: h})
		wantError(t, resp, body, tc.status, tc.code)
		if tc.status == 413 {
			var eb errorBody
			json.Unmarshal(body, &eb)
			limitFor := map[string]int64{"release": rel, "governance": govCap}[tc.capName]
			if want := fmt.Sprintf("exceeds %d bytes, the cap of %s requests", limitFor, tc.capName); !strings.Contains(eb.Error.Message, want) {
				t.Errorf("%s: message %q lacks %q", tc.path, eb.Error.Message, want)
			}
		}
	}
	// Configured caps replace the defaults.
	small := newLimitEnv(t, Options{Bodies: BodyLimits{Release: 1000}}, release.Config{})
	resp, body := small.do(t, small.srv.Client(), call{method: http.MethodPost, path: "/app/unwrapKey", token: tok, body: small.body})
	wantError(t, resp, body, 413, CodeBodyTooLarge)
	if !strings.Contains(string(body), "exceeds 1000 bytes") {
		t.Errorf("configured cap: %s", body)
	}
}
