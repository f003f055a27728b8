// Package simtdx is a SIMULATED Intel TDX TEE for development and tests.
//
// IT IS NOT A TEE. IT PROTECTS NOTHING. Whoever can read the chain file (or
// run this code) can produce TDX quotes for any measurement and report data
// they like. A KMS that trusts its root releases keys to anybody.
//
// What it does: it keeps a fake Intel SGX PCK certificate chain (a root, a
// PCK Platform CA and a PCK certificate with Intel's SGX extensions) and a
// quoting enclave's attestation key, and signs TDX quotes v4 with them
// exactly as Intel's quoting enclave lays them out, so that
// internal/attest/tdx runs the same code path as for real hardware once it
// has been given the simulated root. tkms trusts that root only when the
// operator starts it with an explicit insecure flag (tkms dev).
//
// The certificates' common names must be Intel's exact strings (go-tdx-guest
// checks them); every subject's organisation says
// "SIMULATED - NOT INTEL - NOT A TEE".
package simtdx

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/tkms-dev/tkms/internal/devfile"
)

// ChainFile is the name of the file, inside the directory given to
// [LoadOrCreate], holding the simulated chain: the root, PCK CA and PCK
// certificates, each followed by its PKCS #8 private key, then the
// quoting enclave's attestation key, as PEM blocks. Mode 0600.
const ChainFile = "simtdx-chain.pem"

// DefaultMRTD is the MRTD of simulated quotes when none is given: 48
// recognisable bytes, which `tkms dev`'s default release policy names.
const DefaultMRTD = "SIMULATED TDX MRTD - NOT A TEE - tkms dev ......"

// FMSPC is the simulated platform's FMSPC.
const FMSPC = "00000000face"

const marker = "SIMULATED - NOT INTEL - NOT A TEE"

// Chain is a simulated TDX platform. It is immutable and safe for
// concurrent use.
type Chain struct {
	root, ca, pck          *x509.Certificate
	rootKey, caKey, pckKey *ecdsa.PrivateKey
	attKey                 *ecdsa.PrivateKey // the quoting enclave's attestation key
}

// Root returns the simulated root certificate, to trust (tdx.Options.Roots).
func (c *Chain) Root() *x509.Certificate { return c.root }

// LoadOrCreate returns the simulated chain kept in dir, creating it on
// first use (see [ChainFile]). A chain file that cannot be read is an
// error, never replaced.
func LoadOrCreate(dir string) (*Chain, error) {
	var c *Chain
	b, created, err := devfile.LoadOrCreate(dir, ChainFile, func() ([]byte, error) {
		var err error
		if c, err = New(time.Now()); err != nil {
			return nil, err
		}
		return c.Marshal(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	if created {
		return c, nil
	}
	if c, err = Parse(b); err != nil {
		return nil, fmt.Errorf("simtdx: %s: %w (remove it to start a new simulated chain)", filepath.Join(dir, ChainFile), err)
	}
	return c, nil
}

// New makes a new simulated chain, valid from an hour before now for ten
// years.
func New(now time.Time) (*Chain, error) {
	c := new(Chain)
	for _, k := range []**ecdsa.PrivateKey{&c.rootKey, &c.caKey, &c.pckKey, &c.attKey} {
		var err error
		if *k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("simtdx: %w", err)
		}
	}
	nb := now.Add(-time.Hour).Truncate(time.Second).UTC()
	na := nb.AddDate(10, 0, 0)
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{marker}, Country: []string{"US"}}
	}
	var err error
	root := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: name("Intel SGX Root CA"), NotBefore: nb, NotAfter: na,
		SignatureAlgorithm: x509.ECDSAWithSHA256, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	if c.root, err = issue(root, root, c.rootKey, c.rootKey); err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: name("Intel SGX PCK Platform CA"), NotBefore: nb, NotAfter: na,
		SignatureAlgorithm: x509.ECDSAWithSHA256, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	if c.ca, err = issue(ca, c.root, c.caKey, c.rootKey); err != nil {
		return nil, err
	}
	// Six extensions, as go-tdx-guest's pcs package insists: authority and
	// subject key ids, CRL distribution point, key usage, basic
	// constraints and the SGX extension.
	pck := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: name("Intel SGX PCK Certificate"), NotBefore: nb, NotAfter: na,
		SignatureAlgorithm: x509.ECDSAWithSHA256, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true, SubjectKeyId: []byte("simtdx-pck-key"),
		CRLDistributionPoints: []string{"https://simulated.invalid/sgx/certification/v4/pckcrl?ca=platform"},
		ExtraExtensions:       []pkix.Extension{sgxExtension()},
	}
	if c.pck, err = issue(pck, c.ca, c.pckKey, c.caKey); err != nil {
		return nil, err
	}
	return c, nil
}

