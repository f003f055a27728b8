package akv

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// VerifyOptions say whose release answer is expected, and of what.
type VerifyOptions struct {
	// Roots are the trusted roots of the vault's signing certificate; nil
	// means the system's (Key Vault's certificates chain to public CAs).
	Roots *x509.CertPool
	// Host is the vault's host name ("myvault.vault.azure.net"), which the
	// signing certificate must be for.
	Host string
	// Now is the clock the certificates are checked at; nil means
	// time.Now.
	Now func() time.Time
	// KID is the key asked for, with its version
	// ("https://myvault.vault.azure.net/keys/name/version").
	KID string
	// Nonce and Enc are those of the request ("" Enc means
	// CKM_RSA_AES_KEY_WRAP, the vault's default). The answer's request
	// part must repeat the enc, and the nonce if it has one.
	Nonce, Enc string
}

// answerAlgorithms are the signature algorithms accepted of a release
// answer: Key Vault signs RS256 with its RSA certificate; the others are
// the same key's, accepted so that a vault that moves to them is not
// refused. Never "none", never an HMAC.
var answerAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256}

// Released is a verified release answer.
type Released struct {
	Payload ReleasePayload
	// Signer is the leaf certificate that signed the answer.
	Signer *x509.Certificate
	// SHA256 is the SHA-256 of the JWS, for the ledger.
	SHA256 [32]byte
}

// VerifyRelease verifies a release answer's JWS: RS256 (or RS384, RS512,
// PS256), signed by the leaf
// of its x5c chain, which verifies to opts.Roots for opts.Host; its payload
// releases the key version asked for, repeats the request's enc (and its
// nonce, if it repeats one), and carries a key_hsm. It does not unwrap the
// key ([UnwrapKeyHSM]).
func VerifyRelease(jws string, opts VerifyOptions) (*Released, error) {
	jws = strings.TrimSpace(jws)
	obj, err := jose.ParseSigned(jws, answerAlgorithms)
	if err != nil || len(obj.Signatures) != 1 {
		return nil, newError(CodeMalformed, nil, "the release answer is not a compact JWS of RS256 (or RS384, RS512, PS256)")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	chains, err := obj.Signatures[0].Protected.Certificates(x509.VerifyOptions{
		Roots: opts.Roots, DNSName: opts.Host, CurrentTime: now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil || len(chains) == 0 {
		return nil, newError(CodeSigner, err, "the release answer's x5c chain does not verify to a trusted root for %q", opts.Host)
	}
	leaf := chains[0][0]
	payload, err := obj.Verify(leaf.PublicKey)
	if err != nil {
		return nil, newError(CodeSignature, nil, "the release answer's signature does not verify under its x5c leaf")
	}
	r := &Released{Signer: leaf, SHA256: sha256.Sum256([]byte(jws))}
	if err := json.Unmarshal(payload, &r.Payload); err != nil {
		return nil, newError(CodeMalformed, nil, "the release answer's payload is not JSON of the vault's release format")
	}
	p := &r.Payload
	enc := opts.Enc
	if enc == "" {
		enc = EncRSAAESKeyWrap
	}
	// The released key is named with its version; the request's kid, if
	// the vault repeats it, is that key with or without the version. A
	// nonce the vault repeats must be the request's; one it leaves out
	// costs no freshness: the key is wrapped to this call's ephemeral
	// runtime key, which an older answer does not open.
	switch {
	case p.Response.Key.Key.KID != opts.KID ||
		(p.Request.KID != "" && p.Request.KID != opts.KID && !strings.HasPrefix(opts.KID, p.Request.KID+"/")):
		return nil, newError(CodeMismatch, nil, "the answer releases %q, the request asked %q", truncate(p.Response.Key.Key.KID), opts.KID)
	case p.Request.Nonce != "" && p.Request.Nonce != opts.Nonce:
		return nil, newError(CodeMismatch, nil, "the answer's nonce is not the request's")
	case p.Request.Enc != enc:
		return nil, newError(CodeMismatch, nil, "the answer is wrapped with %q, the request asked %q", truncate(p.Request.Enc), enc)
	case p.Response.Key.Key.KeyHSM == "":
		return nil, newError(CodeMalformed, nil, "the answer's key has no key_hsm")
	}
	return r, nil
}
