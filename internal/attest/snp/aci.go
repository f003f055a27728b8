package snp

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"

	"github.com/tkms-dev/tkms/api"
)

// ACIBundle is the attestation object of the Azure-compatible API (spec/azure-compat.md "The
// attestation object"), decoded but not verified.
type ACIBundle struct {
	// Report is the SNP attestation report, exactly abi.ReportSize (1184) bytes.
	Report []byte
	// EndorsementKey is the DER of the first certificate in "endorsements": the VCEK (or VLEK).
	EndorsementKey []byte
	// Chain holds the DER of the other "endorsements" certificates (ASK, ARK). They are never
	// trusted: verification uses the pinned AMD roots only.
	Chain [][]byte
	// UVMEndorsements is the decoded COSE_Sign1 UVM endorsement, unverified, for the uvm package;
	// nil when the field is absent or empty.
	UVMEndorsements []byte
	// EndorsedTCB is the endorsed_tcb string as sent ("" when absent): 16 hex digits in report or
	// big-endian byte order.
	EndorsedTCB string
}

// DecodeACI parses an ACI attestation object
// {"evidence","endorsements","uvm_endorsements","endorsed_tcb"}: base64 fields (standard alphabet,
// padding optional), a report of exactly 1184 bytes and PEM endorsements whose first certificate
// is the VCEK or VLEK. Unknown JSON fields are ignored. Errors are [*Error] with
// [CodeReportMalformed]. It does not verify anything.
func DecodeACI(data []byte) (*ACIBundle, error) {
	var j api.ACI
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, errorf(CodeReportMalformed, err, "attestation object is not a JSON object of strings")
	}
	return DecodeACIMembers(&j)
}

// DecodeACIMembers is [DecodeACI] for an object whose JSON the caller has already decoded (with
// encoding/json, as DecodeACI does): it checks and decodes the members as DecodeACI would, with
// the same errors.
func DecodeACIMembers(j *api.ACI) (*ACIBundle, error) {
	if j.Evidence == "" {
		return nil, errorf(CodeReportMalformed, nil, "attestation object has no evidence")
	}
	if j.Endorsements == "" {
		return nil, errorf(CodeReportMalformed, nil, "attestation object has no endorsements")
	}
	report, err := decodeBase64("evidence", j.Evidence)
	if err != nil {
		return nil, err
	}
	if err := checkReportSize(report); err != nil {
		return nil, err
	}
	pemBytes, err := decodeBase64("endorsements", j.Endorsements)
	if err != nil {
		return nil, err
	}
	certs, err := decodePEMCerts(pemBytes)
	if err != nil {
		return nil, err
	}
	b := &ACIBundle{Report: report, EndorsementKey: certs[0], Chain: certs[1:], EndorsedTCB: j.EndorsedTCB}
	if j.UVMEndorsements != "" {
		if b.UVMEndorsements, err = decodeBase64("uvm_endorsements", j.UVMEndorsements); err != nil {
			return nil, err
		}
	}
	if b.EndorsedTCB != "" {
		if _, err := parseEndorsedTCB(b.EndorsedTCB); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func decodeBase64(field, s string) ([]byte, error) {
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, errorf(CodeReportMalformed, err, "%s is not standard base64", field)
	}
	return b, nil
}

func checkReportSize(report []byte) error {
	if len(report) != abi.ReportSize {
		return errorf(CodeReportMalformed, nil, "report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	return nil
}

// decodePEMCerts returns the DER of every CERTIFICATE block, at least one; anything else
// (other block types, trailing non-PEM text) is malformed.
func decodePEMCerts(data []byte) ([][]byte, error) {
	var certs [][]byte
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errorf(CodeReportMalformed, nil, "endorsements: expected PEM certificates, found %d bytes of other data", len(rest))
		}
		if b.Type != "CERTIFICATE" {
			return nil, errorf(CodeReportMalformed, nil, "endorsements: expected PEM type CERTIFICATE, found %q", b.Type)
		}
		certs = append(certs, b.Bytes)
		rest = bytes.TrimSpace(rest)
	}
	if len(certs) == 0 {
		return nil, errorf(CodeReportMalformed, nil, "endorsements: no PEM certificate")
	}
	return certs, nil
}

// parseEndorsedTCB checks the syntax of an endorsed_tcb: 16 hex digits, either case.
func parseEndorsedTCB(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		return nil, errorf(CodeReportMalformed, nil, "endorsed_tcb must be 16 hex digits, found %q", truncate(s, 32))
	}
	return b, nil
}

// checkEndorsedTCB implements spec/attestation.md step 4: endorsed_tcb equals REPORTED_TCB
// (report bytes 0x180..0x188) either in report byte order (hex of those bytes, e.g.
// "0300000000000873") or as the big-endian hex of the little-endian u64 (THIM "tcbm", e.g.
// "7308000000000003"), case-insensitively.
func checkEndorsedTCB(endorsed string, reportedTCB uint64, raw []byte) error {
	if _, err := parseEndorsedTCB(endorsed); err != nil {
		return err
	}
	reportOrder := hex.EncodeToString(raw[0x180:0x188])
	bigEndian := fmt.Sprintf("%016x", reportedTCB)
	if strings.EqualFold(endorsed, reportOrder) || strings.EqualFold(endorsed, bigEndian) {
		return nil
	}
	return errorf(CodeEndorsedTCBMismatch, nil,
		"endorsed_tcb %s does not match REPORTED_TCB (%s in report order, %s as tcbm)",
		endorsed, reportOrder, bigEndian)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
