// Package release orchestrates attested key release (DESIGN.md §1 steps
// 6-10): authenticate the caller's token, verify its evidence, decide under
// the key release policy in force, check that the evidence binds the
// wrapping key, wrap the private key to it, and record the release in the
// ledger before answering.
//
// Each step lives in its own package (jwtauth, attest, policy, wrap); this
// package only puts them in the order of
// docs/spec/azure-compat.md and turns every failure into an Error with the
// code the caller sees and its Kind, which httpapi maps to an HTTP status.
package release

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
)

// Error codes of this package (the verifiers' own codes travel in the
// message of ATTESTATION_VALIDATION_FAILED).
const (
	CodeInvalidRequest        = "INVALID_REQUEST"
	CodeMissingWrappedKid     = "MISSING_WRAPPED_KID"
	CodeInvalidPEMFormat      = "INVALID_PEM_FORMAT"
	CodeWrappingKeyError      = "WRAPPING_KEY_ERROR"
	CodeInvalidFmtParameter   = "INVALID_FMT_PARAMETER"
	CodeAttestationFailed     = "ATTESTATION_VALIDATION_FAILED"
	CodePolicyDenied          = "POLICY_DENIED"
	CodePolicyUnset           = "POLICY_UNSET"
	CodeWrappingKeyMismatch   = "WRAPPING_KEY_HASH_MISMATCH"
	CodeKeyNotFound           = "KEY_NOT_FOUND"
	CodeKeyExpired            = "KEY_EXPIRED"
	CodeWrapKeyException      = "WRAP_KEY_EXCEPTION"
	CodeUnavailable           = "SERVICE_UNAVAILABLE"
	CodeSimulatedNotPermitted = attest.CodeSimulatedNotTrusted
	CodeEvidenceNotAdmitted   = policy.CodeNotAdmitted // raw SNP evidence under a policy that does not admit it
	CodeRateLimited           = "RATE_LIMITED"         // 429: the caller's identity is over its rate (Config.IdentityLimit)
	CodeServerBusy            = "SERVER_BUSY"          // 503: too many verifications in progress (Config.Verify)
)

// Kind says what kind of failure an Error is; the transport maps it to its
// own terms (httpapi: to an HTTP status), and nothing in this package knows
// those.
type Kind uint8

// The kinds of failure.
const (
	// KindRefused: the request, its wrapping key or its evidence is
	// refused, or the policy denies it; the caller's to fix.
	KindRefused Kind = iota
	// KindUnauthenticated: the token is missing or refused.
	KindUnauthenticated
	// KindNotFound: no such key.
	KindNotFound
	// KindGone: the key expired or was destroyed.
	KindGone
	// KindRateLimited: the caller is over its rate; RetryAfter says when
	// to try again.
	KindRateLimited
	// KindUnavailable: the service cannot serve the release now (no
	// trusted issuer, storage, load); nothing was released.
	KindUnavailable
	// KindInternal: the service's own failure (state it cannot read).
	KindInternal
)

