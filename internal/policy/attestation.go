package policy

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// Attestation settings: the floors every release's evidence must meet
// whatever the key release policy says (docs/release.md "Attestation
// settings"), and the rule that evidence without a UVM endorsement needs a
// policy that admits it. They are decided on the claims alone, so that an
// auditor can decide them again from the claims a release recorded.

// Error codes of the attestation settings.
const (
	// CodeTCBTooLow: the report's REPORTED_TCB is below the minimum of its
	// product line in some component, or no minimum is set for its line.
	CodeTCBTooLow = "TCB_TOO_LOW"
	// CodeUVMSVNTooLow: the UVM endorsement's SVN is below the minimum (the
	// code the UVM verifier gives its own configured minimum).
	CodeUVMSVNTooLow = "UVM_SVN_TOO_LOW"
	// CodeNotAdmitted: evidence of a type other than EvidenceSNPACI under a
	// key release policy that does not name ClaimEvidenceType.
	CodeNotAdmitted = "EVIDENCE_TYPE_NOT_ADMITTED"
)

// Claims the attestation settings read. The evidence type and the product
// line are tkms's own claims; the others are those of
// docs/spec/azure-compat.md "Claims produced for policies".
const (
	// ClaimEvidenceType is the evidence type: EvidenceSNPACI or EvidenceSNP.
	ClaimEvidenceType = "tkms-evidence-type"
	// ClaimProductLine is the AMD product line of an SNP report's signing
	// key ("Milan", "Genoa", "Turin"), as its certificate chain decided.
	ClaimProductLine = "tkms-snp-product-line"

	claimBootloaderSVN = "x-ms-sevsnpvm-bootloader-svn"
	claimTEESVN        = "x-ms-sevsnpvm-tee-svn"
	claimSNPSVN        = "x-ms-sevsnpvm-snpfw-svn"
	claimMicrocodeSVN  = "x-ms-sevsnpvm-microcode-svn"
	claimUVMSVN        = "uvm_endorsements-svn"
)

// Evidence types, the values of ClaimEvidenceType.
const (
	EvidenceSNPACI = "snp-aci" // an ACI bundle: SNP report and UVM endorsement
	EvidenceSNP    = "snp"     // a raw SNP report: no UVM endorsement
)

// ProductLines are the AMD product lines a minimum TCB may be set for.
var ProductLines = []string{"Milan", "Genoa", "Turin"}

// TCB is a minimum TCB_VERSION, by security patch level (the Milan and
// Genoa layout of REPORTED_TCB).
type TCB struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

