package policy

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

// The host_data of the real ACI report of microsoft/azure-privacy-sandbox-kms
// test/attestation-samples/snp.json (a copy: internal/attest/snp/testdata/aci_snp.json;
// HOST_DATA at offset 0xc0), and a second service's.
const (
	hostA = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	hostB = "1b6d9d0a4d8a0e4ab35fbbc1e1e4bd8e37a3a5d1d4f3c1b0f8a7e6d5c4b3a291"
)

// aciClaims returns claims shaped like those produced for that report
// (docs/spec/azure-compat.md, "Claims produced for policies"): version 2,
// guest SVN 2, policy 0x3001f (SMT allowed, not debuggable), REPORTED_TCB
// 03000000000008d2.
func aciClaims() map[string]any {
	return map[string]any{
		"x-ms-attestation-type":            "sevsnpvm",
		"x-ms-compliance-status":           "azure-compliant-uvm",
		"x-ms-ver":                         "2",
		"x-ms-sevsnpvm-guestsvn":           uint64(2),
		"x-ms-sevsnpvm-smt-allowed":        true,
		"x-ms-sevsnpvm-is-debuggable":      false,
		"x-ms-sevsnpvm-migration-allowed":  false,
		"x-ms-sevsnpvm-familyId":           "01000000000000000000000000000000",
		"x-ms-sevsnpvm-imageId":            "02000000000000000000000000000000",
		"x-ms-sevsnpvm-vmpl":               0,
		"x-ms-sevsnpvm-reportdata":         "36b03dab8e8751b26d9b33fa2fa1296f823a238ef3dd604f758a4aff5b2b41d00000000000000000000000000000000000000000000000000000000000000000",
		"x-ms-sevsnpvm-launchmeasurement":  "02c3b0d5bf1d256fa4e3b5deefc07b55ff2f7029085ed350f60959140a1a51f1310753ba5ab2c03a0536b1c0c193af47",
		"x-ms-sevsnpvm-hostdata":           hostA,
		"x-ms-sevsnpvm-idkeydigest":        "812cef5567e78efca073fde8894b180eaaef3b56084090c64782b5ad536bcf103d194914b229caac5c5408afce91fc86",
		"x-ms-sevsnpvm-authorkeydigest":    strings.Repeat("0", 96),
		"x-ms-sevsnpvm-reportid":           "b694dec951aa90aee37bc426e6179034d34f799199bd339131e728176b8a2682",
		"x-ms-sevsnpvm-bootloader-svn":     uint8(3),
		"x-ms-sevsnpvm-tee-svn":            uint8(0),
		"x-ms-sevsnpvm-snpfw-svn":          uint8(8),
		"x-ms-sevsnpvm-microcode-svn":      uint8(210),
		"uvm_endorsements-did":             "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2",
		"uvm_endorsements-feed":            "ContainerPlat-AMD-UVM",
		"uvm_endorsements-svn":             "100",
		"x-ms-sevsnpvm-unsupported-binary": []byte("must never be printed"),
	}
}

// The policy DEPA deploys (docs/spec/azure-compat.md, "Key release policy"),
// allowing two services' container policies at once.
var depaPolicy = `{
  "type": "add",
  "claims": {
    "x-ms-ver": ["2", "3"],
    "x-ms-sevsnpvm-smt-allowed": true,
    "x-ms-sevsnpvm-is-debuggable": false,
    "x-ms-sevsnpvm-hostdata": ["` + hostA + `", "` + hostB + `"]
  }
}`

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func mustParse(t testing.TB, s string) Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return p
}

// checkDenied asserts that err is a *DeniedError whose failures name
// exactly the claims in want (in order), and that its message contains
// every string in contains.
func checkDenied(t *testing.T, err error, want []string, contains ...string) {
	t.Helper()
	var d *DeniedError
	if !errors.As(err, &d) || !errors.Is(err, ErrDenied) {
		t.Fatalf("err = %v, want a *DeniedError", err)
	}
	if d.Code() != CodeDenied {
		t.Errorf("Code() = %q", d.Code())
	}
	var got []string
	for _, f := range d.Failures {
		got = append(got, f.Claim)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("failed claims = %q, want %q (%v)", got, want, err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not contain %q", err, c)
		}
	}
	if strings.Contains(err.Error(), "must never be printed") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q leaks a raw value or spans lines", err)
	}
}

