package oidcissuer_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

func serve(t *testing.T, iss *oidcissuer.Issuer, prefix string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(iss.Handler())
	t.Cleanup(srv.Close)
	if err := iss.SetURL(srv.URL + prefix); err != nil {
		t.Fatal(err)
	}
	return srv
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: content-type %q", url, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := oidcissuer.New(dir, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, oidcissuer.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, ok := a.PublicKey().(*rsa.PublicKey); !ok || a.Algorithm() != "RS256" {
		t.Fatalf("default key is %T/%s, want RSA/RS256", a.PublicKey(), a.Algorithm())
	}
	if n := a.PublicKey().(*rsa.PublicKey).N.BitLen(); n != 2048 {
		t.Errorf("RSA key has %d bits, want 2048", n)
	}
	b, err := oidcissuer.New(dir, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() {
		t.Errorf("key changed across restart: %s, %s", a.KeyID(), b.KeyID())
	}
	if _, err := oidcissuer.New(dir, oidcissuer.Options{Algorithm: "ES256"}); err == nil {
		t.Error("ES256 issuer accepted an RSA key file")
	}
}

func TestES256(t *testing.T) {
	dir := t.TempDir()
	a, err := oidcissuer.New(dir, oidcissuer.Options{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.PublicKey().(*ecdsa.PublicKey); !ok {
		t.Fatalf("key is %T, want ECDSA", a.PublicKey())
	}
	b, err := oidcissuer.New(dir, oidcissuer.Options{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() {
		t.Error("ES256 key changed across restart")
	}
	if _, err := oidcissuer.New(dir, oidcissuer.Options{}); err == nil {
		t.Error("RS256 issuer accepted an ECDSA key file")
	}
	if _, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{Algorithm: "HS256"}); err == nil {
		t.Error("HS256 accepted")
	}
}

func TestBadKeyFileIsFatal(t *testing.T) {
	for name, tc := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"garbage":        {"not a key", 0o600},
		"wrong pem type": {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 0o600},
		"bad der":        {"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600},
		"world readable": {"", 0o644},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, oidcissuer.KeyFile)
			data := []byte(tc.data)
			if tc.data == "" {
				if _, err := oidcissuer.New(dir, oidcissuer.Options{}); err != nil {
					t.Fatal(err)
				}
				var err error
				if data, err = os.ReadFile(path); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(path, data, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := oidcissuer.New(dir, oidcissuer.Options{}); err == nil {
				t.Fatal("New accepted a bad key file")
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != string(data) {
				t.Error("New replaced a bad key file")
			}
		})
	}
}

func TestHandlerAndMint(t *testing.T) {
	for _, prefix := range []string{"", "/tenant/v2.0"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			now := time.Unix(1_800_000_000, 0)
			iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			srv := serve(t, iss, prefix)

			var disc struct {
				Issuer  string   `json:"issuer"`
				JWKSURI string   `json:"jwks_uri"`
				Algs    []string `json:"id_token_signing_alg_values_supported"`
			}
			getJSON(t, iss.DiscoveryURL(), &disc)
			if disc.Issuer != srv.URL+prefix || disc.JWKSURI != iss.JWKSURL() || len(disc.Algs) != 1 || disc.Algs[0] != "RS256" {
				t.Fatalf("discovery document %+v", disc)
			}
			var set jose.JSONWebKeySet
			getJSON(t, disc.JWKSURI, &set)
			keys := set.Key(iss.KeyID())
			if len(set.Keys) != 1 || len(keys) != 1 || !keys[0].IsPublic() || keys[0].Algorithm != "RS256" || keys[0].Use != "sig" {
				t.Fatalf("JWKS %+v", set)
			}

			tok, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{
				Audience: "https://management.azure.com/", PrincipalID: "p1", TenantID: "t1", TTL: 2 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				t.Fatal(err)
			}
			if h := parsed.Headers[0]; h.KeyID != iss.KeyID() || h.Algorithm != "RS256" || h.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header %+v", h)
			}
			var std jwt.Claims
			var extra map[string]any
			if err := parsed.Claims(keys[0].Key, &std, &extra); err != nil {
				t.Fatal(err)
			}
			if err := std.ValidateWithLeeway(jwt.Expected{Issuer: srv.URL + prefix, AnyAudience: jwt.Audience{"https://management.azure.com/"}, Time: now}, 0); err != nil {
				t.Error(err)
			}
			if std.Expiry.Time() != now.Add(2*time.Hour) || std.NotBefore.Time() != now || std.IssuedAt.Time() != now {
				t.Errorf("times %v %v %v", std.IssuedAt, std.NotBefore, std.Expiry)
			}
			if std.Subject != "p1" || extra["oid"] != "p1" || extra["tid"] != "t1" || extra["idtyp"] != "app" {
				t.Errorf("claims %+v %v", std, extra)
			}
		})
	}
}

func TestHandlerErrors(t *testing.T) {
	iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	status := func(method, path string) int {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("GET", oidcissuer.DiscoveryPath); got != http.StatusServiceUnavailable {
		t.Errorf("before SetURL: %d", got)
	}
	if err := iss.SetURL("ftp://x"); err == nil {
		t.Error("SetURL accepted ftp")
	}
	if err := iss.SetURL(srv.URL + "/"); err != nil {
		t.Fatal(err)
	}
	if iss.URL() != srv.URL {
		t.Errorf("URL %q, want trailing slash dropped", iss.URL())
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", oidcissuer.DiscoveryPath, 200},
		{"HEAD", oidcissuer.JWKSPath, 200},
		{"POST", oidcissuer.JWKSPath, 405},
		{"GET", "/other", 404},
	} {
		if got := status(tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestURLOption(t *testing.T) {
	if _, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: "127.0.0.1:80"}); err == nil {
		t.Error("New accepted a url without scheme")
	}
	if _, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: "https://idp.example/?q=1"}); err == nil {
		t.Error("New accepted a url with a query")
	}
	iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: "https://idp.example/tenant/"})
	if err != nil {
		t.Fatal(err)
	}
	if iss.URL() != "https://idp.example/tenant" || iss.DiscoveryURL() != "https://idp.example/tenant/.well-known/openid-configuration" {
		t.Errorf("URL %q, discovery %q", iss.URL(), iss.DiscoveryURL())
	}
	if c := iss.ManagedIdentityClaims(oidcissuer.ManagedIdentity{}); c["iss"] != iss.URL() {
		t.Errorf("default iss %v", c["iss"])
	}
}

func TestRotate(t *testing.T) {
	dir := t.TempDir()
	iss, err := oidcissuer.New(dir, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, iss, "")
	old := iss.KeyID()
	if err := iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	if iss.KeyID() == old {
		t.Fatal("Rotate kept the kid")
	}
	var set jose.JSONWebKeySet
	getJSON(t, iss.JWKSURL(), &set)
	if len(set.Keys) != 2 || set.Keys[0].KeyID != iss.KeyID() || set.Keys[1].KeyID != old {
		t.Errorf("JWKS after rotation: %+v", set.Keys)
	}
	tok, err := iss.Mint(map[string]any{"sub": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tok, ".") {
		t.Fatal("not a compact JWS")
	}
	reloaded, err := oidcissuer.New(dir, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.KeyID() != iss.KeyID() {
		t.Error("rotated key was not stored")
	}
	fi, _ := os.Stat(filepath.Join(dir, oidcissuer.KeyFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated key file mode %04o", fi.Mode().Perm())
	}
}
