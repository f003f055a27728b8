package jwtauth_test

import (
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/jwtauth"
)

// TestTokenLifetimeDefault: without a configured maximum, a token valid for
// more than 24 hours (and the 5 minutes Entra ID backdates by) is refused
// with JWT_LIFETIME_TOO_LONG however far its exp; real token shapes pass.
func TestTokenLifetimeDefault(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, nil)
	now := t0.Unix()
	const hour, day = 3600, 24 * 3600
	for _, tc := range []struct {
		name          string
		iat, nbf, exp any // nil: absent
		code          string
	}{
		{"one hour", now, now, now + hour, ""},
		{"24 hours, the dev and managed identity tokens", now, now, now + day, ""},
		{"Entra ID: nbf and iat backdated 5 minutes", now - 300, now - 300, now + day, ""},
		{"24 h 5 min 1 s", now - 301, now - 301, now + day, "JWT_LIFETIME_TOO_LONG"},
		{"ten years", now, now, now + 3650*day, "JWT_LIFETIME_TOO_LONG"},
		{"ten years, nbf long ago", nil, now - 3650*day, now + hour, "JWT_LIFETIME_TOO_LONG"},
		{"issued a month ago, nbf now", now - 30*day, now, now + hour, "JWT_LIFETIME_TOO_LONG"},
		{"no iat, 25 hours", nil, now - hour, now + day, "JWT_LIFETIME_TOO_LONG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := "Bearer " + p.mint(t, issV1, audV1, func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = tc.iat, tc.nbf, tc.exp
				if tc.iat == nil {
					delete(c, "iat")
				}
			})
			_, err := a.Authenticate(t.Context(), tok)
			if got := jwtauth.Code(err); (err == nil) != (tc.code == "") || (err != nil && got != tc.code) {
				t.Fatalf("Authenticate: %v (code %q), want code %q", err, got, tc.code)
			}
		})
	}
}

// TestTokenLifetimePerIssuer: IssuerConfig.MaxLifetime sets the maximum of
// one issuer only.
func TestTokenLifetimePerIssuer(t *testing.T) {
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, func(c *jwtauth.Config) { c.Issuers[1].MaxLifetime = time.Hour })
	now := t0.Unix()
	twoHours := func(c map[string]any) { c["exp"] = now + 7200 }
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV1, audV1, twoHours)); err != nil {
		t.Fatalf("v1 (default maximum), two hours: %v", err)
	}
	_, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV2, audV2, twoHours))
	if jwtauth.Code(err) != jwtauth.CodeLifetime {
		t.Fatalf("v2 (maximum 1 h), two hours: %v, want %s", err, jwtauth.CodeLifetime)
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+p.mint(t, issV2, audV2, nil)); err != nil {
		t.Fatalf("v2, one hour: %v", err)
	}
	bad := jwtauth.Config{Issuers: []jwtauth.IssuerConfig{{Issuer: issV1, Audiences: []string{audV1}, JWKS: []byte(`{"keys":[]}`), MaxLifetime: -time.Second}}}
	if err := bad.Validate(); err == nil {
		t.Fatal("a negative maximum lifetime validates")
	}
}
