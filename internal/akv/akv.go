// Package akv is tkms's client of Azure Key Vault and Managed HSM secure
// key release (SKR), the automatic recovery member of docs/auto-recovery.md.
//
// A vault key created exportable with a release policy (the SKR policy
// grammar: https://learn.microsoft.com/azure/key-vault/keys/policy-grammar)
// is released only to a caller presenting a Microsoft Azure Attestation
// (MAA) token whose claims satisfy that policy, wrapped to an RSA key the
// token carries in its runtime claims (x-ms-runtime.keys). tkms seals the
// recovery key to the vault key's public part ([Seal], a JWE); a recovering
// node attests, obtains the token, has the vault release the private key
// ([Client.Release]), verifies the vault's signed answer ([VerifyRelease]),
// unwraps the key with its runtime key ([UnwrapKeyHSM]) and opens the
// sealed recovery key ([Open]). [Recover] does all of it.
//
// The wire formats are Key Vault's REST API, api-version 7.4:
//
//   - GET {vault}/keys/{name}/{version}: a key bundle {"key": JWK,
//     "attributes": {...,"exportable":true}, "release_policy":
//     {"contentType","data": base64url policy}} ([KeyBundle]).
//   - POST {vault}/keys/{name}/{version}/release with {"target": MAA token,
//     "nonce"?, "enc"?} answers {"value": JWS}; the JWS is RS256, signed by
//     the vault's certificate in its x5c header, and its payload is
//     {"request":{"api-version","enc","kid","nonce"?},"response":{"key":
//     key bundle whose key has "key_hsm"}} ([ReleasePayload]).
//   - key_hsm is base64url JSON {"schema_version":"1.0","header":{"kid",
//     "alg":"dir","enc"},"ciphertext": base64url} ([KeyHSM]); the
//     ciphertext is PKCS #11's CKM_RSA_AES_KEY_WRAP: RSA-OAEP of an
//     ephemeral AES-256 key under the runtime key, then that AES key's
//     RFC 5649 wrap (AES key wrap with padding) of the released key, for an
//     RSA key its PKCS #8 DER.
//
// Errors are [*attesterr.Error] with the codes below; none carries a
// token, a key or a released secret.
package akv

import (
	"github.com/tkms-dev/tkms/internal/attest/attesterr"
)

// APIVersion is the Key Vault REST API version spoken.
const APIVersion = "7.4"

// Stable error codes.
const (
	// CodeVault: the vault answered an error ({"error":{"code","message"}});
	// the message carries the vault's code and message.
	CodeVault = "AKV_VAULT_ERROR"
	// CodeUnreachable: no answer from the vault (network, timeout).
	CodeUnreachable = "AKV_UNREACHABLE"
	// CodeMalformed: an answer that does not parse as the format above.
	CodeMalformed = "AKV_ANSWER_MALFORMED"
	// CodeSignature: the release answer's signature does not verify under
	// its x5c leaf.
	CodeSignature = "AKV_SIGNATURE_INVALID"
	// CodeSigner: the x5c chain does not verify to a trusted root for the
	// vault's host name.
	CodeSigner = "AKV_SIGNER_UNTRUSTED"
	// CodeMismatch: a verified answer releases something else than asked
	// (another key or version, nonce, enc, public key or release policy).
	CodeMismatch = "AKV_ANSWER_MISMATCH"
	// CodeUnwrap: key_hsm does not unwrap with the runtime key.
	CodeUnwrap = "AKV_UNWRAP_FAILED"
	// CodeSealed: the sealed recovery key does not open with the released
	// key (sealed to another key, or altered).
	CodeSealed = "AKV_SEALED_INVALID"
	// CodeMAA: no attestation token was obtained for the node's evidence.
	CodeMAA = "AKV_MAA_FAILED"
)

// Code returns the code of the first [*attesterr.Error] in err's tree.
func Code(err error) string { return attesterr.Code(err) }

func newError(code string, cause error, format string, a ...any) *attesterr.Error {
	return attesterr.New("akv", code, cause, format, a...)
}
