package wrap

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPrivateKey is the published private key matching publicWrapKey.pem.
func testPrivateKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(readFile(t, "privateWrapKey.pem"))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// aciReportData returns REPORT_DATA of the real ACI report in aci-snp.json.
func aciReportData(t testing.TB) []byte {
	t.Helper()
	var att struct {
		Evidence string `json:"evidence"`
	}
	if err := json.Unmarshal(readFile(t, "aci-snp.json"), &att); err != nil {
		t.Fatal(err)
	}
	report, err := base64.StdEncoding.DecodeString(att.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	if len(report) != 1184 {
		t.Fatalf("report has %d bytes, want 1184", len(report))
	}
	return report[0x50 : 0x50+64]
}

func code(err error) string {
	var c interface{ Code() string }
	if errors.As(err, &c) {
		return c.Code()
	}
	return ""
}

func TestAppWrappingKeyRealSample(t *testing.T) {
	pemText := string(readFile(t, "publicWrapKey.pem"))
	pub, err := ParseAppWrappingKey(pemText)
	if err != nil {
		t.Fatalf("ParseAppWrappingKey: %v", err)
	}
	priv := testPrivateKey(t)
	if !pub.Equal(&priv.PublicKey) || pub.N.BitLen() != 4096 {
		t.Fatal("parsed key is not the sample's RSA-4096 key")
	}
	if MissingTrailingNewline(pemText) {
		t.Error("sample reported without trailing newline")
	}

	// The binding: the real ACI report commits to SHA-256 of the exact PEM
	// text, trailing newline included.
	rd := aciReportData(t)
	h := AppBindingHash(pemText)
	if !bytes.Equal(rd[:32], h[:]) {
		t.Fatalf("report data %x != AppBindingHash %x", rd[:32], h)
	}
	if err := CheckBinding(rd, h); err != nil {
		t.Fatalf("CheckBinding: %v", err)
	}

	// Without the trailing newline the key still parses, but the hash (and
	// so the binding) differs.
	trimmed := strings.TrimSuffix(pemText, "\n")
	if _, err := ParseAppWrappingKey(trimmed); err != nil {
		t.Fatalf("PEM without trailing newline: %v", err)
	}
	if !MissingTrailingNewline(trimmed) {
		t.Error("missing newline not reported")
	}
	h2 := AppBindingHash(trimmed)
	if h2 == h {
		t.Fatal("hash ignores the trailing newline")
	}
	err = CheckBinding(rd, h2)
	if !errors.Is(err, ErrBindingMismatch) || code(err) != CodeWrappingKeyMismatch ||
		!strings.Contains(err.Error(), "report data begins 36b03dab8e8751b2") ||
		!strings.Contains(err.Error(), "wrapping key hash begins "+strings.ToLower(hexPrefix(h2))) {
		t.Errorf("CheckBinding mismatch error = %v", err)
	}
	// CRLF line endings are another text, so another hash.
	if AppBindingHash(strings.ReplaceAll(pemText, "\n", "\r\n")) == h {
		t.Error("hash ignores line endings")
	}
	if err := CheckBinding(rd[:16], h); !errors.Is(err, ErrBindingMismatch) {
		t.Errorf("short report data: %v", err)
	}

	// Wrap to it and unwrap with the published private key.
	msg := []byte(`{"kty":"OKP","crv":"X25519","x":"...","d":"..."}`)
	ct, err := RSAOAEP256(pub, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != 512 {
		t.Errorf("ciphertext has %d bytes", len(ct))
	}
	got, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("DecryptOAEP: %v", err)
	}
	// Flipped byte: decryption fails.
	ct[100] ^= 1
	if _, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil); err == nil {
		t.Error("flipped ciphertext decrypted")
	}
	// A label, or SHA-1 (the WebCrypto default some clients use), does not
	// open it: the parameters are SHA-256, MGF1-SHA-256, empty label.
	ct[100] ^= 1
	if _, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct, []byte("label")); err == nil {
		t.Error("decrypted with a label")
	}
	// Longest payload for RSA-4096 is 446 bytes.
	if _, err := RSAOAEP256(pub, make([]byte, 446)); err != nil {
		t.Errorf("446-byte payload: %v", err)
	}
	if _, err := RSAOAEP256(pub, make([]byte, 447)); !errors.Is(err, ErrWrap) || code(err) != CodeWrap {
		t.Errorf("447-byte payload: %v", err)
	}
}

