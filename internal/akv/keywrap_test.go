package akv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"testing"
)

// TestUnwrapKeyHSMOpenSSL unwraps a key_hsm made by OpenSSL
// (testdata/README.md): RSA-OAEP SHA-1 and RFC 5649 from another
// implementation.
func TestUnwrapKeyHSMOpenSSL(t *testing.T) {
	b, err := os.ReadFile("testdata/keyhsm-openssl.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		RuntimeKeyPEM string `json:"runtime_key_pem"`
		Enc           string `json:"enc"`
		KeyHSM        string `json:"key_hsm"`
		SHA256        string `json:"released_pkcs8_sha256"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(v.RuntimeKeyPEM))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := UnwrapKeyHSM(v.KeyHSM, v.Enc, k.(*rsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(der); hex.EncodeToString(h[:]) != v.SHA256 {
		t.Fatalf("unwrapped %x, want SHA-256 %s", h, v.SHA256)
	}
	if _, err := x509.ParsePKCS8PrivateKey(der); err != nil {
		t.Fatalf("the unwrapped key is not PKCS #8: %v", err)
	}
	if _, err := UnwrapKeyHSM(v.KeyHSM, EncRSAAESKeyWrap256, k.(*rsa.PrivateKey)); Code(err) != CodeMismatch {
		t.Fatalf("another enc than key_hsm's header: %v", err)
	}
}

func TestKeyHSMRoundTrip(t *testing.T) {
	runtime, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	secret := []byte("a PKCS #8 key, or any key of 16 bytes or more")
	for _, enc := range []string{EncRSAAESKeyWrap, EncRSAAESKeyWrap256, EncRSAAESKeyWrap384} {
		t.Run(enc, func(t *testing.T) {
			kh, err := WrapKeyHSM(secret, enc, &runtime.PublicKey, "rk")
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnwrapKeyHSM(kh, enc, runtime)
			if err != nil || string(got) != string(secret) {
				t.Fatalf("%q, %v", got, err)
			}
			if _, err := UnwrapKeyHSM(kh, enc, other); Code(err) != CodeUnwrap {
				t.Fatalf("another runtime key: %v, want %s", err, CodeUnwrap)
			}
			// Flip a byte of the AES key wrap: its integrity check fails.
			parsed, _ := ParseKeyHSM(kh)
			ct, _ := base64.RawURLEncoding.DecodeString(parsed.Ciphertext)
			ct[len(ct)-3] ^= 1
			parsed.Ciphertext = base64.RawURLEncoding.EncodeToString(ct)
			pb, _ := json.Marshal(parsed)
			if _, err := UnwrapKeyHSM(base64.RawURLEncoding.EncodeToString(pb), enc, runtime); Code(err) != CodeUnwrap {
				t.Fatalf("flipped byte: %v, want %s", err, CodeUnwrap)
			}
		})
	}
	if _, err := WrapKeyHSM(secret, "A256KW", &runtime.PublicKey, "rk"); Code(err) != CodeMalformed {
		t.Fatalf("unknown enc: %v", err)
	}
	for name, kh := range map[string]string{
		"not base64":         "%%%",
		"not JSON":           base64.RawURLEncoding.EncodeToString([]byte("nope")),
		"no ciphertext":      base64.RawURLEncoding.EncodeToString([]byte(`{"schema_version":"1.0"}`)),
		"short ciphertext":   base64.RawURLEncoding.EncodeToString([]byte(`{"ciphertext":"AAAA"}`)),
		"ciphertext not b64": base64.RawURLEncoding.EncodeToString([]byte(`{"ciphertext":"@@@"}`)),
	} {
		if _, err := UnwrapKeyHSM(kh, EncRSAAESKeyWrap, runtime); Code(err) != CodeMalformed {
			t.Errorf("%s: %v, want %s", name, err, CodeMalformed)
		}
	}
}