func (t TCB) String() string {
	return fmt.Sprintf("bootloader %d, tee %d, snp %d, microcode %d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// Attestation holds the attestation settings (the "attestation" member of
// the settings policy), changed only as the settings policy is: by the
// configuration of an ungoverned ledger or by set_settings_policy.
type Attestation struct {
	// MinReportedTCB is, per product line, the lowest REPORTED_TCB
	// accepted, component by component: a report below it in any component
	// is refused (a TCB rollback: an older VCEK for older firmware). SNP
	// evidence of a product line with no entry is refused.
	MinReportedTCB map[string]TCB `json:"min_reported_tcb"`
	// MinUVMSVN is the lowest UVM endorsement SVN accepted.
	MinUVMSVN uint64 `json:"min_uvm_svn"`
}

// DefaultAttestation returns the settings in force when the settings policy
// sets none. The floors are the lowest that Azure has shipped in the real
// reports of the test vectors, so that every one of them passes: Milan
// bootloader 3, tee 0, snp 8, microcode 115 (both ACI reports), Genoa 10,
// 0, 23, 84 (an Azure confidential VM's VCEK), and a UVM SVN of 22 (the
// lowest endorsement, of February 2023; the others say 100). They refuse a
// rollback below those, not firmware older than the newest: operators raise
// them by governance as AMD and Microsoft publish updates. Turin has no
// entry, so Turin evidence is refused until one is set.
func DefaultAttestation() Attestation {
	return Attestation{
		MinReportedTCB: map[string]TCB{
			"Milan": {Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115},
			"Genoa": {Bootloader: 10, TEE: 0, SNP: 23, Microcode: 84},
		},
		MinUVMSVN: 22,
	}
}

// Validate checks that every product line is one of ProductLines.
func (a Attestation) Validate() error {
	for line := range a.MinReportedTCB {
		if !slices.Contains(ProductLines, line) {
			return fmt.Errorf("attestation: min_reported_tcb: unknown product line %q (want one of %s)", line, strings.Join(ProductLines, ", "))
		}
	}
	return nil
}

// An AttestationError is evidence below the attestation settings.
type AttestationError struct {
	code, msg string
}

func (e *AttestationError) Error() string { return e.msg }

// Code returns CodeTCBTooLow, CodeUVMSVNTooLow or CodeNotAdmitted.
func (e *AttestationError) Code() string { return e.code }

// Check decides the floors over verified claims: when the claims carry a
// product line, REPORTED_TCB (the x-ms-sevsnpvm-*-svn claims) must be at
// least that line's minimum in every component; when they carry a UVM
// endorsement SVN, it must be at least MinUVMSVN. Failures are
// *AttestationError (joined when both fail; the TCB's first).
func (a Attestation) Check(claims map[string]any) error {
	var errs []error
	if line, ok := claims[ClaimProductLine].(string); ok {
		if err := a.checkTCB(line, claims); err != nil {
			errs = append(errs, err)
		}
	}
	if v, ok := claims[claimUVMSVN]; ok {
		svn, ok := number(v)
		if !ok || svn.Cmp(new(big.Rat).SetUint64(a.MinUVMSVN)) < 0 {
			errs = append(errs, &AttestationError{CodeUVMSVNTooLow,
				fmt.Sprintf("the UVM endorsement's svn is %s, the minimum is %d (attestation settings, min_uvm_svn)", describe(v), a.MinUVMSVN)})
		}
	}
	return errors.Join(errs...)
}

func (a Attestation) checkTCB(line string, claims map[string]any) error {
	floor, ok := a.MinReportedTCB[line]
	if !ok {
		return &AttestationError{CodeTCBTooLow, fmt.Sprintf("no minimum TCB is set for product line %q (attestation settings, min_reported_tcb): its evidence is refused", line)}
	}
	var low []string
	for _, c := range []struct {
		name, claim string
		min         uint8
	}{
		{"bootloader", claimBootloaderSVN, floor.Bootloader},
		{"tee", claimTEESVN, floor.TEE},
		{"snp", claimSNPSVN, floor.SNP},
		{"microcode", claimMicrocodeSVN, floor.Microcode},
	} {
		v, present := claims[c.claim]
		n, ok := number(v)
		if !present || !ok || n.Cmp(new(big.Rat).SetUint64(uint64(c.min))) < 0 {
			low = append(low, fmt.Sprintf("%s %s < %d", c.name, describe(v), c.min))
		}
	}
	if len(low) > 0 {
		return &AttestationError{CodeTCBTooLow, fmt.Sprintf("REPORTED_TCB of this %s report is below the minimum (%s): %s", line, floor, strings.Join(low, ", "))}
	}
	return nil
}

// number returns a numeric claim's value.
func number(v any) (*big.Rat, bool) {
	cv, err := claimValue(v)
	if err != nil || cv.kind != kindNumber {
		return nil, false
	}
	return cv.num, true
}

// describe renders an observed claim for a message.
func describe(v any) string {
	if v == nil {
		return "(missing)"
	}
	cv, err := claimValue(v)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return cv.literal()
}

// Admit decides whether p admits evidence of the type the claims name.
// ACI evidence (EvidenceSNPACI, or claims that name no type) is admitted by
// every policy; any other type (a raw SNP report that no UVM endorsement
// vouches for, a TDX quote, an Azure CVM's vTPM evidence, an Azure
// Attestation token) only by a policy that names ClaimEvidenceType,
// which evaluation then checks like any claim (e.g.
// "tkms-evidence-type": ["snp-aci", "snp"]). Otherwise it returns an
// *AttestationError of CodeNotAdmitted.
func Admit(p Policy, claims map[string]any) error {
	t, _ := claims[ClaimEvidenceType].(string)
	if t == "" || t == EvidenceSNPACI || slices.Contains(p.ClaimNames(), ClaimEvidenceType) {
		return nil
	}
	return &AttestationError{CodeNotAdmitted, fmt.Sprintf("%q evidence is not ACI evidence and the key release policy in force does not admit it: "+
		"a policy admits it by naming the claim %q (e.g. %q: [%q, %q])", t, ClaimEvidenceType, ClaimEvidenceType, EvidenceSNPACI, t)}
}
