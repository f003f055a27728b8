// Package node is the attested identity of a tkms cluster node and the
// handoff of the ledger's secrets to it.
//
// Every process start makes a fresh node key pair (X25519, for HPKE, RFC
// 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM); the node id
// is the hex SHA-256 of the public key. The node's evidence, produced by
// the same attesters as a service's (client.Attester: ACI, raw SNP, the
// simulated TEE), binds the key: REPORT_DATA[0:32] = SHA-256 of the public
// key bytes. Each start also makes a TLS key pair (ECDSA P-256) for
// node-to-node TLS, bound by REPORT_DATA[32:64] = SHA-256 of its public key
// (PKIX DER); the service identity endorses it with a node certificate
// (cert.go). [Check] verifies evidence with the same internal/attest
// Verifier as releases, checks the binding and evaluates a node policy
// (the release-policy grammar of internal/policy over the same claims).
// [Seal] seals the ledger's secrets to an admitted node's key; only the
// holder of the private key, which never leaves the process, opens them
// ([Identity.Open]).
package node

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/policy"
)

// Error codes of a refused node, besides internal/attest's for evidence
// that does not verify. Refusals are [*attest.Error]; [attest.Code] finds
// the code.
const (
	// CodeKeyNotBound: the evidence's REPORT_DATA[0:32] is not the SHA-256
	// of the node key (evidence replayed from another node, or forged).
	CodeKeyNotBound = "NODE_KEY_NOT_BOUND"
	// CodePolicyUnset: no node policy is in force, so no node is admitted.
	CodePolicyUnset = "NODE_POLICY_UNSET"
	// CodePolicyDenied: the evidence's claims do not satisfy the node
	// policy; the message names the failing claims.
	CodePolicyDenied = "NODE_POLICY_DENIED"
	// CodeKeyInvalid: the node key is not an X25519 public key.
	CodeKeyInvalid = "NODE_KEY_INVALID"
	// CodeNotTrusted: the node satisfies the node policy, but the
	// constitution wants a trust_node proposal naming it first.
	CodeNotTrusted = "NODE_NOT_TRUSTED"
	// CodeTLSKeyNotBound: the evidence's REPORT_DATA[32:64] is not the
	// SHA-256 of the node's TLS key, or the TLS key is not a P-256 key.
	CodeTLSKeyNotBound = "NODE_TLS_KEY_NOT_BOUND"
)