func TestDEPAPolicy(t *testing.T) {
	p := mustParse(t, depaPolicy)
	if p.Kind() != KindClaims {
		t.Fatalf("Kind = %v", p.Kind())
	}
	tests := []struct {
		name     string
		claims   map[string]any
		fail     []string // nil: allowed
		contains []string
	}{
		{"real ACI claims", aciClaims(), nil, nil},
		{"second service (rolling upgrade)", with(aciClaims(), "x-ms-sevsnpvm-hostdata", hostB), nil, nil},
		{"report version 3", with(aciClaims(), "x-ms-ver", "3"), nil, nil},
		{"version as a number", with(aciClaims(), "x-ms-ver", 3), nil, nil},
		{"version as json.Number", with(aciClaims(), "x-ms-ver", json.Number("2")), nil, nil},
		{"bools as strings", with(aciClaims(), "x-ms-sevsnpvm-smt-allowed", "true", "x-ms-sevsnpvm-is-debuggable", "false"), nil, nil},
		{"unknown host data", with(aciClaims(), "x-ms-sevsnpvm-hostdata", strings.Repeat("ab", 32)),
			[]string{"x-ms-sevsnpvm-hostdata"},
			[]string{`claim "x-ms-sevsnpvm-hostdata" is "abab`, `want one of ["` + hostB + `", "` + hostA + `"]`}},
		{"debuggable", with(aciClaims(), "x-ms-sevsnpvm-is-debuggable", true),
			[]string{"x-ms-sevsnpvm-is-debuggable"},
			[]string{`claim "x-ms-sevsnpvm-is-debuggable" is true, want false`}},
		{"version 4", with(aciClaims(), "x-ms-ver", "4"),
			[]string{"x-ms-ver"}, []string{`is "4", want one of ["2", "3"]`}},
		{"host data missing", with(aciClaims(), "x-ms-sevsnpvm-hostdata", nil),
			[]string{"x-ms-sevsnpvm-hostdata"}, []string{`claim "x-ms-sevsnpvm-hostdata" is missing`}},
		{"host data of unsupported type", with(aciClaims(), "x-ms-sevsnpvm-hostdata", []byte("must never be printed")),
			[]string{"x-ms-sevsnpvm-hostdata"}, []string{"<unsupported type []uint8>"}},
		{"every failure at once", with(aciClaims(), "x-ms-ver", "1", "x-ms-sevsnpvm-smt-allowed", false, "x-ms-sevsnpvm-is-debuggable", true, "x-ms-sevsnpvm-hostdata", nil),
			[]string{"x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-is-debuggable", "x-ms-sevsnpvm-smt-allowed", "x-ms-ver"}, nil},
		{"no claims at all", map[string]any{},
			[]string{"x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-is-debuggable", "x-ms-sevsnpvm-smt-allowed", "x-ms-ver"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Evaluate(p, tt.claims)
			if tt.fail == nil {
				if err != nil {
					t.Fatalf("Evaluate: %v", err)
				}
				return
			}
			checkDenied(t, err, tt.fail, tt.contains...)
		})
	}
}

