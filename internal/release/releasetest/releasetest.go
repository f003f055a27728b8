// Package releasetest builds the real parts that key release tests share:
// an OIDC issuer serving on loopback, a KMS on a temporary data directory
// with its first key, and an authenticator that trusts the issuer. Nothing
// here is a fake; it only saves each test the same wiring.
package releasetest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// Issuer starts an OIDC issuer with a fresh key on a loopback server,
// stopped when the test ends.
func Issuer(t testing.TB) *oidcissuer.Issuer {
	t.Helper()
	iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	t.Cleanup(srv.Close)
	if err := iss.SetURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	return iss
}

// KMS opens a service on a temporary directory with a fresh master key and
// creates its first key. Zero fields of cfg get test defaults: the DEPA
// rotation policy and a discarding logger. It is closed when the test ends.
func KMS(t testing.TB, cfg kms.Config) *kms.Service {
	t.Helper()
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Sealer = t.TempDir(), sealer
	if cfg.RotationPolicy == (state.RotationPolicy{}) {
		cfg.RotationPolicy = state.DefaultRotationPolicy()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := kms.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if _, err := svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc
}

// Auth returns an authenticator that trusts iss for audience, through its
// discovery document, requiring idtyp "app" as managed identities carry.
func Auth(t testing.TB, iss *oidcissuer.Issuer, audience string) *jwtauth.Authenticator {
	t.Helper()
	a, err := jwtauth.New(context.Background(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: iss.URL(), Audiences: []string{audience}, DiscoveryURL: iss.DiscoveryURL()}},
		Policy:  jwtauth.Policy{iss.URL(): {"idtyp": "app"}},
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}
