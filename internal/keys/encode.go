package keys

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// An Item is the JWK-like key item of the Azure-compatible API
// (docs/spec/azure-compat.md, "Key identifiers"). D is set only when the
// item travels wrapped to an attested service.
type Item struct {
	Kty       string `json:"kty"`
	Crv       string `json:"crv,omitempty"`
	Alg       string `json:"alg,omitempty"` // hybrid keys: "MLKEM768-X25519"
	X         string `json:"x,omitempty"`
	Y         string `json:"y,omitempty"`
	Pub       string `json:"pub,omitempty"` // hybrid keys: the raw public key
	D         string `json:"d,omitempty"`
	Kid       string `json:"kid"`
	Timestamp int64  `json:"timestamp"`
	Expiry    int64  `json:"expiry,omitempty"`
	ID        int    `json:"id"`
}

// PublicItem returns the key item of a public key, without D. Times are
// Unix milliseconds.
func PublicItem(s Suite, pub []byte, kid string, id int, timestampMs, expiryMs int64) (Item, error) {
	it := Item{Kid: kid, Timestamp: timestampMs, Expiry: expiryMs, ID: id}
	b64 := base64.RawURLEncoding.EncodeToString
	switch s.KEM {
	case KEMX25519HKDFSHA256:
		if len(pub) != 32 {
			return Item{}, fmt.Errorf("keys: x25519 public key has %d bytes", len(pub))
		}
		it.Kty, it.Crv, it.X = "OKP", "X25519", b64(pub)
	case KEMP256HKDFSHA256:
		if _, err := ecdh.P256().NewPublicKey(pub); err != nil || len(pub) != 65 {
			return Item{}, fmt.Errorf("keys: p256 public key is not an uncompressed point")
		}
		it.Kty, it.Crv, it.X, it.Y = "EC", "P-256", b64(pub[1:33]), b64(pub[33:])
	case KEMMLKEM768X25519:
		if _, err := s.PublicKey(pub); err != nil {
			return Item{}, fmt.Errorf("keys: %s public key: %w", s.Name, err)
		}
		it.Kty, it.Alg, it.Pub = "AKP", "MLKEM768-X25519", b64(pub)
	default:
		return Item{}, fmt.Errorf("%w: KEM 0x%04x", ErrUnknownSuite, s.KEM)
	}
	return it, nil
}

// TinkPublicKeyset is the fmt=tink answer of GET /app/pubkey.
type TinkPublicKeyset struct {
	PrimaryKeyID int             `json:"primaryKeyId"`
	Key          []TinkPublicKey `json:"key"`
}

// TinkPublicKey is one key of a TinkPublicKeyset.
type TinkPublicKey struct {
	KeyData          TinkKeyData `json:"keyData"`
	Status           string      `json:"status"`
	KeyID            int         `json:"keyId"`
	OutputPrefixType string      `json:"outputPrefixType"`
}

// TinkKeyData holds the raw public key.
type TinkKeyData struct {
	TypeURL         string `json:"typeUrl"`
	Value           string `json:"value"`
	KeyMaterialType string `json:"keyMaterialType"`
}

// TinkPublic returns the Tink-style public keyset the originals serve: the
// raw public key in standard base64 under the Azure HpkePublicKey type URL.
func TinkPublic(pub []byte, id int) TinkPublicKeyset {
	return TinkPublicKeyset{
		PrimaryKeyID: id,
		Key: []TinkPublicKey{{
			KeyData: TinkKeyData{
				TypeURL:         "https://schema.org/PublicKey/Azure/HpkePublicKey",
				Value:           base64.StdEncoding.EncodeToString(pub),
				KeyMaterialType: "ASYMMETRIC_PUBLIC",
			},
			Status:           "ENABLED",
			KeyID:            id,
			OutputPrefixType: "RAW",
		}},
	}
}

// OHTTPConfig returns one RFC 9458 §3 key configuration:
//
//	key_id(1) kem_id(2) public_key(Npk) symmetric_algorithms_length(2) {kdf_id(2) aead_id(2)}
func OHTTPConfig(keyID byte, s Suite, pub []byte) []byte {
	b := make([]byte, 0, 1+2+len(pub)+2+4)
	b = append(b, keyID)
	b = binary.BigEndian.AppendUint16(b, s.KEM)
	b = append(b, pub...)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = binary.BigEndian.AppendUint16(b, s.KDF)
	return binary.BigEndian.AppendUint16(b, s.AEAD)
}

// OHTTPConfigList returns the application/ohttp-keys body (RFC 9458 §3.2):
// each configuration prefixed by its 2-byte length.
func OHTTPConfigList(configs ...[]byte) []byte {
	var b []byte
	for _, c := range configs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		b = append(b, c...)
	}
	return b
}
