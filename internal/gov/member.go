package gov

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/veraison/go-cose"
)

// A Member is one signer of the consortium (docs/governance.md "Members").
type Member struct {
	ID          string `json:"id"`                     // hex SHA-256 of the signing key's DER SubjectPublicKeyInfo
	Name        string `json:"name"`                   // a label, 1-64 printable characters
	SigningKey  string `json:"signing_key"`            // PEM: PUBLIC KEY or CERTIFICATE
	RecoveryKey string `json:"recovery_key,omitempty"` // PEM PUBLIC KEY, not used yet
	// EncryptionKey, if set, is the HPKE key the member's recovery share
	// is sealed to (docs/recovery.md).
	EncryptionKey *EncryptionKey `json:"encryption_key,omitempty"`
}

// MaxNameLen is the longest member name, in characters.
const MaxNameLen = 64

// NewMember checks a member's name and keys and computes its id. The
// signing key is an ECDSA P-256 or P-384 or an Ed25519 public key, as a PEM
// PUBLIC KEY or the public key of a PEM CERTIFICATE (whose validity period
// and issuer are not checked: the certificate is only a container). The PEM
// texts are kept re-encoded, without surrounding text.
func NewMember(name, signingKeyPEM, recoveryKeyPEM string) (Member, error) {
	if err := checkName(name); err != nil {
		return Member{}, err
	}
	block, pub, err := parseSigningKey([]byte(signingKeyPEM))
	if err != nil {
		return Member{}, fmt.Errorf("member %q: signing_key: %w", name, err)
	}
	id, err := memberID(pub)
	if err != nil {
		return Member{}, fmt.Errorf("member %q: signing_key: %w", name, err)
	}
	m := Member{ID: id, Name: name, SigningKey: string(pem.EncodeToMemory(block))}
	if recoveryKeyPEM != "" {
		rb, err := parseRecoveryKey([]byte(recoveryKeyPEM))
		if err != nil {
			return Member{}, fmt.Errorf("member %q: recovery_key: %w", name, err)
		}
		m.RecoveryKey = string(pem.EncodeToMemory(rb))
	}
	return m, nil
}

// Check re-validates m: its name, its keys, and that its id is that of its
// signing key.
func (m Member) Check() error {
	n, err := NewMember(m.Name, m.SigningKey, m.RecoveryKey)
	if err != nil {
		return err
	}
	if m.EncryptionKey != nil {
		if err := m.EncryptionKey.Check(); err != nil {
			return fmt.Errorf("member %q: %w", m.Name, err)
		}
	}
	if m.ID != n.ID {
		return fmt.Errorf("member %q: id %q is not the id of its signing key (%s)", m.Name, m.ID, n.ID)
	}
	return nil
}

// PublicKey returns m's signing key: an *ecdsa.PublicKey or an
// ed25519.PublicKey.
func (m Member) PublicKey() (crypto.PublicKey, error) {
	_, pub, err := parseSigningKey([]byte(m.SigningKey))
	if err != nil {
		return nil, fmt.Errorf("member %q: signing_key: %w", m.Name, err)
	}
	return pub, nil
}

// ParseMembersFile parses the members file of `tkms init --members`:
// {"members":[{"name","signing_key","recovery_key"}, ...]}. An "id", when
// present, must be the id of the signing key. Names and ids are unique and
// at least one member is listed.
func ParseMembersFile(b []byte) ([]Member, error) {
	var f struct {
		Members []Member `json:"members"`
	}
	if err := decodeStrict(b, &f); err != nil {
		return nil, fmt.Errorf("members file: %w", err)
	}
	if len(f.Members) == 0 {
		return nil, errors.New("members file: no members")
	}
	out := make([]Member, 0, len(f.Members))
	names, ids := map[string]bool{}, map[string]bool{}
	for i, in := range f.Members {
		m, err := memberFromObject(in)
		if err != nil {
			return nil, fmt.Errorf("members file: members[%d]: %w", i, err)
		}
		if names[m.Name] {
			return nil, fmt.Errorf("members file: members[%d]: name %q listed twice", i, m.Name)
		}
		if ids[m.ID] {
			return nil, fmt.Errorf("members file: members[%d] (%q): signing key already listed (id %s)", i, m.Name, m.ID)
		}
		names[m.Name], ids[m.ID] = true, true
		out = append(out, m)
	}
	return out, nil
}

// memberFromObject builds a member from a members file entry or add_member
// arguments, whose id is optional but checked when present.
func memberFromObject(in Member) (Member, error) {
	m, err := NewMember(in.Name, in.SigningKey, in.RecoveryKey)
	if err != nil {
		return Member{}, err
	}
	if in.EncryptionKey != nil {
		if err := in.EncryptionKey.Check(); err != nil {
			return Member{}, fmt.Errorf("member %q: %w", in.Name, err)
		}
		m.EncryptionKey = in.EncryptionKey
	}
	if in.ID != "" && in.ID != m.ID {
		return Member{}, fmt.Errorf("member %q: id %q is not the id of its signing key (%s)", m.Name, in.ID, m.ID)
	}
	return m, nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("member name is empty")
	}
	if utf8.RuneCountInString(name) > MaxNameLen || !printable(name) {
		return fmt.Errorf("member name %q: want 1-%d printable characters", name, MaxNameLen)
	}
	return nil
}

// singlePEM decodes the one PEM block of b; only whitespace may surround it.
func singlePEM(b []byte) (*pem.Block, error) {
	b = bytes.TrimSpace(b)
	if !bytes.HasPrefix(b, []byte("-----BEGIN ")) {
		return nil, errors.New("no PEM block, or text before it")
	}
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block, or trailing data")
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM headers are not allowed")
	}
	return &pem.Block{Type: block.Type, Bytes: block.Bytes}, nil
}

// parseSigningKey parses a PEM PUBLIC KEY or CERTIFICATE holding an
// acceptable signing key.
func parseSigningKey(b []byte) (*pem.Block, crypto.PublicKey, error) {
	block, err := singlePEM(b)
	if err != nil {
		return nil, nil, err
	}
	var pub crypto.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			pub = cert.PublicKey
		}
	default:
		return nil, nil, fmt.Errorf("PEM type %q: want PUBLIC KEY or CERTIFICATE", block.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	if _, err := algorithmFor(pub); err != nil {
		return nil, nil, err
	}
	return block, pub, nil
}

// parseRecoveryKey parses a PEM PUBLIC KEY of any type x509 knows.
func parseRecoveryKey(b []byte) (*pem.Block, error) {
	block, err := singlePEM(b)
	if err != nil {
		return nil, err
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM type %q: want PUBLIC KEY", block.Type)
	}
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return nil, err
	}
	return block, nil
}

// algorithmFor returns the one COSE algorithm a member's key signs with.
func algorithmFor(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return cose.AlgorithmES256, nil
		case elliptic.P384():
			return cose.AlgorithmES384, nil
		}
		return 0, fmt.Errorf("ECDSA curve %s: want P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return cose.AlgorithmEdDSA, nil
	}
	return 0, fmt.Errorf("key type %T: want ECDSA P-256, P-384 or Ed25519", pub)
}

// memberID is the lowercase hex SHA-256 of pub's DER SubjectPublicKeyInfo,
// re-encoded so that a key has one id whether given as a public key or in a
// certificate.
func memberID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
