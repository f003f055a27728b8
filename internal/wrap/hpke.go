package wrap

import (
	"crypto/hpke"
	"fmt"

	"github.com/tkms-dev/tkms/internal/keys"
)

// The HPKE ciphersuite of /v1 wrapping, whatever the wrapping key's KEM.
var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.AES256GCM()
)

// ReleaseInfo returns the HPKE info string of a /v1 release of key kid:
//
//	"tkms/v1 key release" || 0x00 || kid
//
// It binds the ciphertext to the purpose and to the kid, so a wrapped key
// cannot be presented as another key's release.
func ReleaseInfo(kid string) []byte {
	const label = "tkms/v1 key release"
	b := make([]byte, 0, len(label)+1+len(kid))
	b = append(b, label...)
	b = append(b, 0)
	return append(b, kid...)
}

// HPKEWrap encrypts plaintext to an HPKE wrapping key in base mode (RFC 9180
// §5.1.1, single-shot Seal with empty aad) with HKDF-SHA256 and AES-256-GCM.
// kemID is keys.KEMX25519HKDFSHA256 (0x0020) or keys.KEMMLKEM768X25519
// (0x647a); pub is the serialised public key. The output is enc ||
// ciphertext, enc being the KEM's encapsulated key (32 bytes for X25519,
// 1120 for MLKEM768-X25519); crypto/hpke.Open with the same info opens it.
func HPKEWrap(kemID uint16, pub []byte, plaintext, info []byte) ([]byte, error) {
	if kemID != keys.KEMX25519HKDFSHA256 && kemID != keys.KEMMLKEM768X25519 {
		return nil, fmt.Errorf("%w: KEM 0x%04x, want 0x%04x or 0x%04x", ErrWrappingKey, kemID, keys.KEMX25519HKDFSHA256, keys.KEMMLKEM768X25519)
	}
	kem, err := hpke.NewKEM(kemID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrappingKey, err)
	}
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: KEM 0x%04x public key: %v", ErrWrappingKey, kemID, err)
	}
	ct, err := hpke.Seal(pk, hpkeKDF, hpkeAEAD, info, plaintext)
	if err != nil {
		return nil, fmt.Errorf("%w: hpke: %v", ErrWrap, err)
	}
	return ct, nil
}