func hexPrefix(h [32]byte) string {
	const digits = "0123456789abcdef"
	var b []byte
	for _, c := range h[:8] {
		b = append(b, digits[c>>4], digits[c&15])
	}
	return string(b)
}

var (
	rsa2048Once sync.Once
	rsa2048     *rsa.PrivateKey
)

// rsa2048Key returns a generated RSA-2048 key, shared by the tests.
func rsa2048Key(t testing.TB) *rsa.PrivateKey {
	rsa2048Once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsa2048 = k
	})
	return rsa2048
}

// fakeRSA returns an RSA public key with a modulus of exactly bits bits
// (2^(bits-1)+1: not a product of two primes, but parsing does not care),
// so that size checks are tested without generating RSA-8192 keys.
func fakeRSA(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	return &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
}

func spkiPEM(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestParseAppWrappingKeyRefusals(t *testing.T) {
	sample := string(readFile(t, "publicWrapKey.pem"))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsa2048Key(t).PublicKey)}))
	privDER, _ := x509.MarshalPKCS8PrivateKey(rsa2048Key(t))
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	withHeader := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}))
	body := strings.TrimPrefix(strings.TrimSuffix(sample, "-----END PUBLIC KEY-----\n"), "-----BEGIN PUBLIC KEY-----\n")

	tests := []struct {
		name string
		pem  string
		code string
	}{
		{"RSA-1024", spkiPEM(t, fakeRSA(1024)), CodeWrappingKey},
		{"RSA-2047", spkiPEM(t, fakeRSA(2047)), CodeWrappingKey},
		{"RSA-8192", spkiPEM(t, fakeRSA(8192)), CodeWrappingKey},
		{"EC P-384", spkiPEM(t, &ecKey.PublicKey), CodeWrappingKey},
		{"Ed25519", spkiPEM(t, edPub), CodeWrappingKey},
		{"two PEM blocks", sample + sample, CodeInvalidPEM},
		{"two PEM blocks, second a private key", sample + privPEM, CodeInvalidPEM},
		{"private key PEM", privPEM, CodeInvalidPEM},
		{"malformed block, then a valid one", "-----BEGIN PUBLIC KEY-----\n!!\n" + sample, CodeInvalidPEM},
		{"PKCS #1 RSA PUBLIC KEY", pkcs1, CodeInvalidPEM},
		{"PEM headers", withHeader, CodeInvalidPEM},
		{"garbage", "not a key", CodeInvalidPEM},
		{"empty", "", CodeInvalidPEM},
		{"base64 DER without armour", body, CodeInvalidPEM},
		{"text before the block", "key:\n" + sample, CodeInvalidPEM},
		{"leading newline", "\n" + sample, CodeInvalidPEM},
		{"text after the block", sample + "trailer", CodeInvalidPEM},
		{"truncated", sample[:len(sample)-30], CodeInvalidPEM},
		{"corrupted base64", strings.Replace(sample, "MII", "M!I", 1), CodeInvalidPEM},
		{"flipped DER byte", flipDER(t, sample, 5), CodeInvalidPEM},
		{"END label mismatch", strings.Replace(sample, "END PUBLIC KEY", "END PRIVATE KEY", 1), CodeInvalidPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAppWrappingKey(tt.pem)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := code(err); got != tt.code {
				t.Errorf("code = %q, want %q (%v)", got, tt.code, err)
			}
		})
	}

	// Accepted: 2048 and 3072 bits, CRLF line endings, trailing white space.
	for _, ok := range []string{
		spkiPEM(t, &rsa2048Key(t).PublicKey),
		spkiPEM(t, fakeRSA(3072)),
		spkiPEM(t, fakeRSA(4096)),
		strings.ReplaceAll(sample, "\n", "\r\n"),
		sample + "\n\n",
	} {
		if _, err := ParseAppWrappingKey(ok); err != nil {
			t.Errorf("refused a valid key: %v", err)
		}
	}
}