// Error is a failed release: its kind and code, a message safe to show the
// caller, and the cause for the log. RetryAfter, if positive, is when the
// caller may try again.
type Error struct {
	Kind       Kind
	Code       string
	Message    string
	Err        error
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

func fail(kind Kind, code, msg string, err error) *Error {
	return &Error{Kind: kind, Code: code, Message: msg, Err: err}
}

// Config wires a Service.
type Config struct {
	KMS *kms.Service
	// Auth authenticates tokens under the JWT policy of the ledger entry
	// AuthSeq (state.JWTSeq). It may be nil if no issuer is trusted then.
	Auth    *jwtauth.Authenticator
	AuthSeq uint64
	// NewAuth, if set, builds an authenticator when the JWT policy
	// changes (a governance decision): the service then follows the
	// ledger's JWT policy without a restart. Without it, Auth is used
	// whatever the ledger says.
	NewAuth func(ctx context.Context, cfg jwtauth.Config) (*jwtauth.Authenticator, error)
	// Attest verifies evidence. Releases on evidence of the simulated TEE
	// (which it trusts only when told to) are marked in the ledger.
	Attest *attest.Verifier
	// RequireNonce makes /v1 releases require fresh evidence: a nonce from
	// GET /v1/nonce, unexpired, in the request and in REPORT_DATA[32:64].
	// (A stand-in until the key release policy can ask for freshness.)
	RequireNonce bool
	Logger       *slog.Logger
	// IdentityLimit, if set, limits requests per authenticated caller
	// (issuer and oid, or sub without an oid): past it, 429 RATE_LIMITED.
	IdentityLimit *limit.Keyed
	// Verify, if set, bounds the evidence verifications in progress:
	// past it, 503 SERVER_BUSY.
	Verify *limit.Pool
	// MAA, if set, makes Attest's trusted MAA instances follow the
	// ledger's (maa.go).
	MAA *MAAFollow
}

// Service releases keys.
type Service struct {
	cfg     Config
	log     *slog.Logger
	denials denials
	policy  atomic.Pointer[parsedPolicy] // the policy in force, parsed once per version
	auth    atomic.Pointer[authState]    // the token authenticator in use
	authMu  sync.Mutex                   // serialises authenticator changes
}

// parsedPolicy is a release policy version, parsed and hashed.
type parsedPolicy struct {
	seq  uint64
	p    policy.Policy
	hash [32]byte
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.KMS == nil || (cfg.Auth == nil && cfg.NewAuth == nil) || cfg.Attest == nil {
		return nil, errors.New("release: KMS, Auth (or NewAuth) and Attest are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	as := &authState{seq: cfg.AuthSeq, a: cfg.Auth}
	if cfg.Auth == nil {
		as.err = errNoIssuer
	}
	if cfg.NewAuth != nil {
		cfg.KMS.Read(func(st *state.State) {
			if st.JWTSeq == cfg.AuthSeq {
				as.issuers, _ = json.Marshal(AuthConfig(st.JWT).Issuers)
			}
		})
	}
	s.auth.Store(as)
	return s, nil
}

// Trust returns what the service accepts as evidence, for
// GET /v1/attestation.
func (s *Service) Trust() attest.Trust {
	s.followMAA(context.Background())
	return s.cfg.Attest.Trust()
}

// VerifyEvidence verifies an attestation object (attest.Verifier.Verify)
// within the verification pool's bound. It does not apply the release
// policy.
func (s *Service) VerifyEvidence(ctx context.Context, attestation []byte) (*attest.Evidence, error) {
	return s.verifyPooled(ctx, func() (*attest.Evidence, error) { return s.cfg.Attest.Verify(ctx, attestation) })
}

// verifyPooled runs verify within the verification pool's bound, with the
// trusted MAA instances up to date, and maps its failure.
func (s *Service) verifyPooled(ctx context.Context, verify func() (*attest.Evidence, error)) (*attest.Evidence, error) {
	done, err := s.cfg.Verify.Acquire(ctx)
	if err != nil {
		return nil, s.busy(err)
	}
	defer done()
	s.followMAA(ctx)
	ev, err := verify()
	if err != nil {
		return nil, attestationFailed(err)
	}
	return ev, nil
}

// busy is the answer when the verification pool refuses, or the caller
// went away while waiting for it (no one reads that answer; it is counted
// as busy rather than logged as a failure of the server).
func (s *Service) busy(err error) *Error {
	ra := s.cfg.Verify.RetryAfter()
	msg := fmt.Sprintf("too many attestations are being verified; retry after %d s", limit.RetryAfterSeconds(ra))
	if !errors.Is(err, limit.ErrBusy) {
		msg = "the request ended while waiting to be verified"
	}
	e := fail(KindUnavailable, CodeServerBusy, msg, err)
	e.RetryAfter = ra
	return e
}

// Admission returns the per-identity limit and the verification pool
// (nil when off), for metrics.
func (s *Service) Admission() (*limit.Keyed, *limit.Pool) {
	return s.cfg.IdentityLimit, s.cfg.Verify
}

// attestationFailed is the answer to evidence that did not verify: the
// verifier's code travels in the message of ATTESTATION_VALIDATION_FAILED,
// except for simulated evidence, which has its own code.
func attestationFailed(err error) *Error {
	if attest.Code(err) == attest.CodeSimulatedNotTrusted {
		return fail(KindRefused, CodeSimulatedNotPermitted, "the evidence chains to a simulated TEE, which this server does not trust", nil)
	}
	return fail(KindRefused, CodeAttestationFailed, err.Error(), err)
}

// decision is the policy in force and its verdict.
type decision struct {
	seq  uint64
	hash [32]byte
}

// Decide checks the evidence's claims against the attestation settings in
// force (minimum TCB and UVM SVN: ATTESTATION_VALIDATION_FAILED), then
// evaluates the key release policy in force, which must admit the
// evidence's type (EVIDENCE_TYPE_NOT_ADMITTED).
func (s *Service) Decide(ev *attest.Evidence) (decision, error) {
	var raw []byte
	var d decision
	var floors policy.Attestation
	s.cfg.KMS.Read(func(st *state.State) {
		raw, d.seq, floors = st.ReleasePolicy, st.ReleasePolicySeq, st.Settings.AttestationInForce()
	})
	if err := floors.Check(ev.Claims); err != nil {
		var ae *policy.AttestationError
		errors.As(err, &ae)
		return d, fail(KindRefused, CodeAttestationFailed, ae.Code()+": "+err.Error(), err)
	}
	if raw == nil {
		return d, fail(KindRefused, CodePolicyUnset, "no key release policy is set: every release is denied", policy.ErrUnset)
	}
	pp := s.policy.Load()
	if pp == nil || pp.seq != d.seq {
		p, err := policy.Parse(raw)
		if err != nil {
			return d, fail(KindInternal, CodeUnavailable, "the key release policy in force cannot be read", err)
		}
		pp = &parsedPolicy{seq: d.seq, p: p, hash: policy.Hash(p)}
		s.policy.Store(pp)
	}
	d.hash = pp.hash
	if err := policy.Admit(pp.p, ev.Claims); err != nil {
		return d, fail(KindRefused, CodeEvidenceNotAdmitted, err.Error(), err)
	}
	if err := policy.Evaluate(pp.p, ev.Claims); err != nil {
		if errors.Is(err, policy.ErrUnset) {
			return d, fail(KindRefused, CodePolicyUnset, err.Error(), err)
		}
		return d, fail(KindRefused, CodePolicyDenied, err.Error(), err)
	}
	return d, nil
}

// attestationField extracts the attestation object of a request body. It
// may be an object or a string holding one.
func attestationField(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("no attestation")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		if s == "" {
			return nil, errors.New("empty attestation")
		}
		return []byte(s), nil
	}
	return raw, nil
}

// record appends the release to the ledger; only then may the caller be
// answered. It returns the receipt of the key.released entry.
func (s *Service) record(ctx context.Context, kids []string, api, format string, id *jwtauth.Identity, ev *attest.Evidence, wrappingKeyHash [32]byte, d decision) ([]byte, error) {
	r := state.KeyReleased{
		Kids: kids, API: api, Format: format, Issuer: id.Issuer, Identity: id.OID,
		EvidenceType: ev.Type, Simulated: ev.Simulated,
		Measurement: hex.EncodeToString(ev.Measurement), HostData: hex.EncodeToString(ev.HostData),
		ReportSHA256: hex.EncodeToString(ev.ReportSHA256[:]), WrappingKeySHA256: hex.EncodeToString(wrappingKeyHash[:]),
		PolicySeq: d.seq, PolicySHA256: hex.EncodeToString(d.hash[:]),
		Claims: ev.Claims,
	}
	e, err := s.cfg.KMS.RecordRelease(ctx, r)
	switch {
	case errors.Is(err, kms.ErrNotReleasable):
		return nil, fail(KindGone, CodeKeyExpired, "the key expired while the release was decided; nothing was released", err)
	case errors.Is(err, kms.ErrPolicyChanged):
		return nil, fail(KindUnavailable, CodeUnavailable, "the key release policy changed while the release was decided; nothing was released; retry", err)
	case err != nil:
		return nil, fail(KindUnavailable, CodeUnavailable, "the release could not be recorded; nothing was released", err)
	}
	s.log.Info("key released", "kids", kids, "api", api, "iss", id.Issuer, "oid", id.OID, "seq", e.Seq,
		"simulated", ev.Simulated, "host_data", r.HostData)
	return s.receipt(e.Seq), nil
}

// receipt returns the JSON receipt of ledger entry seq. The entry is
// durable and in the latest checkpoint, so this cannot fail short of a
// storage error, which is logged: the answer then goes without a receipt
// rather than withholding what the ledger already recorded.
func (s *Service) receipt(seq uint64) []byte {
	r, err := s.cfg.KMS.Receipt(seq)
	if err != nil {
		s.log.Error("cannot build a log receipt", "seq", seq, "err", err)
		return nil
	}
	return r.Marshal()
}
