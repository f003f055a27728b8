package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// milanClaims are the claims of an ACI report at the Milan floor, with a UVM
// endorsement of SVN 100, as the verifiers produce them (int64, uint64).
func milanClaims(edit func(map[string]any)) map[string]any {
	c := map[string]any{
		ClaimEvidenceType: EvidenceSNPACI, ClaimProductLine: "Milan",
		claimBootloaderSVN: int64(3), claimTEESVN: int64(0), claimSNPSVN: int64(8), claimMicrocodeSVN: int64(115),
		claimUVMSVN: uint64(100),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func TestAttestationCheck(t *testing.T) {
	def := DefaultAttestation()
	for _, tc := range []struct {
		name  string
		a     Attestation
		edit  func(map[string]any)
		codes []string // in order; none: passes
		msg   string
	}{
		{name: "at the Milan floor", a: def},
		{name: "microcode rolled back", a: def, edit: func(c map[string]any) { c[claimMicrocodeSVN] = int64(114) }, codes: []string{CodeTCBTooLow}, msg: "microcode 114 < 115"},
		{name: "every component low", a: def, edit: func(c map[string]any) {
			c[claimBootloaderSVN], c[claimSNPSVN], c[claimMicrocodeSVN] = int64(2), int64(7), int64(0)
		}, codes: []string{CodeTCBTooLow}, msg: "bootloader 2 < 3, snp 7 < 8, microcode 0 < 115"},
		{name: "UVM SVN 0", a: def, edit: func(c map[string]any) { c[claimUVMSVN] = uint64(0) }, codes: []string{CodeUVMSVNTooLow}, msg: "svn is 0, the minimum is 22"},
		{name: "UVM SVN 22", a: def, edit: func(c map[string]any) { c[claimUVMSVN] = uint64(22) }},
		{name: "both", a: def, edit: func(c map[string]any) {
			c[claimTEESVN] = int64(0)
			c[claimSNPSVN] = int64(1)
			c[claimUVMSVN] = uint64(1)
		}, codes: []string{CodeTCBTooLow, CodeUVMSVNTooLow}},
		{name: "Genoa at its floor", a: def, edit: func(c map[string]any) {
			c[ClaimProductLine], c[claimBootloaderSVN], c[claimSNPSVN], c[claimMicrocodeSVN] = "Genoa", int64(10), int64(23), int64(84)
		}},
		{name: "Genoa with Milan's TCB", a: def, edit: func(c map[string]any) { c[ClaimProductLine] = "Genoa" }, codes: []string{CodeTCBTooLow}},
		{name: "Turin: no floor by default", a: def, edit: func(c map[string]any) { c[ClaimProductLine] = "Turin" }, codes: []string{CodeTCBTooLow}, msg: `no minimum TCB is set for product line "Turin"`},
		{name: "a TCB claim missing", a: def, edit: func(c map[string]any) { delete(c, claimTEESVN) }, codes: []string{CodeTCBTooLow}, msg: "tee (missing) < 0"},
		{name: "a TCB claim not a number", a: def, edit: func(c map[string]any) { c[claimSNPSVN] = "8" }, codes: []string{CodeTCBTooLow}},
		{name: "no product line: no TCB check", a: def, edit: func(c map[string]any) { delete(c, ClaimProductLine); c[claimMicrocodeSVN] = int64(0) }},
		{name: "no UVM endorsement: no SVN check", a: def, edit: func(c map[string]any) { delete(c, claimUVMSVN) }},
		{name: "empty settings: Milan has no floor", a: Attestation{}, codes: []string{CodeTCBTooLow}},
		{name: "zero floors", a: Attestation{MinReportedTCB: map[string]TCB{"Milan": {}}}, edit: func(c map[string]any) { c[claimMicrocodeSVN], c[claimUVMSVN] = int64(0), uint64(0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := milanClaims(tc.edit)
			for _, round := range []string{"as verified", "as recorded in the ledger"} {
				if round != "as verified" {
					b, _ := json.Marshal(claims)
					claims = nil
					json.Unmarshal(b, &claims) // numbers become float64, as the audit reads them
				}
				err := tc.a.Check(claims)
				var codes []string
				for _, e := range unwrapJoined(err) {
					var ae *AttestationError
					if !errors.As(e, &ae) {
						t.Fatalf("%s: %T %v is not an AttestationError", round, e, e)
					}
					codes = append(codes, ae.Code())
				}
				if strings.Join(codes, ",") != strings.Join(tc.codes, ",") || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
					t.Fatalf("%s: %v (codes %v), want codes %v and %q", round, err, codes, tc.codes, tc.msg)
				}
			}
		})
	}
}

func unwrapJoined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestAttestationValidate(t *testing.T) {
	if err := DefaultAttestation().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Attestation{MinReportedTCB: map[string]TCB{"milan": {}}}).Validate(); err == nil {
		t.Fatal("product line milan validates")
	}
	var a Attestation
	if err := json.Unmarshal([]byte(`{"min_reported_tcb":{"Milan":{"microcode":256}}}`), &a); err == nil {
		t.Fatal("an SPL of 256 decodes")
	}
}

// TestAdmit: evidence without a UVM endorsement is admitted only by a policy
// that names tkms-evidence-type, in either grammar; ACI evidence by any.
func TestAdmit(t *testing.T) {
	raw := map[string]any{ClaimEvidenceType: EvidenceSNP}
	for _, tc := range []struct {
		policy string
		raw    bool // admits raw SNP evidence
	}{
		{`{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`, false},
		{`{"claims":{"x-ms-sevsnpvm-hostdata":"ab"},"gte":{"x-ms-sevsnpvm-guestsvn":1}}`, false},
		{`{"claims":{"tkms-evidence-type":["snp-aci","snp"]}}`, true},
		{`{"claims":{"tkms-evidence-type":"snp-aci"}}`, true}, // named: evaluation then denies raw evidence
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}]}`, false},
		{`{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"tkms-evidence-type","equals":"snp"}]}]}`, true},
	} {
		p, err := Parse([]byte(tc.policy))
		if err != nil {
			t.Fatal(err)
		}
		err = Admit(p, raw)
		var ae *AttestationError
		if tc.raw != (err == nil) || (err != nil && (!errors.As(err, &ae) || ae.Code() != CodeNotAdmitted)) {
			t.Errorf("%s: raw evidence: %v, want admitted %v", tc.policy, err, tc.raw)
		}
		for _, c := range []map[string]any{{ClaimEvidenceType: EvidenceSNPACI}, {}} {
			if err := Admit(p, c); err != nil {
				t.Errorf("%s: %v: %v", tc.policy, c, err)
			}
		}
	}
}