func TestGteAndGtBothApply(t *testing.T) {
	// The originals let gt overwrite gte: under this policy they check only
	// svn > 1 and release to svn 2. Both apply here.
	p := mustParse(t, `{"claims":{"x-ms-attestation-type":"sevsnpvm"},
		"gte":{"x-ms-sevsnpvm-guestsvn":3,"x-ms-sevsnpvm-microcode-svn":"200"},
		"gt":{"x-ms-sevsnpvm-guestsvn":1,"x-ms-sevsnpvm-snpfw-svn":7}}`)
	tests := []struct {
		name     string
		claims   map[string]any
		fail     []string
		contains []string
	}{
		{"gte fails, gt holds", aciClaims(), []string{"x-ms-sevsnpvm-guestsvn"}, []string{`gte: claim "x-ms-sevsnpvm-guestsvn" is 2, want >= 3`}},
		{"both hold", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", 3), nil, nil},
		{"gte holds at equality only", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", 3.0, "x-ms-sevsnpvm-microcode-svn", 200), nil, nil},
		{"gt fails at equality", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", 3, "x-ms-sevsnpvm-snpfw-svn", int64(7)),
			[]string{"x-ms-sevsnpvm-snpfw-svn"}, []string{`gt: claim "x-ms-sevsnpvm-snpfw-svn" is 7, want > 7`}},
		{"numeric string claim", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", "4"), nil, nil},
		{"not a number", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", true),
			[]string{"x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-guestsvn"}, []string{"true (not a number)"}},
		{"NaN", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", math.NaN()),
			[]string{"x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-guestsvn"}, []string{"<non-finite number>"}},
		{"gte and gt both fail", with(aciClaims(), "x-ms-sevsnpvm-guestsvn", 1, "x-ms-sevsnpvm-snpfw-svn", 2, "x-ms-sevsnpvm-microcode-svn", nil),
			[]string{"x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-microcode-svn", "x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-snpfw-svn"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Evaluate(p, tt.claims)
			if tt.fail == nil {
				if err != nil {
					t.Fatalf("Evaluate: %v", err)
				}
				return
			}
			checkDenied(t, err, tt.fail, tt.contains...)
		})
	}
}

func TestUnsetPolicyDenies(t *testing.T) {
	for _, doc := range []string{"", "{}", "null", `{"claims":{}}`, `{"type":"add","claims":null}`, `{"gte":{"x-ms-sevsnpvm-guestsvn":1}}`} {
		var p Policy
		if doc != "" {
			p = mustParse(t, doc)
		}
		err := Evaluate(p, aciClaims())
		if !errors.Is(err, ErrUnset) {
			t.Errorf("%q: Evaluate = %v, want ErrUnset", doc, err)
			continue
		}
		var c interface{ Code() string }
		if !errors.As(err, &c) || c.Code() != CodeUnset {
			t.Errorf("%q: no code %s", doc, CodeUnset)
		}
	}
	if got := string(Marshal(Policy{})); got != "{}" {
		t.Errorf("Marshal(unset) = %s", got)
	}
}

func mustChange(t *testing.T, s string) Change {
	t.Helper()
	c, err := ParseChange([]byte(s))
	if err != nil {
		t.Fatalf("ParseChange(%s): %v", s, err)
	}
	return c
}

func TestAddRemove(t *testing.T) {
	steps := []struct {
		change string
		want   string // Marshal after the change
	}{
		{`{"type":"add","claims":{"x-ms-ver":"2","x-ms-sevsnpvm-hostdata":"` + hostA + `"}}`,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostA + `"],"x-ms-ver":["2"]}}`},
		{`{"type":"add","claims":{"x-ms-ver":["3","2",2,"3"],"x-ms-sevsnpvm-hostdata":["` + hostB + `"],"x-ms-sevsnpvm-is-debuggable":false},"gte":{"x-ms-sevsnpvm-guestsvn":1}}`,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostB + `","` + hostA + `"],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-ver":["2","3"]},"gte":{"x-ms-sevsnpvm-guestsvn":1}}`},
		{`{"type":"add","claims":{},"gte":{"x-ms-sevsnpvm-guestsvn":"2"},"gt":{"x-ms-sevsnpvm-tee-svn":0}}`,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostB + `","` + hostA + `"],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-ver":["2","3"]},"gt":{"x-ms-sevsnpvm-tee-svn":0},"gte":{"x-ms-sevsnpvm-guestsvn":2}}`},
		{`{"type":"remove","claims":{"x-ms-sevsnpvm-hostdata":"` + hostB + `","x-ms-ver":[3]}}`,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostA + `"],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-ver":["2"]},"gt":{"x-ms-sevsnpvm-tee-svn":0},"gte":{"x-ms-sevsnpvm-guestsvn":2}}`},
		{`{"type":"remove","claims":{"x-ms-sevsnpvm-is-debuggable":"false"},"gt":{"x-ms-sevsnpvm-tee-svn":0}}`,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostA + `"],"x-ms-ver":["2"]},"gte":{"x-ms-sevsnpvm-guestsvn":2}}`},
		{`{"type":"remove","claims":{"x-ms-sevsnpvm-hostdata":"` + hostA + `","x-ms-ver":"2"}}`,
			`{"claims":{},"gte":{"x-ms-sevsnpvm-guestsvn":2}}`},
		{`{"type":"remove","gte":{"x-ms-sevsnpvm-guestsvn":2}}`, `{}`},
	}
	var p Policy
	for i, s := range steps {
		var err error
		p, err = Apply(p, mustChange(t, s.change))
		if err != nil {
			t.Fatalf("step %d: Apply: %v", i, err)
		}
		if got := string(Marshal(p)); got != s.want {
			t.Fatalf("step %d:\n got %s\nwant %s", i, got, s.want)
		}
		if q := mustParse(t, s.want); Hash(q) != Hash(p) {
			t.Fatalf("step %d: hash differs after reparse", i)
		}
	}
	if p.Kind() != KindUnset || !errors.Is(Evaluate(p, aciClaims()), ErrUnset) {
		t.Fatalf("policy emptied by removes is not unset")
	}

	// Evaluate after step 5: the remaining policy applies.
	p4 := mustParse(t, steps[4].want)
	if err := Evaluate(p4, aciClaims()); err != nil {
		t.Fatalf("Evaluate after removes: %v", err)
	}

	base := mustParse(t, depaPolicy)
	for _, bad := range []struct{ change, contains string }{
		{`{"type":"remove","claims":{"x-ms-sevsnpvm-guestsvn":1}}`, `claims["x-ms-sevsnpvm-guestsvn"]: the policy has no such claim`},
		{`{"type":"remove","claims":{"x-ms-sevsnpvm-hostdata":"` + strings.Repeat("cd", 32) + `"}}`, "does not hold"},
		{`{"type":"remove","gt":{"x-ms-sevsnpvm-guestsvn":1}}`, `gt["x-ms-sevsnpvm-guestsvn"]: the policy has no such threshold`},
	} {
		_, err := Apply(base, mustChange(t, bad.change))
		if err == nil || !strings.Contains(err.Error(), bad.contains) {
			t.Errorf("Apply(%s) = %v, want error containing %q", bad.change, err, bad.contains)
		}
	}
	skr := mustParse(t, `{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":1}]}]}`)
	if _, err := Apply(skr, mustChange(t, `{"type":"add","claims":{"x":1}}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Apply to SKR policy = %v, want ErrInvalid", err)
	}

	// The Change itself has a canonical form.
	c := mustChange(t, `{"gt":{"b":"1.50"},"claims":{"a":[true,"true"]},"type":"add"}`)
	if got, want := string(c.Marshal()), `{"claims":{"a":[true]},"gt":{"b":1.5},"type":"add"}`; got != want {
		t.Errorf("Change.Marshal = %s, want %s", got, want)
	}
}

func TestParseChangeErrors(t *testing.T) {
	for _, tt := range []struct{ doc, contains string }{
		{`{"claims":{"x":1}}`, `type: want "add" or "remove"`},
		{`{"type":"replace","claims":{"x":1}}`, `type: want "add" or "remove"`},
		{`{"type":"add"}`, "names no claim"},
		{`{"type":"add","claims":{}}`, "names no claim"},
		{`{"type":"add","claims":{"x":[]}}`, `claims["x"]: empty list`},
		{`{"type":"add","gte":{"x":[1]}}`, `gte["x"]: want a number, have a list`},
		{`{"type":"add","claims":{"x":1},"lt":{}}`, `"lt": unknown member`},
		{`[]`, "a change is a JSON object"},
	} {
		_, err := ParseChange([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.contains) {
			t.Errorf("ParseChange(%s) = %v, want error containing %q", tt.doc, err, tt.contains)
		}
	}
}

func skrCond(c string) string {
	return `{"version":"1.0.0","anyOf":[{"authority":"https://sharedeus2.eus2.attest.azure.net","allOf":[` + c + `]}]}`
}

func TestSKROperators(t *testing.T) {
	claims := map[string]any{
		"s":     "sevsnpvm",
		"n":     json.Number("5"),
		"f":     2.5,
		"u":     uint64(math.MaxUint64),
		"b":     true,
		"sn":    "7", // a number in a string, as x-ms-ver
		"other": false,
	}
	tests := []struct {
		cond string
		ok   bool
		msg  string // part of the failure message when !ok
	}{
		{`{"claim":"s","equals":"sevsnpvm"}`, true, ""},
		{`{"claim":"s","equals":"SEVSNPVM"}`, false, `anyOf[0].allOf[0]: claim "s" is "sevsnpvm", want == "SEVSNPVM"`},
		{`{"claim":"n","equals":5}`, true, ""},
		{`{"claim":"n","equals":5.0}`, true, ""},
		{`{"claim":"n","equals":"5"}`, false, `claim "n" is 5, want == "5"`},
		{`{"claim":"b","equals":true}`, true, ""},
		{`{"claim":"b","equals":"true"}`, false, `is true, want == "true"`},
		{`{"claim":"u","equals":18446744073709551615}`, true, ""},
		{`{"claim":"u","equals":18446744073709551614}`, false, ""},
		{`{"claim":"missing","equals":1}`, false, `claim "missing" is missing, want == 1`},
		{`{"claim":"s","notEquals":"tdx"}`, true, ""},
		{`{"claim":"s","notEquals":"sevsnpvm"}`, false, `want != "sevsnpvm"`},
		{`{"claim":"b","notEquals":false}`, true, ""},
		{`{"claim":"n","notEquals":"5"}`, true, ""},
		{`{"claim":"missing","notEquals":1}`, false, "is missing"},
		{`{"claim":"n","greater":4}`, true, ""},
		{`{"claim":"n","greater":5}`, false, `claim "n" is 5, want > 5`},
		{`{"claim":"f","greater":2.4999}`, true, ""},
		{`{"claim":"u","greater":18446744073709551614}`, true, ""},
		{`{"claim":"sn","greater":6}`, true, ""},
		{`{"claim":"s","greater":6}`, false, `is "sevsnpvm" (not a number), want > 6`},
		{`{"claim":"b","greater":0}`, false, "(not a number)"},
		{`{"claim":"missing","greater":0}`, false, "is missing"},
		{`{"claim":"n","greaterOrEquals":5}`, true, ""},
		{`{"claim":"n","greaterOrEquals":5.5}`, false, "want >= 5.5"},
		{`{"claim":"n","less":6}`, true, ""},
		{`{"claim":"n","less":5}`, false, "want < 5"},
		{`{"claim":"f","less":-1e2}`, false, "want < -100"},
		{`{"claim":"n","lessOrEquals":5}`, true, ""},
		{`{"claim":"n","lessOrEquals":4}`, false, "want <= 4"},
		{`{"claim":"s","exists":true}`, true, ""},
		{`{"claim":"other","exists":true}`, true, ""},
		{`{"claim":"missing","exists":false}`, true, ""},
		{`{"claim":"missing","exists":true}`, false, `claim "missing" is missing, want present`},
		{`{"claim":"s","exists":false}`, false, `claim "s" is "sevsnpvm", want absent`},
		{`{"anyOf":[{"claim":"s","equals":"tdx"},{"claim":"s","equals":"sevsnpvm"}]}`, true, ""},
		{`{"anyOf":[{"claim":"s","equals":"tdx"},{"claim":"n","less":0}]}`, false, `anyOf[0].allOf[0].anyOf[1]: claim "n" is 5, want < 0`},
		{`{"allOf":[{"claim":"s","equals":"sevsnpvm"},{"anyOf":[{"claim":"b","equals":false},{"allOf":[{"claim":"n","equals":5}]}]}]}`, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			p := mustParse(t, skrCond(tt.cond))
			err := Evaluate(p, claims)
			if tt.ok {
				if err != nil {
					t.Fatalf("Evaluate: %v", err)
				}
				return
			}
			var d *DeniedError
			if !errors.As(err, &d) {
				t.Fatalf("Evaluate = %v, want a denial", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestSKRAllFailuresReported(t *testing.T) {
	// Two authorities, both failing: every failure of both is reported, with
	// its path.
	p := mustParse(t, `{"version":"1.0.0","anyOf":[
		{"authority":"a","allOf":[
			{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},
			{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false},
			{"claim":"x-ms-sevsnpvm-hostdata","equals":"`+hostB+`"},
			{"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":3}]},
		{"authority":"b","anyOf":[
			{"claim":"x-ms-attestation-type","equals":"tdxvm"},
			{"claim":"x-ms-sevsnpvm-vmpl","greater":0}]}]}`)
	err := Evaluate(p, aciClaims())
	checkDenied(t, err,
		[]string{"x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-guestsvn", "x-ms-attestation-type", "x-ms-sevsnpvm-vmpl"},
		"anyOf[0].allOf[2]: ", "anyOf[0].allOf[3]: ", "anyOf[1].anyOf[0]: ", "anyOf[1].anyOf[1]: ")
	var f *Failure
	if !errors.As(err, &f) || f.Path != "anyOf[0].allOf[2]" || f.Op != "equals" || f.Observed != `"`+hostA+`"` || f.Required[0] != `"`+hostB+`"` {
		t.Errorf("first failure = %+v", f)
	}
	// Either authority passing allows.
	if err := Evaluate(p, with(aciClaims(), "x-ms-sevsnpvm-vmpl", 1)); err != nil {
		t.Errorf("second authority passing: %v", err)
	}
	if err := Evaluate(p, with(aciClaims(), "x-ms-sevsnpvm-hostdata", hostB, "x-ms-sevsnpvm-guestsvn", 3)); err != nil {
		t.Errorf("first authority passing: %v", err)
	}
	if got := p.ClaimNames(); strings.Join(got, ",") != "x-ms-attestation-type,x-ms-sevsnpvm-guestsvn,x-ms-sevsnpvm-hostdata,x-ms-sevsnpvm-is-debuggable,x-ms-sevsnpvm-vmpl" {
		t.Errorf("ClaimNames = %q", got)
	}
}

func TestObservedValueTruncated(t *testing.T) {
	p := mustParse(t, `{"claims":{"x":"a"}}`)
	err := Evaluate(p, map[string]any{"x": strings.Repeat("z", 1000)})
	if err == nil || len(err.Error()) > 300 || !strings.Contains(err.Error(), "...") {
		t.Errorf("error not truncated: %d bytes", len(err.Error()))
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ doc, contains string }{
		{`[`, "malformed JSON"},
		{`{} {}`, "trailing data"},
		{`"policy"`, "a policy is a JSON object"},
		{`{"claims":{"x":1},"claims":{"y":1}}`, `duplicate key "claims"`},
		{`{"claims":{"x":1,"x":2}}`, `duplicate key "x"`},
		{`{"claims":{"x":1},"lte":{}}`, `"lte": unknown member`},
		{`{"type":"remove","claims":{"x":1}}`, `type: a policy may only carry "type":"add"`},
		{`{"claims":[]}`, "claims: want an object, have a list"},
		{`{"claims":{"x":[]}}`, `claims["x"]: empty list of values`},
		{`{"claims":{"x":[1,{"a":1}]}}`, `claims["x"][1]: want a string, bool or number, have an object`},
		{`{"claims":{"x":null}}`, `claims["x"]: want a string, bool or number, have null`},
		{`{"claims":{"x":[[1]]}}`, `claims["x"][0]: want a string, bool or number, have a list`},
		{`{"claims":{"":1}}`, "claims: empty claim name"},
		{`{"claims":{"x":1e999}}`, "out of range"},
		{`{"gte":{"x":"abc"}}`, `gte["x"]: want a number, have "abc"`},
		{`{"gt":{"x":true}}`, `gt["x"]: want a number, have a bool`},
		{`{"gt":{"x":[1]}}`, `gt["x"]: want a number, have a list`},
		{`{"gte":1}`, "gte: want an object, have a number"},
		{`{"version":"1.0.0"}`, "anyOf: want a list of authorities, have null"},
		{`{"version":"1.0.0","anyOf":[]}`, "anyOf: empty list of authorities"},
		{`{"version":"2.0.0","anyOf":[]}`, `version: want "1.0.0"`},
		{`{"anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":1}]}]}`, `version: want "1.0.0"`},
		{`{"version":"1.0.0","anyOf":{}}`, "anyOf: want a list of authorities, have an object"},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":1}]}],"claims":{}}`, `"claims": unknown member`},
		{`{"version":"1.0.0","anyOf":[1]}`, "anyOf[0]: want an authority object, have a number"},
		{`{"version":"1.0.0","anyOf":[{"allOf":[{"claim":"x","equals":1}]}]}`, "anyOf[0].authority: want a string, have null"},
		{`{"version":"1.0.0","anyOf":[{"authority":"a"}]}`, `anyOf[0]: want "allOf" or "anyOf"`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[]}]}`, "anyOf[0].allOf: empty list of conditions"},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":1}],"anyOf":[{"claim":"x","equals":1}]}]}`, `anyOf[0]: both "allOf" and "anyOf"`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allof":[{"claim":"x","equals":1}]}]}`, `anyOf[0].allof: unknown member`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","matches":"a.*"}]}]}`, `anyOf[0].allOf[0].matches: unknown operator`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x"}]}]}`, `anyOf[0].allOf[0]: no operator`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":1,"less":2}]}]}`, `anyOf[0].allOf[0]: more than one operator ("equals" and "less")`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"","equals":1}]}]}`, `anyOf[0].allOf[0].claim: want a claim name`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":1,"equals":1}]}]}`, `anyOf[0].allOf[0].claim: want a claim name, have a number`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","greater":"5"}]}]}`, `anyOf[0].allOf[0].greater: want a number, have a string`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","exists":"yes"}]}]}`, `anyOf[0].allOf[0].exists: want a bool, have a string`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":[1]}]}]}`, `anyOf[0].allOf[0].equals: want a string, bool or number, have a list`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","equals":null}]}]}`, `anyOf[0].allOf[0].equals: want a string, bool or number, have null`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"anyOf":[]}]}]}`, `anyOf[0].allOf[0].anyOf: empty list of conditions`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{}]}]}`, `anyOf[0].allOf[0]: want "allOf" or "anyOf"`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"allOf":[{"claim":"x","lessOrEquals":true}]}]}]}`, `anyOf[0].allOf[0].allOf[0].lessOrEquals: want a number, have a bool`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"allOf":[{"claim":"x","equals":1}],"claim2":1}]}]}`, `anyOf[0].allOf[0].claim2: unknown member`},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x","eq\nuals":1}]}]}`, `anyOf[0].allOf[0]["eq\nuals"]: unknown operator`},
		{strings.Repeat(`{"allOf":[`, 40), "nested deeper than"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.contains) {
			t.Errorf("Parse(%.80s) = %v, want error containing %q", tt.doc, err, tt.contains)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) || pe.Code() != CodeInvalid {
			t.Errorf("Parse(%.80s): error %T is not a *ParseError", tt.doc, err)
		}
	}
}

