package release

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// Error codes of the native release API.
const (
	CodeNonceRequired = "NONCE_REQUIRED"
	CodeNonceInvalid  = "NONCE_INVALID"
	CodeNonceExpired  = "NONCE_EXPIRED"
)

// MaxV1Kids bounds the kids of one batch release (there are never more than
// 90 unexpired keys).
const MaxV1Kids = 100

// v1Params is a decoded and checked api.V1Request.
type v1Params struct {
	kids        []string // nil for all_valid
	all         bool
	attestation attestation
	wk          wrappingKey
	nonce       []byte // nil when none was sent
}

// wrappingKey is a parsed /v1 wrapping key and its canonical encoding.
type wrappingKey struct {
	rsa       *rsa.PublicKey // or
	kem       uint16
	pub       []byte
	canonical []byte
}

func (w *wrappingKey) wrap(kid string, priv []byte) ([]byte, error) {
	if w.rsa != nil {
		return wrap.RSAOAEP256(w.rsa, priv)
	}
	return wrap.HPKEWrap(w.kem, w.pub, priv, wrap.ReleaseInfo(kid))
}

// decodeV1 decodes a /v1 release body: one JSON object of the api.V1Request
// shape, without unknown fields or trailing data, with an attestation (400
// INVALID_REQUEST otherwise). It returns the attestation object.
func decodeV1(body []byte) (*api.V1Request, attestation, error) {
	if req, att, ok := decodeV1Once(body); ok {
		return req, att, nil
	}
	return decodeV1Raw(body)
}

// decodeV1Raw is decodeV1 the long way: the attestation object is kept as
// bytes (decode.go).
func decodeV1Raw(body []byte) (*api.V1Request, attestation, error) {
	var req api.V1Request
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return nil, attestation{}, fail(KindRefused, CodeInvalidRequest, "the body is not a JSON object of the expected shape: "+truncate(err.Error(), 200), err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, attestation{}, fail(KindRefused, CodeInvalidRequest, "the body holds data after the JSON object", err)
	}
	att, err := attestationField(req.Attestation)
	if err != nil {
		return nil, attestation{}, fail(KindRefused, CodeInvalidRequest, "the body has no attestation", err)
	}
	return &req, attestation{raw: att}, nil
}

