package gov

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// testKey is a member's key pair in the forms tests need.
type testKey struct {
	name string
	priv crypto.Signer
	alg  cose.Algorithm
}

func genKey(t testing.TB, kind string) testKey {
	t.Helper()
	var (
		priv crypto.Signer
		alg  cose.Algorithm
		err  error
	)
	switch kind {
	case "P-256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		alg = cose.AlgorithmES256
	case "P-384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		alg = cose.AlgorithmES384
	case "P-521":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		alg = cose.AlgorithmES512
	case "Ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
		alg = cose.AlgorithmEdDSA
	case "RSA":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
		alg = cose.AlgorithmPS256
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return testKey{name: kind, priv: priv, alg: alg}
}

var memberKinds = []string{"P-256", "P-384", "Ed25519"}

func (k testKey) privPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func (k testKey) pubPEM(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// certPEM returns a self-signed certificate of the key.
func (k testKey) certPEM(t testing.TB) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "member " + k.name},
		NotBefore:    time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), // expired: only a container
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.priv.Public(), k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func (k testKey) member(t testing.TB, name string) Member {
	t.Helper()
	m, err := NewMember(name, k.pubPEM(t), "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (k testKey) signer(t testing.TB) *Signer {
	t.Helper()
	s, err := NewFileSigner(k.privPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// lyingSigner signs with one key and claims another algorithm.
type lyingSigner struct {
	alg   cose.Algorithm
	inner cose.Signer
}

func (s lyingSigner) Algorithm() cose.Algorithm { return s.alg }
func (s lyingSigner) Sign(r io.Reader, content []byte) ([]byte, error) {
	return s.inner.Sign(r, content)
}

// signRaw builds and signs a COSE_Sign1 with arbitrary headers, as an
// attacker or a foreign tool might. alg 0 means the key's own.
func signRaw(t testing.TB, k testKey, alg cose.Algorithm, prot cose.ProtectedHeader, unprot cose.UnprotectedHeader, payload []byte) []byte {
	t.Helper()
	inner, err := cose.NewSigner(k.alg, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	var s cose.Signer = inner
	if alg != 0 && alg != k.alg {
		s = lyingSigner{alg: alg, inner: inner}
	}
	if unprot == nil {
		unprot = cose.UnprotectedHeader{}
	}
	msg := cose.Sign1Message{Headers: cose.Headers{Protected: prot, Unprotected: unprot}, Payload: payload}
	if err := msg.Sign(rand.Reader, nil, s); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// headers returns a valid protected header for k's member.
func headers(t testing.TB, k testKey, typ MessageType, created time.Time, proposalID string) cose.ProtectedHeader {
	t.Helper()
	id, err := memberID(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	h := cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: k.alg,
		cose.HeaderLabelKeyID:     []byte(id),
		HeaderType:                string(typ),
		HeaderCreatedAt:           created.Unix(),
	}
	if proposalID != "" {
		h[HeaderProposalID] = proposalID
	}
	return h
}

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

const pid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