func TestCanonicalForm(t *testing.T) {
	// Differently written, semantically equal policies marshal and hash the
	// same.
	equal := [][]string{
		{
			depaPolicy,
			`{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostB + `","` + hostA + `","` + hostA + `"],
			  "x-ms-sevsnpvm-is-debuggable":[false],"x-ms-sevsnpvm-smt-allowed":[true],"x-ms-ver":["3","2"]}}`,
		},
		{`{"claims":{"a":1},"gte":{"n":2.50e1},"gt":{"m":"-0.0"}}`, `{"gt":{"m":0},"gte":{"n":25},"claims":{"a":[1.0]}}`},
		{
			`{"version":"1.0.0","anyOf":[{"authority":"x","allOf":[{"claim":"a","equals":1E1}]}]}`,
			`{"anyOf":[{"allOf":[{"equals":10,"claim":"a"}],"authority":"x"}],"version":"1.0.0"}`,
		},
	}
	for _, group := range equal {
		p0 := mustParse(t, group[0])
		for _, doc := range group[1:] {
			p := mustParse(t, doc)
			if string(Marshal(p)) != string(Marshal(p0)) || Hash(p) != Hash(p0) {
				t.Errorf("not canonical:\n%s\n%s", Marshal(p0), Marshal(p))
			}
		}
	}
	want := `{"claims":{"x-ms-sevsnpvm-hostdata":["` + hostB + `","` + hostA + `"],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-sevsnpvm-smt-allowed":[true],"x-ms-ver":["2","3"]}}`
	if got := string(Marshal(mustParse(t, depaPolicy))); got != want {
		t.Errorf("Marshal(DEPA) = %s\nwant %s", got, want)
	}
	if got := string(Marshal(mustParse(t, `{"claims":{"a":[0.000125,-3e-2,1e3,"x\u003c"]}}`))); got != `{"claims":{"a":[-0.03,0.000125,1000,"x\u003c"]}}` {
		t.Errorf("numbers: %s", got)
	}
	// Different policies hash differently.
	if Hash(mustParse(t, `{"claims":{"a":1}}`)) == Hash(mustParse(t, `{"claims":{"a":2}}`)) {
		t.Error("hash collision")
	}
	// json.Marshal/Unmarshal go through Marshal/Parse.
	p := mustParse(t, depaPolicy)
	b, err := json.Marshal(struct{ P Policy }{p})
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ P Policy }
	if err := json.Unmarshal(b, &back); err != nil || Hash(back.P) != Hash(p) {
		t.Errorf("JSON round trip: %v", err)
	}
}
