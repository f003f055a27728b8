// Package maa verifies Microsoft Azure Attestation (MAA) tokens as
// evidence: a JWT signed by a trusted MAA instance after it verified a
// TEE's evidence (an Azure confidential VM's vTPM and HCL report, an SNP
// or SGX report), as Azure Key Vault's secure key release accepts them.
//
// A token verifies when its iss is a configured instance, its kid names a
// key of that instance's JWK Set (static, or from the instance's OpenID
// configuration, cached and refreshed as internal/jwtauth does for token
// issuers; a jku header is never followed), its RS256 signature verifies,
// and exp and nbf hold. Its claims are then offered to a release policy
// under their own names, nested objects flattened with dots as Key Vault
// SKR policies name them ("x-ms-isolation-tee.x-ms-attestation-type");
// arrays are left out. A token whose TEE is debuggable is refused
// ([CodeDebug]).
//
// Binding: MAA reflects the client's payload in
// x-ms-runtime.client-payload; tkms's wrapping key binding is the 64 bytes
// of its "tkms-report-data" member (standard base64), laid out as
// REPORT_DATA is for SNP and TDX (binding hash, then nonce). Keys in
// x-ms-runtime.keys are offered as claims only.
package maa

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tkms-dev/tkms/internal/attest/attesterr"
	"github.com/tkms-dev/tkms/internal/jwtauth"
)

// Stable error codes.
const (
	CodeTokenMalformed    = "MAA_TOKEN_MALFORMED"
	CodeSignatureInvalid  = "MAA_SIGNATURE_INVALID"
	CodeIssuerUntrusted   = "MAA_ISSUER_UNTRUSTED"
	CodeUnknownKID        = "MAA_UNKNOWN_KID"
	CodeTokenExpired      = "MAA_TOKEN_EXPIRED"
	CodeTokenNotYetValid  = "MAA_TOKEN_NOT_YET_VALID"
	CodeDebug             = "MAA_DEBUG"
	CodeNotConfigured     = "MAA_NOT_CONFIGURED"
	CodeReportDataInvalid = "MAA_REPORT_DATA_INVALID"
	// CodeInternal is what [Code] returns for an error that is not an
	// [*Error].
	CodeInternal = attesterr.CodeInternal
)

// ClaimReportData is the flattened claim holding the binding.
const ClaimReportData = "x-ms-runtime.client-payload.tkms-report-data"

// Error is a verification failure with a stable code (attesterr.Error).
// It never contains the token.
type Error = attesterr.Error

// Code returns the code of the first [*Error] in err's tree, "" for nil
// and [CodeInternal] for any other error.
func Code(err error) string { return attesterr.Code(err) }

func newError(code, msg string, cause error) *Error {
	return &Error{Pkg: "maa", Code: code, Msg: msg, Err: cause}
}

// Instance is a trusted MAA instance.
type Instance struct {
	// Issuer is its URL, the exact iss of its tokens
	// ("https://sharedweu.weu.attest.azure.net").
	Issuer string `json:"issuer"`
	// JWKS is a static JWK Set of its signing keys (air-gapped
	// operation); empty means fetching them from the instance's OpenID
	// configuration (Issuer + "/.well-known/openid-configuration").
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// Simulated marks the simulated instance of tkms dev
	// (internal/attest/simmaa): its tokens are evidence of no TEE.
	Simulated bool `json:"simulated,omitempty"`
}

// Options configure a [Verifier].
type Options struct {
	Instances []Instance
	// Now is the clock for exp and nbf; nil means time.Now.
	Now func() time.Time
	// HTTPClient fetches remote key sets; nil means jwtauth's default.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Verifier verifies MAA tokens. It is safe for concurrent use; Close
// stops its key refreshes.
type Verifier struct {
	auth      *jwtauth.Authenticator // nil without instances
	simulated map[string]bool
	issuers   []string
}

// New returns a Verifier of tokens of opts.Instances. Remote key sets that
// cannot be fetched now are retried (see jwtauth.New). Without instances,
// every token is refused with [CodeNotConfigured].
func New(ctx context.Context, opts Options) (*Verifier, error) {
	v := &Verifier{simulated: map[string]bool{}}
	if len(opts.Instances) == 0 {
		return v, nil
	}
	cfg := jwtauth.Config{Now: opts.Now, HTTPClient: opts.HTTPClient, Logger: opts.Logger, Policy: jwtauth.Policy{}}
	for _, in := range opts.Instances {
		ic := jwtauth.IssuerConfig{
			Issuer: in.Issuer,
			// MAA tokens have no aud; VerifyToken checks none, but an
			// issuer's configuration needs one.
			Audiences:  []string{in.Issuer},
			Algorithms: []string{"RS256"},
		}
		if len(in.JWKS) > 0 {
			ic.JWKS = in.JWKS
		} else {
			ic.DiscoveryURL = strings.TrimSuffix(in.Issuer, "/") + "/.well-known/openid-configuration"
		}
		cfg.Issuers = append(cfg.Issuers, ic)
		v.simulated[in.Issuer] = in.Simulated
		v.issuers = append(v.issuers, in.Issuer)
	}
	auth, err := jwtauth.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("maa: %w", err)
	}
	v.auth = auth
	return v, nil
}

