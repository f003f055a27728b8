package akvsim_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/akv/akvsim"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

func startBed(t *testing.T) (*akvsim.Bed, string) {
	t.Helper()
	_, v, err := simsnp.FixtureVerifier()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := akvsim.Start(context.Background(), dir, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, dir
}

// TestVaultAPI: the simulated vault's HTTP surface refuses what the real
// one refuses, each with Key Vault's error shape.
func TestVaultAPI(t *testing.T) {
	b, dir := startBed(t)
	ctx := context.Background()
	tok, _ := b.Token(ctx)
	call := func(method, path, token string, body any) (int, akv.VaultError, []byte) {
		var r io.Reader
		if body != nil {
			bb, _ := json.Marshal(body)
			r = bytes.NewReader(bb)
		}
		req, _ := http.NewRequest(method, b.VaultURL+path, r)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var ve akv.VaultError
		_ = json.Unmarshal(raw, &ve)
		return resp.StatusCode, ve, raw
	}
	// A confidential VM's claims, as Azure's default CVM policy names them.
	pol := akvsim.Policy(simmaa.Issuer, map[string]any{"x-ms-isolation-tee.x-ms-attestation-type": "sevsnpvm"})
	create := map[string]any{"kty": "RSA-HSM", "key_size": 2048, "attributes": map[string]any{"exportable": true},
		"release_policy": map[string]any{"contentType": akv.PolicyContentType, "data": base64.RawURLEncoding.EncodeToString(pol)}}

	status, _, raw := call("POST", "/keys/k/create?api-version=7.4", tok, create)
	kb, err := akv.ParseKeyBundle(raw)
	if status != 200 || err != nil || !kb.Attributes.Exportable || kb.ReleasePolicy == nil {
		t.Fatalf("create: %d %s %v", status, raw, err)
	}
	status, _, raw = call("GET", "/keys/k?api-version=7.4", tok, nil)
	if latest, err := akv.ParseKeyBundle(raw); status != 200 || err != nil || latest.Key.KID != kb.Key.KID {
		t.Fatalf("GET latest: %d %s", status, raw)
	}
	otherIss, err := simmaa.LoadOrCreate(dir) // not a bearer token issuer
	if err != nil {
		t.Fatal(err)
	}
	maaTok, err := otherIss.Token(simmaa.TokenOptions{ReportData: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	noKeys := map[string]any{"target": maaTok}
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		code, msg                 string
	}{
		{"no api-version", "GET", "/keys/k", tok, nil, 400, "BadParameter", "api-version"},
		{"no token", "GET", "/keys/k?api-version=7.4", "", nil, 401, "Unauthorized", ""},
		{"a token of another issuer", "GET", "/keys/k?api-version=7.4", maaTok, nil, 401, "Unauthorized", ""},
		{"unknown key", "GET", "/keys/nope?api-version=7.4", tok, nil, 404, "KeyNotFound", ""},
		{"unknown version", "POST", "/keys/k/0/release?api-version=7.4", tok, noKeys, 404, "KeyNotFound", ""},
		{"not exportable", "POST", "/keys/x/create?api-version=7.4", tok, map[string]any{"kty": "RSA-HSM"}, 400, "BadParameter", "exportable"},
		{"a policy of the other grammar", "POST", "/keys/x/create?api-version=7.4", tok, map[string]any{"kty": "RSA-HSM", "attributes": map[string]any{"exportable": true},
			"release_policy": map[string]any{"data": base64.RawURLEncoding.EncodeToString([]byte(`{"claims":{"a":"b"}}`))}}, 400, "BadParameter", "SKR"},
		{"an EC key", "POST", "/keys/x/create?api-version=7.4", tok, map[string]any{"kty": "EC-HSM"}, 400, "BadParameter", "kty"},
		{"no target", "POST", "/keys/k/release?api-version=7.4", tok, map[string]any{}, 400, "BadParameter", "target"},
		{"unknown enc", "POST", "/keys/k/release?api-version=7.4", tok, map[string]any{"target": maaTok, "enc": "A256KW"}, 400, "BadParameter", "enc"},
		{"a token of an unknown authority", "POST", "/keys/k/release?api-version=7.4", tok, map[string]any{"target": tok}, 403, "AccessDenied", "MAA_ISSUER_UNTRUSTED"},
		{"a token without runtime keys", "POST", "/keys/k/release?api-version=7.4", tok, noKeys, 400, "BadParameter", "x-ms-runtime.keys"},
	} {
		status, ve, raw := call(tc.method, tc.path, tc.token, tc.body)
		if status != tc.status || ve.Error.Code != tc.code || !strings.Contains(ve.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s, want %d %s %q", tc.name, status, raw, tc.status, tc.code, tc.msg)
		}
	}
}
