// Package gov holds the pure parts of tkms governance (docs/governance.md):
// members and their ids, the constitution and its arithmetic, the actions a
// proposal may carry and their arguments, and the COSE_Sign1 messages
// (RFC 9052) in which members propose, vote and withdraw, with the headers
// CCF uses.
//
// It does no I/O and reads no clock: times are passed in. The only exception
// is the external signer of NewCommandSigner, which runs a command a member
// chose, on the member's machine.
//
// Authenticity and permission are kept apart: ParseMessage decodes and checks
// the shape of a message without checking its signature; Message.Verify
// checks the signature against a member's key; whether that member may do
// what the message asks is the state machine's business (internal/state).
package gov

import (
	"errors"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors. Code maps them to the API's error codes.
var (
	ErrInvalidMessage     = errors.New("invalid governance message")
	ErrBadSignature       = errors.New("bad signature")
	ErrInvalidAction      = errors.New("invalid action")
	ErrStale              = errors.New("message created_at outside the allowed window")
	ErrUnsafeConstitution = errors.New("unsafe constitution")
)

// Error codes of docs/governance.md "API" for the errors of this package.
const (
	CodeInvalidMessage     = "GOV_INVALID_MESSAGE"
	CodeBadSignature       = "GOV_BAD_SIGNATURE"
	CodeInvalidAction      = "GOV_INVALID_ACTION"
	CodeStale              = "GOV_STALE"
	CodeUnsafeConstitution = "GOV_UNSAFE_CONSTITUTION"
)

// Code returns the API error code of err, or "" when err wraps none of this
// package's sentinel errors. An unsafe constitution inside an invalid action
// reports GOV_UNSAFE_CONSTITUTION.
func Code(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnsafeConstitution):
		return CodeUnsafeConstitution
	case errors.Is(err, ErrInvalidAction):
		return CodeInvalidAction
	case errors.Is(err, ErrBadSignature):
		return CodeBadSignature
	case errors.Is(err, ErrStale):
		return CodeStale
	case errors.Is(err, ErrInvalidMessage):
		return CodeInvalidMessage
	}
	return ""
}

// printable reports whether s is valid UTF-8 of printable characters only
// (no control characters, no newlines).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// isHexID reports whether s is 64 lowercase hex characters, the form of
// member and proposal ids.
func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
