package gov

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// rfcJWK is the EC key of RFC 7517, appendix A.1.
const rfcJWK = `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}`

func TestValidateSetMAAInstances(t *testing.T) {
	many := make([]string, MaxMAAInstances+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"issuer":"https://m%d.attest.azure.net"}`, i)
	}
	tests := []struct {
		name, args string
		want       string // error substring, "" for valid
	}{
		{"discovery", `{"instances":[{"issuer":"https://sharedweu.weu.attest.azure.net"}]}`, ""},
		{"inline jwks", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":{"keys":[` + rfcJWK + `]}}]}`, ""},
		{"two", `{"instances":[{"issuer":"https://a.attest.azure.net"},{"issuer":"https://b.attest.azure.net"}]}`, ""},
		{"loopback http", `{"instances":[{"issuer":"http://127.0.0.1:8443"}]}`, ""},
		{"none", `{"instances":[]}`, ""},
		{"at the bound", `{"instances":[` + strings.Join(many[:MaxMAAInstances], ",") + `]}`, ""},
		{"missing list", `{}`, `no "instances"`},
		{"null list", `{"instances":null}`, `no "instances"`},
		{"over the bound", `{"instances":[` + strings.Join(many, ",") + `]}`, "at most 32"},
		{"plain http", `{"instances":[{"issuer":"http://example.com"}]}`, "loopback"},
		{"no issuer", `{"instances":[{"jwks":{"keys":[` + rfcJWK + `]}}]}`, "instances[0]: issuer: empty"},
		{"not a URL", `{"instances":[{"issuer":"maa"}]}`, "instances[0]: issuer"},
		{"twice", `{"instances":[{"issuer":"https://a.attest.azure.net"},{"issuer":"https://a.attest.azure.net/"}]}`, "listed twice"},
		{"empty key set", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":{"keys":[]}}]}`, "JWK set"},
		{"jwks not object", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":"x"}]}`, "JWK set"},
		{"jwks null", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":null}]}`, "JWK set"},
		{"key off the curve", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}}]}`, "JWK set"},
		{"unknown key type", `{"instances":[{"issuer":"https://a.attest.azure.net","jwks":{"keys":[{"kty":"XX"}]}}]}`, "JWK set"},
		{"simulated is no argument", `{"instances":[{"issuer":"https://a.attest.azure.net","simulated":true}]}`, "unknown field"},
		{"unknown field", `{"instances":[],"refresh":1}`, "unknown field"},
		{"not a list", `{"instances":{"issuer":"https://a.attest.azure.net"}}`, ActSetMAAInstances},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateActions([]Action{{Name: ActSetMAAInstances, Args: json.RawMessage(tc.args)}})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || Code(err) != CodeInvalidAction {
				t.Fatalf("error %v, want one containing %q with code %s", err, tc.want, CodeInvalidAction)
			}
		})
	}
}

func TestDescribeSetMAAInstances(t *testing.T) {
	for args, want := range map[string]string{
		`{"instances":[]}`: "set_maa_instances: trust no Azure Attestation instance",
		`{"instances":[{"issuer":"https://a.attest.azure.net"}]}`: `set_maa_instances: trust exactly these Azure Attestation instances: "https://a.attest.azure.net" (keys from its OpenID configuration)`,
	} {
		if got := DescribeAction(Action{Name: ActSetMAAInstances, Args: json.RawMessage(args)}); got != want {
			t.Errorf("DescribeAction(%s) = %q, want %q", args, got, want)
		}
	}
	if !knownAction(ActSetMAAInstances) {
		t.Fatal("set_maa_instances is not a known action (constitution rules cannot name it)")
	}
}
