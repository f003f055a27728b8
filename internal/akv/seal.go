package akv

import (
	"crypto/rsa"
	"crypto/x509"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// sealPurpose is a protected header of sealed recovery keys, so that a JWE
// made for another use of the same vault key is not taken for one.
const (
	sealPurposeHeader = "tkms-purpose"
	sealPurpose       = "tkms/recovery-key/v1"
)

// Seal seals secret (the recovery key) to the vault key's public part: a
// compact JWE (RFC 7516), RSA-OAEP-256 and A256GCM, whose protected header
// names the vault key (kid, with its version) and the purpose
// "tkms/recovery-key/v1". Only the holder of the vault key's private part,
// which the vault releases under its release policy, opens it.
func Seal(vaultKey JWK, secret []byte) (string, error) {
	pub, err := vaultKey.PublicKey()
	if err != nil {
		return "", err
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: pub.Key, KeyID: vaultKey.KID},
		(&jose.EncrypterOptions{}).WithHeader(sealPurposeHeader, sealPurpose))
	if err != nil {
		return "", newError(CodeMalformed, err, "the vault key does not encrypt")
	}
	obj, err := enc.Encrypt(secret)
	if err != nil {
		return "", newError(CodeMalformed, err, "sealing")
	}
	return obj.CompactSerialize()
}

// SealedKID returns the kid a sealed recovery key names, WITHOUT opening
// it: which vault key (and version) the automatic member must release.
func SealedKID(sealed string) (string, error) {
	obj, err := parseSealed(sealed)
	if err != nil {
		return "", err
	}
	return obj.Header.KeyID, nil
}

func parseSealed(sealed string) (*jose.JSONWebEncryption, error) {
	obj, err := jose.ParseEncryptedCompact(strings.TrimSpace(sealed), []jose.KeyAlgorithm{jose.RSA_OAEP_256}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, newError(CodeSealed, nil, "the sealed recovery key is not a compact RSA-OAEP-256/A256GCM JWE")
	}
	if p, _ := obj.Header.ExtraHeaders[sealPurposeHeader].(string); p != sealPurpose {
		return nil, newError(CodeSealed, nil, "the JWE is not a sealed tkms recovery key (%s is not %q)", sealPurposeHeader, sealPurpose)
	}
	return obj, nil
}

// Open opens a sealed recovery key with the released vault key, its
// PKCS #8 DER (what [UnwrapKeyHSM] returns for an RSA key).
func Open(releasedPKCS8 []byte, sealed string) ([]byte, error) {
	k, err := x509.ParsePKCS8PrivateKey(releasedPKCS8)
	if err != nil {
		return nil, newError(CodeMalformed, nil, "the released key is not a PKCS #8 private key")
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, newError(CodeMalformed, nil, "the released key is a %T, want RSA", k)
	}
	obj, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	pt, err := obj.Decrypt(priv)
	if err != nil {
		return nil, newError(CodeSealed, nil, "the sealed recovery key does not open with the released key (sealed to another key, or altered)")
	}
	return pt, nil
}
