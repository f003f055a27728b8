package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// devJSON is dev.json as a client reads it.
type devJSON struct {
	KMSURL        string `json:"kms_url"`
	IssuerURL     string `json:"issuer_url"`
	Audience      string `json:"audience"`
	WorkloadToken string `json:"workload_token"`
}

func readDevJSON(t *testing.T, dir string) devJSON {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d devJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dev.json: %v\n%s", err, raw)
	}
	return d
}

// fetchJWKS discovers the JWK Set of issuer over HTTP, as a relying party
// does: the discovery document first, then its jwks_uri.
func fetchJWKS(t *testing.T, issuer string) *jose.JSONWebKeySet {
	t.Helper()
	resp, body := do(t, http.MethodGet, issuer+"/.well-known/openid-configuration", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("discovery: %s: %s", resp.Status, body)
	}
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &disc); err != nil {
		t.Fatalf("discovery: %v\n%s", err, body)
	}
	if disc.Issuer != issuer || !strings.HasPrefix(disc.JWKSURI, issuer+"/") {
		t.Fatalf("discovery = %s; want issuer %s and a jwks_uri below it", body, issuer)
	}
	resp, body = do(t, http.MethodGet, disc.JWKSURI, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks: %s: %s", resp.Status, body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks: %v\n%s", err, body)
	}
	return &set
}

// devClaims are the claims of a dev workload token.
type devClaims struct {
	jwt.Claims
	OID   string `json:"oid"`
	TID   string `json:"tid"`
	IDTyp string `json:"idtyp"`
}

