package akv

import (
	"encoding/json"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/internal/attest/maa"
)

// Key export (wrapping) algorithms of the release request's "enc".
const (
	// EncRSAAESKeyWrap is PKCS #11's CKM_RSA_AES_KEY_WRAP: RSA-OAEP with
	// SHA-1, the vault's default.
	EncRSAAESKeyWrap = "CKM_RSA_AES_KEY_WRAP"
	// EncRSAAESKeyWrap256 is the same with RSA-OAEP SHA-256.
	EncRSAAESKeyWrap256 = "RSA_AES_KEY_WRAP_256"
	// EncRSAAESKeyWrap384 is the same with RSA-OAEP SHA-384.
	EncRSAAESKeyWrap384 = "RSA_AES_KEY_WRAP_384"
)

// PolicyContentType is the content type of release policies.
const PolicyContentType = "application/json; charset=utf-8"

// MaxAnswerBytes bounds a vault answer read by [Client].
const MaxAnswerBytes = 1 << 20

// JWK is a vault key in JSON Web Key form as the vault gives it: kty
// "RSA-HSM" (or "RSA"), its public n and e, and in a release answer the
// wrapped private key in key_hsm.
type JWK struct {
	KID    string   `json:"kid"`
	KTY    string   `json:"kty"`
	KeyOps []string `json:"key_ops,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	KeyHSM string   `json:"key_hsm,omitempty"`
}

// Attributes are a key's attributes; only those tkms reads are named.
type Attributes struct {
	Enabled    bool  `json:"enabled"`
	Exportable bool  `json:"exportable"`
	Created    int64 `json:"created,omitempty"`
	Updated    int64 `json:"updated,omitempty"`
}

// ReleasePolicy is a key's release policy as the vault holds it: Data is
// the policy document, base64url.
type ReleasePolicy struct {
	ContentType string `json:"contentType"`
	Data        string `json:"data"`
	Immutable   bool   `json:"immutable,omitempty"`
}

// Document returns the policy document (Data decoded).
func (p ReleasePolicy) Document() ([]byte, error) {
	return decodeB64URL(p.Data)
}

// KeyBundle is the vault's answer to GET key and create key, and the
// "key" of a release answer.
type KeyBundle struct {
	Key           JWK            `json:"key"`
	Attributes    Attributes     `json:"attributes"`
	ReleasePolicy *ReleasePolicy `json:"release_policy,omitempty"`
}

// ReleaseRequest is the body of POST .../release.
type ReleaseRequest struct {
	Target string `json:"target"`
	Nonce  string `json:"nonce,omitempty"`
	Enc    string `json:"enc,omitempty"`
}

// ReleaseResult is the answer to POST .../release.
type ReleaseResult struct {
	Value string `json:"value"`
}

// ReleasePayload is the payload of a release answer's JWS.
type ReleasePayload struct {
	Request struct {
		APIVersion string `json:"api-version"`
		Enc        string `json:"enc"`
		KID        string `json:"kid"`
		Nonce      string `json:"nonce,omitempty"`
	} `json:"request"`
	Response struct {
		Key KeyBundle `json:"key"`
	} `json:"response"`
}

// KeyHSM is the decoded key_hsm of a released key.
type KeyHSM struct {
	SchemaVersion string `json:"schema_version"`
	Header        struct {
		KID string `json:"kid"`
		Alg string `json:"alg"`
		Enc string `json:"enc"`
	} `json:"header"`
	Ciphertext string `json:"ciphertext"`
	Generator  string `json:"generator,omitempty"`
}

// VaultError is the vault's error answer.
type VaultError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// ParseKeyBundle parses a GET key answer: an RSA key ("RSA" or "RSA-HSM")
// with a kid and a public part.
func ParseKeyBundle(b []byte) (*KeyBundle, error) {
	var kb KeyBundle
	if err := json.Unmarshal(b, &kb); err != nil {
		return nil, newError(CodeMalformed, nil, "the key bundle is not JSON of the vault's key format")
	}
	if _, err := kb.Key.PublicKey(); err != nil {
		return nil, err
	}
	return &kb, nil
}

// PublicKey returns the RSA public key of k.
func (k JWK) PublicKey() (*jose.JSONWebKey, error) {
	if k.KTY != "RSA" && k.KTY != "RSA-HSM" {
		return nil, newError(CodeMalformed, nil, "the vault key is of type %q, want RSA or RSA-HSM", truncate(k.KTY))
	}
	if k.KID == "" {
		return nil, newError(CodeMalformed, nil, "the vault key has no kid")
	}
	b, _ := json.Marshal(map[string]string{"kty": "RSA", "n": k.N, "e": k.E, "kid": k.KID})
	var j jose.JSONWebKey
	if err := j.UnmarshalJSON(b); err != nil {
		return nil, newError(CodeMalformed, nil, "the vault key's n and e are not an RSA public key")
	}
	return &j, nil
}

// ParseKeyHSM decodes a key_hsm value.
func ParseKeyHSM(s string) (*KeyHSM, error) {
	b, err := decodeB64URL(s)
	if err != nil {
		return nil, newError(CodeMalformed, nil, "key_hsm is not base64url")
	}
	var k KeyHSM
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, newError(CodeMalformed, nil, "key_hsm is not JSON of the vault's key_hsm format")
	}
	if k.Ciphertext == "" {
		return nil, newError(CodeMalformed, nil, "key_hsm has no ciphertext")
	}
	return &k, nil
}

// decodeB64URL decodes base64url with or without padding: the vault
// writes it without, other producers with.
func decodeB64URL(s string) ([]byte, error) { return maa.DecodeBase64URL(s) }

func truncate(s string) string { return truncateN(s, 64) }

func truncateN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// vaultError describes an error answer of the vault with HTTP status
// status; its code and message are public text of the vault.
func vaultError(status int, body []byte) error {
	var ve VaultError
	if json.Unmarshal(body, &ve) == nil && ve.Error.Code != "" {
		return newError(CodeVault, nil, "the vault answered %d %s: %s", status, truncate(ve.Error.Code), truncateN(ve.Error.Message, 600))
	}
	return newError(CodeVault, nil, "the vault answered %d", status)
}
