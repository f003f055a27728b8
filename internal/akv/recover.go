package akv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/policy"
)

// Member is the automatic recovery member as governance records it
// (set_auto_recovery, docs/auto-recovery.md): which vault key holds the
// recovery key, which attestation authority its release policy trusts,
// the key's public part, and the SHA-256 of its release policy.
type Member struct {
	// VaultURL is the vault's (or Managed HSM's) base URL,
	// "https://myvault.vault.azure.net".
	VaultURL string `json:"vault_url"`
	// KeyName and KeyVersion name the key; the version is required, so
	// that a new version (with another policy) needs a new proposal.
	KeyName    string `json:"key_name"`
	KeyVersion string `json:"key_version"`
	// MAAInstance is the attestation authority the release policy names
	// ("https://sharedeus2.eus2.attest.azure.net"): the recovering node
	// attests there.
	MAAInstance string `json:"maa_instance"`
	// PublicKey is the key's public part as GET key answers it (kty, n, e,
	// kid with the version): the recovery key is sealed to it.
	PublicKey JWK `json:"public_key"`
	// ReleasePolicySHA256 is the hex SHA-256 of the key's release policy
	// in tkms's canonical form (policy.Hash), so that the consortium
	// approves one exact policy and a release answer under another is
	// refused.
	ReleasePolicySHA256 string `json:"release_policy_sha256"`
}

// KID returns the key id of m: VaultURL/keys/KeyName/KeyVersion.
func (m Member) KID() string {
	return (&Client{VaultURL: m.VaultURL}).KeyID(m.KeyName, m.KeyVersion)
}

// PolicySHA256 returns the hex release policy hash of a release policy
// document, as Member.ReleasePolicySHA256 records it.
func PolicySHA256(doc []byte) (string, error) {
	p, err := policy.Parse(doc)
	if err != nil {
		return "", err
	}
	if p.Kind() != policy.KindSKR {
		return "", errors.New("akv: the release policy is not of the SKR grammar")
	}
	h := policy.Hash(p)
	return hex.EncodeToString(h[:]), nil
}

// CheckKey checks that a vault's key bundle (GET key) is the member's key:
// same kid, same public part, exportable, and a release policy whose hash
// is the member's. Proposers run it before proposing, and nodes before
// sealing a recovery key to it.
func (m Member) CheckKey(kb *KeyBundle) error {
	if kb.Key.KID != m.KID() || m.PublicKey.KID != m.KID() {
		return newError(CodeMismatch, nil, "the vault key is %q, the member names %q", truncate(kb.Key.KID), m.KID())
	}
	if kb.Key.N != m.PublicKey.N || kb.Key.E != m.PublicKey.E {
		return newError(CodeMismatch, nil, "the vault key's public part is not the member's")
	}
	if !kb.Attributes.Exportable {
		return newError(CodeMismatch, nil, "the vault key is not exportable: the vault will never release it")
	}
	if kb.ReleasePolicy == nil {
		return newError(CodeMismatch, nil, "the vault key has no release policy")
	}
	doc, err := kb.ReleasePolicy.Document()
	if err != nil {
		return newError(CodeMalformed, nil, "the vault key's release policy data is not base64url")
	}
	h, err := PolicySHA256(doc)
	if err != nil {
		return newError(CodeMalformed, err, "the vault key's release policy")
	}
	if h != m.ReleasePolicySHA256 {
		return newError(CodeMismatch, nil, "the vault key's release policy hashes to %s, the member approved %s", h, m.ReleasePolicySHA256)
	}
	return nil
}

// RecoverOptions are what a recovering node needs besides the member.
type RecoverOptions struct {
	// Attester is the node's TEE; its evidence must be an ACI attestation
	// object (client.EvidenceACI), which MAA's SEV-SNP API takes.
	Attester client.Attester
	// Token is the vault's bearer token source (the node's managed
	// identity).
	Token TokenSource
	// MAAURL is where to attest; "" means the member's MAAInstance. Tests
	// and tkms dev point it at the simulated instance's loopback address.
	MAAURL string
	// Roots and Now verify the vault's answer (VerifyOptions).
	Roots *x509.CertPool
	Now   func() time.Time
	// Enc is the key export algorithm; "" means CKM_RSA_AES_KEY_WRAP.
	Enc        string
	HTTPClient *http.Client
}

// Recovery is what an automatic recovery records in the ledger: public
// facts only (hashes of the evidence, token and answer, who signed the
// answer), enough for an auditor to see which vault key released the
// recovery key, under which approved policy, to which attested node.
type Recovery struct {
	// KID is the released vault key, with its version.
	KID string `json:"kid"`
	// MAAInstance is the authority that attested the node.
	MAAInstance string `json:"maa_instance"`
	// ReleasePolicySHA256 is the policy the answer carried (the member's).
	ReleasePolicySHA256 string `json:"release_policy_sha256"`
	// EvidenceSHA256 is the SHA-256 of the node's attestation object;
	// TokenSHA256 that of the MAA token; ReleaseSHA256 that of the vault's
	// JWS answer.
	EvidenceSHA256 string `json:"evidence_sha256"`
	TokenSHA256    string `json:"maa_token_sha256"`
	ReleaseSHA256  string `json:"release_sha256"`
	// Signer is the subject of the certificate that signed the answer,
	// SignerSHA256 the SHA-256 of its DER.
	Signer       string `json:"release_signer"`
	SignerSHA256 string `json:"release_signer_sha256"`
	// Enc is the key export algorithm used.
	Enc string `json:"enc"`
}

