package snp

import (
	"errors"
	"fmt"
)

// Stable error codes, for the HTTP layer's x-ms-kms-error-code header and for logs. Every failure a
// client can cause maps to one of them; see [Code].
const (
	// CodeReportMalformed: the input is not well-formed (base64, JSON, PEM, report size or
	// reserved fields, endorsed_tcb syntax).
	CodeReportMalformed = "REPORT_MALFORMED"
	// CodeCertTableDuplicate: an extended report's certificate table holds two entries with
	// one GUID (two VCEKs, say), so which certificate is meant is ambiguous.
	CodeCertTableDuplicate = "CERT_TABLE_DUPLICATE_ENTRY"
	// CodeCertChainInvalid: the VCEK/VLEK cannot be parsed, lacks AMD's extensions, or does not chain
	// to a trusted AMD root (pinned, or passed in [Options.Roots]) at the verification time.
	CodeCertChainInvalid = "CERT_CHAIN_INVALID"
	// CodeReportSignatureInvalid: the report signature does not verify under the VCEK/VLEK.
	CodeReportSignatureInvalid = "REPORT_SIGNATURE_INVALID"
	// CodeTCBMismatch: REPORTED_TCB differs from the TCB the VCEK/VLEK was issued for.
	CodeTCBMismatch = "TCB_MISMATCH"
	// CodeChipIDMismatch: CHIP_ID (unmasked) differs from the VCEK's HWID.
	CodeChipIDMismatch = "CHIP_ID_MISMATCH"
	// CodeEndorsedTCBMismatch: the bundle's endorsed_tcb differs from REPORTED_TCB.
	CodeEndorsedTCBMismatch = "ENDORSED_TCB_MISMATCH"
	// CodePolicyDebug: the guest policy allows debugging.
	CodePolicyDebug = "POLICY_DEBUG"
	// CodePolicyMigration: the guest policy allows a migration agent.
	CodePolicyMigration = "POLICY_MIGRATION"
	// CodeVMPLTooHigh: the report comes from a VMPL above [Options.MaxVMPL].
	CodeVMPLTooHigh = "VMPL_TOO_HIGH"
	// CodePolicyViolation: any other check of go-sev-guest's validate package failed (guest policy
	// bits, committed firmware newer than current, ...).
	CodePolicyViolation = "POLICY_VIOLATION"
	// CodeInternal is what [Code] returns for an error that is not an [*Error]: a bug, not a client
	// fault.
	CodeInternal = "ATTESTATION_INTERNAL"
)

// Error is a verification failure with a stable code. Msg says what was expected and what was
// found; it never contains secrets (reports and certificates are public data).
type Error struct {
	Code string
	Msg  string
	Err  error // the underlying cause, if any (often a go-sev-guest error)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("snp: %s: %v", e.Msg, e.Err)
	}
	return "snp: " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Code returns the stable code of the first [*Error] in err's tree, "" for nil, and
// [CodeInternal] for any other error. For a joined validation failure, it is the code of the first
// failed check (debug, migration, VMPL, in that order).
func Code(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func errorf(code string, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// hexPrefix renders at most the first 8 bytes of b as lowercase hex, for messages.
func hexPrefix(b []byte) string {
	const n = 8
	if len(b) <= n {
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprintf("%x...", b[:n])
}
