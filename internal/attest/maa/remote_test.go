package maa_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// TestRemoteKeys: an instance configured without a key set gets its keys
// from its OpenID configuration (an MAA instance on loopback, over TLS),
// and fetches them again when a token names a key it has not seen (the
// instance rotated its signing key), as the JWT issuers' keys are.
func TestRemoteKeys(t *testing.T) {
	var mu sync.Mutex
	var jwks []byte
	fetches := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{"issuer": "https://" + r.Host, "jwks_uri": "https://" + r.Host + "/certs"})
		case "/certs":
			fetches++
			w.Write(jwks)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	newKey := func() *oidcissuer.Issuer {
		iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		jwks = iss.JWKS()
		mu.Unlock()
		return iss
	}
	token := func(iss *oidcissuer.Issuer) string {
		now := time.Now()
		tok, err := iss.Mint(map[string]any{"iss": srv.URL, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	first := newKey()
	v, err := maa.New(context.Background(), maa.Options{Instances: []maa.Instance{{Issuer: srv.URL}}, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	res, err := v.Verify(context.Background(), token(first))
	if err != nil || res.Issuer != srv.URL || res.Claims["x-ms-attestation-type"] != "sevsnpvm" {
		t.Fatalf("a token of the instance's key: %+v %v", res, err)
	}
	second := newKey() // the instance rotates its key
	if _, err := v.Verify(context.Background(), token(second)); err != nil {
		t.Fatalf("a token of the instance's new key: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fetches != 2 {
		t.Fatalf("the key set was fetched %d times, want 2 (at start, then for the unknown kid)", fetches)
	}
}
