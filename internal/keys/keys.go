// Package keys generates HPKE key pairs with Go's crypto/hpke and encodes
// them in the forms that clients and DEPA services read: the SPKI PEM whose
// hash names a key, the Azure-compatible kid and numeric id, the JWK-like
// key item, Tink's public keyset JSON, and the RFC 9458 OHTTP key
// configuration.
//
// The formats are those of docs/spec/azure-compat.md (from
// shared/spec/azure-compat.md).
package keys

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// HPKE algorithm identifiers (RFC 9180 §7 and draft-ietf-hpke-pq).
const (
	KEMP256HKDFSHA256   uint16 = 0x0010
	KEMX25519HKDFSHA256 uint16 = 0x0020
	KEMMLKEM768X25519   uint16 = 0x647a
	KDFHKDFSHA256       uint16 = 0x0001
	AEADAES256GCM       uint16 = 0x0002
)

// A Suite is an HPKE ciphersuite that tkms generates keys for.
type Suite struct {
	Name string // stable name used in policies and the ledger
	KEM  uint16
	KDF  uint16
	AEAD uint16
}

// The suites tkms supports. X25519 is the default and what DEPA's B&A and
// OHTTP clients use.
var (
	X25519         = Suite{Name: "x25519", KEM: KEMX25519HKDFSHA256, KDF: KDFHKDFSHA256, AEAD: AEADAES256GCM}
	P256           = Suite{Name: "p256", KEM: KEMP256HKDFSHA256, KDF: KDFHKDFSHA256, AEAD: AEADAES256GCM}
	MLKEM768X25519 = Suite{Name: "mlkem768-x25519", KEM: KEMMLKEM768X25519, KDF: KDFHKDFSHA256, AEAD: AEADAES256GCM}
)

// Suites lists every supported suite.
var Suites = []Suite{X25519, P256, MLKEM768X25519}

// ErrUnknownSuite is returned for a suite name tkms does not support.
var ErrUnknownSuite = errors.New("keys: unknown suite")

// ParseSuite returns the suite with the given name.
func ParseSuite(name string) (Suite, error) {
	for _, s := range Suites {
		if s.Name == name {
			return s, nil
		}
	}
	names := make([]string, len(Suites))
	for i, s := range Suites {
		names[i] = s.Name
	}
	return Suite{}, fmt.Errorf("%w %q (want one of %s)", ErrUnknownSuite, name, strings.Join(names, ", "))
}

// SuiteForKEM returns the suite with the given KEM id.
func SuiteForKEM(kem uint16) (Suite, error) {
	for _, s := range Suites {
		if s.KEM == kem {
			return s, nil
		}
	}
	return Suite{}, fmt.Errorf("%w: KEM 0x%04x", ErrUnknownSuite, kem)
}

func (s Suite) kem() (hpke.KEM, error) { return hpke.NewKEM(s.KEM) }

// Generate returns a fresh key pair: the private key as serialised by
// RFC 9180 SerializePrivateKey and the public key as SerializePublicKey.
func (s Suite) Generate() (priv, pub []byte, err error) {
	kem, err := s.kem()
	if err != nil {
		return nil, nil, err
	}
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	priv, err = k.Bytes()
	if err != nil {
		return nil, nil, err
	}
	return priv, k.PublicKey().Bytes(), nil
}

// PrivateKey deserialises a private key of this suite.
func (s Suite) PrivateKey(priv []byte) (hpke.PrivateKey, error) {
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	return kem.NewPrivateKey(priv)
}

// PublicKey deserialises a public key of this suite.
func (s Suite) PublicKey(pub []byte) (hpke.PublicKey, error) {
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	return kem.NewPublicKey(pub)
}

// oidXWing identifies an MLKEM768-X25519 (X-Wing) public key in a
// SubjectPublicKeyInfo, as assigned by draft-connolly-cfrg-xwing-kem.
var oidXWing = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}

// PublicPEM returns the public key as a PEM "PUBLIC KEY" block
// (SubjectPublicKeyInfo), the text whose SHA-256 names the key in its kid.
// X25519 and P-256 keys use the RFC 8410 and RFC 5480 encodings; the hybrid
// uses the X-Wing OID with the raw 1216-byte key.
func PublicPEM(s Suite, pub []byte) ([]byte, error) {
	var der []byte
	var err error
	switch s.KEM {
	case KEMX25519HKDFSHA256, KEMP256HKDFSHA256:
		curve := ecdh.X25519()
		if s.KEM == KEMP256HKDFSHA256 {
			curve = ecdh.P256()
		}
		k, perr := curve.NewPublicKey(pub)
		if perr != nil {
			return nil, fmt.Errorf("keys: %s public key: %w", s.Name, perr)
		}
		der, err = x509.MarshalPKIXPublicKey(k)
	case KEMMLKEM768X25519:
		if _, perr := s.PublicKey(pub); perr != nil {
			return nil, fmt.Errorf("keys: %s public key: %w", s.Name, perr)
		}
		der, err = asn1.Marshal(struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}{pkix.AlgorithmIdentifier{Algorithm: oidXWing}, asn1.BitString{Bytes: pub, BitLength: 8 * len(pub)}})
	default:
		return nil, fmt.Errorf("%w: KEM 0x%04x", ErrUnknownSuite, s.KEM)
	}
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// KID returns the Azure-compatible key identifier: base64url without
// padding of SHA-256 over the public key PEM text, then "_" and n, the
// 1-based number of the key.
func KID(publicPEM []byte, n uint64) string {
	h := sha256.Sum256(publicPEM)
	return base64.RawURLEncoding.EncodeToString(h[:]) + "_" + strconv.FormatUint(n, 10)
}

// ParseKIDNumber returns the key number at the end of a kid: the decimal
// digits after its last "_", written as KID writes them (no sign, no leading
// zero), so that one number has one spelling.
func ParseKIDNumber(kid string) (uint64, bool) {
	i := strings.LastIndexByte(kid, '_')
	if i < 0 {
		return 0, false
	}
	digits := kid[i+1:]
	if digits == "" || digits[0] < '1' || digits[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// Numeric ids are 10..99: two decimal digits that DEPA services read as the
// hex OHTTP key id byte.
const (
	MinID = 10
	MaxID = 99
)

// ErrNoFreeID means every numeric id is held by an unexpired key.
var ErrNoFreeID = errors.New("keys: all 90 numeric ids are held by unexpired keys")

// AssignID returns the numeric id for key number n: n % 90 + 10, or, if an
// unexpired key holds that id, the next free one (wrapping 99 -> 10). The
// originals reuse ids blindly; tkms never hands out a held id.
func AssignID(n uint64, held func(id int) bool) (int, error) {
	start := int(n%90) + MinID
	for i := range 90 {
		id := MinID + (start-MinID+i)%90
		if !held(id) {
			return id, nil
		}
	}
	return 0, ErrNoFreeID
}

// OHTTPKeyID returns the OHTTP key id byte for a numeric id: its two decimal
// characters read as hex ("42" -> 0x42), as DEPA services do. id must be in
// MinID..MaxID (AssignID and the ledger ensure it); other ids have no key id
// byte and give a meaningless result.
func OHTTPKeyID(id int) byte {
	v, _ := strconv.ParseUint(strconv.Itoa(id), 16, 8)
	return byte(v)
}
