package node

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"golang.org/x/mod/sumdb/note"
)

// Node certificates: node-to-node TLS authenticates attested node keys.
//
// A node's TLS key is attested with its node key (REPORT_DATA[32:64]). When
// the leader admits the node it issues an X.509 certificate for that key,
// signed by the service identity (the Ed25519 key of the log's checkpoints,
// a ledger secret that only admitted nodes hold), and records it, public,
// in the node.joined entry. A peer accepts a node-to-node connection only
// from a certificate that the service identity signed, that is within its
// validity, whose subject names a node the ledger trusts at that moment
// (the last node of its member, the member not removed), and whose key is
// the TLS key that node's evidence binds ([CheckPeer]).
//
// The service identity signs both checkpoints (note text: UTF-8 lines
// starting with the log's origin) and certificates (DER, starting with a
// SEQUENCE byte 0x30 followed by a length byte that is not valid UTF-8 at
// a line start): neither can be taken for the other.

// Codes of a refused peer certificate ([*attest.Error]).
const (
	// CodePeerCertInvalid: no certificate, or not one tkms issues.
	CodePeerCertInvalid = "NODE_CERT_INVALID"
	// CodePeerNotEndorsed: the certificate is not signed by the service
	// identity (another cluster, or self-signed).
	CodePeerNotEndorsed = "NODE_CERT_NOT_ENDORSED"
	// CodePeerExpired: the certificate is outside its validity.
	CodePeerExpired = "NODE_CERT_EXPIRED"
	// CodePeerNotTrusted: the certificate names a node the ledger does not
	// trust now: never admitted, replaced by a restart, or removed.
	CodePeerNotTrusted = "NODE_CERT_NODE_NOT_TRUSTED"
	// CodePeerKeyMismatch: the certificate's key is not the TLS key the
	// node's evidence binds.
	CodePeerKeyMismatch = "NODE_CERT_KEY_NOT_ATTESTED"
)

// CertValidity is how long a node certificate is valid. A node process
// that runs longer is restarted (and admitted again, with a new key)
// before its certificate expires; docs/operations.md says so.
const CertValidity = 365 * 24 * time.Hour

// certOrg is the organization of every node certificate's subject.
const certOrg = "tkms node"

// IssueCertificate issues the node certificate of node nodeID (member
// member) for its TLS key tlsKey (PKIX DER), signed by the service
// identity issuer of the log origin, valid from now for CertValidity.
func IssueCertificate(issuer ed25519.PrivateKey, origin, member, nodeID string, tlsKey []byte, now time.Time) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(tlsKey)
	if err != nil {
		return nil, fmt.Errorf("node: the TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	ipub := issuer.Public().(ed25519.PublicKey)
	skid := sha256.Sum256(ipub)
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: origin, Organization: []string{"tkms service identity"}}, PublicKey: ipub, SubjectKeyId: skid[:20]}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{certOrg}, OrganizationalUnit: []string{member}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(CertValidity), // an hour of clock skew among nodes; the key is fresh anyway
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, issuer)
}

// CertMember returns the member a node certificate names (the subject's
// organizational unit), "" if none.
func CertMember(c *x509.Certificate) string {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return ""
	}
	return c.Subject.OrganizationalUnit[0]
}

