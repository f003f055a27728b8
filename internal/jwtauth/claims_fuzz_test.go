package jwtauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/internal/jwtauth"
)

// FuzzAuthenticateClaims signs arbitrary claims payloads with a trusted
// ES256 key, so that what follows the signature check (claims decoding,
// exp/nbf/iat, aud, the jwt validation policy, the identity) meets hostile
// input that FuzzAuthenticate's unsigned mutations never reach. Nothing may
// panic, every failure has a jwtauth code, and an accepted token is one of
// the trusted issuer, within its validity, for an accepted audience and
// satisfying the policy. Seeds: a valid Entra ID-shaped payload, variants,
// and the claims of a real MAA token (testdata/, see its PROVENANCE.md).
func FuzzAuthenticateClaims(f *testing.F) {
	now := t0
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		f.Fatal(err)
	}
	a, err := jwtauth.New(f.Context(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: issV1, Audiences: []string{audV1}, JWKS: jwks}},
		Policy:  jwtauth.Policy{issV1: {"idtyp": "app", "tid": []any{tenant, 7, true}}},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(a.Close)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		f.Fatal(err)
	}
	valid := map[string]any{
		"iss": issV1, "aud": audV1, "exp": now.Unix() + 600, "nbf": now.Unix() - 60, "iat": now.Unix() - 60,
		"idtyp": "app", "tid": tenant, "oid": principal, "sub": principal,
	}
	for _, edit := range []func(map[string]any){
		func(map[string]any) {},
		func(m map[string]any) { m["aud"] = []any{"x", audV1} },
		func(m map[string]any) { m["tid"] = 7.0; delete(m, "oid") },
		func(m map[string]any) { m["exp"] = 1e300; m["nbf"] = -1e300 },
		func(m map[string]any) { m["exp"] = "soon" },
		func(m map[string]any) { m["exp"] = now.Unix() + 10*365*24*3600 },
		func(m map[string]any) { m["iat"] = now.Unix() - 30*24*3600 },
		func(m map[string]any) { m["idtyp"] = []any{"app"} },
		func(m map[string]any) { delete(m, "oid"); delete(m, "sub") },
	} {
		m := map[string]any{}
		for k, v := range valid {
			m[k] = v
		}
		edit(m)
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	if tok, err := os.ReadFile("testdata/cvm-guest-attestation_ClientLibTests_L138.jwt"); err == nil {
		if parts := strings.Split(strings.TrimSpace(string(tok)), "."); len(parts) == 3 {
			if p, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
				f.Add(p)
			}
		}
	} else {
		f.Fatal(err)
	}
	f.Add([]byte(`null`))
	f.Add([]byte(`{"iss":"` + issV1 + `"} {}`))
	known := []string{
		jwtauth.CodeMissing, jwtauth.CodeInvalid, jwtauth.CodeExpired, jwtauth.CodeNotYetValid,
		jwtauth.CodeAudience, jwtauth.CodeIssuer, jwtauth.CodeUnknownKID, jwtauth.CodePolicyMismatch,
		jwtauth.CodeNoIdentity, jwtauth.CodeLifetime,
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jws.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.Authenticate(t.Context(), "Bearer "+tok)
		if err != nil {
			if id != nil || !slices.Contains(known, jwtauth.Code(err)) {
				t.Fatalf("identity %v, unclassified error %v", id, err)
			}
			return
		}
		c := id.Claims
		if id.Issuer != issV1 || c["iss"] != issV1 || id.OID == "" || c["idtyp"] != "app" {
			t.Fatalf("accepted identity %+v", id)
		}
		exp, err1 := c["exp"].(json.Number).Float64()
		nbf, err2 := c["nbf"].(json.Number).Float64()
		if err1 != nil || err2 != nil || exp <= float64(now.Unix()-60) || nbf > float64(now.Unix()+60) {
			t.Fatalf("accepted exp %v, nbf %v at %d", c["exp"], c["nbf"], now.Unix())
		}
		start := nbf
		if n, ok := c["iat"].(json.Number); ok {
			if iat, err := n.Float64(); err == nil && iat < start {
				start = iat
			}
		}
		if max := (jwtauth.DefaultMaxLifetime + jwtauth.LifetimeSlack).Seconds(); exp-start > max+1 {
			t.Fatalf("accepted a token valid for %v s (iat %v, nbf %v, exp %v), more than %v", exp-start, c["iat"], c["nbf"], c["exp"], max)
		}
		switch aud := c["aud"].(type) {
		case string:
			if aud != audV1 {
				t.Fatalf("accepted aud %q", aud)
			}
		case []any:
			if !slices.Contains(aud, any(audV1)) {
				t.Fatalf("accepted aud %v", aud)
			}
		default:
			t.Fatalf("accepted aud %v", aud)
		}
	})
}

// FuzzParsePolicy feeds arbitrary jwt validation policies (the argument of
// the set_jwt_validation_policy governance action and of the config file)
// to ParsePolicy: no panic; an accepted policy validates, and its JSON
// encoding parses back to an equal policy (numbers kept exact).
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		`{"` + issV1 + `":{"idtyp":"app","tid":["` + tenant + `",7,true]}}`,
		`{"i":{"n":[1,1.0,1e0,-0.0,123456789012345678901234567890]}}`,
		`{"i":{"x":[]}}`, `{"i":{"x":{"y":1}}}`, `{"i":null}`, `null`, `{}`, `{"i":{}} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := jwtauth.ParsePolicy(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := jwtauth.ParsePolicy(b)
		if err != nil {
			t.Fatalf("re-encoded policy %s: %v", b, err)
		}
		b2, _ := json.Marshal(p2)
		if string(b) != string(b2) {
			t.Fatalf("round trip %s -> %s", b, b2)
		}
	})
}

// FuzzCheckFetchURL feeds arbitrary issuer, discovery and jwks_uri URLs
// (a discovery document's jwks_uri is fetched only if it passes): an
// accepted URL is absolute and https, or http to a loopback host.
func FuzzCheckFetchURL(f *testing.F) {
	for _, s := range []string{
		"https://login.microsoftonline.com/common/discovery/v2.0/keys", "http://127.0.0.1:8080/jwks",
		"http://localhost/x", "http://[::1]/", "http://10.0.0.1/", "http://127.0.0.1.evil/", "file:///etc/passwd",
		"https:///nohost", "//host/x", "HTTP://LOCALHOST/", "http://0x7f.1/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		if jwtauth.CheckFetchURL(u) != nil {
			return
		}
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			t.Fatalf("accepted %q", u)
		}
		switch p.Scheme {
		case "https":
		case "http":
			h := p.Hostname()
			if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted plain http to %q", h)
			}
		default:
			t.Fatalf("accepted scheme %q", p.Scheme)
		}
	})
}