// Recover has the automatic member release the recovery key sealed in
// sealed ([Seal]): it makes an ephemeral RSA runtime key, has the node's
// TEE attest it (REPORT_DATA[0:32] = SHA-256 of the runtime data
// {"keys":[JWK]}), obtains an MAA token for that evidence, asks the vault
// to release the member's key version, verifies the answer and that it
// releases the member's key under the member's policy, unwraps the key and
// opens sealed. The runtime key and the released key exist only in this
// call's memory.
func Recover(ctx context.Context, m Member, sealed string, o RecoverOptions) ([]byte, *Recovery, error) {
	if kid, err := SealedKID(sealed); err != nil {
		return nil, nil, err
	} else if kid != m.KID() {
		return nil, nil, newError(CodeSealed, nil, "the recovery key is sealed to %q, the member's key is %q", truncate(kid), m.KID())
	}
	u, err := url.Parse(m.VaultURL)
	if err != nil || u.Hostname() == "" {
		return nil, nil, newError(CodeMalformed, nil, "the member's vault URL %q has no host", truncate(m.VaultURL))
	}
	enc := o.Enc
	if enc == "" {
		enc = EncRSAAESKeyWrap
	}

	runtimeKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, nil, err
	}
	kidBytes := make([]byte, 8)
	_, _ = rand.Read(kidBytes)
	runtimeJWK := jose.JSONWebKey{Key: &runtimeKey.PublicKey, KeyID: "tkms-recovery-" + hex.EncodeToString(kidBytes), Use: "enc"}
	jb, err := runtimeJWK.MarshalJSON()
	if err != nil {
		return nil, nil, err
	}
	var jwkObj map[string]any
	_ = json.Unmarshal(jb, &jwkObj)
	jwkObj["key_ops"] = []string{"encrypt"}
	runtimeJSON, _ := json.Marshal(map[string]any{"keys": []any{jwkObj}})
	var rd [64]byte
	h := sha256.Sum256(runtimeJSON)
	copy(rd[:], h[:])
	ev, err := o.Attester.Attest(ctx, rd)
	if err != nil {
		return nil, nil, newError(CodeMAA, err, "attesting the runtime key")
	}
	snpEv, err := maa.SNPEvidenceFromACI(ev.Attestation)
	if err != nil {
		return nil, nil, newError(CodeMAA, err, "the node's evidence is not for MAA's SEV-SNP API")
	}
	maaURL := o.MAAURL
	if maaURL == "" {
		maaURL = m.MAAInstance
	}
	token, err := maa.AttestSNP(ctx, o.HTTPClient, maaURL, snpEv, runtimeJSON)
	if err != nil {
		return nil, nil, newError(CodeMAA, err, "obtaining the attestation token")
	}

	nonceBytes := make([]byte, 16)
	_, _ = rand.Read(nonceBytes)
	nonce := hex.EncodeToString(nonceBytes)
	c := &Client{VaultURL: m.VaultURL, Token: o.Token, HTTPClient: o.HTTPClient}
	jws, err := c.Release(ctx, m.KeyName, m.KeyVersion, ReleaseRequest{Target: token, Nonce: nonce, Enc: enc})
	if err != nil {
		return nil, nil, err
	}
	rel, err := VerifyRelease(jws, VerifyOptions{Roots: o.Roots, Host: u.Hostname(), Now: o.Now, KID: m.KID(), Nonce: nonce, Enc: enc})
	if err != nil {
		return nil, nil, err
	}
	kb := rel.Payload.Response.Key
	if err := m.CheckKey(&kb); err != nil {
		return nil, nil, err
	}
	der, err := UnwrapKeyHSM(kb.Key.KeyHSM, enc, runtimeKey)
	if err != nil {
		return nil, nil, err
	}
	if err := checkPrivate(der, m.PublicKey); err != nil {
		return nil, nil, err
	}
	secret, err := Open(der, sealed)
	if err != nil {
		return nil, nil, err
	}
	evh := sha256.Sum256(ev.Attestation)
	toh := sha256.Sum256([]byte(token))
	sh := sha256.Sum256(rel.Signer.Raw)
	return secret, &Recovery{
		KID: m.KID(), MAAInstance: m.MAAInstance, ReleasePolicySHA256: m.ReleasePolicySHA256,
		EvidenceSHA256: hex.EncodeToString(evh[:]), TokenSHA256: hex.EncodeToString(toh[:]),
		ReleaseSHA256: hex.EncodeToString(rel.SHA256[:]), Signer: rel.Signer.Subject.String(),
		SignerSHA256: hex.EncodeToString(sh[:]), Enc: enc,
	}, nil
}

// checkPrivate checks that the released PKCS #8 key is the private part of
// the member's public key.
func checkPrivate(der []byte, pub JWK) error {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return newError(CodeMalformed, nil, "the released key is not a PKCS #8 private key")
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return newError(CodeMalformed, nil, "the released key is a %T, want RSA", k)
	}
	want, err := pub.PublicKey()
	if err != nil {
		return err
	}
	wk, _ := want.Key.(*rsa.PublicKey)
	if wk == nil || !priv.PublicKey.Equal(wk) {
		return newError(CodeMismatch, nil, "the released key is not the member's key")
	}
	return nil
}
