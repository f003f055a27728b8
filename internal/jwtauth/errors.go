package jwtauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Error codes, for the HTTP layer's x-ms-kms-error-code header.
const (
	CodeMissing        = "JWT_MISSING"
	CodeInvalid        = "JWT_INVALID"
	CodeExpired        = "JWT_EXPIRED"
	CodeNotYetValid    = "JWT_NOT_YET_VALID"
	CodeLifetime       = "JWT_LIFETIME_TOO_LONG"
	CodeAudience       = "JWT_AUDIENCE"
	CodeIssuer         = "JWT_ISSUER"
	CodeUnknownKID     = "JWT_UNKNOWN_KID"
	CodePolicyMismatch = "JWT_POLICY_MISMATCH"
	CodeNoIdentity     = "JWT_NO_IDENTITY"
)

// Errors returned by Authenticate, wrapped with context. Test with errors.Is
// or map with Code.
var (
	// ErrMissing: no Authorization header, or not a Bearer one.
	ErrMissing = errors.New("jwtauth: no bearer token")
	// ErrInvalid: the token does not parse, is too large, uses an algorithm
	// that is not allowed or does not match its key, or fails signature
	// verification.
	ErrInvalid = errors.New("jwtauth: invalid token")
	// ErrExpired: exp is in the past, beyond the allowed clock skew.
	ErrExpired = errors.New("jwtauth: token expired")
	// ErrNotYetValid: nbf or iat is in the future, beyond the clock skew.
	ErrNotYetValid = errors.New("jwtauth: token not yet valid")
	// ErrLifetime: the token is valid for longer than its issuer's maximum
	// token lifetime (exp minus the earlier of nbf and iat).
	ErrLifetime = errors.New("jwtauth: token lifetime too long")
	// ErrAudience: aud names none of the issuer's configured audiences.
	ErrAudience = errors.New("jwtauth: token audience not accepted")
	// ErrIssuer: iss is not a configured issuer, or the jwt validation
	// policy has no entry for it.
	ErrIssuer = errors.New("jwtauth: token issuer not trusted")
	// ErrUnknownKID: the issuer's key set has no key with the token's kid,
	// even after a refresh.
	ErrUnknownKID = errors.New("jwtauth: unknown signing key")
	// ErrPolicyMismatch: a claim required by the jwt validation policy is
	// missing or has another value. The wrapped errors are *PolicyError.
	ErrPolicyMismatch = errors.New("jwtauth: token does not satisfy the jwt validation policy")
	// ErrNoIdentity: the token has neither an oid nor a sub claim.
	ErrNoIdentity = errors.New("jwtauth: token has no oid or sub claim")
)

var codes = []struct {
	err  error
	code string
}{
	{ErrMissing, CodeMissing},
	{ErrExpired, CodeExpired},
	{ErrNotYetValid, CodeNotYetValid},
	{ErrLifetime, CodeLifetime},
	{ErrAudience, CodeAudience},
	{ErrIssuer, CodeIssuer},
	{ErrUnknownKID, CodeUnknownKID},
	{ErrPolicyMismatch, CodePolicyMismatch},
	{ErrNoIdentity, CodeNoIdentity},
	{ErrInvalid, CodeInvalid},
}

// Code returns the stable error code of an error returned by Authenticate:
// "" for nil, and CodeInvalid for an error this package does not know.
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInvalid
}

// A PolicyError reports one claim of the jwt validation policy that a token
// does not satisfy. Authenticate joins one PolicyError per failed claim.
type PolicyError struct {
	Issuer   string
	Claim    string
	Expected []any // the allowed values, as written in the policy
	Missing  bool  // the token has no such claim
	Observed any   // the token's value, if present
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "claim %q ", e.Claim)
	if e.Missing {
		b.WriteString("is missing")
	} else {
		fmt.Fprintf(&b, "is %s", shortJSON(e.Observed))
	}
	if len(e.Expected) == 1 {
		fmt.Fprintf(&b, ", want %s", shortJSON(e.Expected[0]))
	} else {
		fmt.Fprintf(&b, ", want one of %s", shortJSON(e.Expected))
	}
	return b.String()
}

// Is reports ErrPolicyMismatch, so that Code and errors.Is see a single
// PolicyError as a policy mismatch too.
func (e *PolicyError) Is(target error) bool { return target == ErrPolicyMismatch }

// shortJSON renders v as JSON, cut to a bounded length: claim values come
// from the caller and end up in logs.
func shortJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%T>", v)
	}
	return truncate(string(b))
}

func truncate(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
