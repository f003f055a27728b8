package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
)

const operatorToken = "test-operator-token"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	t     *testing.T
	clock *clock
	svc   *kms.Service
	srv   *httptest.Server
}

// newEnv starts a real service on a temporary data directory, behind a real
// HTTP server on loopback. policy may be nil for the DEPA defaults.
func newEnv(t *testing.T, policy *state.RotationPolicy, noKey bool) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: t0}}
	sealer, _ := seal.New(seal.NewKey())
	p := state.DefaultRotationPolicy()
	if policy != nil {
		p = *policy
	}
	log := slog.New(slog.DiscardHandler)
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: t.TempDir(), Sealer: sealer, ServiceName: "api-test", RotationPolicy: p,
		Settings: state.Settings{Service: state.ServiceSettings{Name: "api-test", Description: "d", Version: "1.2.3"}},
		Now:      e.clock.Now, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	if !noKey {
		e.tick()
	}
	e.srv = httptest.NewServer(New(svc, Options{OperatorToken: operatorToken, Logger: log}))
	t.Cleanup(func() { e.srv.Close(); svc.Close() })
	return e
}

func (e *env) tick() {
	e.t.Helper()
	if _, err := e.svc.Tick(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) do(method, path string, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("x-ms-kms-request-id") == "" {
		e.t.Errorf("%s %s: no x-ms-kms-request-id", method, path)
	}
	return resp, body
}

func (e *env) get(path string) (*http.Response, []byte) { return e.do(http.MethodGet, path, nil) }

// wantError checks the JSON error shape and headers.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("error body %s, want code %s", body, code)
	}
	if resp.Header.Get("x-ms-kms-error-code") != code || resp.Header.Get("x-ms-kms-error-details") == "" {
		t.Fatalf("error headers %v", resp.Header)
	}
}

func maxAge(t *testing.T, resp *http.Response) int {
	t.Helper()
	m := regexp.MustCompile(`max-age=(\d+)`).FindStringSubmatch(resp.Header.Get("Cache-Control"))
	if m == nil {
		t.Fatalf("no max-age in cache-control %q", resp.Header.Get("Cache-Control"))
	}
	if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		t.Fatalf("date header %q: %v", resp.Header.Get("Date"), err)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/app/heartbeat")
	if resp.StatusCode != 200 || string(body) != `{"status":"Service is running"}` {
		t.Fatalf("heartbeat: %d %s", resp.StatusCode, body)
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, nil, false)
	for _, h := range requestIDHeaders {
		resp, _ := e.do(http.MethodGet, "/app/heartbeat", map[string]string{h: "abc-" + h})
		if got := resp.Header.Get("x-ms-kms-request-id"); got != "abc-"+h {
			t.Errorf("sent %s, got request id %q", h, got)
		}
	}
	// The first present header in the spec's order wins.
	resp, _ := e.do(http.MethodGet, "/app/heartbeat", map[string]string{"x-request-id": "second", "x-ms-request-id": "first"})
	if got := resp.Header.Get("x-ms-kms-request-id"); got != "first" {
		t.Errorf("precedence: got %q", got)
	}
	r1, _ := e.get("/app/heartbeat")
	r2, _ := e.get("/app/heartbeat")
	if r1.Header.Get("x-ms-kms-request-id") == r2.Header.Get("x-ms-kms-request-id") {
		t.Error("generated request ids repeat")
	}
}

func TestListPubKeys(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/app/listpubkeys")
	var lp ListPubKeys
	if err := json.Unmarshal(body, &lp); err != nil || len(lp.Keys) != 1 {
		t.Fatalf("listpubkeys %s", body)
	}
	if !regexp.MustCompile(`^\{"keys":\[\{"id":"[1-9][0-9]","key":"[A-Za-z0-9+/]{43}="\}\]\}$`).Match(body) {
		t.Fatalf("listpubkeys shape: %s", body)
	}
	raw, _ := base64.StdEncoding.DecodeString(lp.Keys[0].Key)
	if len(raw) != 32 {
		t.Fatalf("key is %d bytes", len(raw))
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("content-type %q", resp.Header.Get("Content-Type"))
	}
	// The first key retires at not_after = t0 + 31 days, and a forced
	// rotation would be advertised one publish delay (7 days) from now:
	// max-age is bounded by the nearer of the two.
	if got := maxAge(t, resp); got != 7*24*3600 {
		t.Fatalf("max-age %d, want %d", got, 7*24*3600)
	}
	e.clock.Add(30 * 24 * time.Hour) // one day before key 1 retires
	resp, _ = e.get("/app/listpubkeys")
	if got := maxAge(t, resp); got != 24*3600 {
		t.Fatalf("max-age one day before rotation %d, want %d", got, 24*3600)
	}
}

