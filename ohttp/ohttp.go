// Package ohttp encapsulates requests and responses as Oblivious HTTP
// ([RFC 9458]) does, in the variants that DEPA services speak: plain OHTTP,
// the Bidding & Auction framing and the key/value (trusted signals) service
// framing (docs/spec/azure-compat.md, "Request encryption").
//
// A service decrypts requests with the keys tkms releases to it: it gives a
// Gateway its key cache as a KeySource and calls Gateway.DecapsulateRequest,
// then answers with GatewayContext.EncapsulateResponse. Tools and tests
// encrypt to the keys the KMS publishes (GET /v1/keys/ohttp serves an
// application/ohttp-keys list): ParseKeyConfigs, EncapsulateRequest and
// ClientContext.DecapsulateResponse.
//
// Package ohttp/ohttphttp puts a Gateway in front of an http.Handler
// (Binary HTTP, RFC 9292) and is the matching http.RoundTripper. Bidding &
// Auction plaintexts are framed, padded and compressed: ParseBAFrame and
// BAFrame.Marshal handle that layer (docs/ohttp.md says which layers each
// format has and which are handled).
//
// HPKE ([RFC 9180]) is Go's crypto/hpke. The supported algorithms are those
// tkms issues keys for: the KEMs DHKEM(P-256, HKDF-SHA256),
// DHKEM(X25519, HKDF-SHA256) and MLKEM768-X25519 (draft-ietf-hpke-pq), the
// KDF HKDF-SHA256, and the AEADs AES-128-GCM, AES-256-GCM and
// ChaCha20Poly1305.
//
// [RFC 9458]: https://www.rfc-editor.org/rfc/rfc9458.html
// [RFC 9180]: https://www.rfc-editor.org/rfc/rfc9180.html
package ohttp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// A Variant names the labels that bind an encapsulated message to its
// media type (RFC 9458 §4.6 lets other protocols reuse the encapsulation
// with labels of their own) and says whether requests carry a version byte.
type Variant struct {
	// RequestLabel starts the HPKE info of a request (RFC 9458 §4.3).
	RequestLabel string
	// ResponseLabel is the exporter context of the response secret
	// (RFC 9458 §4.4).
	ResponseLabel string
	// Prefix is set when an encapsulated request starts with a 0x00
	// version byte before the RFC 9458 header, as Bidding & Auction
	// requests do. The byte is not part of the header bound into the HPKE
	// info, and responses carry none.
	Prefix bool
}

// The variants of docs/spec/azure-compat.md, "Request encryption".
var (
	// OHTTP is RFC 9458 with Binary HTTP messages (RFC 9458 §4.3, §4.4).
	OHTTP = Variant{
		RequestLabel:  "message/bhttp request",
		ResponseLabel: "message/bhttp response",
	}
	// BiddingAuction is the Protected Audience Bidding & Auction framing:
	// a leading 0x00 version byte and the auction labels.
	BiddingAuction = Variant{
		RequestLabel:  "message/auction request",
		ResponseLabel: "message/auction response",
		Prefix:        true,
	}
	// TrustedSignals is the key/value service framing. The spec names only
	// its labels and says nothing of a version byte, so requests have none.
	TrustedSignals = Variant{
		RequestLabel:  "message/ad-auction-trusted-signals-request",
		ResponseLabel: "message/ad-auction-trusted-signals-response",
	}
)

// Errors. Every error DecapsulateRequest, EncapsulateRequest,
// DecapsulateResponse and the parsers return matches one of them with
// errors.Is.
var (
	// ErrUnknownKeyID means the KeySource has no key for a request's key
	// id (the client's fault: a gateway answers 422, RFC 9458 §5.3); the
	// error also wraps what the KeySource returned.
	ErrUnknownKeyID = errors.New("ohttp: unknown key id")
	// ErrKeyUnavailable means the KeySource failed to get the key of a
	// request's key id, which may exist (the gateway's fault: 503, e.g.
	// the KMS is down or refuses the service); the error also wraps what
	// the KeySource returned.
	ErrKeyUnavailable = errors.New("ohttp: key unavailable")
	// ErrUnsupportedSuite means a message or key configuration names a KEM,
	// KDF or AEAD that its key does not have or this package does not
	// implement.
	ErrUnsupportedSuite = errors.New("ohttp: unsupported ciphersuite")
	// ErrMalformed means a message or key configuration is truncated, too
	// long or has a wrong version byte.
	ErrMalformed = errors.New("ohttp: malformed message")
	// ErrDecrypt means a message does not open. It is always returned as
	// is, without detail.
	ErrDecrypt = errors.New("ohttp: decryption failed")
)

// HPKE algorithm identifiers (RFC 9180 §7, draft-ietf-hpke-pq).
const (
	kemP256      uint16 = 0x0010
	kemX25519    uint16 = 0x0020
	kemMLKEM768X uint16 = 0x647a

	kdfHKDFSHA256 uint16 = 0x0001

	aeadAES128GCM        uint16 = 0x0001
	aeadAES256GCM        uint16 = 0x0002
	aeadChaCha20Poly1305 uint16 = 0x0003
)

// headerLen is the length of the RFC 9458 §4.1 request header:
// key_id(1) kem_id(2) kdf_id(2) aead_id(2).
const headerLen = 7

// tagLen is Nt of every supported AEAD.
const tagLen = 16

