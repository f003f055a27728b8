package simsnp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/tkms-dev/tkms/internal/devfile"
)

// ChainFile is the name of the file, inside the directory given to
// [LoadOrCreate], that holds the simulated chain: for the AMD ARK, ASK and
// VCEK and the UVM root, CA and leaf in that order, the certificate and then
// the PKCS #8 private key as PEM blocks, each after a line naming it
// (openssl reads the first, the ARK). It is created with mode 0600.
const ChainFile = "simsnp-chain.pem"

// defaultTCB is the VCEK's TCB: bootloader 3, TEE 0, SNP 8, microcode 0x73,
// the REPORTED_TCB of the shared ACI sample (raw report order
// 0300000000000873).
var defaultTCB = kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 0x73}

// Validity periods, as AMD's KDS issues them (ARK and ASK 25 years, VCEK 7).
// The UVM chain gets long periods too, so that a persisted development chain
// does not expire under its users.
const (
	amdRootYears = 25
	vcekYears    = 7
	uvmRootYears = 25
	uvmCAYears   = 15
	uvmLeafYears = 10
)

// UVMEKU is the extended key usage of the simulated UVM endorsement leaf, the
// one the ACI did:x509 names (docs/spec/attestation.md, step 6).
const UVMEKU = "1.3.6.1.4.1.311.76.59.1.2"

var uvmEKU = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 76, 59, 1, 2}

// Key and certificate roles in [ChainFile].
const (
	roleARK     = "amd-ark"
	roleASK     = "amd-ask"
	roleVCEK    = "amd-vcek"
	roleUVMRoot = "uvm-root"
	roleUVMCA   = "uvm-ca"
	roleUVMLeaf = "uvm-leaf"
)

var roles = []string{roleARK, roleASK, roleVCEK, roleUVMRoot, roleUVMCA, roleUVMLeaf}

// LoadOrCreate returns the simulated chain kept in dir, creating dir (mode
// 0700) and the chain file [ChainFile] (mode 0600) on first use, so that every
// restart of a development server presents the same roots. A chain file that
// exists but cannot be read or is inconsistent is an error, never replaced.
// When two processes create the chain at once, both end up with the one that
// reached the disk first.
func LoadOrCreate(dir string) (*Chain, error) {
	var c *Chain
	b, created, err := devfile.LoadOrCreate(dir, ChainFile, func() ([]byte, error) {
		var err error
		if c, err = newChain(time.Now()); err != nil {
			return nil, err
		}
		return c.marshal()
	})
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	if created {
		return c, nil
	}
	return parseChainFile(filepath.Join(dir, ChainFile), b)
}

func parseChainFile(path string, b []byte) (*Chain, error) {
	c, err := parseChain(b)
	if err != nil {
		return nil, fmt.Errorf("simsnp: %s: %w (remove it to start a new simulated chain)", path, err)
	}
	return c, nil
}