// verifyToken verifies tok's RS256 signature with set and returns its
// claims, checking exp, nbf and aud at the real clock.
func verifyToken(t *testing.T, what, tok string, set *jose.JSONWebKeySet, aud string) devClaims {
	t.Helper()
	parsed, err := jwt.ParseSigned(strings.TrimSpace(tok), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var c devClaims
	if err := parsed.Claims(set, &c); err != nil {
		t.Fatalf("%s: signature does not verify with the issuer's JWK Set: %v", what, err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: time.Now()}, time.Minute); err != nil {
		t.Fatalf("%s: %v (claims %+v)", what, err, c)
	}
	return c
}

// TestDevOIDCIssuer: tkms dev serves an OIDC issuer on its own listener
// below /dev/oidc, writes a workload token to dev.json that verifies with
// the JWK Set fetched over HTTP, and `tkms dev token` mints more with the
// same key, before and after a restart.
func TestDevOIDCIssuer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := startDev(t, dir)
	p.waitOutput(p.stdout, regexp.MustCompile(`tkms dev: OIDC issuer `+regexp.QuoteMeta(p.URL+"/dev/oidc")+` `))
	d := readDevJSON(t, dir)
	if d.IssuerURL != p.URL+"/dev/oidc" || d.Audience != "api://tkms-dev" || d.WorkloadToken == "" {
		t.Fatalf("dev.json: issuer_url %q audience %q workload_token %q; want %s/dev/oidc, api://tkms-dev and a token", d.IssuerURL, d.Audience, d.WorkloadToken, p.URL)
	}
	set := fetchJWKS(t, d.IssuerURL)
	c := verifyToken(t, "workload_token", d.WorkloadToken, set, d.Audience)
	if c.Issuer != d.IssuerURL || c.Subject != "tkms-dev-workload" || c.OID != "tkms-dev-workload" || c.TID != "tkms-dev-tenant" || c.IDTyp != "app" {
		t.Errorf("workload_token claims %+v", c)
	}
	if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life != 24*time.Hour {
		t.Errorf("workload_token lives %v, want 24h", life)
	}

	// The API is still served as before next to the issuer.
	if resp, body := do(t, http.MethodGet, p.URL+"/app/heartbeat", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("heartbeat: %s: %s", resp.Status, body)
	}
	if resp, body := do(t, http.MethodGet, p.URL+"/dev/oidc/nothing", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /dev/oidc/nothing: %s: %s", resp.Status, body)
	}

	// tkms dev trusts its own issuer for key release: GET /app/auth
	// authenticates the workload token.
	resp, body := do(t, http.MethodGet, p.URL+"/app/auth", http.Header{"Authorization": {"Bearer " + d.WorkloadToken}})
	var auth struct {
		Auth struct{ Iss, Oid string }
	}
	if err := json.Unmarshal(body, &auth); err != nil || resp.StatusCode != http.StatusOK || auth.Auth.Iss != d.IssuerURL || auth.Auth.Oid != "tkms-dev-workload" {
		t.Errorf("GET /app/auth with the workload token: %s: %s", resp.Status, body)
	}

	out, errOut, code := runTkms(t, "dev", "token", "--data", dir, "--sub", "svc-b", "--ttl", "10m", "--aud", "api://other")
	if code != 0 {
		t.Fatalf("tkms dev token: exit %d: %s", code, errOut)
	}
	c = verifyToken(t, "tkms dev token", out, set, "api://other")
	if c.Subject != "svc-b" || c.OID != "svc-b" || c.Issuer != d.IssuerURL {
		t.Errorf("tkms dev token claims %+v", c)
	}
	if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life != 10*time.Minute {
		t.Errorf("tkms dev token lives %v, want 10m", life)
	}
	if resp, body := do(t, http.MethodGet, p.URL+"/app/auth", http.Header{"Authorization": {"Bearer " + strings.TrimSpace(out)}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /app/auth with a token for another audience: %s: %s", resp.Status, body)
	}
	before, errOut, code := runTkms(t, "dev", "token", "--data", dir)
	if code != 0 {
		t.Fatalf("tkms dev token: exit %d: %s", code, errOut)
	}
	verifyToken(t, "tkms dev token (defaults)", before, set, "api://tkms-dev")
	p.stopClean(syscall.SIGINT)

	// While stopped, the key in the data directory still mints.
	stopped, errOut, code := runTkms(t, "dev", "token", "--data", dir)
	if code != 0 {
		t.Fatalf("tkms dev token on a stopped instance: exit %d: %s", code, errOut)
	}

	// After a restart (on another port), every token minted before it
	// verifies with the JWK Set the new instance serves.
	p2 := startDev(t, dir)
	d2 := readDevJSON(t, dir)
	if d2.IssuerURL != p2.URL+"/dev/oidc" {
		t.Fatalf("after restart: issuer_url %q, want %s/dev/oidc", d2.IssuerURL, p2.URL)
	}
	set2 := fetchJWKS(t, d2.IssuerURL)
	for what, tok := range map[string]string{"workload_token of the first start": d.WorkloadToken, "token minted before restart": before, "token minted while stopped": stopped, "new workload_token": d2.WorkloadToken} {
		verifyToken(t, what, tok, set2, "api://tkms-dev")
	}
	after, errOut, code := runTkms(t, "dev", "token", "--data", dir)
	if code != 0 {
		t.Fatalf("tkms dev token after restart: exit %d: %s", code, errOut)
	}
	if c := verifyToken(t, "tkms dev token after restart", after, set2, "api://tkms-dev"); c.Issuer != d2.IssuerURL {
		t.Errorf("after restart: iss %q, want %q", c.Issuer, d2.IssuerURL)
	}
	p2.stopClean(syscall.SIGTERM)
}

// TestDevTokenErrors: `tkms dev token` refuses, with a hint, a directory
// where tkms dev never ran, and nonsense flags.
func TestDevTokenErrors(t *testing.T) {
	empty := t.TempDir()
	_, errOut, code := runTkms(t, "dev", "token", "--data", empty)
	if code != 1 || !strings.Contains(errOut, "start 'tkms dev --data") {
		t.Errorf("dev token on an empty directory: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(empty, "oidc-signing-key.pem")); err == nil {
		t.Errorf("dev token created a signing key in a directory tkms dev never used")
	}
	for _, args := range [][]string{{"--ttl", "-1h"}, {"--ttl", "soon"}, {"--sub", ""}, {"extra"}} {
		_, errOut, code := runTkms(t, append([]string{"dev", "token", "--data", empty}, args...)...)
		if code != 2 {
			t.Errorf("dev token %v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
	}
}

// TestDevReleasesToSimulatedEvidence: tkms dev trusts its own issuer and
// the simulated TEE of its data directory, so its workload token and
// `tkms attest simulate --data DIR --wrapping-key-pem` evidence obtain a
// key under a release policy given in --config; evidence simulated in
// another directory is refused.
func TestDevReleasesToSimulatedEvidence(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	hostData := strings.Repeat("cd", 32)
	cfgPath := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"key_release_policy": map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}}}})
	p := startDev(t, data, "--config", cfgPath)
	d := readDevJSON(t, data)

	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pemFile := filepath.Join(dir, "wrap.pem")
	if err := os.WriteFile(pemFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	appKey := func(evidenceFile string) (*http.Response, []byte) {
		t.Helper()
		ev, err := os.ReadFile(evidenceFile)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(ev), "wrappingKey": string(pemBytes)})
		req, err := http.NewRequest(http.MethodPost, p.URL+"/app/key?fmt=jwk", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+d.WorkloadToken)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, body := appKey(attestSimulate(t, data, "--wrapping-key-pem", pemFile, "--host-data", hostData))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"wrappedKid"`) {
		t.Errorf("/app/key with simulated evidence of the dev directory: %s: %s", resp.Status, body)
	}
	resp, body = appKey(attestSimulate(t, data, "--wrapping-key-pem", pemFile, "--host-data", strings.Repeat("ce", 32)))
	if resp.StatusCode == http.StatusOK || resp.Header.Get("x-ms-kms-error-code") == "" {
		t.Errorf("/app/key with a host_data the policy does not name: %s: %s", resp.Status, body)
	}
	resp, body = appKey(attestSimulate(t, t.TempDir(), "--wrapping-key-pem", pemFile, "--host-data", hostData))
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "CERT_CHAIN_INVALID") {
		t.Errorf("/app/key with evidence simulated in another directory: %s: %s", resp.Status, body)
	}
	p.stopClean(syscall.SIGTERM)
}
