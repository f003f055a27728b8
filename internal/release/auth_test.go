package release

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
)

// TestAuthFollowsGovernance: the release service follows the JWT policy of
// the ledger as governance changes it, without a restart: new claims apply
// to the same authenticator, new issuers to a new one, and with no issuer
// left every token is refused.
func TestAuthFollowsGovernance(t *testing.T) {
	a, b := releasetest.Issuer(t), releasetest.Issuer(t)
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gov.NewFileSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	member, err := gov.NewMember("dev", string(pub), "")
	if err != nil {
		t.Fatal(err)
	}
	svc := releasetest.KMS(t, kms.Config{
		JWT: &state.JWTPolicy{
			Issuers: []state.JWTIssuer{{Issuer: a.URL(), Audiences: []string{audience}, DiscoveryURL: a.DiscoveryURL()}},
			Claims:  map[string]map[string]any{a.URL(): {"idtyp": "app"}},
		},
		Governance: &kms.GovInit{Members: []gov.Member{member}, Constitution: gov.DevConstitution()},
	})
	log := slog.New(slog.DiscardHandler)
	var (
		ac  jwtauth.Config
		seq uint64
	)
	svc.Read(func(st *state.State) { ac, seq = AuthConfig(st.JWT), st.JWTSeq })
	ac.Logger = log
	auth, err := jwtauth.New(context.Background(), ac)
	if err != nil {
		t.Fatal(err)
	}
	built := 0
	newAuth := func(ctx context.Context, ac jwtauth.Config) (*jwtauth.Authenticator, error) {
		built++
		ac.Logger = log
		return jwtauth.New(ctx, ac)
	}
	av, _ := attest.New(attest.Config{})
	rel, err := New(Config{KMS: svc, Auth: auth, AuthSeq: seq, NewAuth: newAuth, Attest: av, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rel.Close)

	token := func(iss *oidcissuer.Issuer) string {
		tok, err := iss.Mint(iss.ManagedIdentityClaims(oidcissuer.ManagedIdentity{Audience: audience, PrincipalID: principal, TenantID: "t"}))
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	// check authenticates a token of iss: want nil for a success, else the
	// kind of the failure.
	check := func(what string, iss *oidcissuer.Issuer, want *Kind) {
		t.Helper()
		_, err := rel.Authenticate(context.Background(), token(iss))
		var re *Error
		switch {
		case want == nil && err != nil:
			t.Fatalf("%s: %v", what, err)
		case want != nil && (!errors.As(err, &re) || re.Kind != *want):
			t.Fatalf("%s: %v, want kind %d", what, err, *want)
		}
	}
	unauthenticated, unavailable := KindUnauthenticated, KindUnavailable
	propose := func(actions ...gov.Action) {
		t.Helper()
		raw, err := signer.SignProposal(actions, svc.Now())
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := svc.Propose(context.Background(), raw, false)
		if err != nil || p.Status != state.ProposalAccepted {
			t.Fatalf("proposal: %+v, %v", p, err)
		}
	}
	act := func(name string, args any) gov.Action {
		b, _ := json.Marshal(args)
		return gov.Action{Name: name, Args: b}
	}

	check("issuer a", a, nil)
	check("issuer b, not trusted", b, &unauthenticated)

	first := rel.auth.Load().a
	propose(act(gov.ActSetJWTValidationPolicy, map[string]any{"issuer": a.URL(), "claims": map[string]any{"tid": "another-tenant"}}))
	check("issuer a, claims changed", a, &unauthenticated)
	if rel.auth.Load().a != first || built != 0 {
		t.Fatal("a change of claims rebuilt the authenticator")
	}

	propose(
		act(gov.ActSetJWTIssuer, map[string]any{"issuer": b.URL(), "audiences": []string{audience}, "discovery_url": b.DiscoveryURL()}),
		act(gov.ActSetJWTIssuer, map[string]any{"issuer": a.URL(), "remove": true}),
	)
	check("issuer b, trusted now", b, nil)
	check("issuer a, removed", a, &unauthenticated)
	if built != 1 {
		t.Fatalf("authenticator built %d times, want 1", built)
	}
	if st := rel.AuthStats(); len(st.Issuers) != 1 || st.Accepted == 0 {
		t.Fatal("AuthStats of the new authenticator")
	}

	propose(act(gov.ActSetJWTIssuer, map[string]any{"issuer": b.URL(), "remove": true}))
	check("no issuer left", b, &unavailable)
}