// The HPKE suite of the handoff (the KEM is the node key's: DHKEM(X25519)).
var (
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// handoffInfo is the HPKE info of the secrets' handoff; the node id is
// appended, so a sealed blob opens only as the handoff to that node.
const handoffInfo = "tkms/node-secrets/v1\x00"

// Identity is this process's node identity.
type Identity struct {
	key *ecdh.PrivateKey
	// Public is the node key: the X25519 public key bytes (32).
	Public []byte
	// ID is the node id, hex SHA-256 of Public.
	ID string
	// Evidence is the attestation object whose REPORT_DATA binds Public.
	Evidence []byte
	// Simulated is true when Evidence comes from the simulated TEE.
	Simulated bool
	// TLSKey is the node's TLS public key (PKIX DER), fresh at each start
	// like the node key; REPORT_DATA[32:64] is its SHA-256.
	TLSKey []byte
	tlsKey *ecdsa.PrivateKey
}

// ID returns the node id of a node key: the hex SHA-256 of its bytes.
func ID(nodeKey []byte) string {
	h := sha256.Sum256(nodeKey)
	return hex.EncodeToString(h[:])
}

// New makes a fresh node key pair and TLS key pair and has a attest them:
// the evidence's REPORT_DATA[0:32] is the SHA-256 of the node key,
// REPORT_DATA[32:64] the SHA-256 of the TLS key.
//
// The TLS key is a second key, bound in the second half of REPORT_DATA,
// rather than folded into what node_key hashes: the node key is X25519
// (HPKE), which cannot sign a TLS handshake; keeping it alone in [0:32]
// keeps the node id, the handoff's HPKE info and every recorded
// node.joined entry as they were, and a verifier that knows nothing of
// TLS still checks the node key binding alone.
func New(ctx context.Context, a client.Attester) (*Identity, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tpub, err := x509.MarshalPKIXPublicKey(&tk.PublicKey)
	if err != nil {
		return nil, err
	}
	pub := k.PublicKey().Bytes()
	var rd [64]byte
	h := sha256.Sum256(pub)
	copy(rd[:32], h[:])
	th := sha256.Sum256(tpub)
	copy(rd[32:], th[:])
	ev, err := a.Attest(ctx, rd)
	if err != nil {
		return nil, fmt.Errorf("node: attesting the node key: %w", err)
	}
	return &Identity{key: k, Public: pub, ID: hex.EncodeToString(h[:]), Evidence: bytes.Clone(ev.Attestation), Simulated: ev.Simulated,
		TLSKey: tpub, tlsKey: tk}, nil
}

// Admitted is what [Check] learned of an admitted node: what the ledger
// records of it.
type Admitted struct {
	NodeID         string         `json:"node_id"`
	EvidenceType   string         `json:"evidence_type"`
	EvidenceSHA256 string         `json:"evidence_sha256"`
	Claims         map[string]any `json:"claims"`
	Simulated      bool           `json:"simulated,omitempty"`
	reportData     []byte
}

// CheckTLSKey checks that the evidence [Check] admitted binds tlsKey (PKIX
// DER of a P-256 public key) in REPORT_DATA[32:64]: the key the node's
// certificate may endorse.
func (a *Admitted) CheckTLSKey(tlsKey []byte) error {
	pk, err := x509.ParsePKIXPublicKey(tlsKey)
	if k, ok := pk.(*ecdsa.PublicKey); err != nil || !ok || k.Curve != elliptic.P256() {
		return &attest.Error{Code: CodeTLSKeyNotBound, Err: fmt.Errorf("the node's TLS key is not a P-256 public key in PKIX DER (%v)", err)}
	}
	want := sha256.Sum256(tlsKey)
	if len(a.reportData) < 64 || !bytes.Equal(a.reportData[32:64], want[:]) {
		return &attest.Error{Code: CodeTLSKeyNotBound, Err: fmt.Errorf("REPORT_DATA[32:64] is not the SHA-256 of the node's TLS key %x", want)}
	}
	return nil
}

// Check verifies a node's evidence with v, that it binds nodeKey, and that
// its claims satisfy pol. Its errors hold an [*attest.Error] with the code
// of the failed check; a policy denial names every failing claim.
func Check(ctx context.Context, v *attest.Verifier, pol policy.Policy, nodeKey, evidence []byte) (*Admitted, error) {
	if _, err := ecdh.X25519().NewPublicKey(nodeKey); err != nil {
		return nil, &attest.Error{Code: CodeKeyInvalid, Err: fmt.Errorf("the node key is not an X25519 public key: %w", err)}
	}
	if pol.Kind() == policy.KindUnset {
		return nil, &attest.Error{Code: CodePolicyUnset, Err: errors.New("no node policy is in force (set_node_policy, or the configuration's cluster.node_policy)")}
	}
	ev, err := v.Verify(ctx, evidence)
	if err != nil {
		return nil, fmt.Errorf("the node's evidence does not verify: %w", err) // an *attest.Error
	}
	want := sha256.Sum256(nodeKey)
	if len(ev.ReportData) < 32 || !bytes.Equal(ev.ReportData[:32], want[:]) {
		return nil, &attest.Error{Code: CodeKeyNotBound, Err: fmt.Errorf("REPORT_DATA[0:32] is %x, want SHA-256 of the node key %x", ev.ReportData[:min(32, len(ev.ReportData))], want)}
	}
	if err := policy.Evaluate(pol, ev.Claims); err != nil {
		code := CodePolicyDenied
		if errors.Is(err, policy.ErrUnset) {
			code = CodePolicyUnset
		}
		return nil, &attest.Error{Code: code, Err: fmt.Errorf("the node policy refuses the node: %w", err)}
	}
	h := sha256.Sum256(evidence)
	return &Admitted{
		NodeID: hex.EncodeToString(want[:]), EvidenceType: ev.Type,
		EvidenceSHA256: hex.EncodeToString(h[:]), Claims: ev.Claims, Simulated: ev.Simulated,
		reportData: bytes.Clone(ev.ReportData),
	}, nil
}

// Seal seals secret to the node whose key is nodeKey: only that node opens
// it, and only as its handoff.
func Seal(nodeKey, secret []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(nodeKey)
	if err != nil {
		return nil, &attest.Error{Code: CodeKeyInvalid, Err: err}
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		return nil, err
	}
	return hpke.Seal(hpk, kdf, aead, []byte(handoffInfo+ID(nodeKey)), secret)
}

// Open opens a secret [Seal] sealed to this node.
func (id *Identity) Open(sealed []byte) ([]byte, error) {
	hk, err := hpke.NewDHKEMPrivateKey(id.key)
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(hk, kdf, aead, []byte(handoffInfo+id.ID), sealed)
	if err != nil {
		return nil, fmt.Errorf("node: the handoff does not open with this node's key (sealed to another node?): %w", err)
	}
	return pt, nil
}