// flipDER flips a byte of the DER inside a PEM and re-armours it.
func flipDER(t testing.TB, pemText string, i int) string {
	block, _ := pem.Decode([]byte(pemText))
	der := bytes.Clone(block.Bytes)
	der[i] ^= 0x80
	return string(pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der}))
}

func TestRSAOAEP256SmallKey(t *testing.T) {
	k := rsa2048Key(t)
	msg := bytes.Repeat([]byte{7}, 190)
	ct, err := RSAOAEP256(&k.PublicKey, msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256})
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Decrypt with explicit MGF1-SHA-256: %v", err)
	}
	if _, err := RSAOAEP256(&k.PublicKey, append(msg, 0)); !errors.Is(err, ErrWrap) {
		t.Errorf("191 bytes to RSA-2048: %v", err)
	}
	if _, err := RSAOAEP256(nil, msg); !errors.Is(err, ErrWrap) {
		t.Errorf("nil key: %v", err)
	}
}

func TestCanonicalEncodings(t *testing.T) {
	pub, err := ParseAppWrappingKey(string(readFile(t, "publicWrapKey.pem")))
	if err != nil {
		t.Fatal(err)
	}
	der := CanonicalRSA(pub)
	block, _ := pem.Decode(readFile(t, "publicWrapKey.pem"))
	if !bytes.Equal(der, block.Bytes) {
		t.Error("CanonicalRSA is not the SPKI DER")
	}
	if V1BindingHash(der) != sha256.Sum256(block.Bytes) {
		t.Error("V1BindingHash")
	}
	// /v1 binds to the key, not to its text: the hash of the DER differs
	// from the /app hash of the PEM.
	if V1BindingHash(der) == AppBindingHash(string(readFile(t, "publicWrapKey.pem"))) {
		t.Error("v1 and app hashes coincide")
	}
	got := CanonicalHPKE(0x647a, []byte{1, 2, 3})
	if !bytes.Equal(got, []byte{0x64, 0x7a, 1, 2, 3}) {
		t.Errorf("CanonicalHPKE = %x", got)
	}
	if !bytes.Equal(CanonicalHPKE(0x0020, nil), []byte{0, 0x20}) {
		t.Error("CanonicalHPKE empty")
	}
}

func FuzzParseAppWrappingKey(f *testing.F) {
	f.Add(string(readFile(f, "publicWrapKey.pem")))
	f.Add(strings.TrimSuffix(string(readFile(f, "publicWrapKey.pem")), "\n"))
	f.Add(string(readFile(f, "privateWrapKey.pem")))
	f.Add(spkiPEM(f, &rsa2048Key(f).PublicKey))
	f.Add("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParseAppWrappingKey(s)
		if err != nil {
			if c := code(err); c != CodeInvalidPEM && c != CodeWrappingKey {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if strings.Count(s, "-----BEGIN") != 1 {
			t.Fatal("accepted text without exactly one BEGIN line")
		}
		if n := pub.N.BitLen(); n < MinRSABits || n > MaxRSABits {
			t.Fatalf("accepted %d bits", n)
		}
		// What is accepted is exactly one SPKI block: re-armouring its DER
		// gives the same key.
		again, err := ParseAppWrappingKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: CanonicalRSA(pub)})))
		if err != nil || !again.Equal(pub) {
			t.Fatalf("canonical re-encoding: %v", err)
		}
	})
}