// newChain makes a new simulated chain valid from an hour before now.
func newChain(now time.Time) (*Chain, error) {
	c := new(Chain)
	var err error
	if c.arkKey, err = rsa.GenerateKey(rand.Reader, 4096); err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	if c.askKey, err = rsa.GenerateKey(rand.Reader, 4096); err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	if c.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	for _, k := range []**rsa.PrivateKey{&c.uvmRootKey, &c.uvmCAKey, &c.uvmLeafKey} {
		if *k, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
			return nil, fmt.Errorf("simsnp: %w", err)
		}
	}
	rand.Read(c.chipID[:])
	tcb, err := kds.ComposeTCBParts(defaultTCB)
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	c.tcb = uint64(tcb)

	notBefore := now.Add(-time.Hour).Truncate(time.Second).UTC()
	arkName := amdName("ARK-" + ProductLine)
	askName := amdName("SEV-" + ProductLine)
	crl := kds.CrlLinkByRole(ProductLine, "ASK")

	// The shapes follow AMD's KDS certificates (KDS spec 57230) and the checks
	// of go-sev-guest's verify package: RSA-PSS SHA-384 signatures, exact
	// AMD names, one CRL distribution point on ARK and ASK, ASK path length 0,
	// and no VCEK extensions but AMD's (plus the authority key id).
	ark := &x509.Certificate{
		Subject:               arkName,
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(amdRootYears, 0, 0),
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{crl},
	}
	if c.ark, err = issue(ark, ark, &c.arkKey.PublicKey, c.arkKey); err != nil {
		return nil, err
	}
	ask := &x509.Certificate{
		Subject:               askName,
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(amdRootYears, 0, 0),
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		CRLDistributionPoints: []string{crl},
	}
	if c.ask, err = issue(ask, c.ark, &c.askKey.PublicKey, c.arkKey); err != nil {
		return nil, err
	}
	vcek := &x509.Certificate{
		SerialNumber:       big.NewInt(0), // as AMD's
		Subject:            amdName("SEV-VCEK"),
		NotBefore:          notBefore,
		NotAfter:           notBefore.AddDate(vcekYears, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    vcekExtensions(defaultTCB, c.chipID[:]),
	}
	if c.vcek, err = issue(vcek, c.ask, &c.vcekKey.PublicKey, c.askKey); err != nil {
		return nil, err
	}

	org := []string{"SIMULATED - tkms development - NOT MICROSOFT"}
	root := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "SIMULATED Supply Chain RSA Root CA - NOT MICROSOFT", Organization: org},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(uvmRootYears, 0, 0),
		SignatureAlgorithm:    x509.SHA384WithRSA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if c.uvmRoot, err = issue(root, root, &c.uvmRootKey.PublicKey, c.uvmRootKey); err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "SIMULATED SCD Products RSA CA - NOT MICROSOFT", Organization: org},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(uvmCAYears, 0, 0),
		SignatureAlgorithm:    x509.SHA384WithRSA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if c.uvmCA, err = issue(ca, c.uvmRoot, &c.uvmCAKey.PublicKey, c.uvmRootKey); err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		Subject:            pkix.Name{CommonName: "SIMULATED ContainerPlat - NOT MICROSOFT", Organization: org},
		NotBefore:          notBefore,
		NotAfter:           notBefore.AddDate(uvmLeafYears, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSA,
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{uvmEKU},
	}
	if c.uvmLeaf, err = issue(leaf, c.uvmCA, &c.uvmLeafKey.PublicKey, c.uvmCAKey); err != nil {
		return nil, err
	}
	return c, nil
}

func issue(template, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("simsnp: issuing %q: %w", template.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	return cert, nil
}

// amdName is an AMD KDS subject in AMD's attribute order, with the
// simulation marker as street address. go-sev-guest's verifier requires
// exactly one OU, C, L, ST and O with AMD's values and checks the CN, so the
// marker cannot go there.
func amdName(cn string) pkix.Name {
	attr := func(oid asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	return pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		attr(asn1.ObjectIdentifier{2, 5, 4, 11}, "Engineering"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 6}, "US"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 7}, "Santa Clara"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 8}, "CA"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 10}, "Advanced Micro Devices"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 9}, simulatedMarker),
		attr(asn1.ObjectIdentifier{2, 5, 4, 3}, cn),
	}}
}

// vcekExtensions are AMD's VCEK extensions (AMD KDS specification 57230) in the
// order AMD's KDS writes them: struct version, product name, the SPLs
// (bootloader, TEE, reserved 4-7, SNP, microcode) and the HWID as 64 raw
// bytes.
func vcekExtensions(tcb kds.TCBParts, hwid []byte) []pkix.Extension {
	integer := func(v uint8) []byte {
		b, _ := asn1.Marshal(int(v)) // cannot fail
		return b
	}
	name, _ := asn1.MarshalWithParams(ProductName, "ia5") // cannot fail
	return []pkix.Extension{
		{Id: kds.OidStructVersion, Value: integer(0)},
		{Id: kds.OidProductName1, Value: name},
		{Id: kds.OidBlSpl, Value: integer(tcb.BlSpl)},
		{Id: kds.OidTeeSpl, Value: integer(tcb.TeeSpl)},
		{Id: kds.OidSpl4, Value: integer(tcb.Spl4)},
		{Id: kds.OidSpl5, Value: integer(tcb.Spl5)},
		{Id: kds.OidSpl6, Value: integer(tcb.Spl6)},
		{Id: kds.OidSpl7, Value: integer(tcb.Spl7)},
		{Id: kds.OidSnpSpl, Value: integer(tcb.SnpSpl)},
		{Id: kds.OidUcodeSpl, Value: integer(tcb.UcodeSpl)},
		{Id: kds.OidHwid, Value: bytes.Clone(hwid)},
	}
}

