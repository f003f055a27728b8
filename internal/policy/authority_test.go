package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestEvaluateAuthority: the vault's decision (internal/akv/akvsim) over an
// MAA token's claims: only the rules of the token's issuer count.
func TestEvaluateAuthority(t *testing.T) {
	const maaA, maaB = "https://sharedeus2.eus2.attest.azure.net", "https://other.attest.azure.net"
	aci := `{"version":"1.0.0","anyOf":[{"authority":"` + maaA + `","allOf":[
		{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},
		{"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},
		{"claim":"x-ms-sevsnpvm-hostdata","equals":"aa11"},
		{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}]}`
	two := `{"version":"1.0.0","anyOf":[
		{"authority":"` + maaB + `","allOf":[{"claim":"x-ms-sevsnpvm-hostdata","equals":"bb22"}]},
		{"authority":"` + maaA + `/","anyOf":[{"claim":"x-ms-sevsnpvm-hostdata","equals":"aa11"},{"claim":"x-ms-sevsnpvm-launchmeasurement","equals":"cc33"}]}]}`
	good := map[string]any{
		"x-ms-attestation-type": "sevsnpvm", "x-ms-compliance-status": "azure-compliant-uvm",
		"x-ms-sevsnpvm-hostdata": "aa11", "x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-launchmeasurement": "cc33",
	}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name, policy, authority string
		claims                  map[string]any
		fails                   []string // substrings of the failures, in order; none: allowed
	}{
		{"allOf holds", aci, maaA, good, nil},
		{"authority with a slash and other case", aci, strings.ToUpper(maaA) + "/", good, nil},
		{"wrong authority", aci, maaB, good, []string{`claim "authority" is "` + maaB + `", want "` + maaA + `"`}},
		{"equals: other host data", aci, maaA, with("x-ms-sevsnpvm-hostdata", "ff"), []string{`anyOf[0].allOf[2]: claim "x-ms-sevsnpvm-hostdata" is "ff", want == "aa11"`}},
		{"equals: debuggable", aci, maaA, with("x-ms-sevsnpvm-is-debuggable", true), []string{`is true, want == false`}},
		{"equals compares types: the string \"false\"", aci, maaA, with("x-ms-sevsnpvm-is-debuggable", "false"), []string{`is "false", want == false`}},
		{"missing claim", aci, maaA, with("x-ms-compliance-status", nil), []string{`claim "x-ms-compliance-status" is missing`}},
		{"every failure reported", aci, maaA, with("x-ms-attestation-type", "sgx"), []string{`"sgx"`}},
		{"anyOf: one of two holds", two, maaA, with("x-ms-sevsnpvm-hostdata", "00"), nil},
		{"the other authority's rule only", two, maaB, good, []string{`anyOf[0].allOf[0]: claim "x-ms-sevsnpvm-hostdata" is "aa11", want == "bb22"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			err = EvaluateAuthority(p, tc.authority, tc.claims)
			if len(tc.fails) == 0 {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			var de *DeniedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDenied) {
				t.Fatalf("%v, want a denial", err)
			}
			for _, f := range tc.fails {
				if !strings.Contains(err.Error(), f) {
					t.Fatalf("%v\nwant %q", err, f)
				}
			}
		})
	}

	t.Run("anyOf: neither holds", func(t *testing.T) {
		p, _ := Parse([]byte(two))
		c := with("x-ms-sevsnpvm-hostdata", "00")
		c["x-ms-sevsnpvm-launchmeasurement"] = "00"
		var de *DeniedError
		if err := EvaluateAuthority(p, maaA, c); !errors.As(err, &de) || len(de.Failures) != 2 {
			t.Fatalf("%v, want both conditions of the anyOf", err)
		}
	})
	t.Run("not an SKR policy", func(t *testing.T) {
		p, _ := Parse([]byte(`{"claims":{"x":"y"}}`))
		if err := EvaluateAuthority(p, maaA, good); !errors.Is(err, ErrUnset) {
			t.Fatalf("%v, want ErrUnset", err)
		}
	})
	t.Run("Authorities", func(t *testing.T) {
		p, _ := Parse([]byte(two))
		if got := strings.Join(p.Authorities(), ","); got != maaB+","+maaA+"/" {
			t.Fatal(got)
		}
	})
}
