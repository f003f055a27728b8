package devgov

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/state"
)

func TestIssuerActions(t *testing.T) {
	jwks := []byte(`{"keys":[{"kty":"EC","kid":"k"}]}`)
	spaced := []byte(`{ "keys": [ {"kty": "EC", "kid": "k"} ] }`)
	want := state.JWTIssuer{Issuer: "http://127.0.0.1:2/dev/oidc", Audiences: []string{"api://tkms-dev"}, JWKS: jwks}
	old := state.JWTIssuer{Issuer: "http://127.0.0.1:1/dev/oidc", Audiences: []string{"api://tkms-dev"}, JWKS: spaced}
	other := state.JWTIssuer{Issuer: "https://login.example/", Audiences: []string{"api://x"}, JWKS: []byte(`{"keys":[]}`)}
	devClaims := map[string]any{"idtyp": "app"}
	for _, tc := range []struct {
		name    string
		jwt     *state.JWTPolicy
		actions []string // name and, for set_jwt_issuer, the issuer ("-" marks a removal)
		claims  string   // the claims proposed, "" for none
	}{
		{name: "no policy", actions: []string{"set_jwt_issuer " + want.Issuer, gov.ActSetJWTValidationPolicy}, claims: `{"idtyp":"app"}`},
		{name: "in force", jwt: &state.JWTPolicy{Issuers: []state.JWTIssuer{other, want}}},
		{name: "other audiences", jwt: &state.JWTPolicy{Issuers: []state.JWTIssuer{{Issuer: want.Issuer, Audiences: []string{"api://old"}, JWKS: jwks}}},
			actions: []string{"set_jwt_issuer " + want.Issuer, gov.ActSetJWTValidationPolicy}, claims: `{"idtyp":"app"}`},
		{name: "moved: earlier URL removed, its claims kept", jwt: &state.JWTPolicy{Issuers: []state.JWTIssuer{other, old}, Claims: map[string]map[string]any{old.Issuer: {"tid": "t"}}},
			actions: []string{"set_jwt_issuer " + want.Issuer, gov.ActSetJWTValidationPolicy, "set_jwt_issuer -" + old.Issuer}, claims: `{"tid":"t"}`},
		{name: "moved, no claims required before", jwt: &state.JWTPolicy{Issuers: []state.JWTIssuer{old}},
			actions: []string{"set_jwt_issuer " + want.Issuer, "set_jwt_issuer -" + old.Issuer}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := state.New()
			st.JWT = tc.jwt
			var got []string
			var claims string
			for _, a := range IssuerActions(st, want, devClaims) {
				var args struct {
					Issuer string          `json:"issuer"`
					Remove bool            `json:"remove"`
					Claims json.RawMessage `json:"claims"`
				}
				if err := json.Unmarshal(a.Args, &args); err != nil {
					t.Fatal(err)
				}
				switch {
				case a.Name == gov.ActSetJWTIssuer && args.Remove:
					got = append(got, a.Name+" -"+args.Issuer)
				case a.Name == gov.ActSetJWTIssuer:
					got = append(got, a.Name+" "+args.Issuer)
				default:
					got, claims = append(got, a.Name), string(args.Claims)
				}
			}
			if !slices.Equal(got, tc.actions) || claims != tc.claims {
				t.Fatalf("actions %q claims %s, want %q %s", got, claims, tc.actions, tc.claims)
			}
			if err := gov.ValidateActions(IssuerActions(st, want, devClaims)); len(got) > 0 && err != nil {
				t.Fatalf("the actions do not validate: %v", err)
			}
		})
	}
}