func TestListPubKeysEmpty(t *testing.T) {
	e := newEnv(t, nil, true)
	resp, body := e.get("/app/listpubkeys")
	if resp.StatusCode != 200 || string(body) != `{"keys":[]}` {
		t.Fatalf("empty list: %d %s", resp.StatusCode, body)
	}
	maxAge(t, resp)
	resp, body = e.get("/app/pubkey")
	wantError(t, resp, body, 404, CodeKeyNotFound)
}

// TestAdvertisedKeyFollowsClock: after a scheduled rotation the list
// changes exactly when the new key is published, with no new ledger entry
// needed for the change to show.
func TestAdvertisedKeyFollowsClock(t *testing.T) {
	p := state.DefaultRotationPolicy()
	e := newEnv(t, &p, false)
	_, before := e.get("/app/listpubkeys")
	e.clock.Add(24 * 24 * time.Hour) // not_after - publish delay: rotation due
	e.tick()
	_, mid := e.get("/app/listpubkeys")
	if !bytes.Equal(before, mid) {
		t.Fatal("the new key was advertised before its publish delay")
	}
	e.clock.Add(7 * 24 * time.Hour)
	_, after := e.get("/app/listpubkeys")
	if bytes.Equal(before, after) {
		t.Fatal("the advertised key did not change at the new key's publish time")
	}
}