// kemSizes returns Nenc and Npk (RFC 9180 §7.1 table 2; draft-ietf-hpke-pq
// for MLKEM768-X25519) of a supported KEM.
func kemSizes(kem uint16) (nenc, npk int, ok bool) {
	switch kem {
	case kemP256:
		return 65, 65, true
	case kemX25519:
		return 32, 32, true
	case kemMLKEM768X:
		return 1120, 1216, true
	}
	return 0, 0, false
}

// aeadKeyLen returns Nk of a supported AEAD (RFC 9180 §7.3). Nn is 12 for
// all of them.
func aeadKeyLen(aead uint16) (int, bool) {
	switch aead {
	case aeadAES128GCM:
		return 16, true
	case aeadAES256GCM, aeadChaCha20Poly1305:
		return 32, true
	}
	return 0, false
}

const aeadNonceLen = 12

// suite returns the crypto/hpke algorithms of a supported ciphersuite.
func suite(kemID, kdfID, aeadID uint16) (hpke.KEM, hpke.KDF, hpke.AEAD, error) {
	_, _, kemOK := kemSizes(kemID)
	_, aeadOK := aeadKeyLen(aeadID)
	if !kemOK || kdfID != kdfHKDFSHA256 || !aeadOK {
		return nil, nil, nil, fmt.Errorf("%w: kem 0x%04x, kdf 0x%04x, aead 0x%04x", ErrUnsupportedSuite, kemID, kdfID, aeadID)
	}
	kem, err := hpke.NewKEM(kemID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: kem 0x%04x: %v", ErrUnsupportedSuite, kemID, err)
	}
	kdf, err := hpke.NewKDF(kdfID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: kdf 0x%04x: %v", ErrUnsupportedSuite, kdfID, err)
	}
	aead, err := hpke.NewAEAD(aeadID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: aead 0x%04x: %v", ErrUnsupportedSuite, aeadID, err)
	}
	return kem, kdf, aead, nil
}

// header returns the RFC 9458 §4.1 header.
func header(keyID byte, kem, kdf, aead uint16) []byte {
	return []byte{keyID, byte(kem >> 8), byte(kem), byte(kdf >> 8), byte(kdf), byte(aead >> 8), byte(aead)}
}

// requestInfo returns the HPKE info of a request: label || 0x00 || hdr
// (RFC 9458 §4.3).
func requestInfo(label string, hdr []byte) []byte {
	info := make([]byte, 0, len(label)+1+len(hdr))
	info = append(info, label...)
	info = append(info, 0)
	return append(info, hdr...)
}

// secretLen is max(Nn, Nk), the length of the response secret and of the
// response nonce (RFC 9458 §4.4).
func secretLen(aead uint16) int {
	nk, _ := aeadKeyLen(aead)
	return max(nk, aeadNonceLen)
}

// responseKeys holds what both ends keep of a request to protect its
// response: enc and the exported secret (RFC 9458 §4.4). It holds no HPKE
// context, so it is immutable and safe for concurrent use.
type responseKeys struct {
	aead   uint16
	enc    []byte
	secret []byte
}

// aeadFor derives the response AEAD and nonce for responseNonce
// (RFC 9458 §4.4):
//
//	salt = concat(enc, response_nonce)
//	prk = Extract(salt, secret)
//	aead_key = Expand(prk, "key", Nk)
//	aead_nonce = Expand(prk, "nonce", Nn)
func (r *responseKeys) aeadFor(responseNonce []byte) (cipher.AEAD, []byte, error) {
	salt := make([]byte, 0, len(r.enc)+len(responseNonce))
	salt = append(salt, r.enc...)
	salt = append(salt, responseNonce...)
	prk, err := hkdf.Extract(sha256.New, r.secret, salt)
	if err != nil {
		return nil, nil, err
	}
	nk, _ := aeadKeyLen(r.aead)
	key, err := hkdf.Expand(sha256.New, prk, "key", nk)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "nonce", aeadNonceLen)
	if err != nil {
		return nil, nil, err
	}
	var a cipher.AEAD
	switch r.aead {
	case aeadAES128GCM, aeadAES256GCM:
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			a, err = cipher.NewGCM(b)
		}
	case aeadChaCha20Poly1305:
		a, err = chacha20poly1305.New(key)
	default:
		err = fmt.Errorf("%w: aead 0x%04x", ErrUnsupportedSuite, r.aead)
	}
	if err != nil {
		return nil, nil, err
	}
	return a, nonce, nil
}

// seal returns response_nonce || Seal(aead_key, aead_nonce, "", body).
func (r *responseKeys) seal(responseNonce, body []byte) ([]byte, error) {
	a, nonce, err := r.aeadFor(responseNonce)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(responseNonce)+len(body)+a.Overhead())
	out = append(out, responseNonce...)
	return a.Seal(out, nonce, body, nil), nil
}

// open reverses seal.
func (r *responseKeys) open(msg []byte) ([]byte, error) {
	n := secretLen(r.aead)
	if len(msg) < n+tagLen {
		return nil, fmt.Errorf("%w: response of %d bytes is shorter than %d", ErrMalformed, len(msg), n+tagLen)
	}
	a, nonce, err := r.aeadFor(msg[:n])
	if err != nil {
		return nil, err
	}
	body, err := a.Open(nil, nonce, msg[n:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return body, nil
}
