// Package attesterr is the coded error of tkms's evidence verifiers
// (attest/tdx, attest/maa, attest/azcvm): a stable code for logs and the
// HTTP layer, and a message that says what was expected and found. The
// evidence is public data; no secret or token is ever in a message.
package attesterr

import (
	"errors"
	"fmt"
)

// CodeInternal is what [Code] returns for an error that is not an
// [*Error]: a bug, not the evidence's fault.
const CodeInternal = "ATTESTATION_INTERNAL"

// Error is a verification failure with a stable code.
type Error struct {
	Pkg  string // the verifier's name, prefixed to the message
	Code string
	Msg  string
	Err  error // the cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Pkg, e.Msg, e.Err)
	}
	return e.Pkg + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error of package pkg with a formatted message.
func New(pkg, code string, cause error, format string, a ...any) *Error {
	return &Error{Pkg: pkg, Code: code, Msg: fmt.Sprintf(format, a...), Err: cause}
}

// Code returns the code of the first [*Error] in err's tree, "" for nil
// and [CodeInternal] for any other error.
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
