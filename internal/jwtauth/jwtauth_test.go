package jwtauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

const (
	tenant    = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	principal = "6c5b3b4e-4cb3-4a6e-9d55-2a3c1f0e9b11"
	issV1     = "https://sts.windows.net/" + tenant + "/"
	issV2     = "https://login.microsoftonline.com/" + tenant + "/v2.0"
	audV1     = "https://management.azure.com/"
	audV2     = "api://tkms"
)

var t0 = time.Unix(1_800_000_000, 0)

// clock is an adjustable Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()) }

// lockedBuffer collects log output from concurrent goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// idp is a real OIDC issuer on loopback that counts JWK Set fetches.
type idp struct {
	*oidcissuer.Issuer
	srv         *httptest.Server
	jwksFetches atomic.Int64
}

// keyPool holds signing key files by algorithm and slot, so that tests
// share a few generated RSA keys instead of generating one per issuer.
var keyPool sync.Map

// newIDP starts an issuer whose initial key is the slot-th pooled key of alg:
// issuers with different slots have different keys.
func newIDP(t *testing.T, alg string, slot int, clk *clock) *idp {
	t.Helper()
	name := fmt.Sprintf("%s/%d", alg, slot)
	pemBytes, ok := keyPool.Load(name)
	if !ok {
		dir := t.TempDir()
		if _, err := oidcissuer.New(dir, oidcissuer.Options{Algorithm: alg}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, oidcissuer.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		pemBytes, _ = keyPool.LoadOrStore(name, b)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, oidcissuer.KeyFile), pemBytes.([]byte), 0o600); err != nil {
		t.Fatal(err)
	}
	iss, err := oidcissuer.New(dir, oidcissuer.Options{Algorithm: alg, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{Issuer: iss}
	h := iss.Handler()
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == oidcissuer.JWKSPath {
			p.jwksFetches.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	if err := iss.SetURL(p.srv.URL); err != nil {
		t.Fatal(err)
	}
	return p
}

// mint signs the managed identity claims for iss and aud, edited by edit.
func (p *idp) mint(t *testing.T, iss, aud string, edit func(map[string]any)) string {
	t.Helper()
	c := p.ManagedIdentityClaims(oidcissuer.ManagedIdentity{Issuer: iss, Audience: aud, PrincipalID: principal, TenantID: tenant})
	if edit != nil {
		edit(c)
	}
	tok, err := p.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func testPolicy() jwtauth.Policy {
	return jwtauth.Policy{
		issV1: {"idtyp": "app", "tid": tenant},
		issV2: {"idtyp": "app", "tid": []any{tenant, "other-tenant"}},
	}
}

// newAuth trusts p as Entra ID v1 (through discovery) and v2 (through the
// JWKS URL).
func newAuth(t *testing.T, p *idp, clk *clock, logs io.Writer, edit func(*jwtauth.Config)) *jwtauth.Authenticator {
	t.Helper()
	if logs == nil {
		logs = t.Output()
	}
	cfg := jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{
			{Issuer: issV1, Audiences: []string{audV1}, DiscoveryURL: p.srv.URL},
			{Issuer: issV2, Audiences: []string{audV2, "00000000-1111-2222-3333-444444444444"}, JWKSURL: p.JWKSURL()},
		},
		Policy: testPolicy(),
		Now:    clk.now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := jwtauth.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// withHeader replaces the protected header of a compact JWS, keeping payload
// and signature.
func withHeader(tok, header string) string {
	prefix := ""
	if rest, ok := strings.CutPrefix(tok, "Bearer "); ok {
		prefix, tok = "Bearer ", rest
	}
	parts := strings.Split(tok, ".")
	return prefix + b64(header) + "." + parts[1] + "." + parts[2]
}

// hs256 hand-crafts an HS256 token with the given secret.
func hs256(header string, claims map[string]any, secret []byte) string {
	pl, _ := json.Marshal(claims)
	in := b64(header) + "." + base64.RawURLEncoding.EncodeToString(pl)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestAuthenticate(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	var logs lockedBuffer
	a := newAuth(t, p, clk, &logs, nil)

	rsaPub := p.PublicKey().(*rsa.PublicKey)
	spki, _ := x509.MarshalPKIXPublicKey(rsaPub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	kid := p.KeyID()
	valid := p.ManagedIdentityClaims(oidcissuer.ManagedIdentity{Issuer: issV1, Audience: audV1, PrincipalID: principal, TenantID: tenant})
	now := t0.Unix()
	set := func(kv ...any) func(map[string]any) {
		return func(c map[string]any) {
			for i := 0; i < len(kv); i += 2 {
				if kv[i+1] == nil {
					delete(c, kv[i].(string))
				} else {
					c[kv[i].(string)] = kv[i+1]
				}
			}
		}
	}
	v1 := func(edit func(map[string]any)) string { return "Bearer " + p.mint(t, issV1, audV1, edit) }
	v2 := func(edit func(map[string]any)) string { return "Bearer " + p.mint(t, issV2, audV2, edit) }

	otherIDP := newIDP(t, "RS256", 1, clk) // a key the authenticator does not trust

	tests := []struct {
		name   string
		header string
		code   string   // "" for success
		msg    []string // substrings of the error
		oid    string   // expected Identity.OID on success
	}{
		{name: "valid v1", header: v1(nil), oid: principal},
		{name: "valid v2", header: v2(nil), oid: principal},
		{name: "v2 second audience", header: "Bearer " + p.mint(t, issV2, "00000000-1111-2222-3333-444444444444", nil), oid: principal},
		{name: "v2 policy list", header: v2(set("tid", "other-tenant")), oid: principal},
		{name: "aud array", header: v1(set("aud", []string{"x", audV1})), oid: principal},
		{name: "lowercase scheme", header: "bearer " + p.mint(t, issV1, audV1, nil), oid: principal},
		{name: "fractional times", header: v1(set("exp", float64(now)+0.5, "nbf", float64(now)-0.5)), oid: principal},
		{name: "no iat", header: v1(set("iat", nil)), oid: principal},

		{name: "expired", header: v1(set("exp", now-3600)), code: jwtauth.CodeExpired},
		{name: "not yet valid", header: v1(set("nbf", now+3600)), code: jwtauth.CodeNotYetValid},
		{name: "issued in the future", header: v1(set("iat", now+3600)), code: jwtauth.CodeNotYetValid},
		{name: "skew: exp 59s ago", header: v1(set("exp", now-59)), oid: principal},
		{name: "skew: exp 60s ago", header: v1(set("exp", now-60)), code: jwtauth.CodeExpired},
		{name: "skew: nbf in 60s", header: v1(set("nbf", now+60)), oid: principal},
		{name: "skew: nbf in 61s", header: v1(set("nbf", now+61)), code: jwtauth.CodeNotYetValid},
		{name: "skew: iat in 60s", header: v1(set("iat", now+60)), oid: principal},
		{name: "skew: iat in 61s", header: v1(set("iat", now+61)), code: jwtauth.CodeNotYetValid},
		{name: "no exp", header: v1(set("exp", nil)), code: jwtauth.CodeInvalid, msg: []string{"no exp"}},
		{name: "no nbf", header: v1(set("nbf", nil)), code: jwtauth.CodeInvalid, msg: []string{"no nbf"}},
		{name: "exp not a number", header: v1(set("exp", "tomorrow")), code: jwtauth.CodeInvalid},
		{name: "exp out of range", header: v1(set("exp", 1e300)), code: jwtauth.CodeInvalid},

		{name: "wrong audience", header: v1(set("aud", "https://vault.azure.net/")), code: jwtauth.CodeAudience},
		{name: "audience of the other issuer", header: v1(set("aud", audV2)), code: jwtauth.CodeAudience},
		{name: "audience without trailing slash", header: v1(set("aud", strings.TrimSuffix(audV1, "/"))), code: jwtauth.CodeAudience},
		{name: "no audience", header: v1(set("aud", nil)), code: jwtauth.CodeAudience},
		{name: "audience not a string", header: v1(set("aud", 7)), code: jwtauth.CodeInvalid},

		{name: "wrong issuer", header: v1(set("iss", "https://evil.example/")), code: jwtauth.CodeIssuer},
		{name: "issuer without trailing slash", header: v1(set("iss", strings.TrimSuffix(issV1, "/"))), code: jwtauth.CodeIssuer},
		{name: "issuer case", header: v1(set("iss", strings.ToUpper(issV1))), code: jwtauth.CodeIssuer},
		{name: "no issuer", header: v1(set("iss", nil)), code: jwtauth.CodeIssuer},
		{name: "issuer not a string", header: v1(set("iss", 1)), code: jwtauth.CodeIssuer},

		{name: "policy mismatch", header: v1(set("idtyp", "user")), code: jwtauth.CodePolicyMismatch,
			msg: []string{`claim "idtyp" is "user", want "app"`}},
		{name: "policy claim missing", header: v1(set("idtyp", nil)), code: jwtauth.CodePolicyMismatch,
			msg: []string{`claim "idtyp" is missing, want "app"`}},
		{name: "policy list mismatch", header: v2(set("tid", "t3")), code: jwtauth.CodePolicyMismatch,
			msg: []string{`claim "tid"`, `want one of ["` + tenant + `","other-tenant"]`}},
		{name: "policy two claims", header: v1(set("idtyp", "user", "tid", nil)), code: jwtauth.CodePolicyMismatch,
			msg: []string{`claim "idtyp"`, `claim "tid" is missing`}},
		{name: "policy type mismatch", header: v1(set("idtyp", []string{"app"})), code: jwtauth.CodePolicyMismatch},

		{name: "no oid falls back to sub", header: v1(set("oid", nil, "sub", "the-sub")), oid: "the-sub"},
		{name: "no oid and no sub", header: v1(set("oid", nil, "sub", nil)), code: jwtauth.CodeNoIdentity},
		{name: "oid not a string", header: v1(set("oid", 5)), code: jwtauth.CodeInvalid},

		{name: "no header", header: "", code: jwtauth.CodeMissing},
		{name: "basic scheme", header: "Basic dXNlcjpwYXNz", code: jwtauth.CodeMissing},
		{name: "bearer without token", header: "Bearer", code: jwtauth.CodeMissing},
		{name: "bearer with spaces only", header: "Bearer   ", code: jwtauth.CodeMissing},
		{name: "token without scheme", header: p.mint(t, issV1, audV1, nil), code: jwtauth.CodeMissing},
		{name: "two tokens", header: v1(nil) + " " + p.mint(t, issV1, audV1, nil), code: jwtauth.CodeInvalid},
		{name: "not a jws", header: "Bearer abc", code: jwtauth.CodeInvalid},
		{name: "four parts", header: v1(nil) + ".x", code: jwtauth.CodeInvalid},
		{name: "bad base64", header: "Bearer !!!.???.***", code: jwtauth.CodeInvalid},
		{name: "huge token", header: "Bearer " + strings.Repeat("a", jwtauth.MaxTokenSize) + "." + "b.c", code: jwtauth.CodeInvalid,
			msg: []string{"larger than"}},

		{name: "alg none", header: "Bearer " + b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + strings.Split(v1(nil), ".")[1] + ".",
			code: jwtauth.CodeInvalid, msg: []string{"algorithm not allowed"}},
		{name: "alg none with signature", header: withHeader(v1(nil), `{"alg":"none"}`), code: jwtauth.CodeInvalid},
		{name: "HS256 with RSA public key PEM", header: "Bearer " + hs256(`{"alg":"HS256","typ":"JWT","kid":"`+kid+`"}`, valid, pubPEM),
			code: jwtauth.CodeInvalid},
		{name: "HS256 with RSA public key DER", header: "Bearer " + hs256(`{"alg":"HS256","kid":"`+kid+`"}`, valid, spki),
			code: jwtauth.CodeInvalid},
		{name: "HS256 with RSA modulus", header: "Bearer " + hs256(`{"alg":"HS256","kid":"`+kid+`"}`, valid, rsaPub.N.Bytes()),
			code: jwtauth.CodeInvalid},
		{name: "RS256 token relabelled ES256", header: withHeader(v1(nil), `{"alg":"ES256","kid":"`+kid+`"}`),
			code: jwtauth.CodeInvalid, msg: []string{"does not match key"}},
		{name: "RS256 token relabelled PS256", header: withHeader(v1(nil), `{"alg":"PS256","kid":"`+kid+`"}`), code: jwtauth.CodeInvalid},
		{name: "RS256 token relabelled RS512", header: withHeader(v1(nil), `{"alg":"RS512","kid":"`+kid+`"}`), code: jwtauth.CodeInvalid},
		{name: "no kid", header: withHeader(v1(nil), `{"alg":"RS256"}`), code: jwtauth.CodeInvalid, msg: []string{"no kid"}},
		{name: "flipped signature", header: flip(v1(nil), -2), code: jwtauth.CodeInvalid, msg: []string{"signature verification failed"}},
		{name: "flipped payload", header: flipPayload(v1(nil)), code: jwtauth.CodeInvalid},
		{name: "header not json", header: withHeader(v1(nil), `{"alg":`), code: jwtauth.CodeInvalid},
		{name: "payload not an object", header: "Bearer " + b64(`{"alg":"RS256","kid":"`+kid+`"}`) + "." + b64(`[1]`) + ".AAAA", code: jwtauth.CodeInvalid},
		{name: "signed by an untrusted key", header: "Bearer " + otherIDP.mint(t, issV1, audV1, nil), code: jwtauth.CodeUnknownKID},
		{name: "untrusted key reusing the trusted kid", header: withHeader("Bearer "+otherIDP.mint(t, issV1, audV1, nil), `{"alg":"RS256","kid":"`+kid+`"}`),
			code: jwtauth.CodeInvalid, msg: []string{"signature verification failed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Authenticate(t.Context(), tc.header)
			if got := jwtauth.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if tc.code == "" {
				if id.OID != tc.oid || id.TenantID != id.Claims["tid"] || (id.Issuer != issV1 && id.Issuer != issV2) {
					t.Errorf("identity %+v", id)
				}
				if id.Claims["idtyp"] != "app" {
					t.Errorf("claims %v", id.Claims)
				}
				if id.Header["alg"] == nil || id.Header["kid"] == nil {
					t.Errorf("header %v: want the token's alg and kid", id.Header)
				}
				return
			}
			if id != nil {
				t.Errorf("identity %+v with error", id)
			}
			msg := err.Error()
			for _, m := range tc.msg {
				if !strings.Contains(msg, m) {
					t.Errorf("error %q does not contain %q", msg, m)
				}
			}
			if msg != strings.ToLower(msg[:1])+msg[1:] || strings.HasSuffix(msg, ".") {
				t.Errorf("error %q: want lowercase, no final period", msg)
			}
			assertNoToken(t, msg, tc.header)
		})
	}
	// Nothing logged may contain a token either.
	for _, tc := range tests {
		assertNoToken(t, logs.String(), tc.header)
	}
	st := a.Stats()
	if st.Accepted == 0 || st.Rejected[jwtauth.CodeInvalid] == 0 || st.Rejected[jwtauth.CodeExpired] != 2 {
		t.Errorf("stats %+v", st)
	}
}

// assertNoToken fails if s contains the signature or payload of the token in
// header.
func assertNoToken(t *testing.T, s, header string) {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(header, "Bearer "), "bearer ")), ".")
	for _, p := range parts[min(1, len(parts)-1):] {
		if len(p) >= 16 && strings.Contains(s, p) {
			t.Errorf("output contains part of the token: %.40q...", p)
		}
	}
}

func flip(header string, i int) string {
	b := []byte(header)
	if i < 0 {
		i += len(b)
	}
	// Stay within the base64url alphabet.
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func flipPayload(header string) string {
	dot := strings.Index(header, ".")
	return flip(header, dot+5)
}

func TestPolicyErrorDetails(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, nil)
	_, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, func(c map[string]any) { c["idtyp"] = "user"; delete(c, "tid") }))
	if !errors.Is(err, jwtauth.ErrPolicyMismatch) {
		t.Fatalf("err = %v", err)
	}
	var pes []*jwtauth.PolicyError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				var pe *jwtauth.PolicyError
				if errors.As(e, &pe) {
					pes = append(pes, pe)
				}
			}
		}
	}
	if len(pes) != 2 {
		t.Fatalf("got %d policy errors, want 2: %v", len(pes), err)
	}
	if pes[0].Claim != "idtyp" || pes[0].Observed != "user" || pes[0].Missing || pes[0].Expected[0] != "app" || pes[0].Issuer != issV1 {
		t.Errorf("first %+v", pes[0])
	}
	if pes[1].Claim != "tid" || !pes[1].Missing {
		t.Errorf("second %+v", pes[1])
	}
}

