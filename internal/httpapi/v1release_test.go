package httpapi

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// v1Env is a tkms HTTP server on loopback whose release service trusts a
// real OIDC issuer (also on loopback) and the simulated TEE.
type v1Env struct {
	t     testing.TB
	srv   *httptest.Server
	svc   *kms.Service
	chain *simsnp.Chain
	at    time.Time // when the simulated chain is valid
	token string
}

var v1HostData = bytes.Repeat([]byte{0xa5}, 32)

func newV1Env(t testing.TB, requireNonce bool) *v1Env {
	t.Helper()
	e := &v1Env{t: t}
	log := slog.New(slog.DiscardHandler)
	iss := releasetest.Issuer(t)

	fixture, err := os.ReadFile("../attest/simsnp/testdata/" + simsnp.ChainFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	if e.chain, err = simsnp.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	e.at = e.chain.VCEK().NotBefore.Add(24 * time.Hour)

	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hex.EncodeToString(v1HostData)}}})
	e.svc = releasetest.KMS(t, kms.Config{ReleasePolicy: pol})
	auth := releasetest.Auth(t, iss, "api://t")
	ark, ask := e.chain.Roots()
	did, feed := e.chain.UVMTrust()
	av, err := attest.New(attest.Config{SNP: snp.Options{Now: func() time.Time { return e.at }, Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}}, SimulatedEndorsers: []uvm.Endorser{{DID: did, Feed: feed}}, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := release.New(release.Config{KMS: e.svc, Auth: auth, Attest: av, RequireNonce: requireNonce, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(New(e.svc, Options{Logger: log, Release: rel}))
	t.Cleanup(e.srv.Close)
	if e.token, err = iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: "api://t", PrincipalID: "p1", TenantID: "t1"}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *v1Env) do(method, path string, body []byte, token string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// body is a release body with simulated evidence binding the HPKE wrapping
// key pub of KEM kem, and nonce (may be nil) in REPORT_DATA[32:64].
func (e *v1Env) body(kem uint16, pub, nonce []byte, extra map[string]any) []byte {
	e.t.Helper()
	bind := sha256.Sum256(wrap.CanonicalHPKE(kem, pub))
	att, err := e.chain.ACIBundle(simsnp.ACIBundleOptions{
		Report: simsnp.ReportOptions{ReportData: append(bind[:], nonce...), HostData: v1HostData}, SigningTime: e.at})
	if err != nil {
		e.t.Fatal(err)
	}
	b := map[string]any{"attestation": json.RawMessage(att),
		"wrapping_key": map[string]any{"type": "hpke", "kem_id": kem, "public_key": base64.StdEncoding.EncodeToString(pub)}}
	if nonce != nil {
		b["nonce"] = hex.EncodeToString(nonce)
	}
	for k, v := range extra {
		b[k] = v
	}
	out, _ := json.Marshal(b)
	return out
}

// checkKeys unwraps each released key and compares it with the ledger's
// public key.
func (e *v1Env) checkKeys(out []byte, sk hpke.PrivateKey, wantKids ...string) {
	e.t.Helper()
	var resp api.V1ReleaseResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		e.t.Fatal(err)
	}
	if len(resp.Keys) != len(wantKids) {
		e.t.Fatalf("%d keys released, want %d: %s", len(resp.Keys), len(wantKids), out)
	}
	for i, rk := range resp.Keys {
		if rk.Kid != wantKids[i] {
			e.t.Fatalf("key %d is %s, want %s", i, rk.Kid, wantKids[i])
		}
		priv, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(rk.Kid), rk.Wrapped)
		if err != nil {
			e.t.Fatalf("unwrap %s: %v", rk.Kid, err)
		}
		suite, _ := keys.ParseSuite(rk.Suite)
		k, err := suite.PrivateKey(priv)
		if err != nil {
			e.t.Fatal(err)
		}
		var pub []byte
		e.svc.Read(func(st *state.State) { pub = st.Key(rk.Kid).PublicKey })
		if !bytes.Equal(k.PublicKey().Bytes(), pub) || !bytes.Equal(rk.PublicKey, pub) {
			e.t.Fatalf("released %s is not the private key of its public key", rk.Kid)
		}
	}
}

func newHPKEKey(t testing.TB, kemID uint16) (hpke.PrivateKey, []byte) {
	t.Helper()
	kem, err := hpke.NewKEM(kemID)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return sk, sk.PublicKey().Bytes()
}