// Close stops background key refreshes.
func (v *Verifier) Close() {
	if v.auth != nil {
		v.auth.Close()
	}
}

// HasSimulated reports whether a simulated instance is trusted.
func (v *Verifier) HasSimulated() bool {
	for _, s := range v.simulated {
		if s {
			return true
		}
	}
	return false
}

// Issuers returns the trusted instances' issuers.
func (v *Verifier) Issuers() []string { return append([]string(nil), v.issuers...) }

// Result is a verified token.
type Result struct {
	Issuer string
	// Simulated is true for a token of a simulated instance.
	Simulated bool
	// Claims are the token's claims, flattened (see the package doc).
	Claims map[string]any
	// ReportData is the binding (64 bytes), nil when the token carries
	// none.
	ReportData []byte
	// Measurement and HostData are the isolated TEE's SEV-SNP launch
	// measurement and host data, when the token has them.
	Measurement, HostData []byte
	// TokenSHA256 is SHA-256 of the token.
	TokenSHA256 [32]byte
	// Runtime is the token's x-ms-runtime claim as it is (not flattened;
	// its "keys" are the runtime keys Key Vault's secure key release
	// wraps to), nil when absent.
	Runtime map[string]any
	// Debug is true when the TEE is debuggable (set only on a result
	// returned with a CodeDebug error, for inspection).
	Debug bool
}

// Verify verifies a token (the compact JWS).
func (v *Verifier) Verify(ctx context.Context, token string) (*Result, error) {
	if v.auth == nil {
		return nil, newError(CodeNotConfigured, "no MAA instance is trusted (maa_instances; tkms attest inspect takes --maa-jwks)", nil)
	}
	claims, err := v.auth.VerifyToken(ctx, strings.TrimSpace(token))
	if err != nil {
		return nil, classify(err)
	}
	iss, _ := claims["iss"].(string)
	res := &Result{Issuer: iss, Simulated: v.simulated[iss], Claims: map[string]any{}, TokenSHA256: sha256.Sum256([]byte(strings.TrimSpace(token)))}
	flatten("", claims, res.Claims)
	res.Runtime, _ = claims["x-ms-runtime"].(map[string]any)
	if s, ok := res.Claims[ClaimReportData].(string); ok {
		rd, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(rd) != 64 {
			return nil, newError(CodeReportDataInvalid, fmt.Sprintf("%s is not 64 bytes in standard base64", ClaimReportData), nil)
		}
		res.ReportData = rd
	}
	for _, prefix := range []string{"", "x-ms-isolation-tee."} {
		if s, ok := res.Claims[prefix+"x-ms-sevsnpvm-launchmeasurement"].(string); ok && res.Measurement == nil {
			res.Measurement, _ = hex.DecodeString(s)
		}
		if s, ok := res.Claims[prefix+"x-ms-sevsnpvm-hostdata"].(string); ok && res.HostData == nil {
			res.HostData, _ = hex.DecodeString(s)
		}
	}
	for k, c := range res.Claims {
		if b, ok := c.(bool); ok && b && (strings.HasSuffix(k, "is-debuggable") || strings.HasSuffix(k, "tdx_td_attributes_debug")) {
			res.Debug = true
			return res, newError(CodeDebug, fmt.Sprintf("the attested TEE is debuggable (%s is true)", k), nil)
		}
	}
	return res, nil
}

// UnverifiedIssuer returns the iss of a token WITHOUT verifying anything:
// for `tkms attest inspect --maa-jwks`, which pairs the key set it is given
// with the token's issuer.
func UnverifiedIssuer(token string) (string, error) {
	tok, err := jwt.ParseSigned(strings.TrimSpace(token), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "", newError(CodeTokenMalformed, "the token is not a well-formed RS256 JWT", nil)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil || c.Iss == "" {
		return "", newError(CodeTokenMalformed, "the token has no iss", nil)
	}
	return c.Iss, nil
}

// flatten copies the scalar claims of m into out, nested objects' members
// named with dots.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, c := range m {
		switch c := c.(type) {
		case map[string]any:
			flatten(prefix+k+".", c, out)
		case string, bool, json.Number:
			out[prefix+k] = c
		}
	}
}

// classify maps a jwtauth error to a code.
func classify(err error) *Error {
	switch {
	case errors.Is(err, jwtauth.ErrIssuer):
		return newError(CodeIssuerUntrusted, "the token's issuer is not a trusted MAA instance", err)
	case errors.Is(err, jwtauth.ErrUnknownKID):
		return newError(CodeUnknownKID, "the token's kid is not a key of its MAA instance", err)
	case errors.Is(err, jwtauth.ErrExpired):
		return newError(CodeTokenExpired, "the token has expired", err)
	case errors.Is(err, jwtauth.ErrNotYetValid):
		return newError(CodeTokenNotYetValid, "the token is not valid yet", err)
	case strings.Contains(err.Error(), "signature verification failed"), strings.Contains(err.Error(), "does not match key"):
		return newError(CodeSignatureInvalid, "the token's signature does not verify under its MAA instance's key", err)
	}
	return newError(CodeTokenMalformed, "the token is not a well-formed RS256 JWT", err)
}
