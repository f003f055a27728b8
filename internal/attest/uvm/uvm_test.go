package uvm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	cose "github.com/veraison/go-cose"
)

const (
	aciDID   = "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2"
	aciFeed  = "ContainerPlat-AMD-UVM"
	aciEKU   = "1.3.6.1.4.1.311.76.59.1.2"
	otherEKU = "1.3.6.1.4.1.311.76.59.1.5"
)

// vector is a real endorsement and, when known, the MEASUREMENT of its report.
type vector struct {
	endorsement []byte
	measurement []byte // nil: no report
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reportMeasurement returns MEASUREMENT (offset 0x90, 48 bytes) of an SNP report.
func reportMeasurement(t testing.TB, report []byte) []byte {
	t.Helper()
	if len(report) != 1184 {
		t.Fatalf("report is %d bytes, want 1184", len(report))
	}
	return report[0x90 : 0x90+48]
}

// aciVector: the ACI bundle of azure-privacy-sandbox-kms.
func aciVector(t testing.TB) vector {
	var bundle struct {
		Evidence        string `json:"evidence"`
		UVMEndorsements string `json:"uvm_endorsements"`
	}
	if err := json.Unmarshal(readFile(t, "aci-snp.json"), &bundle); err != nil {
		t.Fatal(err)
	}
	return vector{b64(t, bundle.UVMEndorsements), reportMeasurement(t, b64(t, bundle.Evidence))}
}

// sidecarVector: confidential-sidecar-containers' endorsement and report.
func sidecarVector(t testing.TB) vector {
	return vector{readFile(t, "body.uvm_reference_info.bin"), reportMeasurement(t, readFile(t, "snp_report.bin"))}
}

// securityContextVector: an endorsement from a security context directory, no report.
func securityContextVector(t testing.TB) vector {
	return vector{b64(t, string(readFile(t, "reference-info-base64"))), nil}
}

func newVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	v, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyRealEndorsements(t *testing.T) {
	tests := []struct {
		name        string
		vec         vector
		svn         uint64
		measurement string
		signingTime string
	}{
		{"azure-privacy-sandbox-kms ACI bundle", aciVector(t), 100,
			"02c3b0d5bf1d256fa4e3b5deefc07b55ff2f7029085ed350f60959140a1a51f1310753ba5ab2c03a0536b1c0c193af47",
			"2023-11-14T19:20:32Z"},
		{"confidential-sidecar-containers reference info", sidecarVector(t), 22,
			"51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5",
			"2023-02-08T05:42:23Z"},
		{"security context directory (no report)", securityContextVector(t), 100,
			"03fea02823189b25d0623a5c81f97c8ba4d2fbc48c914a55ce525f90454ddcec303743dac2fc013f0846912d1412f6df",
			"2023-04-20T23:48:38Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{})
			var r *Result
			var err error
			if tt.vec.measurement != nil {
				if !bytes.Equal(tt.vec.measurement, mustHex(t, tt.measurement)) {
					t.Fatalf("report MEASUREMENT %x, want %s", tt.vec.measurement, tt.measurement)
				}
				r, err = v.Verify(tt.vec.endorsement, tt.vec.measurement)
			} else {
				r, err = v.VerifyEndorsement(tt.vec.endorsement)
			}
			if err != nil {
				t.Fatalf("verify: %v (code %s)", err, Code(err))
			}
			if r.DID != aciDID || r.Feed != aciFeed || r.SVN != tt.svn {
				t.Errorf("got did %q feed %q svn %d, want %q %q %d", r.DID, r.Feed, r.SVN, aciDID, aciFeed, tt.svn)
			}
			if got := hex.EncodeToString(r.LaunchMeasurement); got != tt.measurement {
				t.Errorf("launch measurement %s, want %s", got, tt.measurement)
			}
			if got := r.SigningTime.Format(time.RFC3339); got != tt.signingTime {
				t.Errorf("signing time %s, want %s", got, tt.signingTime)
			}
			c := r.Claims()
			if c["uvm_endorsements-did"] != aciDID || c["uvm_endorsements-feed"] != aciFeed || c["uvm_endorsements-svn"] != tt.svn {
				t.Errorf("claims %v", c)
			}
			status, ok := c["x-ms-compliance-status"]
			if bound := tt.vec.measurement != nil; ok != bound || (bound && status != "azure-compliant-uvm") {
				t.Errorf("x-ms-compliance-status %v (present %v), want present only when bound to a report", status, ok)
			}
		})
	}
}

