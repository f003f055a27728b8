package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func policySeeds() []string {
	return []string{
		depaPolicy,
		`{}`, `null`, `{"claims":{}}`,
		`{"claims":{"x-ms-attestation-type":"sevsnpvm"},"gte":{"x-ms-sevsnpvm-guestsvn":3},"gt":{"x-ms-sevsnpvm-snpfw-svn":"7"}}`,
		`{"claims":{"a":[0.000125,-3e-2,1e3,true,"true"]}}`,
		skrCond(`{"claim":"x-ms-sevsnpvm-hostdata","equals":"` + hostA + `"}`),
		skrCond(`{"anyOf":[{"claim":"s","equals":"tdx"},{"allOf":[{"claim":"n","lessOrEquals":5},{"claim":"b","exists":false}]}]}`),
		`{"version":"1.0.0","anyOf":[{"authority":"a","anyOf":[{"claim":"x","notEquals":1.5}]},{"authority":"b","allOf":[{"claim":"y","greater":-1}]}]}`,
	}
}

// FuzzParse checks that parsing never panics and that a parsed policy's
// canonical form parses back to the same canonical form (no malleability
// between what is hashed and what is enforced).
func FuzzParse(f *testing.F) {
	for _, s := range policySeeds() {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"type":"remove","claims":{"x":[1,2]},"gte":{"y":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err == nil {
			m := Marshal(p)
			if !json.Valid(m) {
				t.Fatalf("Marshal gave invalid JSON: %s", m)
			}
			p2, err := Parse(m)
			if err != nil {
				t.Fatalf("Parse(Marshal(p)) = %v for %s", err, m)
			}
			if m2 := Marshal(p2); !bytes.Equal(m, m2) {
				t.Fatalf("unstable canonical form:\n%s\n%s", m, m2)
			}
			if p2.Kind() != p.Kind() || Hash(p2) != Hash(p) {
				t.Fatalf("kind or hash changed")
			}
			_ = Evaluate(p, aciClaims())
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("Parse error %v is not ErrInvalid", err)
		}
		c, err := ParseChange(data)
		if err != nil {
			return
		}
		cm := c.Marshal()
		c2, err := ParseChange(cm)
		if err != nil || !bytes.Equal(c2.Marshal(), cm) {
			t.Fatalf("unstable change form %s: %v", cm, err)
		}
		q, err := Apply(mustParse(t, depaPolicy), c)
		if err == nil {
			if q2, err := Parse(Marshal(q)); err != nil || Hash(q2) != Hash(q) {
				t.Fatalf("applied policy does not round trip: %v", err)
			}
		}
	})
}

// FuzzEvaluate checks that evaluation never panics and returns nil,
// ErrUnset or a denial with at least one failure, and that the decisions of
// the attestation settings (Admit, the default Attestation's Check) over the
// same claims return nil or *AttestationError with their codes.
func FuzzEvaluate(f *testing.F) {
	claims, _ := json.Marshal(aciClaims())
	for _, s := range policySeeds() {
		f.Add([]byte(s), claims)
		f.Add([]byte(s), []byte(`{"x-ms-ver":3,"s":"sevsnpvm","n":5,"b":true,"x-ms-sevsnpvm-guestsvn":"1e2"}`))
		f.Add([]byte(s), []byte(`{"tkms-evidence-type":"snp","tkms-snp-product-line":"Milan","x-ms-sevsnpvm-bootloader-svn":3,"x-ms-sevsnpvm-tee-svn":0,"x-ms-sevsnpvm-snpfw-svn":8,"x-ms-sevsnpvm-microcode-svn":1e2,"uvm_endorsements-svn":"22"}`))
	}
	f.Add([]byte(`{"claims":{"tkms-evidence-type":["snp-aci","snp"]}}`), []byte(`{"tkms-evidence-type":"snp"}`))
	f.Fuzz(func(t *testing.T, policy, claimsJSON []byte) {
		p, err := Parse(policy)
		if err != nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(claimsJSON))
		dec.UseNumber()
		var c map[string]any
		if dec.Decode(&c) != nil {
			return
		}
		for _, err := range []error{Admit(p, c), DefaultAttestation().Check(c)} {
			for _, e := range unwrapJoined(err) {
				var ae *AttestationError
				if !errors.As(e, &ae) || (ae.Code() != CodeTCBTooLow && ae.Code() != CodeUVMSVNTooLow && ae.Code() != CodeNotAdmitted) {
					t.Fatalf("attestation settings: %T %v", e, e)
				}
			}
		}
		err = Evaluate(p, c)
		var d *DeniedError
		switch {
		case err == nil:
			if p.Kind() == KindUnset {
				t.Fatal("unset policy allowed")
			}
		case errors.Is(err, ErrUnset):
		case errors.As(err, &d):
			if len(d.Failures) == 0 {
				t.Fatal("denial without failures")
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
