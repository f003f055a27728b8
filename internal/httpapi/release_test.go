package httpapi

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
)

// TestAppUnwrapKeyOverHTTP: the real ACI evidence and its RSA-4096 wrapping
// key through POST /app/unwrapKey on a loopback server, as a DEPA service
// sends them; the test unwraps with the sample's private key and finds the
// private key of the published public key. Then the policy endpoints, and a
// denial that leaves the server serving.
func TestAppUnwrapKeyOverHTTP(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	iss := releasetest.Issuer(t)

	hostData := "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}, "x-ms-sevsnpvm-is-debuggable": false}})
	jwtPol := &state.JWTPolicy{Issuers: []state.JWTIssuer{{Issuer: iss.URL(), Audiences: []string{"api://t"}, DiscoveryURL: iss.DiscoveryURL()}},
		Claims: map[string]map[string]any{iss.URL(): {"idtyp": "app"}}}
	svc := releasetest.KMS(t, kms.Config{ReleasePolicy: pol, JWT: jwtPol})
	auth := releasetest.Auth(t, iss, "api://t")
	av, _ := attest.New(attest.Config{})
	rel, err := release.New(release.Config{KMS: svc, Auth: auth, Attest: av, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(svc, Options{Logger: log, Release: rel}))
	defer srv.Close()

	evidence, _ := os.ReadFile("../attest/snp/testdata/aci_snp.json")
	pubPEM, _ := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	privPEM, _ := os.ReadFile("../wrap/testdata/privateWrapKey.pem")
	var k state.Key
	svc.Read(func(st *state.State) { k = *st.Keys[0] })
	tok, _ := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: "api://t", PrincipalID: "p1", TenantID: "t1"})

	post := func(path string, body []byte, token string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(pubPEM), "wrappedKid": k.Kid, "wrapped": ""})
	resp, out := post("/app/unwrapKey?fmt=jwk", body, tok)
	if resp.StatusCode != 200 {
		t.Fatalf("unwrapKey: %d %s", resp.StatusCode, out)
	}
	var ur struct{ Wrapped, Receipt string }
	json.Unmarshal(out, &ur)
	ct, _ := base64.StdEncoding.DecodeString(ur.Wrapped)
	blk, _ := pem.Decode(privPEM)
	anyKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		rk, err2 := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err2 != nil {
			t.Fatal(err)
		}
		anyKey = rk
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, anyKey.(*rsa.PrivateKey), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	var item keys.Item
	json.Unmarshal(pt, &item)
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) {
		t.Fatal("released key does not match the published public key")
	}

	resp, out = post("/app/unwrapKey", body, "")
	if resp.StatusCode != 401 || resp.Header.Get("x-ms-kms-error-code") != "JWT_MISSING" {
		t.Fatalf("no token: %d %s", resp.StatusCode, out)
	}
	resp, out = post("/app/key?fmt=tink", body, tok)
	if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`azu-kms://`+k.Kid)) {
		t.Fatalf("/app/key: %d %s", resp.StatusCode, out)
	}
	for path, want := range map[string]string{
		"/app/keyReleasePolicy":    `{"type":"add",`,
		"/app/jwtValidationPolicy": `"idtyp":"app"`,
	} {
		r, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !bytes.Contains(b, []byte(want)) {
			t.Fatalf("%s: %d %s", path, r.StatusCode, b)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/app/auth", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	r, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !bytes.Contains(b, []byte(`"oid":"p1"`)) {
		t.Fatalf("/app/auth: %d %s", r.StatusCode, b)
	}

	// Metrics count the release, the unauthenticated failure and the
	// tokens, and carry no token.
	r, err = srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(r.Body)
	r.Body.Close()
	logSize := fmt.Sprintf("tkms_log_checkpoint_size %d\n", svc.Seq())
	for _, want := range []string{"tkms_releases_total 1\n", `tkms_http_errors_total{code="JWT_MISSING"} 1`, "tkms_jwt_accepted_total 3\n", `tkms_keys{phase="published"} 1`, logSize} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/metrics lacks %q:\n%s", want, b)
		}
	}
	if bytes.Contains(b, []byte(tok[:20])) {
		t.Error("/metrics holds a token")
	}
}

func TestReleaseNotConfigured(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.do(http.MethodPost, "/app/unwrapKey", nil)
	wantError(t, resp, body, http.StatusServiceUnavailable, CodeReleaseNotConfigured)
}

// TestV1AttestationSaysSimulated: GET /v1/attestation tells whether the
// simulated TEE is trusted.
func TestV1AttestationSaysSimulated(t *testing.T) {
	e := newEnv(t, nil, false)
	resp, body := e.get("/v1/attestation")
	wantError(t, resp, body, http.StatusServiceUnavailable, CodeReleaseNotConfigured)
}