func issue(template, parent *x509.Certificate, key *ecdsa.PrivateKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("simtdx: issuing %q: %w", template.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// sgxExtension is Intel's SGX extension (1.2.840.113741.1.13.1) with the
// PPID, the TCB (16 components, PCESVN, CPUSVN), PCE-ID and FMSPC.
func sgxExtension() pkix.Extension {
	type attr struct {
		ID    asn1.ObjectIdentifier
		Value any
	}
	sgx := asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oid := func(a ...int) asn1.ObjectIdentifier { return append(append(asn1.ObjectIdentifier{}, sgx...), a...) }
	var tcb []attr
	for i := 1; i <= 16; i++ {
		tcb = append(tcb, attr{oid(2, i), 1})
	}
	tcb = append(tcb, attr{oid(2, 17), 1}, attr{oid(2, 18), bytes.Repeat([]byte{1}, 16)})
	fmspc, _ := hex.DecodeString(FMSPC)
	v, err := asn1.Marshal([]any{
		attr{oid(1), bytes.Repeat([]byte{0x51}, 16)}, // PPID
		struct {
			ID    asn1.ObjectIdentifier
			Value []attr
		}{oid(2), tcb},
		attr{oid(3), []byte{0, 0}}, // PCE-ID
		attr{oid(4), fmspc},
	})
	if err != nil {
		panic("simtdx: " + err.Error()) // constant input
	}
	return pkix.Extension{Id: sgx, Value: v}
}

// Marshal returns the chain file's contents (see [ChainFile]).
func (c *Chain) Marshal() []byte {
	var buf bytes.Buffer
	for _, p := range []struct {
		cert *x509.Certificate
		key  *ecdsa.PrivateKey
	}{{c.root, c.rootKey}, {c.ca, c.caKey}, {c.pck, c.pckKey}, {nil, c.attKey}} {
		if p.cert != nil {
			fmt.Fprintf(&buf, "SIMULATED %s\n", p.cert.Subject.CommonName)
			pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw})
		} else {
			buf.WriteString("SIMULATED quoting enclave attestation key\n")
		}
		der, _ := x509.MarshalPKCS8PrivateKey(p.key) // a valid P-256 key
		pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	return buf.Bytes()
}

// Parse reads a chain file and checks that every key matches its
// certificate and every certificate is signed by its issuer.
func Parse(b []byte) (*Chain, error) {
	var certs []*x509.Certificate
	var keys []*ecdsa.PrivateKey
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, err
			}
			certs = append(certs, cert)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key %d is a %T, want ECDSA", len(keys), k)
			}
			keys = append(keys, ek)
		default:
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
	}
	if len(certs) != 3 || len(keys) != 4 {
		return nil, fmt.Errorf("the chain file holds %d certificates and %d keys, want 3 and 4", len(certs), len(keys))
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("trailing data after the last private key")
	}
	c := &Chain{root: certs[0], ca: certs[1], pck: certs[2], rootKey: keys[0], caKey: keys[1], pckKey: keys[2], attKey: keys[3]}
	for i, cert := range certs {
		if !keys[i].PublicKey.Equal(cert.PublicKey) {
			return nil, fmt.Errorf("private key %d does not match certificate %q", i, cert.Subject.CommonName)
		}
	}
	if err := c.ca.CheckSignatureFrom(c.root); err != nil {
		return nil, err
	}
	if err := c.pck.CheckSignatureFrom(c.ca); err != nil {
		return nil, err
	}
	return c, nil
}

// QuoteOptions choose the fields of a simulated quote.
type QuoteOptions struct {
	// ReportData is REPORT_DATA, at most 64 bytes (zero-padded).
	ReportData []byte
	// MRTD is 48 bytes; nil means [DefaultMRTD].
	MRTD []byte
	// RTMRs are up to four 48-byte values; missing ones are zero.
	RTMRs [][]byte
	// MRConfigID is 48 bytes or nil (zeros).
	MRConfigID []byte
	// Debug sets TD_ATTRIBUTES bit 0, which verifiers refuse.
	Debug bool
}

