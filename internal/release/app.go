package release

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// decodeApp decodes an /app request body: a JSON object with an
// attestation (400 INVALID_REQUEST otherwise).
func decodeApp(body []byte) (*api.AppRequest, attestation, error) {
	if req, att, ok := decodeAppOnce(body); ok {
		return req, att, nil
	}
	return decodeAppRaw(body)
}

// decodeAppRaw is decodeApp the long way: the attestation object is kept
// as bytes (decode.go).
func decodeAppRaw(body []byte) (*api.AppRequest, attestation, error) {
	var req api.AppRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, attestation{}, fail(KindRefused, CodeInvalidRequest, "the body is not a JSON object of the expected shape", err)
	}
	att, err := attestationField(req.Attestation)
	if err != nil {
		return nil, attestation{}, fail(KindRefused, CodeInvalidRequest, "the body has no attestation", err)
	}
	return &req, attestation{raw: att}, nil
}

func checkFmt(f string) (string, error) {
	switch f {
	case "", "jwk":
		return "jwk", nil
	case "tink":
		return "tink", nil
	}
	return "", fail(KindRefused, CodeInvalidFmtParameter, `fmt must be "jwk" or "tink"`, nil)
}

// AppUnwrap serves POST /app/unwrapKey (spec/azure-compat.md), checking in
// the originals' order: body and attestation, token, wrappedKid, wrapping
// key, fmt, evidence and policy, binding, kid, expiry; then it wraps,
// records and answers.
func (s *Service) AppUnwrap(ctx context.Context, authorization string, body []byte, format string) (_ *api.AppUnwrapResponse, err error) {
	req, att, err := decodeApp(body)
	if err != nil {
		return nil, err
	}
	id, err := s.Authenticate(ctx, authorization)
	if err != nil {
		return nil, err
	}
	defer func() { s.denied(ctx, id, "app/unwrapKey", err) }()
	if req.WrappedKid == "" {
		if hasMember(body, "wrappedKid") {
			// As the deployed DEPA KMS: an empty kid names no key.
			return nil, fail(KindNotFound, CodeKeyNotFound, `no key with kid "": wrappedKid is empty`, nil)
		}
		return nil, fail(KindRefused, CodeMissingWrappedKid, "wrappedKid is required", nil)
	}
	if req.WrappingKey == "" {
		return nil, fail(KindRefused, CodeInvalidPEMFormat, "wrappingKey is required", nil)
	}
	pub, err := wrap.ParseAppWrappingKey(req.WrappingKey)
	if err != nil {
		return nil, wrapError(err)
	}
	if format, err = checkFmt(format); err != nil {
		return nil, err
	}
	ev, err := s.verifyEvidence(ctx, att)
	if err != nil {
		return nil, err
	}
	d, err := s.Decide(ev)
	if err != nil {
		return nil, err
	}
	bind := wrap.AppBindingHash(req.WrappingKey)
	if err := wrap.CheckBinding(ev.ReportData, bind); err != nil {
		msg := err.Error()
		if wrap.MissingTrailingNewline(req.WrappingKey) {
			msg += " (the wrappingKey PEM lacks its trailing newline: the hash covers the exact text)"
		}
		return nil, fail(KindRefused, CodeWrappingKeyMismatch, msg, err)
	}
	k, priv, err := s.releasable(req.WrappedKid)
	if err != nil {
		return nil, err
	}
	suite, err := keys.ParseSuite(k.Suite)
	if err != nil {
		return nil, fail(KindInternal, CodeUnavailable, "key of unknown suite", err)
	}
	var payload []byte
	switch format {
	case "jwk":
		item, err := keys.PublicItem(suite, k.PublicKey, k.Kid, k.ID, k.Created.UnixMilli(), k.NotAfter.UnixMilli())
		if err != nil {
			return nil, fail(KindInternal, CodeUnavailable, "cannot encode key", err)
		}
		item.D = base64.RawURLEncoding.EncodeToString(priv)
		payload, err = wrap.JWKPayload(item)
		if err != nil {
			return nil, wrapError(err)
		}
	case "tink":
		if payload, err = wrap.TinkKeyset(suite, priv, k.PublicKey); err != nil {
			return nil, fail(KindRefused, CodeInvalidFmtParameter, "fmt=tink is available for x25519 keys only", err)
		}
	}
	wrapped, err := wrap.RSAOAEP256(pub, payload)
	clear(payload)
	if err != nil {
		return nil, fail(KindRefused, CodeWrapKeyException, "the key does not fit RSA-OAEP under this wrapping key; use a larger RSA key", err)
	}
	receipt, err := s.record(ctx, []string{k.Kid}, "app/unwrapKey", format, id, ev, bind, d)
	if err != nil {
		return nil, err
	}
	return &api.AppUnwrapResponse{Wrapped: base64.StdEncoding.EncodeToString(wrapped), Receipt: string(receipt)}, nil
}

