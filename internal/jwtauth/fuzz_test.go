package jwtauth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// FuzzAuthenticate feeds arbitrary Authorization header values to an
// Authenticator with a static key set (no network). It must never panic,
// must classify every failure, and must not echo long inputs in errors.
func FuzzAuthenticate(f *testing.F) {
	clk := newClock(t0)
	iss, err := oidcissuer.New(f.TempDir(), oidcissuer.Options{Now: clk.now})
	if err != nil {
		f.Fatal(err)
	}
	a, err := jwtauth.New(f.Context(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: issV1, Audiences: []string{audV1}, JWKS: iss.JWKS()}},
		Policy:  jwtauth.Policy{issV1: {"idtyp": "app", "tid": []any{tenant, 7, true}}},
		Now:     clk.now,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(a.Close)

	valid, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Issuer: issV1, Audience: audV1, PrincipalID: principal, TenantID: tenant})
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(valid, ".")
	mac := hmac.New(sha256.New, []byte("secret"))
	mac.Write([]byte(b64(`{"alg":"HS256"}`) + "." + parts[1]))
	for _, seed := range []string{
		"Bearer " + valid,
		"bearer " + valid,
		"Bearer " + b64(`{"alg":"none"}`) + "." + parts[1] + ".",
		"Bearer " + b64(`{"alg":"HS256"}`) + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)),
		"Bearer " + b64(`{"alg":"ES256","kid":"`+iss.KeyID()+`"}`) + "." + parts[1] + "." + parts[2],
		"Bearer " + parts[0] + "." + b64(`{"iss":"`+issV1+`","exp":1e999,"nbf":-1e999,"aud":[1]}`) + "." + parts[2],
		"Bearer " + parts[0] + "." + b64(`[]`) + "." + parts[2],
		"Bearer a.b.c",
		"Bearer ...",
		"Bearer",
		"Basic x",
		"",
	} {
		f.Add(seed)
	}
	known := []string{
		jwtauth.CodeMissing, jwtauth.CodeInvalid, jwtauth.CodeExpired, jwtauth.CodeNotYetValid,
		jwtauth.CodeAudience, jwtauth.CodeIssuer, jwtauth.CodeUnknownKID, jwtauth.CodePolicyMismatch,
		jwtauth.CodeNoIdentity,
	}
	f.Fuzz(func(t *testing.T, header string) {
		id, err := a.Authenticate(t.Context(), header)
		if err == nil {
			if id == nil || id.OID == "" || id.Issuer != issV1 {
				t.Fatalf("accepted with identity %+v", id)
			}
			return
		}
		if id != nil {
			t.Fatal("identity with error")
		}
		if !slices.Contains(known, jwtauth.Code(err)) {
			t.Fatalf("unclassified error %v", err)
		}
		if len(header) >= 300 && strings.Contains(err.Error(), header) {
			t.Fatal("error echoes the header")
		}
	})
}