// Quote returns a simulated TDX quote v4 signed by the chain.
func (c *Chain) Quote(opts QuoteOptions) ([]byte, error) {
	if len(opts.ReportData) > 64 {
		return nil, fmt.Errorf("simtdx: report data is %d bytes, at most 64", len(opts.ReportData))
	}
	mrtd := opts.MRTD
	if mrtd == nil {
		mrtd = []byte(DefaultMRTD)
	}
	if len(mrtd) != 48 {
		return nil, fmt.Errorf("simtdx: MRTD is %d bytes, want 48", len(mrtd))
	}
	if len(opts.RTMRs) > 4 {
		return nil, fmt.Errorf("simtdx: %d RTMRs, at most 4", len(opts.RTMRs))
	}
	rtmrs := make([][]byte, 4)
	for i := range rtmrs {
		rtmrs[i] = make([]byte, 48)
		if i < len(opts.RTMRs) {
			if len(opts.RTMRs[i]) != 48 {
				return nil, fmt.Errorf("simtdx: RTMR%d is %d bytes, want 48", i, len(opts.RTMRs[i]))
			}
			copy(rtmrs[i], opts.RTMRs[i])
		}
	}
	cfg := make([]byte, 48)
	if opts.MRConfigID != nil {
		if len(opts.MRConfigID) != 48 {
			return nil, fmt.Errorf("simtdx: MRCONFIGID is %d bytes, want 48", len(opts.MRConfigID))
		}
		copy(cfg, opts.MRConfigID)
	}
	attrs := make([]byte, 8)
	attrs[3] = 0x10 // SEPT_VE_DISABLE, as on real TDs
	if opts.Debug {
		attrs[0] |= 1
	}
	rd := make([]byte, 64)
	copy(rd, opts.ReportData)
	q := &pb.QuoteV4{
		Header: &pb.Header{
			Version: 4, AttestationKeyType: 2, TeeType: abi.TeeTDX,
			QeSvn: []byte{0, 0}, PceSvn: []byte{1, 0},
			QeVendorId: []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07},
			UserData:   make([]byte, 20),
		},
		TdQuoteBody: &pb.TDQuoteBody{
			TeeTcbSvn: append([]byte{1, 1}, make([]byte, 14)...), MrSeam: bytes.Repeat([]byte{0x5e}, 48),
			MrSignerSeam: make([]byte, 48), SeamAttributes: make([]byte, 8), TdAttributes: attrs,
			Xfam: []byte{0xe7, 0x02, 0x06, 0, 0, 0, 0, 0}, MrTd: bytes.Clone(mrtd), MrConfigId: cfg,
			MrOwner: make([]byte, 48), MrOwnerConfig: make([]byte, 48), Rtmrs: rtmrs, ReportData: rd,
		},
	}
	var chain bytes.Buffer
	for _, cert := range []*x509.Certificate{c.pck, c.ca, c.root} {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	}
	pub, err := c.attKey.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	att := pub[1:]
	authData := make([]byte, 32) // QE authentication data, as Intel's QE sends
	h := sha256.Sum256(append(bytes.Clone(att), authData...))
	qeReport := &pb.EnclaveReport{
		CpuSvn: bytes.Repeat([]byte{1}, 16), Reserved1: make([]byte, 28), Attributes: make([]byte, 16),
		MrEnclave: bytes.Repeat([]byte{0xee}, 32), Reserved2: make([]byte, 32), MrSigner: bytes.Repeat([]byte{0x55}, 32),
		Reserved3: make([]byte, 96), IsvProdId: 2, IsvSvn: 1, Reserved4: make([]byte, 60),
		ReportData: append(h[:], make([]byte, 32)...),
	}
	rawQE, err := abi.EnclaveReportToAbiBytes(qeReport)
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	qeSig, err := sign(c.pckKey, rawQE)
	if err != nil {
		return nil, err
	}
	pckData := &pb.PCKCertificateChainData{CertificateDataType: 5, Size: uint32(chain.Len()), PckCertChain: chain.Bytes()}
	qeCert := &pb.QEReportCertificationData{
		QeReport: qeReport, QeReportSignature: qeSig,
		QeAuthData:              &pb.QeAuthData{ParsedDataSize: uint32(len(authData)), Data: authData},
		PckCertificateChainData: pckData,
	}
	certSize := 384 + 64 + 2 + len(authData) + 6 + chain.Len()
	q.SignedData = &pb.Ecdsa256BitQuoteV4AuthData{
		Signature: make([]byte, 64), EcdsaAttestationKey: att,
		CertificationData: &pb.CertificationData{CertificateDataType: 6, Size: uint32(certSize), QeReportCertificationData: qeCert},
	}
	q.SignedDataSize = uint32(64 + 64 + 6 + certSize)
	hdr, err := abi.HeaderToAbiBytes(q.Header)
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.TdQuoteBody)
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	if q.SignedData.Signature, err = sign(c.attKey, append(hdr, body...)); err != nil {
		return nil, err
	}
	raw, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	return raw, nil
}

// sign returns the raw r||s ECDSA P-256 signature over SHA-256(msg), as
// quotes hold signatures.
func sign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return nil, fmt.Errorf("simtdx: %w", err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}