// The real leaves expired long ago: verification must use the signing time.
func TestRealChainVerifiedAtSigningTime(t *testing.T) {
	vec := aciVector(t)
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(vec.endorsement); err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(msg.Headers.Protected)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(h, time.Now()); !errors.Is(err, ErrChainInvalid) {
		t.Fatalf("chain at the current time: %v, want %v", err, ErrChainInvalid)
	}
	if err := verifyChain(h, h.signingTime); err != nil {
		t.Fatalf("chain at signing time: %v", err)
	}
	if _, err := newVerifier(t, Options{}).Verify(vec.endorsement, vec.measurement); err != nil {
		t.Fatal(err)
	}
}

// Lazily generated synthetic chains (RSA key generation is slow under -race).
var (
	chainsOnce sync.Once
	longChain  *TestChain // valid 2020..2040, leaf EKU aciEKU
	shortChain *TestChain // valid one hour around shortTime
	chainsErr  error
)

var shortTime = time.Date(2023, 6, 1, 12, 0, 0, 0, time.UTC)

func chains(t testing.TB) (long, short *TestChain) {
	t.Helper()
	chainsOnce.Do(func() {
		longChain, chainsErr = NewTestChain(aciEKU, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC))
		if chainsErr == nil {
			shortChain, chainsErr = NewTestChain(aciEKU, shortTime.Add(-time.Hour), shortTime.Add(time.Hour))
		}
	})
	if chainsErr != nil {
		t.Fatal(chainsErr)
	}
	return longChain, shortChain
}