func TestPolicyValues(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, nil)
	pol, err := jwtauth.ParsePolicy([]byte(`{"` + issV1 + `":{"ver":1,"big":12345678901234567890,"f":0.5,"ok":true,"xs":["a",2,false]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	// josejson.Number puts the literal into the token.
	base := map[string]any{"ver": 1, "big": uint64(12345678901234567890), "f": 0.5, "ok": true, "xs": "a"}
	for _, tc := range []struct {
		name string
		edit map[string]any
		ok   bool
	}{
		{"all equal", nil, true},
		{"1.0 equals 1", map[string]any{"ver": josejson.Number("1.0")}, true},
		{"1e0 equals 1", map[string]any{"ver": josejson.Number("1e0")}, true},
		{"5e-1 equals 0.5", map[string]any{"f": josejson.Number("5e-1")}, true},
		{"list number", map[string]any{"xs": 2}, true},
		{"list bool", map[string]any{"xs": false}, true},
		{"string is not number", map[string]any{"ver": "1"}, false},
		{"2 is not 1", map[string]any{"ver": 2}, false},
		{"big differs in last digit", map[string]any{"big": josejson.Number("12345678901234567891")}, false},
		{"true is not 1", map[string]any{"ok": 1}, false},
		{"string true is not true", map[string]any{"ok": "true"}, false},
		{"null", map[string]any{"ok": nil}, false},
		{"list bool true", map[string]any{"xs": true}, false},
		{"huge exponent", map[string]any{"ver": josejson.Number("1e999999999")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := p.mint(t, issV1, audV1, func(c map[string]any) {
				for k, v := range base {
					c[k] = v
				}
				for k, v := range tc.edit {
					c[k] = v
				}
			})
			_, err := a.Authenticate(t.Context(), "Bearer "+tok)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, jwtauth.ErrPolicyMismatch) {
				t.Fatalf("err = %v", err)
			}
		})
	}

	// The policy in force is a copy, and an issuer without an entry is
	// not trusted.
	got := a.Policy()
	got[issV1]["ver"] = 99
	if a.Policy()[issV1]["ver"] == 99 {
		t.Error("Policy returned the live map")
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV2, audV2, nil)); jwtauth.Code(err) != jwtauth.CodeIssuer {
		t.Errorf("issuer without policy: %v", err)
	}
	// An empty entry adds no claim checks.
	if err := a.SetPolicy(jwtauth.Policy{issV2: {}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV2, audV2, nil)); err != nil {
		t.Errorf("empty policy entry: %v", err)
	}

	for _, bad := range []string{
		`[]`, `null`, `{"x":null}`, `{"x":{"c":null}}`, `{"x":{"c":[]}}`, `{"x":{"c":{"a":1}}}`, `{"x":{"c":[[1]]}}`,
		`{"":{"c":1}}`, `{"x":{}} {}`, `{`,
	} {
		if _, err := jwtauth.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("ParsePolicy(%s) accepted", bad)
		}
	}
	if err := a.SetPolicy(jwtauth.Policy{"x": {"c": struct{}{}}}); err == nil {
		t.Error("SetPolicy accepted a struct value")
	}
}

func TestES256(t *testing.T) {
	clk := newClock(t0)
	rs := newIDP(t, "RS256", 0, clk)
	es := newIDP(t, "ES256", 0, clk)
	const issES = "https://es.example/"
	const issRSOnly = "https://rs-only.example/"
	a := newAuth(t, rs, clk, nil, func(c *jwtauth.Config) {
		c.Issuers = append(c.Issuers,
			jwtauth.IssuerConfig{Issuer: issES, Audiences: []string{"es"}, DiscoveryURL: es.srv.URL},
			jwtauth.IssuerConfig{Issuer: issRSOnly, Audiences: []string{"es"}, JWKSURL: es.JWKSURL(), Algorithms: []string{"RS256"}})
		c.Policy[issES] = map[string]any{}
		c.Policy[issRSOnly] = map[string]any{}
	})
	esTok := es.mint(t, issES, "es", nil)
	rsTok := rs.mint(t, issV1, audV1, nil)
	for _, tc := range []struct {
		name, header, code string
	}{
		{"ES256 accepted", "Bearer " + esTok, ""},
		{"ES256 refused by an RS256-only issuer", "Bearer " + es.mint(t, issRSOnly, "es", nil), jwtauth.CodeInvalid},
		{"RS256 token relabelled ES256 with the EC kid", withHeader("Bearer "+rs.mint(t, issES, "es", nil), `{"alg":"ES256","kid":"`+es.KeyID()+`"}`), jwtauth.CodeInvalid},
		{"ES256 token relabelled RS256 with the RSA kid", withHeader("Bearer "+es.mint(t, issV1, audV1, nil), `{"alg":"RS256","kid":"`+rs.KeyID()+`"}`), jwtauth.CodeInvalid},
		{"ES256 token relabelled RS256 with its own kid", withHeader("Bearer "+esTok, `{"alg":"RS256","kid":"`+es.KeyID()+`"}`), jwtauth.CodeInvalid},
		{"RS256 accepted", "Bearer " + rsTok, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(t.Context(), tc.header)
			if got := jwtauth.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}

func TestUnknownKIDRefresh(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, nil)
	before := p.jwksFetches.Load()
	if before != 2 { // one per issuer at startup
		t.Fatalf("%d startup fetches, want 2", before)
	}
	if err := p.Rotate(); err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, nil))
	if err != nil {
		t.Fatal(err)
	}
	if id.OID != principal {
		t.Errorf("OID %q", id.OID)
	}
	if got := p.jwksFetches.Load() - before; got != 1 {
		t.Errorf("%d refreshes, want exactly 1", got)
	}
	// The new key is now cached: no more fetches.
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, nil)); err != nil {
		t.Fatal(err)
	}
	if got := p.jwksFetches.Load() - before; got != 1 {
		t.Errorf("%d refreshes after a cached kid, want 1", got)
	}
	st := a.Stats().Issuers[0]
	if st.Issuer != issV1 || st.UnknownKIDRefreshes != 1 || st.Fetches != 2 || st.Keys != 2 || st.FetchFailures != 0 || !st.LastRefreshed.Equal(t0) {
		t.Errorf("stats %+v", st)
	}
}

func TestRefreshRateLimit(t *testing.T) {
	const n = 50
	run := func(t *testing.T, a *jwtauth.Authenticator, header string) []error {
		t.Helper()
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = a.Authenticate(t.Context(), header)
			})
		}
		close(start)
		wg.Wait()
		return errs
	}

	t.Run("kid never published", func(t *testing.T) {
		clk := newClock(t0)
		p := newIDP(t, "RS256", 0, clk)
		stranger := newIDP(t, "RS256", 1, clk)
		a := newAuth(t, p, clk, nil, nil)
		before := p.jwksFetches.Load()
		header := "Bearer " + stranger.mint(t, issV1, audV1, nil)
		for i, err := range run(t, a, header) {
			if jwtauth.Code(err) != jwtauth.CodeUnknownKID {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if got := p.jwksFetches.Load() - before; got != 1 {
			t.Errorf("%d JWKS fetches for %d concurrent unknown kids, want 1", got, n)
		}
		for i, err := range run(t, a, header) {
			if jwtauth.Code(err) != jwtauth.CodeUnknownKID {
				t.Fatalf("second wave, request %d: %v", i, err)
			}
		}
		if got := p.jwksFetches.Load() - before; got != 1 {
			t.Errorf("%d JWKS fetches within the rate limit, want 1", got)
		}
		st := a.Stats().Issuers[0]
		if st.UnknownKIDRefreshes != 1 || st.RateLimited == 0 {
			t.Errorf("stats %+v", st)
		}
		// Once the interval has passed, one more refresh is allowed.
		clk.set(t0.Add(jwtauth.DefaultMinRefreshInterval))
		if _, err := a.Authenticate(t.Context(), header); jwtauth.Code(err) != jwtauth.CodeUnknownKID {
			t.Fatal(err)
		}
		if got := p.jwksFetches.Load() - before; got != 2 {
			t.Errorf("%d JWKS fetches after the interval, want 2", got)
		}
	})

	t.Run("rotated key", func(t *testing.T) {
		clk := newClock(t0)
		p := newIDP(t, "RS256", 0, clk)
		a := newAuth(t, p, clk, nil, nil)
		before := p.jwksFetches.Load()
		if err := p.Rotate(); err != nil {
			t.Fatal(err)
		}
		for i, err := range run(t, a, "Bearer "+p.mint(t, issV1, audV1, nil)) {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if got := p.jwksFetches.Load() - before; got != 1 {
			t.Errorf("%d JWKS fetches for %d concurrent requests after rotation, want 1", got, n)
		}
	})
}

func TestStaticJWKS(t *testing.T) {
	clk := newClock(t0)
	iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	// No server: the issuer is never served. Any network use fails the
	// test through this client.
	var dials atomic.Int64
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		dials.Add(1)
		return nil, errors.New("no network")
	})}
	a, err := jwtauth.New(t.Context(), jwtauth.Config{
		Issuers:         []jwtauth.IssuerConfig{{Issuer: issV2, Audiences: []string{audV2}, JWKS: iss.JWKS()}},
		Policy:          jwtauth.Policy{issV2: {"idtyp": "app"}},
		Now:             clk.now,
		HTTPClient:      client,
		RefreshInterval: time.Millisecond,
		Logger:          slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tok, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Issuer: issV2, Audience: audV2, PrincipalID: principal, TenantID: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+tok); err != nil {
		t.Fatal(err)
	}
	// An unknown kid is just unknown: no refresh of a static set.
	if err := iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	tok, _ = iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Issuer: issV2, Audience: audV2, PrincipalID: principal})
	if _, err := a.Authenticate(t.Context(), "Bearer "+tok); jwtauth.Code(err) != jwtauth.CodeUnknownKID {
		t.Fatalf("rotated key: %v", err)
	}
	if dials.Load() != 0 {
		t.Errorf("static mode used the network %d times", dials.Load())
	}
	if st := a.Stats().Issuers[0]; st.Fetches != 0 || st.Keys != 1 {
		t.Errorf("stats %+v", st)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestStaticJWKSKeyFiltering(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &small.PublicKey, KeyID: "small", Algorithm: "RS256"},
		{Key: &p384.PublicKey, KeyID: "p384"},
		{Key: &good.PublicKey, KeyID: "enc", Use: "enc"},
		{Key: &good.PublicKey, KeyID: "rs512", Algorithm: "RS512"},
		{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"},
		{Key: &good.PublicKey},    // no kid
		{Key: good, KeyID: "rsa"}, // private: only the public part is kept
		{Key: &ec.PublicKey, KeyID: "ec", Use: "sig", Algorithm: "ES256"},
	}}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	// A key of an unknown type must not spoil the others.
	data = bytes.Replace(data, []byte(`{"keys":[`), []byte(`{"keys":[{"kty":"XYZ","kid":"odd"},`), 1)
	clk := newClock(t0)
	a, err := jwtauth.New(t.Context(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: "https://static/", Audiences: []string{"a"}, JWKS: data}},
		Policy:  jwtauth.Policy{"https://static/": {}},
		Now:     clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	st := a.Stats().Issuers[0]
	if st.Keys != 2 || st.SkippedKeys != 7 {
		t.Errorf("kept %d keys, skipped %d; want 2 and 7", st.Keys, st.SkippedKeys)
	}
	claims := map[string]any{"iss": "https://static/", "aud": "a", "sub": "s", "exp": t0.Unix() + 60, "nbf": t0.Unix()}
	sign := func(alg jose.SignatureAlgorithm, key any, kid string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	for _, tc := range []struct {
		name, header, code string
	}{
		{"rsa", sign(jose.RS256, good, "rsa"), ""},
		{"ec", sign(jose.ES256, ec, "ec"), ""},
		{"small rsa key skipped", sign(jose.RS256, small, "small"), jwtauth.CodeUnknownKID},
		{"p384 key skipped", sign(jose.ES384, p384, "p384"), jwtauth.CodeInvalid},
		{"hmac key skipped", sign(jose.HS256, []byte("0123456789abcdef0123456789abcdef"), "hmac"), jwtauth.CodeInvalid},
		{"RS512 key not usable for RS256", sign(jose.RS256, good, "rs512"), jwtauth.CodeUnknownKID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(t.Context(), tc.header)
			if got := jwtauth.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}

	for _, bad := range [][]byte{[]byte(`{`), []byte(`{"keys":[]}`), []byte(`{"keys":[{"kty":"oct","k":"AAAA","kid":"x"}]}`)} {
		if _, err := jwtauth.New(t.Context(), jwtauth.Config{
			Issuers: []jwtauth.IssuerConfig{{Issuer: "https://static/", Audiences: []string{"a"}, JWKS: bad}},
		}); err == nil {
			t.Errorf("static JWKS %s accepted", bad)
		}
	}
}

func TestFetchFailures(t *testing.T) {
	big := bytes.Repeat([]byte(" "), 2<<20)
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		errLike string
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, "500"},
		{"discovery not json", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "openid configuration"},
		{"oversized body", func(w http.ResponseWriter, r *http.Request) { w.Write(big) }, "larger than"},
		{"plain http jwks_uri", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"jwks_uri":"http://login.example/keys"}`))
		}, "loopback"},
		{"empty key set", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "openid-configuration") {
				fmt.Fprintf(w, `{"jwks_uri":"http://%s/keys"}`, r.Host)
				return
			}
			w.Write([]byte(`{"keys":[]}`))
		}, "no usable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			clk := newClock(t0)
			var logs lockedBuffer
			a, err := jwtauth.New(t.Context(), jwtauth.Config{
				Issuers: []jwtauth.IssuerConfig{{Issuer: issV1, Audiences: []string{audV1}, DiscoveryURL: srv.URL + "/"}},
				Policy:  testPolicy(),
				Now:     clk.now,
				Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatalf("New failed on an unreachable key set: %v", err)
			}
			defer a.Close()
			st := a.Stats().Issuers[0]
			if st.Fetches != 1 || st.FetchFailures != 1 || st.Keys != 0 || !strings.Contains(st.LastFetchError, tc.errLike) {
				t.Errorf("stats %+v", st)
			}
			if !strings.Contains(logs.String(), "jwk set refresh failed") {
				t.Errorf("failure not logged: %s", logs.String())
			}
			p := newIDP(t, "RS256", 0, clk)
			_, err = a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, nil))
			if jwtauth.Code(err) != jwtauth.CodeUnknownKID {
				t.Errorf("err = %v", err)
			}
			if st := a.Stats().Issuers[0]; st.FetchFailures != 2 {
				t.Errorf("unknown kid did not retry: %+v", st)
			}
		})
	}
}