// params checks a decoded request: the key selection fits the endpoint
// (single: none in the body; batch: kids or all_valid, not both), the
// wrapping key is usable and the nonce, if any, is well-formed.
func params(req *api.V1Request, single bool, att attestation) (*v1Params, error) {
	var err error
	p := &v1Params{attestation: att, all: req.AllValid}
	switch {
	case single && (req.Kids != nil || req.AllValid):
		return nil, fail(KindRefused, CodeInvalidRequest, "kids and all_valid belong to POST /v1/release; this endpoint releases the kid in its path", nil)
	case single:
	case req.AllValid && req.Kids != nil:
		return nil, fail(KindRefused, CodeInvalidRequest, "give kids or all_valid, not both", nil)
	case !req.AllValid && len(req.Kids) == 0:
		return nil, fail(KindRefused, CodeInvalidRequest, `give "kids":[...] (at least one) or "all_valid":true`, nil)
	case len(req.Kids) > MaxV1Kids:
		return nil, fail(KindRefused, CodeInvalidRequest, fmt.Sprintf("at most %d kids per request", MaxV1Kids), nil)
	default:
		seen := make(map[string]bool, len(req.Kids))
		for _, kid := range req.Kids {
			if kid == "" || seen[kid] {
				return nil, fail(KindRefused, CodeInvalidRequest, "kids must be distinct and non-empty", nil)
			}
			seen[kid] = true
		}
		p.kids = req.Kids
	}
	if p.wk, err = parseV1WrappingKey(req.WrappingKey); err != nil {
		return nil, fail(KindRefused, CodeWrappingKeyError, err.Error(), err)
	}
	if req.Nonce != "" {
		if p.nonce, err = parseNonce(req.Nonce); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// parseV1WrappingKey parses a /v1 wrapping key. Every error wraps
// wrap.ErrWrappingKey.
//
// An RSA key is a DER SubjectPublicKeyInfo of wrap.MinRSABits to
// wrap.MaxRSABits bits, in the canonical encoding (wrap.CanonicalRSA: what
// the guest hashes is what is sent). An HPKE key is a KEM id,
// keys.KEMX25519HKDFSHA256 or keys.KEMMLKEM768X25519, and a public key that
// crypto/hpke accepts for it; its canonical encoding is wrap.CanonicalHPKE.
func parseV1WrappingKey(k *api.V1WrappingKey) (wrappingKey, error) {
	var w wrappingKey
	if k == nil {
		return w, fmt.Errorf("%w: wrapping_key is required", wrap.ErrWrappingKey)
	}
	switch k.Type {
	case "rsa":
		if k.KEMID != 0 || k.PublicKey != "" {
			return w, fmt.Errorf("%w: an rsa wrapping key has spki only", wrap.ErrWrappingKey)
		}
		der, err := base64.StdEncoding.Strict().DecodeString(k.SPKI)
		if err != nil || len(der) == 0 {
			return w, fmt.Errorf("%w: spki must be standard base64 of a DER SubjectPublicKeyInfo", wrap.ErrWrappingKey)
		}
		pk, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return w, fmt.Errorf("%w: spki: %v", wrap.ErrWrappingKey, err)
		}
		pub, ok := pk.(*rsa.PublicKey)
		if !ok {
			return w, fmt.Errorf("%w: spki holds a %T, want an RSA public key", wrap.ErrWrappingKey, pk)
		}
		if n := pub.N.BitLen(); n < wrap.MinRSABits || n > wrap.MaxRSABits {
			return w, fmt.Errorf("%w: RSA key of %d bits, want %d to %d", wrap.ErrWrappingKey, n, wrap.MinRSABits, wrap.MaxRSABits)
		}
		w.canonical = wrap.CanonicalRSA(pub)
		if !bytes.Equal(w.canonical, der) {
			return w, fmt.Errorf("%w: spki is not in canonical DER encoding", wrap.ErrWrappingKey)
		}
		w.rsa = pub
	case "hpke":
		if k.SPKI != "" {
			return w, fmt.Errorf("%w: an hpke wrapping key has kem_id and public_key only", wrap.ErrWrappingKey)
		}
		if k.KEMID != keys.KEMX25519HKDFSHA256 && k.KEMID != keys.KEMMLKEM768X25519 {
			return w, fmt.Errorf("%w: kem_id %d, want %d (X25519) or %d (MLKEM768-X25519)", wrap.ErrWrappingKey, k.KEMID, keys.KEMX25519HKDFSHA256, keys.KEMMLKEM768X25519)
		}
		pub, err := base64.StdEncoding.Strict().DecodeString(k.PublicKey)
		if err != nil || len(pub) == 0 {
			return w, fmt.Errorf("%w: public_key must be standard base64", wrap.ErrWrappingKey)
		}
		kem, err := hpke.NewKEM(k.KEMID)
		if err != nil {
			return w, fmt.Errorf("%w: %v", wrap.ErrWrappingKey, err)
		}
		if _, err := kem.NewPublicKey(pub); err != nil {
			return w, fmt.Errorf("%w: public_key is not a KEM %d public key: %v", wrap.ErrWrappingKey, k.KEMID, err)
		}
		w.kem, w.pub, w.canonical = k.KEMID, pub, wrap.CanonicalHPKE(k.KEMID, pub)
	default:
		return w, fmt.Errorf("%w: type %q, want \"rsa\" or \"hpke\"", wrap.ErrWrappingKey, truncate(k.Type, 20))
	}
	return w, nil
}

// V1Release serves POST /v1/keys/{kid}/release: the release of the kid of
// the path, with the checks of V1ReleaseBatch; the body names no kids and
// no all_valid.
func (s *Service) V1Release(ctx context.Context, authorization, kid string, body []byte) (*api.V1ReleaseResponse, error) {
	return s.v1Release(ctx, authorization, body, true, kid)
}

// V1ReleaseBatch serves POST /v1/release: several keys, or every valid key
// (all_valid: not expired or destroyed, so upcoming keys and keys in their
// grace period too), on one verification of the evidence.
//
// Checks, in order: body shape and attestation (400 INVALID_REQUEST),
// token (401), key selection (INVALID_REQUEST), wrapping key (400
// WRAPPING_KEY_ERROR), nonce form, tag and expiry (400 NONCE_INVALID,
// NONCE_EXPIRED; NONCE_REQUIRED when Config.RequireNonce is set and there is
// none), evidence (once) and the key release policy (once), binding of
// REPORT_DATA[0:32] to the wrapping key (400 WRAPPING_KEY_HASH_MISMATCH),
// REPORT_DATA[32:64] against the nonce (NONCE_INVALID), then every kid in
// request order: unknown (404 KEY_NOT_FOUND) or expired (410 KEY_EXPIRED).
// A batch is all or nothing: the first kid that fails fails the whole
// request with that kid's error, and nothing is released or recorded.
// Otherwise every key is wrapped, one ledger entry records the release of
// them all, and only then is the answer returned.
//
// A nonce that is sent is checked whether or not one is required.
func (s *Service) V1ReleaseBatch(ctx context.Context, authorization string, body []byte) (*api.V1ReleaseResponse, error) {
	return s.v1Release(ctx, authorization, body, false, "")
}

func (s *Service) v1Release(ctx context.Context, authorization string, body []byte, single bool, pathKid string) (_ *api.V1ReleaseResponse, err error) {
	req, att, err := decodeV1(body)
	if err != nil {
		return nil, err
	}
	id, err := s.Authenticate(ctx, authorization)
	if err != nil {
		return nil, err
	}
	defer func() { s.denied(ctx, id, "v1/release", err) }()
	p, err := params(req, single, att)
	if err != nil {
		return nil, err
	}
	if single {
		p.kids = []string{pathKid}
	}
	switch {
	case p.nonce != nil:
		if err := s.verifyNonce(p.nonce); err != nil {
			return nil, err
		}
	case s.cfg.RequireNonce:
		return nil, fail(KindRefused, CodeNonceRequired, "this server requires fresh evidence: put a nonce from GET /v1/nonce in REPORT_DATA[32:64] and send it as \"nonce\"", nil)
	}

	ev, err := s.verifyEvidence(ctx, p.attestation)
	if err != nil {
		return nil, err
	}
	d, err := s.Decide(ev)
	if err != nil {
		return nil, err
	}
	bind := wrap.V1BindingHash(p.wk.canonical)
	if err := wrap.CheckBinding(ev.ReportData, bind); err != nil {
		return nil, fail(KindRefused, CodeWrappingKeyMismatch, err.Error()+" (REPORT_DATA[0:32] must be SHA-256 of the canonical wrapping key)", err)
	}
	if p.nonce != nil && (len(ev.ReportData) < 64 || !bytes.Equal(ev.ReportData[32:64], p.nonce)) {
		return nil, fail(KindRefused, CodeNonceInvalid, "REPORT_DATA[32:64] does not hold the nonce", ErrNonceInvalid)
	}

	kids := p.kids
	if p.all {
		now := s.cfg.KMS.Now()
		s.cfg.KMS.Read(func(st *state.State) {
			for _, k := range st.Live() {
				if k.Phase(now) < state.Expired {
					kids = append(kids, k.Kid)
				}
			}
		})
		if len(kids) == 0 {
			return nil, fail(KindNotFound, CodeKeyNotFound, "no key is valid", nil)
		}
	}
	resp := &api.V1ReleaseResponse{Keys: make([]api.V1ReleasedKey, 0, len(kids))}
	for _, kid := range kids {
		k, priv, err := s.releasable(kid)
		if err != nil {
			return nil, err
		}
		wrapped, err := p.wk.wrap(k.Kid, priv)
		if err != nil {
			return nil, wrapError(err)
		}
		resp.Keys = append(resp.Keys, api.V1ReleasedKey{
			Kid: k.Kid, ID: k.ID, Suite: k.Suite, KEM: k.KEM, KDF: k.KDF, AEAD: k.AEAD,
			PublicKey: k.PublicKey,
			NotBefore: k.NotBefore, NotAfter: k.NotAfter, ReleaseUntil: k.ReleaseUntil,
			Wrapped: wrapped,
		})
	}
	receipt, err := s.record(ctx, kids, "v1/release", "", id, ev, bind, d)
	if err != nil {
		return nil, err
	}
	resp.Receipt = receipt
	return resp, nil
}
