package uvm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// didX509 is the one did:x509 form we resolve (DID:x509 method, version 0,
// https://github.com/microsoft/did-x509/blob/main/specification.md):
//
//	did:x509:0:<sha256|sha384|sha512>:<base64url CA fingerprint>::eku:<OID>
type didX509 struct {
	hash        crypto.Hash
	fingerprint []byte
	eku         string // dotted OID
}

var oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}

func parseDID(s string) (*didX509, error) {
	rest, ok := strings.CutPrefix(s, "did:x509:0:")
	if !ok {
		return nil, errors.New("not a did:x509 version 0")
	}
	ca, policy, ok := strings.Cut(rest, "::")
	if !ok {
		return nil, errors.New("did:x509 without a policy")
	}
	alg, fp, ok := strings.Cut(ca, ":")
	if !ok {
		return nil, errors.New("did:x509 without a fingerprint")
	}
	d := &didX509{}
	switch alg {
	case "sha256":
		d.hash = crypto.SHA256
	case "sha384":
		d.hash = crypto.SHA384
	case "sha512":
		d.hash = crypto.SHA512
	default:
		return nil, fmt.Errorf("unsupported did:x509 fingerprint algorithm %q", alg)
	}
	var err error
	d.fingerprint, err = base64.RawURLEncoding.Strict().DecodeString(fp)
	if err != nil || len(d.fingerprint) != d.hash.Size() {
		return nil, fmt.Errorf("bad did:x509 %s fingerprint %q", alg, fp)
	}
	name, value, ok := strings.Cut(policy, ":")
	if !ok || name != "eku" {
		return nil, fmt.Errorf("unsupported did:x509 policy %q (only one eku policy is supported)", policy)
	}
	if !isOID(value) {
		return nil, fmt.Errorf("did:x509 eku %q is not an OID", value)
	}
	d.eku = value
	return d, nil
}

// isOID reports whether s is a dotted-decimal OID of at least two arcs
// without leading zeros.
func isOID(s string) bool {
	arcs := strings.Split(s, ".")
	if len(arcs) < 2 {
		return false
	}
	for _, a := range arcs {
		if a == "" || len(a) > 1 && a[0] == '0' {
			return false
		}
		for _, c := range a {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// resolveDID checks that iss names a non-leaf certificate of chain by its
// fingerprint and an extended key usage present in the leaf. chain must
// already be verified as a certification path.
func resolveDID(iss string, chain []*x509.Certificate) error {
	d, err := parseDID(iss)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDIDMismatch, err)
	}
	found := false
	for _, c := range chain[1:] {
		if bytes.Equal(fingerprint(d.hash, c.Raw), d.fingerprint) {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("%w: no CA certificate in x5chain has fingerprint %s", ErrDIDMismatch, base64.RawURLEncoding.EncodeToString(d.fingerprint))
	}
	ekus, err := leafEKUs(chain[0])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDIDMismatch, err)
	}
	for _, e := range ekus {
		if e.String() == d.eku {
			return nil
		}
	}
	return fmt.Errorf("%w: leaf lacks extended key usage %s", ErrDIDMismatch, d.eku)
}

func fingerprint(h crypto.Hash, der []byte) []byte {
	switch h {
	case crypto.SHA256:
		s := sha256.Sum256(der)
		return s[:]
	case crypto.SHA384:
		s := sha512.Sum384(der)
		return s[:]
	default:
		s := sha512.Sum512(der)
		return s[:]
	}
}

// leafEKUs returns every OID of the leaf's extended key usage extension, known
// to crypto/x509 or not (x509.Certificate splits them into ExtKeyUsage and
// UnknownExtKeyUsage).
func leafEKUs(leaf *x509.Certificate) ([]asn1.ObjectIdentifier, error) {
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidExtKeyUsage) {
			continue
		}
		var oids []asn1.ObjectIdentifier
		rest, err := asn1.Unmarshal(ext.Value, &oids)
		if err != nil || len(rest) != 0 {
			return nil, errors.New("bad extended key usage extension")
		}
		return oids, nil
	}
	return nil, errors.New("leaf has no extended key usage extension")
}