func TestBackgroundRefresh(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, func(c *jwtauth.Config) { c.RefreshInterval = 5 * time.Millisecond })
	if err := p.Rotate(); err != nil {
		t.Fatal(err)
	}
	// Wait (without a deadline of our own: go test's timeout applies) for a
	// scheduled refresh to pick up the new key.
	for a.Stats().Issuers[0].Keys != 2 {
		time.Sleep(time.Millisecond)
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, nil)); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats().Issuers[0]; st.UnknownKIDRefreshes != 0 {
		t.Errorf("needed an unknown-kid refresh: %+v", st)
	}
	a.Close()
	a.Close() // idempotent
	// A fetch cancelled by Close may still reach the server's handler a
	// moment later (the client gave up, the server had the request): let
	// that settle, then no fetch may come at all (the refresh interval
	// is 5 ms, so a surviving refresher would fetch several times).
	time.Sleep(20 * time.Millisecond)
	n := p.jwksFetches.Load()
	time.Sleep(50 * time.Millisecond)
	if p.jwksFetches.Load() != n {
		t.Error("refreshes continue after Close")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := jwtauth.IssuerConfig{Issuer: issV1, Audiences: []string{audV1}, JWKSURL: "https://login.microsoftonline.com/" + tenant + "/discovery/v2.0/keys"}
	for _, tc := range []struct {
		name string
		edit func(*jwtauth.Config)
	}{
		{"no issuers", func(c *jwtauth.Config) { c.Issuers = nil }},
		{"empty iss", func(c *jwtauth.Config) { c.Issuers[0].Issuer = "" }},
		{"duplicate", func(c *jwtauth.Config) { c.Issuers = append(c.Issuers, ok) }},
		{"no audience", func(c *jwtauth.Config) { c.Issuers[0].Audiences = nil }},
		{"empty audience", func(c *jwtauth.Config) { c.Issuers[0].Audiences = []string{""} }},
		{"no key source", func(c *jwtauth.Config) { c.Issuers[0].JWKSURL = "" }},
		{"two key sources", func(c *jwtauth.Config) { c.Issuers[0].DiscoveryURL = "https://login.microsoftonline.com/x/v2.0" }},
		{"plain http", func(c *jwtauth.Config) { c.Issuers[0].JWKSURL = "http://login.microsoftonline.com/keys" }},
		{"relative url", func(c *jwtauth.Config) { c.Issuers[0].JWKSURL = "/keys" }},
		{"HS256", func(c *jwtauth.Config) { c.Issuers[0].Algorithms = []string{"HS256"} }},
		{"none", func(c *jwtauth.Config) { c.Issuers[0].Algorithms = []string{"none"} }},
		{"skew too large", func(c *jwtauth.Config) { c.ClockSkew = time.Hour }},
		{"negative skew", func(c *jwtauth.Config) { c.ClockSkew = -time.Second }},
		{"negative interval", func(c *jwtauth.Config) { c.MinRefreshInterval = -time.Second }},
		{"bad policy", func(c *jwtauth.Config) { c.Policy = jwtauth.Policy{issV1: {"c": []any{}}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := jwtauth.Config{Issuers: []jwtauth.IssuerConfig{ok}, Policy: jwtauth.Policy{issV1: {}}}
			c.Issuers[0].Audiences = []string{audV1}
			tc.edit(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("Validate accepted")
			}
			if _, err := jwtauth.New(context.Background(), c); err == nil {
				t.Fatal("New accepted")
			}
		})
	}
	c := jwtauth.Config{Issuers: []jwtauth.IssuerConfig{ok}, Policy: jwtauth.Policy{issV1: {}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
	}{
		{nil, ""},
		{errors.New("other"), jwtauth.CodeInvalid},
		{jwtauth.ErrMissing, jwtauth.CodeMissing},
		{fmt.Errorf("ctx: %w", jwtauth.ErrExpired), jwtauth.CodeExpired},
		{jwtauth.ErrNotYetValid, jwtauth.CodeNotYetValid},
		{jwtauth.ErrAudience, jwtauth.CodeAudience},
		{jwtauth.ErrIssuer, jwtauth.CodeIssuer},
		{jwtauth.ErrUnknownKID, jwtauth.CodeUnknownKID},
		{&jwtauth.PolicyError{Claim: "c", Expected: []any{"v"}, Missing: true}, jwtauth.CodePolicyMismatch},
		{jwtauth.ErrNoIdentity, jwtauth.CodeNoIdentity},
		{jwtauth.ErrInvalid, jwtauth.CodeInvalid},
	} {
		if got := jwtauth.Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.code)
		}
	}
}
