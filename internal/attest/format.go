package attest

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

// format is one evidence format: how to recognise its attestation objects
// and how to verify one into ev (left partly filled when a later step
// fails, for InspectUnpinned).
type format struct {
	typ    string
	match  func(raw []byte) bool
	verify func(ctx context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error
	decode func(raw []byte) (*Unverified, error)
}

// formats are the supported evidence formats, tried in order; the last
// matches whatever the others do not. Adding a format is adding its entry.
var formats = []format{
	{typ: TypeSNP, match: isRawSNP, verify: verifyRawSNP, decode: decodeRawSNP},
	{typ: TypeTDX, match: isTDX, verify: verifyTDX, decode: decodeTDX},
	{typ: TypeMAA, match: isMAA, verify: verifyMAA, decode: decodeMAA},
	{typ: TypeAzSNP, match: isAzSNP, verify: verifyAzCVM, decode: decodeAzCVM},
	{typ: TypeAzTDX, match: isAzTDX, verify: verifyAzCVM, decode: decodeAzCVM},
	{typ: TypeACI, match: func([]byte) bool { return true }, verify: verifyACI, decode: decodeACI},
}

// detect returns the format of an attestation object. This is the one
// place formats are told apart.
func detect(raw []byte) *format {
	for i := range formats {
		if formats[i].match(raw) {
			return &formats[i]
		}
	}
	panic("attest: no evidence format matches") // the last one matches everything
}

// Unverified is an attestation object taken apart, NOT verified: for a
// caller that forwards or measures evidence (the sidecar's /attest/raw, the
// benchmark floor), never for a decision.
type Unverified struct {
	Type string
	// Report is the SEV-SNP report, 1184 bytes for TypeACI.
	Report []byte
	// VCEK is the certificate of the key that signed the report: the first
	// certificate of an ACI object's endorsements (DER), or a raw object's
	// vcek as sent (DER or PEM); nil when a raw object has a certificate
	// table instead.
	VCEK []byte
	// CertTable is a raw object's certificate table, if any.
	CertTable []byte
	// UVMEndorsement is an ACI object's COSE_Sign1 UVM endorsement.
	UVMEndorsement []byte
}

// DecodeUnverified takes an attestation object apart as Verify would before
// verifying it. Errors are [*Error] with code REPORT_MALFORMED.
func DecodeUnverified(raw []byte) (*Unverified, error) {
	return detect(raw).decode(raw)
}

// isRawSNP reports whether raw is a raw SNP attestation object: a JSON
// object whose "type" is "snp".
func isRawSNP(raw []byte) bool { return typeField(raw) == TypeSNP }

// typeField returns the "type" member of a JSON object, "" if there is none.
func typeField(raw []byte) string {
	var probe struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	return probe.Type
}

func decodeRawSNP(raw []byte) (*Unverified, error) {
	var obj api.RawSNP
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, &Error{Code: snp.CodeReportMalformed, Err: err}
	}
	if len(obj.Report) == 0 {
		return nil, &Error{Code: snp.CodeReportMalformed, Err: errors.New("snp: the attestation object has no report")}
	}
	return &Unverified{Type: TypeSNP, Report: obj.Report, VCEK: obj.VCEK, CertTable: obj.CertTable}, nil
}

// verifyRawSNP verifies a raw SNP object: the report against its VCEK/VLEK
// or certificate table, chained to the trusted roots.
func verifyRawSNP(ctx context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error {
	var obj api.RawSNP
	if err := json.Unmarshal(raw, &obj); err != nil {
		return &Error{Code: snp.CodeReportMalformed, Err: err}
	}
	res, err := v.snp.VerifyRaw(ctx, obj.Report, obj.VCEK, obj.CertTable)
	if err != nil {
		return snpError(err)
	}
	if err := v.checkSimulated(res, inspect); err != nil {
		return err
	}
	setReport(ev, res)
	return nil
}

func decodeACI(raw []byte) (*Unverified, error) {
	b, err := snp.DecodeACI(raw)
	if err != nil {
		return nil, snpError(err)
	}
	return &Unverified{Type: TypeACI, Report: b.Report, VCEK: b.EndorsementKey, UVMEndorsement: b.UVMEndorsements}, nil
}

// verifyACI verifies an ACI object: the report and its VCEK chain, then the
// UVM endorsement against the report's MEASUREMENT.
func verifyACI(ctx context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error {
	b, err := snp.DecodeACI(raw)
	if err != nil {
		return snpError(err)
	}
	return verifyACIBundle(ctx, v, b, ev, inspect)
}

// verifyACIBundle verifies a decoded ACI object (verifyACI, VerifyACI).
func verifyACIBundle(ctx context.Context, v *Verifier, b *snp.ACIBundle, ev *Evidence, inspect bool) error {
	res, err := v.snp.VerifyACI(ctx, b)
	if err != nil {
		return snpError(err)
	}
	if err := v.checkSimulated(res, inspect); err != nil {
		return err
	}
	setReport(ev, res)
	ur, err := v.uvm.Verify(b.UVMEndorsements, res.Measurement)
	if err != nil {
		return uvmError(err)
	}
	if ur.Simulated && !v.simulated && !inspect {
		return &Error{Code: CodeSimulatedNotTrusted, Err: ErrSimulatedNotTrusted}
	}
	if ur.Simulated {
		ev.UVMSimulated, ev.Simulated = true, true
	}
	ev.UVMSigningTime = ur.SigningTime.UTC()
	for k, c := range ur.Claims() {
		ev.Claims[k] = c
	}
	return nil
}