// CheckPeer checks the certificate a peer presented (DER) at now: signed by
// serviceKey, within its validity, naming a node id for which trustedKey
// returns the TLS key its evidence binds (an error: the ledger does not
// trust that node now), and holding that key. It returns the node id. Its
// errors are [*attest.Error] with the code of the failed check.
func CheckPeer(der []byte, serviceKey ed25519.PublicKey, now time.Time, trustedKey func(nodeID string) ([]byte, error)) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", &attest.Error{Code: CodePeerCertInvalid, Err: fmt.Errorf("the peer's certificate does not parse: %w", err)}
	}
	if len(serviceKey) != ed25519.PublicKeySize {
		return "", &attest.Error{Code: CodePeerNotEndorsed, Err: errors.New("this node does not know the service identity yet")}
	}
	issuer := &x509.Certificate{PublicKey: serviceKey, PublicKeyAlgorithm: x509.Ed25519}
	if c.SignatureAlgorithm != x509.PureEd25519 || issuer.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
		return "", &attest.Error{Code: CodePeerNotEndorsed, Err: fmt.Errorf("the peer's certificate (subject %q) is not signed by the service identity", c.Subject.CommonName)}
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return "", &attest.Error{Code: CodePeerExpired, Err: fmt.Errorf("the peer's certificate is valid from %s to %s, not at %s", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	id := c.Subject.CommonName
	if b, err := hex.DecodeString(id); err != nil || len(b) != sha256.Size || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != certOrg {
		return "", &attest.Error{Code: CodePeerCertInvalid, Err: fmt.Errorf("the peer's certificate names no node id (subject %q)", c.Subject.String())}
	}
	want, err := trustedKey(id)
	if err != nil {
		return "", &attest.Error{Code: CodePeerNotTrusted, Err: fmt.Errorf("node %s: %w", id, err)}
	}
	if !bytes.Equal(c.RawSubjectPublicKeyInfo, want) {
		return "", &attest.Error{Code: CodePeerKeyMismatch, Err: fmt.Errorf("the certificate of node %s holds a key other than the TLS key its evidence binds", id)}
	}
	return id, nil
}

// TLSCertificate returns the TLS certificate of this node: its TLS key
// with certificate der (a node certificate, or [Identity.SelfSigned]).
func (id *Identity) TLSCertificate(der []byte) (*tls.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || !pk.Equal(&id.tlsKey.PublicKey) {
		return nil, errors.New("node: the certificate is not for this node's TLS key")
	}
	return &tls.Certificate{Certificate: [][]byte{bytes.Clone(der)}, PrivateKey: id.tlsKey, Leaf: c}, nil
}

// SelfSigned returns a certificate of this node's TLS key signed by
// itself, which the node presents until the service identity endorses its
// key: no peer accepts it as a node certificate, but the leader admitting
// the node accepts its attested key (the node's vote may be needed to
// commit its own admission).
func (id *Identity) SelfSigned() ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: id.ID, Organization: []string{"tkms node (not endorsed)"}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(CertValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, &id.tlsKey.PublicKey, id.tlsKey)
}

// The service identity is the log's note key (golang.org/x/mod/sumdb/note):
// a verifier key "name+hash+base64(0x01 || Ed25519 public key)", a signer
// key "PRIVATE+KEY+name+hash+base64(0x01 || Ed25519 seed)".
const algEd25519 = 1

// ServiceKey returns the Ed25519 public key of a note verifier key (the
// log key GET /v1/service and /v1/log/key serve).
func ServiceKey(vkey string) (ed25519.PublicKey, error) {
	vkey = strings.TrimSpace(vkey)
	if _, err := note.NewVerifier(vkey); err != nil {
		return nil, fmt.Errorf("node: the service identity: %w", err)
	}
	f := strings.SplitN(vkey, "+", 3) // name+hash+key: base64 holds '+'
	if len(f) != 3 {
		return nil, errors.New("node: the service identity is not a note verifier key")
	}
	key, err := base64.StdEncoding.DecodeString(f[2])
	if err != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != algEd25519 {
		return nil, errors.New("node: the service identity is not an Ed25519 note key")
	}
	return ed25519.PublicKey(key[1:]), nil
}

// ServiceSigner returns the Ed25519 private key of a note signer key (the
// log's signing key, a ledger secret).
func ServiceSigner(skey string) (ed25519.PrivateKey, error) {
	if _, err := note.NewSigner(skey); err != nil {
		return nil, fmt.Errorf("node: the service identity's signing key: %w", err)
	}
	f := strings.SplitN(skey, "+", 5) // PRIVATE+KEY+name+hash+key
	if len(f) != 5 {
		return nil, errors.New("node: the service identity's signing key is not a note signer key")
	}
	key, err := base64.StdEncoding.DecodeString(f[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != algEd25519 {
		return nil, errors.New("node: the service identity's signing key is not an Ed25519 note key")
	}
	defer clear(key)
	return ed25519.NewKeyFromSeed(key[1:]), nil
}