func TestPubKey(t *testing.T) {
	e := newEnv(t, nil, false)
	var k state.Key
	e.svc.Read(func(st *state.State) { k = *st.Keys[0] })

	resp, body := e.get("/app/pubkey?kid=" + k.Kid)
	if resp.StatusCode != 200 {
		t.Fatalf("pubkey: %d %s", resp.StatusCode, body)
	}
	maxAge(t, resp)
	want := `{"kty":"OKP","crv":"X25519","x":"` + base64.RawURLEncoding.EncodeToString(k.PublicKey) + `","kid":"` + k.Kid +
		`","timestamp":` + strconv.FormatInt(k.Created.UnixMilli(), 10) + `,"expiry":` + strconv.FormatInt(k.NotAfter.UnixMilli(), 10) +
		`,"id":` + strconv.Itoa(k.ID) + `,"receipt":`
	if !strings.HasPrefix(string(body), want) {
		t.Fatalf("pubkey jwk\n got %s\nwant %s...", body, want)
	}
	// The receipt proves that the key.created entry binding this kid and
	// public key is in the log.
	var item struct {
		Receipt string `json:"receipt"`
	}
	if err := json.Unmarshal(body, &item); err != nil {
		t.Fatal(err)
	}
	rc, err := translog.ParseReceipt([]byte(item.Receipt))
	if err != nil {
		t.Fatal(err)
	}
	v, err := translog.NewVerifier(e.svc.LogVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := rc.Verify(v)
	if err != nil {
		t.Fatal(err)
	}
	var kc state.KeyCreated
	if err := json.Unmarshal(leaf.Body, &kc); err != nil {
		t.Fatal(err)
	}
	if leaf.Type != ledger.TypeKeyCreated || leaf.Seq != k.Seq || kc.Kid != k.Kid || !bytes.Equal(kc.PublicKey, k.PublicKey) {
		t.Fatalf("receipt of %s at seq %d holds %s seq %d kid %s", k.Kid, k.Seq, leaf.Type, leaf.Seq, kc.Kid)
	}
	_, noKid := e.get("/app/pubkey")
	if !bytes.Equal(noKid, body) {
		t.Fatalf("pubkey without kid must be the latest advertised key")
	}
	_, jwk := e.get("/app/pubkey?fmt=jwk&kid=" + k.Kid)
	if !bytes.Equal(jwk, body) {
		t.Fatal("fmt=jwk differs from the default")
	}

	resp, body = e.get("/app/pubkey?fmt=tink&kid=" + k.Kid)
	id := strconv.Itoa(k.ID)
	wantTink := `{"primaryKeyId":` + id + `,"key":[{"keyData":{"typeUrl":"https://schema.org/PublicKey/Azure/HpkePublicKey","value":"` +
		base64.StdEncoding.EncodeToString(k.PublicKey) + `","keyMaterialType":"ASYMMETRIC_PUBLIC"},"status":"ENABLED","keyId":` + id + `,"outputPrefixType":"RAW"}]}`
	if string(body) != wantTink {
		t.Fatalf("pubkey tink\n got %s\nwant %s", body, wantTink)
	}
	maxAge(t, resp)

	resp, body = e.get("/app/pubkey?kid=AAAA_42")
	wantError(t, resp, body, 404, CodeKeyNotFound)
	resp, body = e.get("/app/pubkey?fmt=pem&kid=" + k.Kid)
	wantError(t, resp, body, 400, CodeInvalidFmtParameter)

	e.clock.Add(100 * 24 * time.Hour) // key 1 expired (no tick: time alone decides)
	resp, body = e.get("/app/pubkey?kid=" + k.Kid)
	wantError(t, resp, body, 410, CodeKeyExpired)
}

func TestKID(t *testing.T) {
	e := newEnv(t, nil, false)
	var k state.Key
	e.svc.Read(func(st *state.State) { k = *st.Keys[0] })
	pem, _ := keys.PublicPEM(keys.X25519, k.PublicKey)
	h := sha256.Sum256(pem)
	if want := base64.RawURLEncoding.EncodeToString(h[:]) + "_1"; k.Kid != want || k.ID != 11 {
		t.Fatalf("kid %s id %d, want %s id 11", k.Kid, k.ID, want)
	}
}

func TestRefresh(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.do(http.MethodPost, "/app/refresh", nil)
	wantError(t, resp, body, 401, CodeUnauthorized)
	resp, body = e.do(http.MethodPost, "/app/refresh", map[string]string{"Authorization": "Bearer nope"})
	wantError(t, resp, body, 403, CodeForbidden)
	resp, body = e.do(http.MethodGet, "/app/refresh", map[string]string{"Authorization": "Bearer " + operatorToken})
	wantError(t, resp, body, 405, CodeMethodNotAllowed)

	resp, body = e.do(http.MethodPost, "/app/refresh", map[string]string{"Authorization": "Bearer " + operatorToken})
	if resp.StatusCode != 200 {
		t.Fatalf("refresh: %d %s", resp.StatusCode, body)
	}
	var item keys.Item
	if err := json.Unmarshal(body, &item); err != nil || !strings.HasSuffix(item.Kid, "_2") || item.ID != 12 || item.D != "" || item.X == "" {
		t.Fatalf("refresh item %s", body)
	}
	if strings.Contains(string(body), `"d"`) {
		t.Fatal("refresh answer carries private material")
	}
	// Durable and applied before the answer: the key is known at once.
	resp, _ = e.get("/app/pubkey?kid=" + item.Kid)
	if resp.StatusCode != 200 {
		t.Fatalf("refreshed key unknown right after 200: %d", resp.StatusCode)
	}
}

func TestRefreshDisabledWithoutToken(t *testing.T) {
	sealer, _ := seal.New(seal.NewKey())
	svc, err := kms.Open(context.Background(), kms.Config{DataDir: t.TempDir(), Sealer: sealer, RotationPolicy: state.DefaultRotationPolicy(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	srv := httptest.NewServer(New(svc, Options{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/app/refresh", nil)
	req.Header.Set("Authorization", "Bearer anything")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp, body, 403, CodeRefreshDisabled)
	if !strings.Contains(string(body), "not needed") || !strings.Contains(string(body), "tkms keys rotate --token-file") {
		t.Fatalf("the refusal does not say what to do instead: %s", body)
	}
}

func TestPolicies(t *testing.T) {
	e := newEnv(t, nil, false)
	_, body := e.get("/app/keyRotationPolicy")
	var rp map[string]any
	json.Unmarshal(body, &rp)
	if rp["rotation_interval_seconds"] != float64(2678400) || rp["grace_period_seconds"] != float64(604800) {
		t.Fatalf("keyRotationPolicy %s", body)
	}
	_, body = e.get("/app/settingsPolicy")
	if string(body) != `{"service":{"name":"api-test","description":"d","version":"1.2.3","debug":false}}` {
		t.Fatalf("settingsPolicy %s", body)
	}
}

func TestV1Keys(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/v1/keys")
	var vk api.V1Keys
	if err := json.Unmarshal(body, &vk); err != nil || len(vk.Keys) != 1 {
		t.Fatalf("/v1/keys %s", body)
	}
	k := vk.Keys[0]
	if k.State != "primary" || k.KEM != 0x20 || k.KDF != 1 || k.AEAD != 2 || k.Suite != "x25519" || k.OHTTPKeyID != 0x11 || k.ID != 11 {
		t.Fatalf("/v1/keys key %+v", k)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("etag %q", etag)
	}
	maxAge(t, resp)
	for _, inm := range []string{etag, "W/" + etag, `"x", ` + etag, "*"} {
		resp, body = e.do(http.MethodGet, "/v1/keys", map[string]string{"If-None-Match": inm})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("If-None-Match %s: %d", inm, resp.StatusCode)
		}
	}
	resp, _ = e.do(http.MethodGet, "/v1/keys", map[string]string{"If-None-Match": `"other"`})
	if resp.StatusCode != 200 {
		t.Fatalf("non-matching If-None-Match: %d", resp.StatusCode)
	}
	// A refresh adds a created key: not advertised, ETag unchanged...
	e.do(http.MethodPost, "/app/refresh", map[string]string{"Authorization": "Bearer " + operatorToken})
	resp, _ = e.get("/v1/keys")
	if resp.Header.Get("ETag") != etag {
		t.Fatal("ETag changed although the advertised set did not")
	}
	// ...until it is published.
	e.clock.Add(7 * 24 * time.Hour)
	resp, body = e.get("/v1/keys")
	json.Unmarshal(body, &vk)
	if resp.Header.Get("ETag") == etag || len(vk.Keys) != 2 || vk.Keys[0].State != "primary" || vk.Keys[1].State != "published" {
		t.Fatalf("after publish: %s", body)
	}
	_, body = e.get("/v1/keys?all=true")
	json.Unmarshal(body, &vk)
	if len(vk.Keys) != 2 || vk.Keys[0].Reason != "scheduled" || vk.Keys[1].Reason != "refresh" {
		t.Fatalf("all keys %s", body)
	}
}

func TestV1OHTTPKeys(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/v1/keys/ohttp")
	if resp.Header.Get("Content-Type") != "application/ohttp-keys" {
		t.Fatalf("content-type %q", resp.Header.Get("Content-Type"))
	}
	var k state.Key
	e.svc.Read(func(st *state.State) { k = *st.Keys[0] })
	// RFC 9458 §3.2: length(2) || key_id(1) kem(2) pk(32) sym_len(2) kdf(2) aead(2)
	if len(body) != 2+41 || binary.BigEndian.Uint16(body) != 41 || body[2] != 0x11 ||
		binary.BigEndian.Uint16(body[3:]) != 0x0020 || !bytes.Equal(body[5:37], k.PublicKey) ||
		!bytes.Equal(body[37:], []byte{0, 4, 0, 1, 0, 2}) {
		t.Fatalf("ohttp keys %x", body)
	}
}

func TestNotFoundAndMethod(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/app/nope")
	wantError(t, resp, body, 404, CodeNotFound)
	resp, body = e.do(http.MethodPost, "/app/listpubkeys", nil)
	wantError(t, resp, body, 405, CodeMethodNotAllowed)
	if resp.Header.Get("Allow") != "GET" {
		t.Fatalf("Allow %q", resp.Header.Get("Allow"))
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, nil, false)
	big := bytes.Repeat([]byte("a"), 2<<20)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/app/refresh", bytes.NewReader(big))
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp, body, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
	var n int
	e.svc.Read(func(st *state.State) { n = len(st.Keys) })
	if n != 1 {
		t.Fatalf("an oversized request created a key")
	}
}

// TestSlowClientCutOff: a client that never finishes its headers is
// disconnected by the server, which keeps serving others.
func TestSlowClientCutOff(t *testing.T) {
	e := newEnv(t, nil, false)
	lim := DefaultLimits()
	lim.ReadHeaderTimeout = 100 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(ln.Addr().String(), New(e.svc, Options{Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler), lim)
	go srv.Serve(ln)
	defer srv.Close()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /app/heartbeat HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("slow client was not disconnected: %v", err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/app/heartbeat")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server stopped serving: %v", err)
	}
	resp.Body.Close()
}

// TestHeaderTooLarge: oversized headers are refused with 431.
func TestHeaderTooLarge(t *testing.T) {
	e := newEnv(t, nil, false)
	lim := DefaultLimits()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := NewHTTPServer(ln.Addr().String(), New(e.svc, Options{Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler), lim)
	go srv.Serve(ln)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/app/heartbeat", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2*lim.MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: %d", resp.StatusCode)
	}
}

// TestRefreshKeyLimit: forced rotations stop short of the ids reserved for
// the scheduler, with a precise error, and the server keeps serving.
func TestRefreshKeyLimit(t *testing.T) {
	e := newEnv(t, nil, false)
	auth := map[string]string{"Authorization": "Bearer " + operatorToken}
	for i := 0; ; i++ {
		resp, body := e.do(http.MethodPost, "/app/refresh", auth)
		if resp.StatusCode == http.StatusOK {
			continue
		}
		wantError(t, resp, body, http.StatusConflict, CodeKeyLimit)
		if held := i + 1; held != 90-kms.ReservedIDs {
			t.Fatalf("refresh refused with %d keys held, want %d", held, 90-kms.ReservedIDs)
		}
		break
	}
	if resp, _ := e.get("/app/listpubkeys"); resp.StatusCode != 200 {
		t.Fatalf("listpubkeys after the limit: %d", resp.StatusCode)
	}
}
