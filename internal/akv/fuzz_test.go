package akv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// signedRelease returns a release answer signed by a fresh self-signed
// certificate for 127.0.0.1, the pool trusting it, and its payload.
func signedRelease(tb testing.TB, kid, nonce, enc, keyHSM string, edit ...func(*ReleasePayload)) (string, *x509.CertPool) {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test vault"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	var p ReleasePayload
	p.Request.APIVersion, p.Request.KID, p.Request.Nonce, p.Request.Enc = APIVersion, kid, nonce, enc
	p.Response.Key.Key = JWK{KID: kid, KTY: "RSA-HSM", KeyHSM: keyHSM}
	for _, e := range edit {
		e(&p)
	}
	b, _ := json.Marshal(p)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k},
		(&jose.SignerOptions{}).WithHeader("x5c", []string{base64.StdEncoding.EncodeToString(der)}))
	if err != nil {
		tb.Fatal(err)
	}
	obj, err := s.Sign(b)
	if err != nil {
		tb.Fatal(err)
	}
	jws, _ := obj.CompactSerialize()
	return jws, pool
}

const testKID = "http://127.0.0.1/keys/k/1"

func TestVerifyRelease(t *testing.T) {
	jws, pool := signedRelease(t, testKID, "n1", EncRSAAESKeyWrap, "kh")
	opts := VerifyOptions{Roots: pool, Host: "127.0.0.1", KID: testKID, Nonce: "n1"}
	r, err := VerifyRelease(jws, opts)
	if err != nil || r.Payload.Response.Key.Key.KeyHSM != "kh" || r.Signer.Subject.CommonName != "test vault" {
		t.Fatalf("%+v, %v", r, err)
	}
	// Flip a bit of the signature itself (not of its base64, which could
	// make the JWS unparsable instead).
	parts := strings.Split(jws, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[len(sig)/2] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	for name, tc := range map[string]struct {
		jws  string
		edit func(*VerifyOptions)
		code string
	}{
		"flipped signature": {flipped, nil, CodeSignature},
		"another host":      {jws, func(o *VerifyOptions) { o.Host = "myvault.vault.azure.net" }, CodeSigner},
		"untrusted root":    {jws, func(o *VerifyOptions) { o.Roots = x509.NewCertPool() }, CodeSigner},
		"another kid":       {jws, func(o *VerifyOptions) { o.KID = testKID + "0" }, CodeMismatch},
		"another version":   {jws, func(o *VerifyOptions) { o.KID = "http://127.0.0.1/keys/k/2" }, CodeMismatch},
		"another nonce":     {jws, func(o *VerifyOptions) { o.Nonce = "n2" }, CodeMismatch},
		"another enc":       {jws, func(o *VerifyOptions) { o.Enc = EncRSAAESKeyWrap256 }, CodeMismatch},
		"not a JWS":         {"a.b", nil, CodeMalformed},
	} {
		o := opts
		if tc.edit != nil {
			tc.edit(&o)
		}
		if _, err := VerifyRelease(tc.jws, o); Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
	// The vault need not repeat the version in the request's kid, nor the
	// nonce.
	terse, pool3 := signedRelease(t, testKID, "", EncRSAAESKeyWrap, "kh", func(p *ReleasePayload) { p.Request.KID = "http://127.0.0.1/keys/k" })
	if _, err := VerifyRelease(terse, VerifyOptions{Roots: pool3, Host: "127.0.0.1", KID: testKID, Nonce: "n1"}); err != nil {
		t.Errorf("an unversioned request kid, no nonce repeated: %v", err)
	}
	other, pool4 := signedRelease(t, testKID, "", EncRSAAESKeyWrap, "kh", func(p *ReleasePayload) { p.Request.KID = "http://127.0.0.1/keys/j" })
	if _, err := VerifyRelease(other, VerifyOptions{Roots: pool4, Host: "127.0.0.1", KID: testKID}); Code(err) != CodeMismatch {
		t.Errorf("a request kid of another key: %v", err)
	}
	noHSM, pool2 := signedRelease(t, testKID, "", EncRSAAESKeyWrap, "")
	if _, err := VerifyRelease(noHSM, VerifyOptions{Roots: pool2, Host: "127.0.0.1", KID: testKID}); Code(err) != CodeMalformed {
		t.Errorf("no key_hsm: %v", err)
	}
}

// FuzzVerifyRelease: no release answer makes the verifier panic, and every
// refusal is coded.
func FuzzVerifyRelease(f *testing.F) {
	jws, pool := signedRelease(f, testKID, "", EncRSAAESKeyWrap, "kh")
	f.Add(jws)
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := VerifyRelease(s, VerifyOptions{Roots: pool, Host: "127.0.0.1", KID: testKID}); err != nil && Code(err) == "ATTESTATION_INTERNAL" {
			t.Fatalf("uncoded: %v", err)
		}
	})
}

// FuzzParseAnswers: the vault's JSON answers (key bundle, release result,
// key_hsm, sealed key) never panic a parser and are refused with a code.
func FuzzParseAnswers(f *testing.F) {
	v, err := os.ReadFile("testdata/keyhsm-openssl.json")
	if err != nil {
		f.Fatal(err)
	}
	var vec struct {
		KeyHSM string `json:"key_hsm"`
	}
	_ = json.Unmarshal(v, &vec)
	f.Add([]byte(`{"key":{"kid":"https://v.vault.azure.net/keys/k/1","kty":"RSA-HSM","n":"AQAB","e":"AQAB"},"attributes":{"exportable":true},"release_policy":{"contentType":"application/json; charset=utf-8","data":"e30"}}`))
	f.Add([]byte(`{"value":"a.b.c"}`))
	f.Add([]byte(vec.KeyHSM))
	f.Add([]byte(`eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0.a.b.c.d`))
	f.Fuzz(func(t *testing.T, b []byte) {
		coded := func(what string, err error) {
			if err != nil && Code(err) == "ATTESTATION_INTERNAL" {
				t.Fatalf("%s: uncoded: %v", what, err)
			}
		}
		_, err := ParseKeyBundle(b)
		coded("key bundle", err)
		_, err = ParseReleaseResult(b)
		coded("release result", err)
		_, err = ParseKeyHSM(string(b))
		coded("key_hsm", err)
		_, err = SealedKID(string(b))
		coded("sealed", err)
	})
}

// FuzzUnwrapKeyHSM: a key_hsm never panics the unwrap, whatever its
// ciphertext, and refusals are coded.
func FuzzUnwrapKeyHSM(f *testing.F) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	good, err := WrapKeyHSM([]byte("0123456789abcdef0123"), EncRSAAESKeyWrap, &k.PublicKey, "rk")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, EncRSAAESKeyWrap)
	f.Add("e30", EncRSAAESKeyWrap256)
	f.Fuzz(func(t *testing.T, kh, enc string) {
		if _, err := UnwrapKeyHSM(kh, enc, k); err != nil && Code(err) == "ATTESTATION_INTERNAL" {
			t.Fatalf("uncoded: %v", err)
		}
	})
}
