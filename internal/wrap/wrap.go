// Package wrap binds a key release to a client's wrapping key and encrypts
// the released private key to it (steps 9 and 10 of a release).
//
// The Azure-compatible API (docs/spec/azure-compat.md, "POST
// /app/unwrapKey") takes the wrapping key as an RSA SubjectPublicKeyInfo PEM
// string; REPORT_DATA[0:32] of the client's evidence must equal SHA-256 of
// that string's exact bytes (AppBindingHash), and the payload — the JSON key
// item (JWKPayload) or a binary Tink keyset (TinkKeyset) — is encrypted with
// RSA-OAEP using SHA-256 and MGF1-SHA-256 and an empty label (RSAOAEP256,
// RFC 8017 §7.1).
//
// The native API binds to a canonical encoding of the wrapping key instead
// of its text (CanonicalRSA, CanonicalHPKE, V1BindingHash) and may wrap with
// HPKE base mode (RFC 9180 §5.1.1) to an X25519 or MLKEM768-X25519 key
// (HPKEWrap, with the info string of ReleaseInfo).
package wrap

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
)

// Error codes (the x-ms-kms-error-code of docs/spec/azure-compat.md).
const (
	CodeInvalidPEM          = "INVALID_PEM_FORMAT"
	CodeWrappingKey         = "WRAPPING_KEY_ERROR"
	CodeWrappingKeyMismatch = "WRAPPING_KEY_HASH_MISMATCH"
	CodeWrap                = "WRAP_KEY_EXCEPTION"
)

type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.msg }

// Code returns the error code.
func (e *codedError) Code() string { return e.code }

// Sentinel errors; every error of this package wraps one of them, and each
// has a Code() string method giving its error code.
var (
	// ErrInvalidPEM: the wrapping key is not exactly one PEM "PUBLIC KEY"
	// block holding a SubjectPublicKeyInfo.
	ErrInvalidPEM error = &codedError{CodeInvalidPEM, "wrap: wrapping key is not a PEM public key"}
	// ErrWrappingKey: the wrapping key parses but cannot be used (type or size).
	ErrWrappingKey error = &codedError{CodeWrappingKey, "wrap: unusable wrapping key"}
	// ErrBindingMismatch: REPORT_DATA does not commit to the wrapping key.
	ErrBindingMismatch error = &codedError{CodeWrappingKeyMismatch, "wrap: report data does not match the wrapping key hash"}
	// ErrWrap: encryption to the wrapping key failed (e.g. a payload too long
	// for RSA-OAEP under that key) or the payload cannot be built.
	ErrWrap error = &codedError{CodeWrap, "wrap: cannot wrap the key"}
)

// RSA wrapping key sizes accepted, in bits (the DEPA services use 4096).
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

const pemPublicKey = "PUBLIC KEY"

// ParseAppWrappingKey parses the wrappingKey of an /app request: exactly one
// PEM block "-----BEGIN PUBLIC KEY-----" holding an RSA SubjectPublicKeyInfo
// of MinRSABits..MaxRSABits bits, with nothing before it and only white space
// after it. Other text, other block types (a private key, a certificate), PEM
// headers or a second block are ErrInvalidPEM; another key type or size is
// ErrWrappingKey.
//
// The spec's PEM ends with "\n". A key whose text lacks it still parses, as
// in the originals: its binding hash then differs from that of the text the
// client most likely hashed, and the release fails the binding check with
// WRAPPING_KEY_HASH_MISMATCH; MissingTrailingNewline tells the caller so it
// can say why.
func ParseAppWrappingKey(pemString string) (*rsa.PublicKey, error) {
	if !strings.HasPrefix(pemString, "-----BEGIN "+pemPublicKey+"-----") {
		return nil, fmt.Errorf("%w: want text starting with -----BEGIN %s-----", ErrInvalidPEM, pemPublicKey)
	}
	if strings.Count(pemString, "-----BEGIN") != 1 {
		// Also stops pem.Decode from skipping a malformed first block.
		return nil, fmt.Errorf("%w: want exactly one PEM block", ErrInvalidPEM)
	}
	block, rest := pem.Decode([]byte(pemString))
	if block == nil {
		return nil, fmt.Errorf("%w: malformed PEM block", ErrInvalidPEM)
	}
	if block.Type != pemPublicKey || len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: want a %s block without headers", ErrInvalidPEM, pemPublicKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: text after the PEM block (want exactly one block)", ErrInvalidPEM)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPEM, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T, want an RSA public key", ErrWrappingKey, k)
	}
	if n := pub.N.BitLen(); n < MinRSABits || n > MaxRSABits {
		return nil, fmt.Errorf("%w: RSA key of %d bits, want %d to %d", ErrWrappingKey, n, MinRSABits, MaxRSABits)
	}
	return pub, nil
}

// MissingTrailingNewline reports whether a wrapping key's text lacks the
// final "\n" of the spec's PEM shape.
func MissingTrailingNewline(pemString string) bool {
	return !strings.HasSuffix(pemString, "\n")
}

// AppBindingHash returns SHA-256 of the exact bytes of an /app wrappingKey
// string, as received: the value REPORT_DATA[0:32] must hold.
func AppBindingHash(pemString string) [32]byte {
	return sha256.Sum256([]byte(pemString))
}

// CanonicalRSA returns the canonical /v1 encoding of an RSA wrapping key:
// its DER SubjectPublicKeyInfo (RFC 8017 Appendix A.1 inside RFC 5280
// §4.1.2.7).
func CanonicalRSA(pub *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil { // only for unsupported types; *rsa.PublicKey is supported
		panic("wrap: " + err.Error())
	}
	return der
}

// CanonicalHPKE returns the canonical /v1 encoding of an HPKE wrapping key:
// the 2-byte big-endian KEM id followed by the public key as RFC 9180
// SerializePublicKey encodes it.
func CanonicalHPKE(kemID uint16, pub []byte) []byte {
	b := make([]byte, 0, 2+len(pub))
	b = append(b, byte(kemID>>8), byte(kemID))
	return append(b, pub...)
}

// V1BindingHash returns SHA-256 of a canonical wrapping key encoding: the
// value REPORT_DATA[0:32] must hold for a /v1 release.
func V1BindingHash(canonical []byte) [32]byte {
	return sha256.Sum256(canonical)
}

// CheckBinding checks that reportData (the 64-byte REPORT_DATA of verified
// evidence) begins with want. The error, ErrBindingMismatch, names the first
// 8 bytes of both in hex.
func CheckBinding(reportData []byte, want [32]byte) error {
	if len(reportData) >= 32 && bytes.Equal(reportData[:32], want[:]) {
		return nil
	}
	have := reportData[:min(8, len(reportData))]
	return fmt.Errorf("%w: report data begins %s, wrapping key hash begins %s",
		ErrBindingMismatch, hex.EncodeToString(have), hex.EncodeToString(want[:8]))
}

// RSAOAEP256 encrypts plaintext with RSA-OAEP, SHA-256, MGF1-SHA-256 and an
// empty label. The plaintext may be at most k-66 bytes for a k-byte modulus
// (190 for RSA-2048, 446 for RSA-4096); longer is ErrWrap.
func RSAOAEP256(pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if pub == nil || pub.N == nil {
		return nil, fmt.Errorf("%w: no wrapping key", ErrWrap)
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, plaintext, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: rsa-oaep: %v", ErrWrap, err)
	}
	return ct, nil
}
