package akv

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // CKM_RSA_AES_KEY_WRAP's OAEP hash
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"

	kwp "github.com/tink-crypto/tink-go/v2/kwp/subtle"
)

// The AES key wrap with padding (RFC 5649) is tink-go's kwp/subtle: a
// maintained implementation already in go.mod (tink is tkms's HPKE
// reference in tests); Go's crypto has none and go-jose's is RFC 3394
// without padding, which a PKCS #8 key of any length does not fit.

// ephemeralKeySize is the AES key size of the vault's CKM_RSA_AES_KEY_WRAP
// (AES-256).
const ephemeralKeySize = 32

// oaepHash returns the RSA-OAEP hash of a key export algorithm.
func oaepHash(enc string) (crypto.Hash, error) {
	switch enc {
	case EncRSAAESKeyWrap:
		return crypto.SHA1, nil
	case EncRSAAESKeyWrap256:
		return crypto.SHA256, nil
	case EncRSAAESKeyWrap384:
		return crypto.SHA384, nil
	}
	return 0, newError(CodeMalformed, nil, "unknown key export algorithm %q (want %s, %s or %s)", truncate(enc), EncRSAAESKeyWrap, EncRSAAESKeyWrap256, EncRSAAESKeyWrap384)
}

// UnwrapKeyHSM unwraps the key of a key_hsm value with the runtime key
// priv, for the key export algorithm enc of the release request (the
// answer's request.enc; key_hsm's header repeats it and must agree).
func UnwrapKeyHSM(keyHSM, enc string, priv *rsa.PrivateKey) ([]byte, error) {
	k, err := ParseKeyHSM(keyHSM)
	if err != nil {
		return nil, err
	}
	if k.Header.Enc != "" && k.Header.Enc != enc {
		return nil, newError(CodeMismatch, nil, "key_hsm is wrapped with %q, the release asked %q", truncate(k.Header.Enc), truncate(enc))
	}
	h, err := oaepHash(enc)
	if err != nil {
		return nil, err
	}
	ct, err := decodeB64URL(k.Ciphertext)
	if err != nil {
		return nil, newError(CodeMalformed, nil, "key_hsm's ciphertext is not base64url")
	}
	n := priv.Size()
	if len(ct) <= n {
		return nil, newError(CodeMalformed, nil, "key_hsm's ciphertext is %d bytes, want more than the %d of the runtime key", len(ct), n)
	}
	aesKey, err := rsa.DecryptOAEP(h.New(), nil, priv, ct[:n], nil)
	if err != nil {
		return nil, newError(CodeUnwrap, nil, "key_hsm's RSA-OAEP part does not decrypt with the runtime key (wrapped to another key?)")
	}
	w, err := kwp.NewKWP(aesKey)
	if err != nil {
		return nil, newError(CodeUnwrap, nil, "key_hsm's ephemeral key is %d bytes, want 16 or 32", len(aesKey))
	}
	key, err := w.Unwrap(ct[n:])
	if err != nil {
		return nil, newError(CodeUnwrap, nil, "key_hsm's AES key wrap does not verify")
	}
	return key, nil
}

// WrapKeyHSM is the vault's side of [UnwrapKeyHSM]: it wraps key to the
// runtime key pub (whose kid is runtimeKID) and returns the key_hsm value.
// internal/akv/akvsim uses it.
func WrapKeyHSM(key []byte, enc string, pub *rsa.PublicKey, runtimeKID string) (string, error) {
	h, err := oaepHash(enc)
	if err != nil {
		return "", err
	}
	aesKey := make([]byte, ephemeralKeySize)
	if _, err := rand.Read(aesKey); err != nil {
		return "", err
	}
	w, err := kwp.NewKWP(aesKey)
	if err != nil {
		return "", err
	}
	wrapped, err := w.Wrap(key)
	if err != nil {
		return "", fmt.Errorf("akv: wrapping the key: %w", err)
	}
	ek, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, aesKey, nil)
	if err != nil {
		return "", fmt.Errorf("akv: wrapping the ephemeral key: %w", err)
	}
	var k KeyHSM
	k.SchemaVersion = "1.0"
	k.Header.KID, k.Header.Alg, k.Header.Enc = runtimeKID, "dir", enc
	k.Ciphertext = base64.RawURLEncoding.EncodeToString(append(ek, wrapped...))
	k.Generator = "tkms akvsim"
	b, err := json.Marshal(k)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
