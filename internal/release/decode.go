package release

import (
	"bytes"
	"context"
	"encoding/json"
	"io"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
)

// A release body is ~25 KB, almost all of it the attestation object. The
// straightforward decoding keeps the object's bytes (json.RawMessage) and
// hands them to attest.Verifier.Verify, which decodes them again to tell
// the format apart and again to verify them: the body's bytes are scanned
// a dozen times. The one-pass decoding below decodes the ACI object's
// members straight from the body into an attest.Object, in the same
// json.Unmarshal as the rest of the body, and verifies them with
// attest.Verifier.VerifyACI.
//
// It is only a shortcut: it is taken when the body decodes without any
// error, the attestation is an ACI object (attest.Object.AsACI) and it is
// the body's only member of that name (onlyMember); then the request and
// the ACI members are exactly those the straightforward decoding finds, so
// every check, error and its order are the same. Any other body, valid or
// not, is decoded again the straightforward way, which gives the answer
// (and the precise error) it always gave. TestOnePassDecoding and
// FuzzOnePassDecoding compare the two.

// attestation is a request's attestation object: its bytes, or its ACI
// members decoded with the body.
type attestation struct {
	raw []byte
	aci *api.ACI
}

// verifyEvidence verifies a request's attestation object (VerifyEvidence).
func (s *Service) verifyEvidence(ctx context.Context, att attestation) (*attest.Evidence, error) {
	if att.aci == nil {
		return s.VerifyEvidence(ctx, att.raw)
	}
	return s.verifyPooled(ctx, func() (*attest.Evidence, error) { return s.cfg.Attest.VerifyACI(ctx, att.aci) })
}

// appBody is an /app request body (api.AppRequest) decoded in one pass;
// the ignored "wrapped" member is not kept.
type appBody struct {
	Attestation attest.Object `json:"attestation"`
	WrappingKey string        `json:"wrappingKey"`
	WrappedKid  string        `json:"wrappedKid"`
}

// decodeAppOnce decodes an /app body in one pass, if it can (see above).
func decodeAppOnce(body []byte) (*api.AppRequest, attestation, bool) {
	var b appBody
	if json.Unmarshal(body, &b) != nil {
		return nil, attestation{}, false
	}
	aci := b.Attestation.AsACI()
	if aci == nil || !onlyMember(body, attestationName) {
		return nil, attestation{}, false
	}
	return &api.AppRequest{WrappingKey: b.WrappingKey, WrappedKid: b.WrappedKid}, attestation{aci: aci}, true
}

// v1Body is a /v1 release body (api.V1Request) decoded in one pass.
type v1Body struct {
	Kids        []string           `json:"kids,omitempty"`
	AllValid    bool               `json:"all_valid,omitempty"`
	Attestation attest.Object      `json:"attestation"`
	WrappingKey *api.V1WrappingKey `json:"wrapping_key"`
	Nonce       string             `json:"nonce,omitempty"`
}

// decodeV1Once decodes a /v1 body in one pass, if it can (see above), as
// decodeV1 does: unknown members (of the attestation object too, here)
// and trailing data are refused, by sending the body the long way.
func decodeV1Once(body []byte) (*api.V1Request, attestation, bool) {
	var b v1Body
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if d.Decode(&b) != nil {
		return nil, attestation{}, false
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, attestation{}, false
	}
	aci := b.Attestation.AsACI()
	if aci == nil || !onlyMember(body, attestationName) {
		return nil, attestation{}, false
	}
	// req.Attestation stays nil: the attestation's members are in aci.
	req := &api.V1Request{Kids: b.Kids, AllValid: b.AllValid, WrappingKey: b.WrappingKey, Nonce: b.Nonce}
	return req, attestation{aci: aci}, true
}

// attestationName is the name of a request's attestation member.
var attestationName = []byte("attestation")

// onlyMember reports whether the valid JSON body holds exactly one string
// that encoding/json could match to the member name (ASCII, lower case):
// it matches names case-insensitively, with Unicode folding (bytes.EqualFold
// folds at least as much), after unescaping. Every string of the body is
// counted, members' names and values, nested or not, and every short string
// with an escape in it, so the answer may be false for a body that names
// the member only once (it then takes the long way), never true for one
// that names it twice.
func onlyMember(body, name []byte) bool {
	n := 0
	for i := 0; i < len(body); {
		q := bytes.IndexByte(body[i:], '"')
		if q < 0 {
			break
		}
		start := i + q + 1
		end := start
		for {
			q := bytes.IndexByte(body[end:], '"')
			if q < 0 {
				return false // not valid JSON after all
			}
			end += q
			bs := 0
			for k := end - 1; k >= start && body[k] == '\\'; k-- {
				bs++
			}
			if bs%2 == 0 {
				break
			}
			end++
		}
		s := body[start:end]
		escaped := bytes.IndexByte(s, '\\') >= 0
		switch {
		case escaped && len(s) <= 6*4*len(name):
			// Escapes may spell the name: count it (a long escaped string,
			// such as a PEM key, cannot: at most 6 bytes a character,
			// 4 UTF-8 bytes a folded character).
			n++
		case !escaped && len(s) <= 4*len(name) && bytes.EqualFold(s, name):
			n++
		}
		if n > 1 {
			return false
		}
		i = end + 1
	}
	return n == 1
}