// TestV1ReleaseOverHTTP: a key released on POST /v1/keys/{kid}/release and
// every valid key on POST /v1/release, as a client would call them, each
// unwrapped with the client's key; then the failures the HTTP layer adds.
func TestV1ReleaseOverHTTP(t *testing.T) {
	e := newV1Env(t, false)
	if _, err := e.svc.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	var kids []string
	e.svc.Read(func(st *state.State) {
		for _, k := range st.Keys {
			kids = append(kids, k.Kid)
		}
	})
	sk, pub := newHPKEKey(t, keys.KEMX25519HKDFSHA256)

	resp, out := e.do(http.MethodPost, "/v1/keys/"+kids[0]+"/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, nil), e.token)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("single release: %d %v %s", resp.StatusCode, resp.Header, out)
	}
	e.checkKeys(out, sk, kids[0])

	hsk, hpub := newHPKEKey(t, keys.KEMMLKEM768X25519)
	resp, out = e.do(http.MethodPost, "/v1/release", e.body(keys.KEMMLKEM768X25519, hpub, nil, map[string]any{"all_valid": true}), e.token)
	if resp.StatusCode != 200 {
		t.Fatalf("batch release: %d %s", resp.StatusCode, out)
	}
	e.checkKeys(out, hsk, kids...)
	var n uint64
	e.svc.Read(func(st *state.State) { n = st.Releases })
	if n != 2 {
		t.Fatalf("%d releases in the ledger, want 2", n)
	}

	good := e.body(keys.KEMX25519HKDFSHA256, pub, nil, nil)
	_, otherPub := newHPKEKey(t, keys.KEMX25519HKDFSHA256)
	otherKey := map[string]any{"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(otherPub)}
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		token              string
		status             int
		code               string
	}{
		{"no token", http.MethodPost, "/v1/keys/" + kids[0] + "/release", good, "", 401, "JWT_MISSING"},
		{"unknown kid", http.MethodPost, "/v1/keys/AAAA_42/release", good, e.token, 404, release.CodeKeyNotFound},
		{"escaped kid", http.MethodPost, "/v1/keys/a%2Fb_1/release", good, e.token, 404, release.CodeKeyNotFound},
		{"binding mismatch", http.MethodPost, "/v1/keys/" + kids[0] + "/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, map[string]any{"wrapping_key": otherKey}), e.token, 400, release.CodeWrappingKeyMismatch},
		{"bad wrapping key", http.MethodPost, "/v1/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, map[string]any{"all_valid": true, "wrapping_key": map[string]any{"type": "x"}}), e.token, 400, release.CodeWrappingKeyError},
		{"not json", http.MethodPost, "/v1/release", []byte("nope"), e.token, 400, release.CodeInvalidRequest},
		{"huge body", http.MethodPost, "/v1/release", make([]byte, 2<<20), e.token, 413, CodeBodyTooLarge},
		{"GET on release", http.MethodGet, "/v1/keys/" + kids[0] + "/release", nil, e.token, 405, CodeMethodNotAllowed},
		{"GET on batch", http.MethodGet, "/v1/release", nil, e.token, 405, CodeMethodNotAllowed},
		{"POST on nonce", http.MethodPost, "/v1/nonce", nil, "", 405, CodeMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := e.do(tc.method, tc.path, tc.body, tc.token)
			wantError(t, resp, out, tc.status, tc.code)
		})
	}
	e.svc.Read(func(st *state.State) { n = st.Releases })
	if n != 2 {
		t.Fatalf("%d releases after denials, want 2", n)
	}
}

// TestV1NonceOverHTTP: GET /v1/nonce, and a server requiring fresh
// evidence that releases on a nonce it issued and refuses without one.
func TestV1NonceOverHTTP(t *testing.T) {
	e := newV1Env(t, true)
	var kid string
	e.svc.Read(func(st *state.State) { kid = st.Keys[0].Kid })
	resp, out := e.do(http.MethodGet, "/v1/nonce", nil, "")
	var nr struct{ Nonce, Expires string }
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || json.Unmarshal(out, &nr) != nil {
		t.Fatalf("nonce: %d %s", resp.StatusCode, out)
	}
	nonce, err := hex.DecodeString(nr.Nonce)
	if err != nil || len(nonce) != 32 {
		t.Fatalf("nonce %q", nr.Nonce)
	}
	if exp, err := time.Parse(time.RFC3339, nr.Expires); err != nil || time.Until(exp) > release.NonceTTL || time.Until(exp) < release.NonceTTL-time.Minute {
		t.Fatalf("expires %q", nr.Expires)
	}
	sk, pub := newHPKEKey(t, keys.KEMX25519HKDFSHA256)
	resp, out = e.do(http.MethodPost, "/v1/keys/"+kid+"/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, nil), e.token)
	wantError(t, resp, out, 400, release.CodeNonceRequired)
	resp, out = e.do(http.MethodPost, "/v1/keys/"+kid+"/release", e.body(keys.KEMX25519HKDFSHA256, pub, nonce, nil), e.token)
	if resp.StatusCode != 200 {
		t.Fatalf("release with nonce: %d %s", resp.StatusCode, out)
	}
	e.checkKeys(out, sk, kid)
	nonce[0] ^= 1
	resp, out = e.do(http.MethodPost, "/v1/keys/"+kid+"/release", e.body(keys.KEMX25519HKDFSHA256, pub, nonce, nil), e.token)
	wantError(t, resp, out, 400, release.CodeNonceInvalid)
}

func TestV1ReleaseNotConfigured(t *testing.T) {
	e := newEnv(t, nil, false)
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/nonce"}, {http.MethodPost, "/v1/release"}, {http.MethodPost, "/v1/keys/x_1/release"},
	} {
		resp, body := e.do(c.method, c.path, nil)
		wantError(t, resp, body, http.StatusServiceUnavailable, CodeReleaseNotConfigured)
	}
}

// BenchmarkV1Release measures full /v1 releases over loopback HTTP with
// simulated evidence (the same verification path as hardware evidence):
// one key to an X25519 HPKE wrapping key, and a batch of four keys, which
// verifies the evidence once.
func BenchmarkV1Release(b *testing.B) {
	e := newV1Env(b, false)
	for range 3 {
		if _, err := e.svc.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
			b.Fatal(err)
		}
	}
	var kid string
	e.svc.Read(func(st *state.State) { kid = st.Keys[0].Kid })
	_, pub := newHPKEKey(b, keys.KEMX25519HKDFSHA256)
	for _, bc := range []struct {
		name, path string
		body       []byte
	}{
		{"hpke-x25519/1key", "/v1/keys/" + kid + "/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, nil)},
		{"hpke-x25519/batch4", "/v1/release", e.body(keys.KEMX25519HKDFSHA256, pub, nil, map[string]any{"all_valid": true})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if resp, out := e.do(http.MethodPost, bc.path, bc.body, e.token); resp.StatusCode != 200 {
					b.Fatalf("%d %s", resp.StatusCode, out)
				}
			}
		})
	}
}