// newCert issues a certificate for pub from tmpl, signed by parent/parentKey
// (self-signed when parent is nil).
func newCert(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(10),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func leafTemplate(cn string, eku string) *x509.Certificate {
	oid := asn1.ObjectIdentifier{}
	for a := range strings.SplitSeq(eku, ".") {
		n := 0
		for _, c := range a {
			n = n*10 + int(c-'0')
		}
		oid = append(oid, n)
	}
	return &x509.Certificate{
		SerialNumber:       big.NewInt(11),
		Subject:            pkix.Name{CommonName: cn},
		NotBefore:          time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:           time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oid},
	}
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func didFor(root *x509.Certificate, eku string) string {
	fp := sha256.Sum256(root.Raw)
	return "did:x509:0:sha256:" + base64.RawURLEncoding.EncodeToString(fp[:]) + "::eku:" + eku
}

func sign(t testing.TB, payload []byte, signer crypto.Signer, chain []*x509.Certificate, did, feed string, at time.Time) []byte {
	t.Helper()
	b, err := Sign(payload, signer, chain, did, feed, at)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signHeader signs with the header Sign would use, after edit changes it.
func signHeader(t testing.TB, alg cose.Algorithm, payload []byte, signer crypto.Signer, chain []*x509.Certificate, did, feed string, at time.Time, edit func(cose.ProtectedHeader)) []byte {
	t.Helper()
	h := endorsementHeader(alg, chain, did, feed, at)
	if edit != nil {
		edit(h)
	}
	b, err := signWithHeader(alg, signer, h, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode decodes an endorsement and its protected header.
func decode(t testing.TB, endorsement []byte) (*cose.Sign1Message, *header) {
	t.Helper()
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(endorsement); err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(msg.Headers.Protected)
	if err != nil {
		t.Fatal(err)
	}
	return &msg, h
}

func TestVerifySynthetic(t *testing.T) {
	long, short := chains(t)
	m := bytes.Repeat([]byte{0xab}, 48)
	at := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	p := MarshalPayload(7, m)
	trust := []Endorser{{long.DID, aciFeed}}

	// A P-384 leaf under a P-384 root for ES384.
	ecRootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecRoot := newCert(t, caTemplate("ec root"), &ecRootKey.PublicKey, nil, ecRootKey)
	ecLeafKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecLeaf := newCert(t, leafTemplate("ec leaf", aciEKU), &ecLeafKey.PublicKey, ecRoot, ecRootKey)
	ecDID := didFor(ecRoot, aciEKU)

	tests := []struct {
		name        string
		endorsement []byte
		trust       []Endorser
		wantSVN     uint64
	}{
		{"PS384 via Sign", sign(t, p, long.Key, long.Chain, long.DID, aciFeed, at), trust, 7},
		{"PS256", signHeader(t, cose.AlgorithmPS256, p, long.Key, long.Chain, long.DID, aciFeed, at, nil), trust, 7},
		{"PS512", signHeader(t, cose.AlgorithmPS512, p, long.Key, long.Chain, long.DID, aciFeed, at, nil), trust, 7},
		{"ES384 via Sign", sign(t, p, ecLeafKey, []*x509.Certificate{ecLeaf, ecRoot}, ecDID, aciFeed, at), []Endorser{{ecDID, aciFeed}}, 7},
		{"untagged signingtime", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelSigningTime] = at.Unix() }), trust, 7},
		{"no x5t", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelX5T) }), trust, 7},
		{"no content type", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelContentType) }), trust, 7},
		{"understood crit", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelCrit] = []any{labelFeed, labelSigningTime} }), trust, 7},
		{"svn as number with extra fields and newline", sign(t,
			[]byte(`{"x-ms-sevsnpvm-launchmeasurement":"`+strings.ToUpper(hex.EncodeToString(m))+`","x-ms-sevsnpvm-guestsvn":9,"x-ms-other":[1]}`+"\n"),
			long.Key, long.Chain, long.DID, aciFeed, at), trust, 9},
		{"expired leaf, valid at signing time", sign(t, p, short.Key, short.Chain, short.DID, aciFeed, shortTime), []Endorser{{short.DID, aciFeed}}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newVerifier(t, Options{Trusted: tt.trust}).Verify(tt.endorsement, m)
			if err != nil {
				t.Fatalf("verify: %v (code %s)", err, Code(err))
			}
			if r.SVN != tt.wantSVN || !bytes.Equal(r.LaunchMeasurement, m) {
				t.Errorf("svn %d measurement %x", r.SVN, r.LaunchMeasurement)
			}
		})
	}

	// The short chain's leaf has expired now, so checking at the current time
	// would fail; Verify passes above because it checks at the signing time.
	if _, err := short.Chain[0].Verify(x509.VerifyOptions{Roots: poolOf(short.Chain[2]), Intermediates: poolOf(short.Chain[1]), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("short chain verifies at the current time; the test proves nothing")
	}
}