// marshal writes the chain file (see [ChainFile]).
func (c *Chain) marshal() ([]byte, error) {
	var buf bytes.Buffer
	for _, role := range roles {
		cert, key := c.pair(role)
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("simsnp: %w", err)
		}
		fmt.Fprintf(&buf, "SIMULATED %s certificate (%s)\n", role, cert.Subject.CommonName)
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
		fmt.Fprintf(&buf, "SIMULATED %s private key\n", role)
		pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	return buf.Bytes(), nil
}

func (c *Chain) pair(role string) (*x509.Certificate, crypto.Signer) {
	switch role {
	case roleARK:
		return c.ark, c.arkKey
	case roleASK:
		return c.ask, c.askKey
	case roleVCEK:
		return c.vcek, c.vcekKey
	case roleUVMRoot:
		return c.uvmRoot, c.uvmRootKey
	case roleUVMCA:
		return c.uvmCA, c.uvmCAKey
	case roleUVMLeaf:
		return c.uvmLeaf, c.uvmLeafKey
	}
	panic("simsnp: unknown role " + role)
}

// parseChain reads a chain file and checks that it is complete and
// consistent: every key matches its certificate and every certificate is
// signed by its issuer's.
func parseChain(b []byte) (*Chain, error) {
	certs := make(map[string]*x509.Certificate)
	keys := make(map[string]crypto.Signer)
	for _, role := range roles {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("missing %s certificate", role)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s certificate: %w", role, err)
		}
		if blk, b = pem.Decode(b); blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("missing %s private key", role)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s private key: %w", role, err)
		}
		key, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s private key: unsupported type %T", role, k)
		}
		pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(cert.PublicKey) {
			return nil, fmt.Errorf("%s private key does not match its certificate", role)
		}
		certs[role], keys[role] = cert, key
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("trailing data after the last private key")
	}

	c := new(Chain)
	var ok [6]bool
	c.ark, c.ask, c.vcek = certs[roleARK], certs[roleASK], certs[roleVCEK]
	c.uvmRoot, c.uvmCA, c.uvmLeaf = certs[roleUVMRoot], certs[roleUVMCA], certs[roleUVMLeaf]
	c.arkKey, ok[0] = keys[roleARK].(*rsa.PrivateKey)
	c.askKey, ok[1] = keys[roleASK].(*rsa.PrivateKey)
	c.vcekKey, ok[2] = keys[roleVCEK].(*ecdsa.PrivateKey)
	c.uvmRootKey, ok[3] = keys[roleUVMRoot].(*rsa.PrivateKey)
	c.uvmCAKey, ok[4] = keys[roleUVMCA].(*rsa.PrivateKey)
	c.uvmLeafKey, ok[5] = keys[roleUVMLeaf].(*rsa.PrivateKey)
	for i, good := range ok {
		if !good {
			return nil, fmt.Errorf("%s private key has the wrong type", roles[i])
		}
	}
	if c.vcekKey.Curve != elliptic.P384() {
		return nil, errors.New("VCEK key is not on P-384")
	}

	for _, link := range []struct {
		child, parent *x509.Certificate
		name          string
	}{
		{c.ark, c.ark, roleARK},
		{c.ask, c.ark, roleASK},
		{c.vcek, c.ask, roleVCEK},
		{c.uvmRoot, c.uvmRoot, roleUVMRoot},
		{c.uvmCA, c.uvmRoot, roleUVMCA},
		{c.uvmLeaf, c.uvmCA, roleUVMLeaf},
	} {
		if err := link.child.CheckSignatureFrom(link.parent); err != nil {
			return nil, fmt.Errorf("%s certificate not signed by its issuer: %w", link.name, err)
		}
	}
	exts, err := kds.VcekCertificateExtensions(c.vcek)
	if err != nil {
		return nil, fmt.Errorf("VCEK extensions: %w", err)
	}
	c.tcb = uint64(exts.TCBVersion)
	copy(c.chipID[:], exts.HWID)
	return c, nil
}
