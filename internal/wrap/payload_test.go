package wrap

import (
	"bytes"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/internal/keys"
)

// The X25519 key pair of RFC 9180 Appendix A.1.1 (recipient skRm/pkRm).
var (
	rfcPriv, _ = hex.DecodeString("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
	rfcPub, _  = hex.DecodeString("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
)

func TestJWKPayload(t *testing.T) {
	item, err := keys.PublicItem(keys.X25519, rfcPub, "WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_2", 12, 1700000000000, 1702678400000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := JWKPayload(item); !errors.Is(err, ErrWrap) {
		t.Errorf("item without d: %v", err)
	}
	item.D = "not base64url!"
	if _, err := JWKPayload(item); !errors.Is(err, ErrWrap) {
		t.Errorf("item with bad d: %v", err)
	}
	item.D = base64.RawURLEncoding.EncodeToString(rfcPriv)
	b, err := JWKPayload(item)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kty":"OKP","crv":"X25519","x":"OUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0","d":"RhLFUCY_yK1YN13z9VeqxTHSaFCQPlWp8j8h2FNOisg",` +
		`"kid":"WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_2","timestamp":1700000000000,"expiry":1702678400000,"id":12}`
	if string(b) != want {
		t.Errorf("JWKPayload =\n%s\nwant\n%s", b, want)
	}

	// Through the real wrapping key and back, as a DEPA service would.
	pub, err := ParseAppWrappingKey(string(readFile(t, "publicWrapKey.pem")))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := RSAOAEP256(pub, b)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, testPrivateKey(t), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got keys.Item
	if err := json.Unmarshal(pt, &got); err != nil || got != item {
		t.Fatalf("unwrapped item %+v, %v", got, err)
	}
	d, _ := base64.RawURLEncoding.DecodeString(got.D)
	if !bytes.Equal(d, rfcPriv) {
		t.Error("released d is not the private key")
	}
}

func TestTinkKeysetFields(t *testing.T) {
	b, err := TinkKeyset(keys.X25519, rfcPriv, rfcPub)
	if err != nil {
		t.Fatal(err)
	}
	var ks tinkpb.Keyset
	if err := proto.Unmarshal(b, &ks); err != nil {
		t.Fatal(err)
	}
	if ks.GetPrimaryKeyId() != 0 || len(ks.GetKey()) != 1 {
		t.Fatalf("keyset: primary %d, %d keys", ks.GetPrimaryKeyId(), len(ks.GetKey()))
	}
	k := ks.GetKey()[0]
	if k.GetKeyId() != 0 || k.GetStatus() != tinkpb.KeyStatusType_ENABLED || k.GetOutputPrefixType() != tinkpb.OutputPrefixType_TINK {
		t.Errorf("key: id %d, status %v, prefix %v", k.GetKeyId(), k.GetStatus(), k.GetOutputPrefixType())
	}
	kd := k.GetKeyData()
	if kd.GetTypeUrl() != "type.googleapis.com/google.crypto.tink.HpkePrivateKey" || kd.GetKeyMaterialType() != tinkpb.KeyData_ASYMMETRIC_PRIVATE {
		t.Errorf("key data: %q %v", kd.GetTypeUrl(), kd.GetKeyMaterialType())
	}
	var hk hpke_proto.HpkePrivateKey
	if err := proto.Unmarshal(kd.GetValue(), &hk); err != nil {
		t.Fatal(err)
	}
	if hk.GetVersion() != 0 || !bytes.Equal(hk.GetPrivateKey(), rfcPriv) {
		t.Errorf("private key: version %d, key %x", hk.GetVersion(), hk.GetPrivateKey())
	}
	hp := hk.GetPublicKey()
	if hp == nil || hp.GetVersion() != 0 || !bytes.Equal(hp.GetPublicKey(), rfcPub) {
		t.Fatalf("public key: %v", hp)
	}
	p := hp.GetParams()
	if p.GetKem() != hpke_proto.HpkeKem_DHKEM_X25519_HKDF_SHA256 || p.GetKdf() != hpke_proto.HpkeKdf_HKDF_SHA256 || p.GetAead() != hpke_proto.HpkeAead_AES_256_GCM {
		t.Errorf("params: %v", p)
	}
	// The wire numbers of the spec: kem 1, kdf 1, aead 2.
	if p.GetKem() != 1 || p.GetKdf() != 1 || p.GetAead() != 2 {
		t.Errorf("param numbers: %d %d %d", p.GetKem(), p.GetKdf(), p.GetAead())
	}

	// Deterministic: the same key gives the same bytes.
	b2, _ := TinkKeyset(keys.X25519, rfcPriv, rfcPub)
	if !bytes.Equal(b, b2) {
		t.Error("not deterministic")
	}

	// Refusals: other suites, a mismatched or malformed pair.
	mpriv, mpub, err := keys.MLKEM768X25519.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		s         keys.Suite
		priv, pub []byte
	}{
		{"mlkem768-x25519", keys.MLKEM768X25519, mpriv, mpub},
		{"p256", keys.P256, rfcPriv, rfcPub},
		{"mismatched public key", keys.X25519, rfcPriv, bytes.Repeat([]byte{9}, 32)},
		{"short private key", keys.X25519, rfcPriv[:31], rfcPub},
	} {
		if _, err := TinkKeyset(tt.s, tt.priv, tt.pub); !errors.Is(err, ErrWrap) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// TestTinkKeysetLoadsInTinkGo loads the keyset with tink-go (offline:
// insecurecleartextkeyset reads a cleartext keyset) and decrypts a message
// that tink-go encrypted to its public key.
func TestTinkKeysetLoadsInTinkGo(t *testing.T) {
	priv, pub, err := keys.X25519.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := TinkKeyset(keys.X25519, priv, pub)
	if err != nil {
		t.Fatal(err)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("tink-go cannot read the keyset: %v", err)
	}
	dec, err := hybrid.NewHybridDecrypt(h)
	if err != nil {
		t.Fatalf("NewHybridDecrypt: %v", err)
	}
	pubH, err := h.Public()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := hybrid.NewHybridEncrypt(pubH)
	if err != nil {
		t.Fatal(err)
	}
	msg, ctxInfo := []byte("bid request"), []byte("context")
	ct, err := enc.Encrypt(msg, ctxInfo)
	if err != nil {
		t.Fatal(err)
	}
	// TINK output prefix: 0x01 || key id 0 (4 bytes), then the HPKE
	// encapsulated key and ciphertext.
	if !bytes.HasPrefix(ct, []byte{1, 0, 0, 0, 0}) {
		t.Errorf("ciphertext prefix %x", ct[:5])
	}
	got, err := dec.Decrypt(ct, ctxInfo)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Decrypt: %v", err)
	}
	// And the ciphertext is plain HPKE to our key under the prefix: Go's
	// crypto/hpke opens it with the released private key.
	k, _ := keys.X25519.PrivateKey(priv)
	got, err = hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), ctxInfo, ct[5:])
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("crypto/hpke Open of tink ciphertext: %v", err)
	}

	// The originals' keyset, without HpkePrivateKey.public_key, is what
	// tink-go refuses (the FIX of the spec).
	var ks tinkpb.Keyset
	if err := proto.Unmarshal(b, &ks); err != nil {
		t.Fatal(err)
	}
	orig, _ := proto.Marshal(&hpke_proto.HpkePrivateKey{PrivateKey: priv})
	ks.Key[0].KeyData.Value = orig
	ob, _ := proto.Marshal(&ks)
	oh, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(ob)))
	if err == nil {
		_, err = hybrid.NewHybridDecrypt(oh)
	}
	if err == nil || !strings.Contains(err.Error(), "KEM") {
		t.Errorf("tink-go accepted the originals' keyset: %v", err)
	}
	t.Logf("tink-go on the originals' keyset: %v", err)
}