// TestSimulatedEndorser: an endorsement of an endorser listed in
// Options.Simulated verifies and says so; listed as trusted, it does not.
func TestSimulatedEndorser(t *testing.T) {
	long, _ := chains(t)
	m := bytes.Repeat([]byte{0xab}, 48)
	e := sign(t, MarshalPayload(7, m), long.Key, long.Chain, long.DID, aciFeed, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		opts      Options
		simulated bool
	}{
		{Options{Simulated: []Endorser{{long.DID, aciFeed}}}, true},
		{Options{Trusted: []Endorser{{long.DID, aciFeed}}}, false},
	} {
		r, err := newVerifier(t, tc.opts).Verify(e, m)
		if err != nil || r.Simulated != tc.simulated {
			t.Errorf("%+v: result %+v, %v; want simulated %v", tc.opts, r, err, tc.simulated)
		}
	}
	aci := aciVector(t)
	if r, err := newVerifier(t, Options{Simulated: []Endorser{{long.DID, aciFeed}}}).Verify(aci.endorsement, aci.measurement); err != nil || r.Simulated {
		t.Errorf("the real ACI endorsement beside a simulated endorser: %+v, %v", r, err)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestVerifyRejects(t *testing.T) {
	aci := aciVector(t)
	sidecar := sidecarVector(t)
	long, short := chains(t)
	m := bytes.Repeat([]byte{0xab}, 48)
	at := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	p := MarshalPayload(7, m)
	synthTrust := []Endorser{{long.DID, aciFeed}}
	_, aciHdr := decode(t, aci.endorsement)
	aciPayload := []byte(`{"x-ms-sevsnpvm-guestsvn":"100","x-ms-sevsnpvm-launchmeasurement":"` + hex.EncodeToString(aci.measurement) + `"}`)

	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	payloadAt := bytes.Index(aci.endorsement, []byte(`"x-ms-sevsnpvm-guestsvn": "100"`))
	if payloadAt < 0 {
		t.Fatal("payload not found in the ACI endorsement")
	}

	// The real leaf swapped for a self-made one, not re-signed.
	ownKey := rsaKey(t)
	ownLeaf := newCert(t, leafTemplate("ContainerPlat", aciEKU), &ownKey.PublicKey, nil, ownKey)
	swapped := func() []byte {
		msg, _ := decode(t, aci.endorsement)
		ders := []any{ownLeaf.Raw, aciHdr.chain[1].Raw, aciHdr.chain[2].Raw}
		msg.Headers.Protected[labelX5Chain] = ders
		delete(msg.Headers.Protected, labelX5T)
		msg.Headers.Protected[labelSigningTime] = cbor.Tag{Number: 1, Content: aciHdr.signingTime.Unix()}
		msg.Headers.RawProtected = nil
		b, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()

	// An attacker root that certifies its own leaf, with Microsoft's root
	// slipped into x5chain (off the path) so that the DID fingerprint matches.
	attRootKey := rsaKey(t)
	attRoot := newCert(t, caTemplate("attacker root"), &attRootKey.PublicKey, nil, attRootKey)
	attLeaf := newCert(t, leafTemplate("ContainerPlat", aciEKU), &ownKey.PublicKey, attRoot, attRootKey)

	// A chain whose leaf lacks the EKU the DID names.
	ekuDID := strings.Replace(long.DID, aciEKU, otherEKU, 1)

	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecLeaf := newCert(t, leafTemplate("p256 leaf", aciEKU), &ecKey.PublicKey, nil, ecKey) // self-signed: the signature check fails first

	tests := []struct {
		name        string
		endorsement []byte
		measurement []byte
		opts        Options
		want        error
	}{
		{"empty", nil, m, Options{}, ErrMalformed},
		{"garbage", []byte("this is not a COSE_Sign1 message"), m, Options{}, ErrMalformed},
		{"truncated", aci.endorsement[:len(aci.endorsement)/2], aci.measurement, Options{}, ErrMalformed},
		{"untagged CBOR array", []byte{0x84, 0x40, 0xa0, 0x40, 0x40}, m, Options{}, ErrMalformed},
		{"flipped signature byte", flip(aci.endorsement, len(aci.endorsement)-1), aci.measurement, Options{}, ErrSignatureInvalid},
		{"flipped payload byte", flip(aci.endorsement, payloadAt+len(`"x-ms-sevsnpvm-guestsvn": "`)), aci.measurement, Options{}, ErrSignatureInvalid},
		{"leaf swapped, not re-signed", swapped, aci.measurement, Options{}, ErrSignatureInvalid},
		{"leaf swapped for a self-made cert, re-signed", sign(t, aciPayload, ownKey, []*x509.Certificate{ownLeaf, aciHdr.chain[1], aciHdr.chain[2]}, aciDID, aciFeed, aciHdr.signingTime),
			aci.measurement, Options{}, ErrChainInvalid},
		{"DID names a certificate off the verified path", sign(t, aciPayload, ownKey, []*x509.Certificate{attLeaf, aciHdr.chain[2], attRoot}, aciDID, aciFeed, aciHdr.signingTime),
			aci.measurement, Options{Trusted: []Endorser{{aciDID, aciFeed}}}, ErrChainInvalid},
		{"x5t of another certificate", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelX5T] = []any{int64(-16), make([]byte, 32)} }), m, Options{Trusted: synthTrust}, ErrChainInvalid},
		{"chain of the leaf alone", sign(t, p, ownKey, []*x509.Certificate{ownLeaf}, didFor(ownLeaf, aciEKU), aciFeed, at), m,
			Options{Trusted: []Endorser{{didFor(ownLeaf, aciEKU), aciFeed}}}, ErrChainInvalid},
		{"signed after the leaf expired", sign(t, p, short.Key, short.Chain, short.DID, aciFeed, shortTime.Add(2*time.Hour)), m,
			Options{Trusted: []Endorser{{short.DID, aciFeed}}}, ErrChainInvalid},
		{"signed before the leaf was valid", sign(t, p, short.Key, short.Chain, short.DID, aciFeed, shortTime.Add(-2*time.Hour)), m,
			Options{Trusted: []Endorser{{short.DID, aciFeed}}}, ErrChainInvalid},
		{"self-made chain claiming Microsoft's DID", sign(t, p, long.Key, long.Chain, aciDID, aciFeed, at), m, Options{}, ErrDIDMismatch},
		{"EKU not in leaf", sign(t, p, long.Key, long.Chain, ekuDID, aciFeed, at), m, Options{Trusted: []Endorser{{ekuDID, aciFeed}}}, ErrDIDMismatch},
		{"unsupported DID method", sign(t, p, long.Key, long.Chain, "did:web:example.com", aciFeed, at), m, Options{Trusted: synthTrust}, ErrDIDMismatch},
		{"wrong feed (not trusted)", aci.endorsement, aci.measurement, Options{Trusted: []Endorser{{aciDID, "ConfAKS-AMD-UVM"}}}, ErrUntrusted},
		{"wrong feed, synthetic", sign(t, p, long.Key, long.Chain, long.DID, "Other-Feed", at), m, Options{Trusted: synthTrust}, ErrUntrusted},
		{"wrong DID (trust names another fingerprint)", aci.endorsement, aci.measurement,
			Options{Trusted: []Endorser{{strings.Replace(aciDID, "I__iuL25", "J__iuL25", 1), aciFeed}}}, ErrUntrusted},
		{"synthetic chain under the default trust", sign(t, p, long.Key, long.Chain, long.DID, aciFeed, at), m, Options{}, ErrUntrusted},
		{"launch measurement of another UVM", aci.endorsement, sidecar.measurement, Options{}, ErrMeasurementMismatch},
		{"no measurement given", aci.endorsement, nil, Options{}, ErrMeasurementMismatch},
		{"SVN below minimum", aci.endorsement, aci.measurement, Options{MinSVN: 101}, ErrSVNTooLow},
		{"SVN 22 below 100 (not compared as strings)", sidecar.endorsement, sidecar.measurement, Options{MinSVN: 100}, ErrSVNTooLow},
		{"unsupported alg ES256", signHeader(t, cose.AlgorithmES256, p, ecKey, long.Chain, long.DID, aciFeed, at, nil), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"x5t with an unsupported hash", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelX5T] = []any{int64(0), make([]byte, 32)} }), m, Options{Trusted: synthTrust}, ErrChainInvalid},
		{"PS384 with an ECDSA leaf", signHeader(t, cose.AlgorithmPS384, p, long.Key, append([]*x509.Certificate{ecLeaf}, long.Chain[1:]...), long.DID, aciFeed, at, nil),
			m, Options{Trusted: synthTrust}, ErrSignatureInvalid},
		{"ES384 with a P-256 leaf", signHeader(t, cose.AlgorithmES384, p, ecKey, append([]*x509.Certificate{ecLeaf}, long.Chain[1:]...), long.DID, aciFeed, at, nil),
			m, Options{Trusted: synthTrust}, ErrSignatureInvalid},
		{"unknown critical header", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h["svn-policy"] = "x"; h[labelCrit] = []any{"svn-policy"} }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"content type not JSON", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelContentType] = "text/plain" }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"missing iss", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelIss) }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"missing feed", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelFeed) }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"missing signingtime", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelSigningTime) }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"signingtime as text", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelSigningTime] = "yesterday" }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"missing x5chain", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { delete(h, labelX5Chain) }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"x5chain not DER", signHeader(t, cose.AlgorithmPS384, p, long.Key, long.Chain, long.DID, aciFeed, at,
			func(h cose.ProtectedHeader) { h[labelX5Chain] = []any{[]byte("not a certificate")} }), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"payload not JSON", sign(t, []byte("svn=100"), long.Key, long.Chain, long.DID, aciFeed, at), m, Options{Trusted: synthTrust}, ErrMalformed},
		{"payload without measurement", sign(t, []byte(`{"x-ms-sevsnpvm-guestsvn":"1"}`), long.Key, long.Chain, long.DID, aciFeed, at), m, Options{Trusted: synthTrust}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newVerifier(t, tt.opts).Verify(tt.endorsement, tt.measurement)
			t.Log(err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v (result %+v), want %v", err, r, tt.want)
			}
			if r != nil {
				t.Errorf("result %+v returned with an error", r)
			}
			if got, want := Code(err), Code(tt.want); got != want {
				t.Errorf("code %s, want %s", got, want)
			}
		})
	}
}

