package uvm

import (
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
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	cose "github.com/veraison/go-cose"
)

// Sign makes a UVM endorsement of payload, shaped like Microsoft's: a tagged
// COSE_Sign1 whose protected header holds alg (PS384 for an RSA signer,
// ES384 for a P-384 one), content type application/json, x5chain (chain,
// leaf first), x5t (SHA-256 of the leaf), iss (did), feed and signingtime
// (CBOR tag 1 over epoch seconds). It is for tests and the simulated TEE.
//
// Sign checks nothing about its inputs beyond what signing needs, so it can
// make invalid endorsements too (a chain that does not match the signer, a
// did that does not resolve, a payload that is not JSON).
func Sign(payload []byte, signer crypto.Signer, chain []*x509.Certificate, did, feed string, signingTime time.Time) ([]byte, error) {
	var alg cose.Algorithm
	switch k := signer.Public().(type) {
	case *rsa.PublicKey:
		alg = cose.AlgorithmPS384
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P384() {
			return nil, errors.New("uvm: sign: ECDSA signer must use P-384")
		}
		alg = cose.AlgorithmES384
	default:
		return nil, fmt.Errorf("uvm: sign: unsupported signer key %T", k)
	}
	if len(chain) == 0 {
		return nil, errors.New("uvm: sign: empty chain")
	}
	return signWithHeader(alg, signer, endorsementHeader(alg, chain, did, feed, signingTime), payload)
}

// endorsementHeader returns the protected header Sign uses.
func endorsementHeader(alg cose.Algorithm, chain []*x509.Certificate, did, feed string, signingTime time.Time) cose.ProtectedHeader {
	ders := make([]any, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	x5t := sha256.Sum256(chain[0].Raw)
	return cose.ProtectedHeader{
		labelAlg:         alg,
		labelContentType: "application/json",
		labelX5Chain:     ders,
		labelX5T:         []any{int64(-16), x5t[:]},
		labelIss:         did,
		labelFeed:        feed,
		labelSigningTime: cbor.Tag{Number: 1, Content: signingTime.Unix()},
	}
}

// signWithHeader signs payload under the protected header h, as is.
func signWithHeader(alg cose.Algorithm, signer crypto.Signer, h cose.ProtectedHeader, payload []byte) ([]byte, error) {
	s, err := cose.NewSigner(alg, signer)
	if err != nil {
		return nil, fmt.Errorf("uvm: sign: %w", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected = h
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, s); err != nil {
		return nil, fmt.Errorf("uvm: sign: %w", err)
	}
	b, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("uvm: sign: %w", err)
	}
	return b, nil
}

// MarshalPayload returns an endorsement payload in Microsoft's shape:
// {"x-ms-sevsnpvm-guestsvn":"<svn>","x-ms-sevsnpvm-launchmeasurement":"<hex>"}.
func MarshalPayload(svn uint64, launchMeasurement []byte) []byte {
	b, _ := json.Marshal(struct {
		SVN         string `json:"x-ms-sevsnpvm-guestsvn"`
		Measurement string `json:"x-ms-sevsnpvm-launchmeasurement"`
	}{strconv.FormatUint(svn, 10), hex.EncodeToString(launchMeasurement)})
	return b
}

// TestChain is a throwaway RSA endorsement-signing chain (root,
// intermediate, leaf) for tests and the simulated TEE. Never trust it in
// production.
type TestChain struct {
	Key   *rsa.PrivateKey     // the leaf's private key
	Chain []*x509.Certificate // leaf, intermediate, root: an x5chain
	DID   string              // did:x509:0:sha256:<root fingerprint>::eku:<eku>
}

// NewTestChain generates a TestChain whose certificates are valid from
// notBefore to notAfter and whose leaf carries the extended key usage eku (a
// dotted OID such as "1.3.6.1.4.1.311.76.59.1.2"). Keys are RSA-2048, the
// COSE minimum, to keep tests fast.
func NewTestChain(eku string, notBefore, notAfter time.Time) (*TestChain, error) {
	if !isOID(eku) {
		return nil, fmt.Errorf("uvm: test chain: eku %q is not an OID", eku)
	}
	var oid asn1.ObjectIdentifier
	for a := range strings.SplitSeq(eku, ".") {
		n, err := strconv.Atoi(a)
		if err != nil {
			return nil, fmt.Errorf("uvm: test chain: eku %q: %w", eku, err)
		}
		oid = append(oid, n)
	}
	type level struct {
		key  *rsa.PrivateKey
		cert *x509.Certificate
	}
	mk := func(cn string, parent *level, leaf bool, serial int64) (*level, error) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"tkms test"}},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
		}
		if leaf {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{oid}
		} else {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
			tmpl.BasicConstraintsValid = true
			tmpl.IsCA = true
		}
		parentCert, parentKey := tmpl, key
		if parent != nil {
			parentCert, parentKey = parent.cert, parent.key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return &level{key, cert}, nil
	}
	root, err := mk("tkms test UVM root", nil, false, 1)
	if err != nil {
		return nil, fmt.Errorf("uvm: test chain: %w", err)
	}
	inter, err := mk("tkms test UVM CA", root, false, 2)
	if err != nil {
		return nil, fmt.Errorf("uvm: test chain: %w", err)
	}
	leaf, err := mk("tkms test UVM signer", inter, true, 3)
	if err != nil {
		return nil, fmt.Errorf("uvm: test chain: %w", err)
	}
	fp := sha256.Sum256(root.cert.Raw)
	return &TestChain{
		Key:   leaf.key,
		Chain: []*x509.Certificate{leaf.cert, inter.cert, root.cert},
		DID:   "did:x509:0:sha256:" + base64.RawURLEncoding.EncodeToString(fp[:]) + "::eku:" + eku,
	}, nil
}