func TestTinkKeysetWrapped(t *testing.T) {
	// The real /app path: the keyset fits one RSA-4096 OAEP block.
	b, err := TinkKeyset(keys.X25519, rfcPriv, rfcPub)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParseAppWrappingKey(string(readFile(t, "publicWrapKey.pem")))
	ct, err := RSAOAEP256(pub, b)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, testPrivateKey(t), ct, nil)
	if err != nil || !bytes.Equal(pt, b) {
		t.Fatalf("unwrap: %v", err)
	}
}

func TestHPKEWrap(t *testing.T) {
	plaintext := []byte(`{"kty":"OKP","crv":"X25519","d":"..."}`)
	info := ReleaseInfo("WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_2")
	if want := "tkms/v1 key release\x00WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_2"; string(info) != want {
		t.Errorf("ReleaseInfo = %q", info)
	}
	for _, tt := range []struct {
		suite keys.Suite
		enc   int
	}{{keys.X25519, 32}, {keys.MLKEM768X25519, 1120}} {
		t.Run(tt.suite.Name, func(t *testing.T) {
			priv, pub, err := tt.suite.Generate()
			if err != nil {
				t.Fatal(err)
			}
			ct, err := HPKEWrap(tt.suite.KEM, pub, plaintext, info)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct) != tt.enc+len(plaintext)+16 {
				t.Errorf("output has %d bytes, want enc %d + ct %d", len(ct), tt.enc, len(plaintext)+16)
			}
			k, err := tt.suite.PrivateKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			got, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), info, ct)
			if err != nil || !bytes.Equal(got, plaintext) {
				t.Fatalf("Open: %v", err)
			}
			// Open with the enc || ct split explicitly.
			r, err := hpke.NewRecipient(ct[:tt.enc], k, hpke.HKDFSHA256(), hpke.AES256GCM(), info)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := r.Open(nil, ct[tt.enc:]); err != nil || !bytes.Equal(got, plaintext) {
				t.Fatalf("Recipient.Open: %v", err)
			}
			// Another kid's info, or a flipped byte, does not open.
			if _, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), ReleaseInfo("other_1"), ct); err == nil {
				t.Error("opened with another info")
			}
			for _, i := range []int{0, tt.enc, len(ct) - 1} {
				bad := bytes.Clone(ct)
				bad[i] ^= 1
				if _, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), info, bad); err == nil {
					t.Errorf("flipped byte %d opened", i)
				}
			}
			// Binding hash over the canonical encoding.
			canon := CanonicalHPKE(tt.suite.KEM, pub)
			if len(canon) != 2+len(pub) || V1BindingHash(canon) != sha256.Sum256(canon) {
				t.Error("canonical encoding")
			}
			// Malformed public key.
			if _, err := HPKEWrap(tt.suite.KEM, pub[1:], plaintext, info); !errors.Is(err, ErrWrappingKey) || code(err) != CodeWrappingKey {
				t.Errorf("short public key: %v", err)
			}
		})
	}
	_, p256pub, _ := keys.P256.Generate()
	for _, kem := range []uint16{keys.KEMP256HKDFSHA256, 0x0021, 0} {
		if _, err := HPKEWrap(kem, p256pub, plaintext, info); !errors.Is(err, ErrWrappingKey) {
			t.Errorf("KEM 0x%04x: %v", kem, err)
		}
	}
}