// An SVN and a measurement failure are reported together.
func TestVerifyJoinsPolicyFailures(t *testing.T) {
	aci, sidecar := aciVector(t), sidecarVector(t)
	_, err := newVerifier(t, Options{MinSVN: 1000}).Verify(aci.endorsement, sidecar.measurement)
	if !errors.Is(err, ErrSVNTooLow) || !errors.Is(err, ErrMeasurementMismatch) {
		t.Fatalf("got %v, want both %v and %v", err, ErrSVNTooLow, ErrMeasurementMismatch)
	}
	if Code(err) != "UVM_MEASUREMENT_MISMATCH" {
		t.Errorf("code %s", Code(err))
	}
	for _, want := range []string{"svn 100, minimum 1000", hex.EncodeToString(sidecar.measurement)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestMinSVNBoundary(t *testing.T) {
	aci := aciVector(t)
	for _, tt := range []struct {
		min uint64
		ok  bool
	}{{0, true}, {22, true}, {100, true}, {101, false}} {
		_, err := newVerifier(t, Options{MinSVN: tt.min}).Verify(aci.endorsement, aci.measurement)
		if (err == nil) != tt.ok {
			t.Errorf("min %d: %v", tt.min, err)
		}
	}
}

func TestCache(t *testing.T) {
	aci, sidecar := aciVector(t), sidecarVector(t)
	v := newVerifier(t, Options{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := v.Verify(aci.endorsement, aci.measurement); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(v.cache) != 1 {
		t.Fatalf("cache holds %d entries, want 1", len(v.cache))
	}

	// The measurement is compared on every call, cached or not.
	if _, err := v.Verify(aci.endorsement, sidecar.measurement); !errors.Is(err, ErrMeasurementMismatch) {
		t.Fatalf("cached endorsement, other measurement: %v", err)
	}
	// Results are copies: changing one does not change the cache.
	r, err := v.Verify(aci.endorsement, aci.measurement)
	if err != nil {
		t.Fatal(err)
	}
	r.LaunchMeasurement[0] ^= 0xff
	r.SVN = 0
	r2, err := v.Verify(aci.endorsement, aci.measurement)
	if err != nil || r2.SVN != 100 {
		t.Fatalf("after mutating a result: %v, svn %d", err, r2.SVN)
	}
	// Failures are not cached; a flipped byte is a different key anyway.
	bad := bytes.Clone(aci.endorsement)
	bad[len(bad)-1] ^= 1
	if _, err := v.Verify(bad, aci.measurement); err == nil {
		t.Fatal("flipped signature accepted")
	}
	if len(v.cache) != 1 {
		t.Fatalf("cache holds %d entries after a failure, want 1", len(v.cache))
	}
	// VerifyEndorsement shares the cache but its results are not bound.
	r3, err := v.VerifyEndorsement(aci.endorsement)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r3.Claims()["x-ms-compliance-status"]; ok {
		t.Error("unbound result claims compliance")
	}
}

func TestParsePayload(t *testing.T) {
	m := strings.Repeat("ab", 48)
	tests := []struct {
		name    string
		payload string
		svn     uint64
		wantErr bool
	}{
		{"microsoft shape", `{"x-ms-sevsnpvm-guestsvn": "100", "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 100, false},
		{"trailing newline, key order, extra fields", "{\"x-ms-sevsnpvm-launchmeasurement\":\"" + m + "\",\"x-ms-x\":{},\"x-ms-sevsnpvm-guestsvn\":\"2\"}\n", 2, false},
		{"svn as number", `{"x-ms-sevsnpvm-guestsvn": 5, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 5, false},
		{"both svn fields agree", `{"x-ms-sevsnpvm-guestsvn": "5", "x-ms-sevsnpvm-guestsvn-int": 5, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 5, false},
		{"only the int field", `{"x-ms-sevsnpvm-guestsvn-int": 6, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 6, false},
		{"uppercase hex", `{"x-ms-sevsnpvm-guestsvn": "1", "x-ms-sevsnpvm-launchmeasurement": "` + strings.ToUpper(m) + `"}`, 1, false},
		{"svn fields disagree", `{"x-ms-sevsnpvm-guestsvn": "5", "x-ms-sevsnpvm-guestsvn-int": 6, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"negative svn", `{"x-ms-sevsnpvm-guestsvn": -1, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"fractional svn", `{"x-ms-sevsnpvm-guestsvn": 1.5, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"svn not decimal", `{"x-ms-sevsnpvm-guestsvn": "0x10", "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"svn null", `{"x-ms-sevsnpvm-guestsvn": null, "x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"no svn", `{"x-ms-sevsnpvm-launchmeasurement": "` + m + `"}`, 0, true},
		{"no measurement", `{"x-ms-sevsnpvm-guestsvn": "1"}`, 0, true},
		{"short measurement", `{"x-ms-sevsnpvm-guestsvn": "1", "x-ms-sevsnpvm-launchmeasurement": "abcd"}`, 0, true},
		{"measurement not hex", `{"x-ms-sevsnpvm-guestsvn": "1", "x-ms-sevsnpvm-launchmeasurement": "` + strings.Repeat("zz", 48) + `"}`, 0, true},
		{"not an object", `[1,2]`, 0, true},
		{"trailing garbage", `{"x-ms-sevsnpvm-guestsvn": "1", "x-ms-sevsnpvm-launchmeasurement": "` + m + `"} x`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parsePayload([]byte(tt.payload))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %v, want %v", err, ErrMalformed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.svn != tt.svn || hex.EncodeToString(p.measurement) != m {
				t.Errorf("svn %d measurement %x", p.svn, p.measurement)
			}
		})
	}
}

func TestParseDID(t *testing.T) {
	fp256 := "I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s"
	fp384 := base64.RawURLEncoding.EncodeToString(make([]byte, 48))
	fp512 := base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	tests := []struct {
		did string
		ok  bool
	}{
		{aciDID, true},
		{"did:x509:0:sha384:" + fp384 + "::eku:1.2.3", true},
		{"did:x509:0:sha512:" + fp512 + "::eku:2.5.29.37.0", true},
		{"did:x509:1:sha256:" + fp256 + "::eku:1.2.3", false},
		{"did:web:example.com", false},
		{"did:x509:0:sha1:" + base64.RawURLEncoding.EncodeToString(make([]byte, 20)) + "::eku:1.2.3", false},
		{"did:x509:0:sha256:" + fp384 + "::eku:1.2.3", false},
		{"did:x509:0:sha256:" + fp256 + "=::eku:1.2.3", false},
		{"did:x509:0:sha256:" + strings.ReplaceAll(fp256, "_", "/") + "::eku:1.2.3", false},
		{"did:x509:0:sha256:" + fp256, false},
		{"did:x509:0:sha256:" + fp256 + "::subject:CN:ContainerPlat", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:1.2.3::eku:1.2.4", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:1", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:1..2", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:1.02", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:1.2.x", false},
		{"did:x509:0:sha256:" + fp256 + "::eku:", false},
		{"did:x509:0::eku:1.2.3", false},
		{"", false},
	}
	for _, tt := range tests {
		_, err := parseDID(tt.did)
		if (err == nil) != tt.ok {
			t.Errorf("parseDID(%q): %v, want ok=%v", tt.did, err, tt.ok)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, e := range DefaultTrusted() {
		if _, err := parseDID(e.DID); err != nil {
			t.Errorf("default %q: %v", e.DID, err)
		}
	}
	v := newVerifier(t, Options{})
	if simulated, ok := v.trusted[Endorser{aciDID, aciFeed}]; len(v.trusted) != 2 || !ok || simulated {
		t.Errorf("empty Options trusts %v, want DefaultTrusted()", v.trusted)
	}
	for _, bad := range []Options{
		{Trusted: []Endorser{{"did:web:example.com", aciFeed}}},
		{Trusted: []Endorser{{aciDID, ""}}},
		{Simulated: []Endorser{{"did:web:example.com", aciFeed}}},
		{Trusted: []Endorser{{aciDID, aciFeed}}, Simulated: []Endorser{{aciDID, aciFeed}}},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("other"), ""},
		{ErrMalformed, "UVM_MALFORMED"},
		{ErrSignatureInvalid, "UVM_SIGNATURE_INVALID"},
		{ErrChainInvalid, "UVM_CHAIN_INVALID"},
		{ErrDIDMismatch, "UVM_DID_MISMATCH"},
		{ErrUntrusted, "UVM_UNTRUSTED"},
		{ErrMeasurementMismatch, "UVM_MEASUREMENT_MISMATCH"},
		{ErrSVNTooLow, "UVM_SVN_TOO_LOW"},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestSign(t *testing.T) {
	long, _ := chains(t)
	m := bytes.Repeat([]byte{1}, 48)
	at := time.Unix(1700000000, 0).UTC()
	b := sign(t, MarshalPayload(3, m), long.Key, long.Chain, long.DID, aciFeed, at)

	// Same header shape as Microsoft's endorsements.
	msg, h := decode(t, b)
	if h.alg != cose.AlgorithmPS384 || h.iss != long.DID || h.feed != aciFeed || !h.signingTime.Equal(at) || h.x5tAlg != -16 || len(h.chain) != 3 {
		t.Errorf("header %+v", h)
	}
	if ct := msg.Headers.Protected[labelContentType]; ct != "application/json" {
		t.Errorf("content type %v", ct)
	}
	if !bytes.Contains(msg.Headers.RawProtected, append([]byte("signingtime"), 0xc1)) {
		t.Error("signingtime is not CBOR tag 1")
	}
	if string(msg.Payload) != `{"x-ms-sevsnpvm-guestsvn":"3","x-ms-sevsnpvm-launchmeasurement":"`+hex.EncodeToString(m)+`"}` {
		t.Errorf("payload %s", msg.Payload)
	}

	r, err := newVerifier(t, Options{Trusted: []Endorser{{long.DID, aciFeed}}}).Verify(b, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.SVN != 3 || r.DID != long.DID || !r.SigningTime.Equal(at) {
		t.Errorf("result %+v", r)
	}

	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, err := range map[string]error{
		"P-256 signer": func() error { _, err := Sign(nil, p256, long.Chain, long.DID, aciFeed, at); return err }(),
		"empty chain":  func() error { _, err := Sign(nil, long.Key, nil, long.DID, aciFeed, at); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: Sign accepted", name)
		}
	}
	if _, err := NewTestChain("not-an-oid", at, at.Add(time.Hour)); err == nil {
		t.Error("NewTestChain accepted a bad EKU")
	}
}