// releasable returns a key that may be released now: known (404), not
// expired or destroyed (410). Retired keys are released until the end of
// their grace period.
func (s *Service) releasable(kid string) (state.Key, []byte, error) {
	now := s.cfg.KMS.Now()
	var k state.Key
	var found bool
	s.cfg.KMS.Read(func(st *state.State) {
		if kk := st.Key(kid); kk != nil {
			k, found = *kk, true
		}
	})
	if !found {
		return k, nil, fail(KindNotFound, CodeKeyNotFound, "no key with kid "+truncate(kid, 100), nil)
	}
	if k.Phase(now) >= state.Expired {
		return k, nil, fail(KindGone, CodeKeyExpired, "key "+k.Kid+" has expired", nil)
	}
	priv, err := s.cfg.KMS.PrivateKey(kid)
	if errors.Is(err, kms.ErrKeyDestroyed) {
		return k, nil, fail(KindGone, CodeKeyExpired, "key "+k.Kid+" has been destroyed", err)
	}
	if err != nil {
		return k, nil, fail(KindUnavailable, CodeUnavailable, "the key cannot be read; see the server log", err)
	}
	return k, priv, nil
}

func wrapError(err error) *Error {
	switch {
	case errors.Is(err, wrap.ErrInvalidPEM):
		return fail(KindRefused, CodeInvalidPEMFormat, err.Error(), err)
	case errors.Is(err, wrap.ErrWrappingKey):
		return fail(KindRefused, CodeWrappingKeyError, err.Error(), err)
	}
	return fail(KindRefused, CodeWrapKeyException, err.Error(), err)
}

// tinkKeys is the fmt=tink "wrapped" string of /app/key.
type tinkKeys struct {
	Keys []tinkKey `json:"keys"`
}

type tinkKey struct {
	Name               string        `json:"name"`
	EncryptionKeyType  string        `json:"encryptionKeyType"`
	PublicKeysetHandle string        `json:"publicKeysetHandle"`
	PublicKeyMaterial  string        `json:"publicKeyMaterial"`
	CreationTime       string        `json:"creationTime"`
	ExpirationTime     string        `json:"expirationTime"`
	KeyData            []tinkKeyData `json:"keyData"`
}

type tinkKeyData struct {
	PublicKeySignature  string `json:"publicKeySignature"`
	KeyEncryptionKeyURI string `json:"keyEncryptionKeyUri"`
	KeyMaterial         string `json:"keyMaterial"`
}

// AppKey serves POST /app/key: key metadata after attestation (no key
// material). Checks: body and attestation, token, kid (none: the newest
// releasable key, and with fmt=tink the advertised keys after it
// (appDefaultKeys); unknown: 404), fmt, evidence and policy. all=true
// answers with every key that is still released, newest first.
func (s *Service) AppKey(ctx context.Context, authorization string, body []byte, kid, format string, all bool) (_ *api.AppKeyResponse, err error) {
	_, att, err := decodeApp(body)
	if err != nil {
		return nil, err
	}
	id, err := s.Authenticate(ctx, authorization)
	if err != nil {
		return nil, err
	}
	defer func() { s.denied(ctx, id, "app/key", err) }()
	now := s.cfg.KMS.Now()
	var ks []state.Key
	s.cfg.KMS.Read(func(st *state.State) {
		switch {
		case all: // newest first, as appDefaultKeys
			live := st.Live()
			for i := len(live) - 1; i >= 0; i-- {
				if live[i].Phase(now) < state.Expired {
					ks = append(ks, *live[i])
				}
			}
		case kid == "":
			ks = appDefaultKeys(st, now, format == "tink")
		default:
			if k := st.Key(kid); k != nil {
				ks = append(ks, *k)
			}
		}
	})
	if len(ks) == 0 {
		if kid == "" {
			return nil, fail(KindNotFound, CodeKeyNotFound, "no key is available", nil)
		}
		return nil, fail(KindNotFound, CodeKeyNotFound, "no key with kid "+truncate(kid, 100), nil)
	}
	if format, err = checkFmt(format); err != nil {
		return nil, err
	}
	ev, err := s.verifyEvidence(ctx, att)
	if err != nil {
		return nil, err
	}
	if _, err := s.Decide(ev); err != nil {
		return nil, err
	}
	first := ks[0] // the key wrappedKid names is the first of a tink list
	resp := &api.AppKeyResponse{WrappedKid: first.Kid, Receipt: string(s.receipt(first.Seq))}
	if format == "tink" {
		var tk tinkKeys
		for _, k := range ks {
			tk.Keys = append(tk.Keys, tinkKey{
				Name:              "encryptionKeys/" + strconv.Itoa(k.ID),
				EncryptionKeyType: "SINGLE_PARTY_HYBRID_KEY",
				CreationTime:      strconv.FormatInt(k.Created.UnixMilli(), 10),
				ExpirationTime:    strconv.FormatInt(k.ReleaseUntil.UnixMilli(), 10),
				KeyData: []tinkKeyData{{
					KeyEncryptionKeyURI: "azu-kms://" + k.Kid,
					KeyMaterial:         `{"encryptedKeyset":""}`,
				}},
			})
		}
		b, _ := json.Marshal(tk)
		resp.Wrapped = string(b)
	}
	return resp, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
