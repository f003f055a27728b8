package keys_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
)

// vector is one HPKE test vector in the CFRG JSON form (testdata/PROVENANCE.md).
type vector struct {
	Mode        uint16 `json:"mode"`
	KEM         uint16 `json:"kem_id"`
	KDF         uint16 `json:"kdf_id"`
	AEAD        uint16 `json:"aead_id"`
	Info        string `json:"info"`
	SkRm        string `json:"skRm"`
	PkRm        string `json:"pkRm"`
	Enc         string `json:"enc"`
	Encryptions []struct {
		Aad string `json:"aad"`
		Ct  string `json:"ct"`
		Pt  string `json:"pt"`
	} `json:"encryptions"`
}

func loadVectors(t testing.TB, name string) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return vs
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vectorKey returns pkRm of the first base-mode vector in file whose KEM is
// kem, so that other tests can use a public key that is not ours.
func vectorKey(t testing.TB, file string, kem uint16) []byte {
	t.Helper()
	for _, v := range loadVectors(t, file) {
		if v.Mode == 0 && v.KEM == kem {
			return unhex(t, v.PkRm)
		}
	}
	t.Fatalf("%s: no vector for KEM 0x%04x", file, kem)
	return nil
}

// TestVectors checks every base-mode vector whose KEM is one of our suites':
// our suite deserialises the vector's keys, opens the vector's ciphertext,
// round-trips its own KDF and AEAD with those keys, and writes a PEM that
// standard parsers read back.
func TestVectors(t *testing.T) {
	seen := map[string]int{}  // vectors whose KEM is the suite's
	exact := map[string]int{} // vectors whose KEM, KDF and AEAD are the suite's
	for _, file := range []string{"rfc9180-base.json", "hpke-pq.json"} {
		for _, v := range loadVectors(t, file) {
			s, err := keys.SuiteForKEM(v.KEM)
			if err != nil || v.Mode != 0 {
				continue
			}
			isExact := v.KDF == s.KDF && v.AEAD == s.AEAD
			name := file + "/kem=" + hex4(v.KEM) + "/kdf=" + hex4(v.KDF) + "/aead=" + hex4(v.AEAD)
			t.Run(name, func(t *testing.T) {
				seen[s.Name]++
				if isExact {
					exact[s.Name]++
				}
				skRm, pkRm := unhex(t, v.SkRm), unhex(t, v.PkRm)
				priv, err := s.PrivateKey(skRm)
				if err != nil {
					t.Fatalf("PrivateKey(skRm): %v", err)
				}
				if got := priv.PublicKey().Bytes(); !bytes.Equal(got, pkRm) {
					t.Fatalf("PrivateKey(skRm).PublicKey() = %x, want pkRm %x", got, pkRm)
				}
				pub, err := s.PublicKey(pkRm)
				if err != nil {
					t.Fatalf("PublicKey(pkRm): %v", err)
				}
				if !bytes.Equal(pub.Bytes(), pkRm) {
					t.Fatalf("PublicKey(pkRm).Bytes() = %x, want %x", pub.Bytes(), pkRm)
				}
				checkPEM(t, s, pkRm)

				info := unhex(t, v.Info)
				_, kdfErr := hpke.NewKDF(v.KDF)
				if kdfErr != nil {
					t.Logf("not opening the vector's ciphertext: %v", kdfErr)
				}
				if len(v.Encryptions) > 0 && kdfErr == nil {
					// An exact vector is opened with our suite's own ids:
					// that proves the ids tkms advertises are the ones the
					// vector's ciphertext was made with.
					kdfID, aeadID := v.KDF, v.AEAD
					if isExact {
						kdfID, aeadID = s.KDF, s.AEAD
					}
					kdf, aead := mustKDF(t, kdfID), mustAEAD(t, aeadID)
					e := v.Encryptions[0]
					aad, ct, pt := unhex(t, e.Aad), unhex(t, e.Ct), unhex(t, e.Pt)
					r, err := hpke.NewRecipient(unhex(t, v.Enc), priv, kdf, aead, info)
					if err != nil {
						t.Fatalf("NewRecipient: %v", err)
					}
					got, err := r.Open(aad, ct)
					if err != nil {
						t.Fatalf("Open(first encryption): %v", err)
					}
					if !bytes.Equal(got, pt) {
						t.Fatalf("Open(first encryption) = %x, want %x", got, pt)
					}
					flipped := bytes.Clone(ct)
					flipped[len(flipped)/2] ^= 0x01
					r, _ = hpke.NewRecipient(unhex(t, v.Enc), priv, kdf, aead, info)
					if _, err := r.Open(aad, flipped); err == nil {
						t.Fatal("Open accepted a ciphertext with a flipped byte")
					}
				}

				// Our full suite with the vector's keys.
				kdf, aead := mustKDF(t, s.KDF), mustAEAD(t, s.AEAD)
				msg := []byte("tkms round trip")
				ct, err := hpke.Seal(pub, kdf, aead, info, msg)
				if err != nil {
					t.Fatalf("Seal: %v", err)
				}
				got, err := hpke.Open(priv, kdf, aead, info, ct)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("Open(Seal(m)) = %q, want %q", got, msg)
				}
			})
		}
	}
	for _, s := range keys.Suites {
		if seen[s.Name] == 0 {
			t.Errorf("suite %s: no vector for its KEM", s.Name)
		}
	}
	for _, name := range []string{keys.X25519.Name, keys.P256.Name} {
		if exact[name] == 0 {
			t.Errorf("suite %s: no vector for its exact ciphersuite", name)
		}
	}
}

func hex4(v uint16) string { return "0x" + hex.EncodeToString([]byte{byte(v >> 8), byte(v)}) }

func mustKDF(t testing.TB, id uint16) hpke.KDF {
	t.Helper()
	kdf, err := hpke.NewKDF(id)
	if err != nil {
		t.Fatal(err)
	}
	return kdf
}

func mustAEAD(t testing.TB, id uint16) hpke.AEAD {
	t.Helper()
	aead, err := hpke.NewAEAD(id)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

// spkiPrefix is the DER of each suite's SubjectPublicKeyInfo up to the raw
// public key: RFC 8410 §4 (id-X25519), RFC 5480 §2 (id-ecPublicKey with
// secp256r1, uncompressed point), and the X-Wing OID
// 1.3.6.1.4.1.62253.25722 with absent parameters.
var spkiPrefix = map[string]string{
	"x25519":          "302a300506032b656e032100",
	"p256":            "3059301306072a8648ce3d020106082a8648ce3d030107034200",
	"mlkem768-x25519": "308204d4300d060b2b0601040183e62d81c87a038204c100",
}

var pemLine = regexp.MustCompile(`^[A-Za-z0-9+/]{1,64}={0,2}$`)

// checkPEM checks that PublicPEM(s, pub) is exactly one PUBLIC KEY block in
// the form OpenSSL writes and that its DER parses back to pub.
func checkPEM(t *testing.T, s keys.Suite, pub []byte) []byte {
	t.Helper()
	text, err := keys.PublicPEM(s, pub)
	if err != nil {
		t.Fatalf("PublicPEM: %v", err)
	}
	const head, tail = "-----BEGIN PUBLIC KEY-----\n", "\n-----END PUBLIC KEY-----\n"
	str := string(text)
	if !strings.HasPrefix(str, head) || !strings.HasSuffix(str, tail) {
		t.Fatalf("PEM is not %q ... %q:\n%s", head, tail, text)
	}
	lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(str, head), tail), "\n")
	for i, l := range lines {
		if !pemLine.MatchString(l) || (i < len(lines)-1 && len(l) != 64) {
			t.Fatalf("PEM body line %d %q: want 64 base64 characters (fewer on the last line)", i, l)
		}
	}
	block, rest := pem.Decode(text)
	if block == nil || len(rest) != 0 || block.Type != "PUBLIC KEY" || len(block.Headers) != 0 {
		t.Fatalf("PEM does not decode to exactly one bare PUBLIC KEY block:\n%s", text)
	}
	der := block.Bytes
	if want := spkiPrefix[s.Name] + hex.EncodeToString(pub); hex.EncodeToString(der) != want {
		t.Fatalf("SPKI DER = %x, want %s", der, want)
	}

	switch s.KEM {
	case keys.KEMX25519HKDFSHA256, keys.KEMP256HKDFSHA256:
		k, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatalf("x509.ParsePKIXPublicKey: %v", err)
		}
		var ek *ecdh.PublicKey
		switch k := k.(type) {
		case *ecdh.PublicKey: // X25519
			ek = k
		case *ecdsa.PublicKey: // P-256: crypto/x509 returns EC keys as ECDSA keys
			if ek, err = k.ECDH(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("x509.ParsePKIXPublicKey gave %T", k)
		}
		curve := ecdh.X25519()
		if s.KEM == keys.KEMP256HKDFSHA256 {
			curve = ecdh.P256()
		}
		if ek.Curve() != curve || !bytes.Equal(ek.Bytes(), pub) {
			t.Fatalf("parsed key %v %x, want %v %x", ek.Curve(), ek.Bytes(), curve, pub)
		}
	case keys.KEMMLKEM768X25519:
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		rest, err := asn1.Unmarshal(der, &spki)
		if err != nil || len(rest) != 0 {
			t.Fatalf("asn1.Unmarshal: %v (%d trailing bytes)", err, len(rest))
		}
		if want := (asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62253, 25722}); !spki.Algorithm.Algorithm.Equal(want) {
			t.Fatalf("algorithm %v, want X-Wing %v", spki.Algorithm.Algorithm, want)
		}
		if len(spki.Algorithm.Parameters.FullBytes) != 0 {
			t.Fatalf("algorithm parameters %x, want absent", spki.Algorithm.Parameters.FullBytes)
		}
		if spki.PublicKey.BitLength != 8*len(pub) || !bytes.Equal(spki.PublicKey.Bytes, pub) {
			t.Fatalf("BIT STRING holds %d bits, want exactly the %d-byte key", spki.PublicKey.BitLength, len(pub))
		}
		if _, err := x509.ParsePKIXPublicKey(der); err == nil {
			t.Log("note: crypto/x509 now parses X-Wing keys")
		}
	default:
		t.Fatalf("no PEM check for suite %s", s.Name)
	}
	return text
}

// TestPEMMatchesOpenSSL pins the PEM text, and so the kid, against what
// OpenSSL 3.0 writes for the same keys (the vectors' pkRm; see
// testdata/PROVENANCE.md). The originals' kids are hashes of OpenSSL's text.
func TestPEMMatchesOpenSSL(t *testing.T) {
	tests := []struct {
		suite   keys.Suite
		pub     string
		openssl string
		kidHash string // openssl dgst -sha256 -binary | basenc --base64url
	}{
		{
			keys.X25519,
			"3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
			"-----BEGIN PUBLIC KEY-----\n" +
				"MCowBQYDK2VuAyEAOUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0=\n" +
				"-----END PUBLIC KEY-----\n",
			"WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4",
		},
		{
			keys.P256,
			"04abc7e49a4c6b3566d77d0304addc6ed0e98512ffccf505e6a8e3eb25c685136f853148544876de76c0f2ef99cdc3a05ccf5ded7860c7c021238f9e2073d2356c",
			"-----BEGIN PUBLIC KEY-----\n" +
				"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEq8fkmkxrNWbXfQMErdxu0OmFEv/M\n" +
				"9QXmqOPrJcaFE2+FMUhUSHbedsDy75nNw6Bcz13teGDHwCEjj54gc9I1bA==\n" +
				"-----END PUBLIC KEY-----\n",
			"4talFOvZLxBkBXM0D5YYTB4RrJ61a-HLm0tzUIL9Bhk",
		},
	}
	for _, tt := range tests {
		t.Run(tt.suite.Name, func(t *testing.T) {
			text := checkPEM(t, tt.suite, unhex(t, tt.pub))
			if string(text) != tt.openssl {
				t.Fatalf("PublicPEM =\n%s\nwant (OpenSSL)\n%s", text, tt.openssl)
			}
			if got, want := keys.KID(text, 7), tt.kidHash+"_7"; got != want {
				t.Fatalf("KID = %s, want %s", got, want)
			}
		})
	}
}

func TestPublicPEMRejects(t *testing.T) {
	x := vectorKey(t, "rfc9180-base.json", keys.KEMX25519HKDFSHA256)
	p := vectorKey(t, "rfc9180-base.json", keys.KEMP256HKDFSHA256)
	h := vectorKey(t, "hpke-pq.json", keys.KEMMLKEM768X25519)
	compressed := append([]byte{0x02 | p[64]&1}, p[1:33]...)
	offCurve := bytes.Clone(p)
	offCurve[64] ^= 0x01
	tests := []struct {
		name  string
		suite keys.Suite
		pub   []byte
	}{
		{"x25519/short", keys.X25519, x[:31]},
		{"x25519/long", keys.X25519, append(bytes.Clone(x), 0)},
		{"x25519/empty", keys.X25519, nil},
		{"p256/compressed", keys.P256, compressed},
		{"p256/off-curve", keys.P256, offCurve},
		{"p256/x25519-key", keys.P256, x},
		{"hybrid/short", keys.MLKEM768X25519, h[:len(h)-1]},
		{"hybrid/x25519-key", keys.MLKEM768X25519, x},
		{"unknown-suite", keys.Suite{Name: "none", KEM: 0x0021}, x},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if text, err := keys.PublicPEM(tt.suite, tt.pub); err == nil {
				t.Fatalf("PublicPEM accepted %x:\n%s", tt.pub, text)
			}
		})
	}
}

// TestSuites checks each suite's wiring: its ids are HPKE's, and Generate,
// PrivateKey and PublicKey agree with each other.
func TestSuites(t *testing.T) {
	sizes := map[string]struct{ priv, pub int }{
		"x25519":          {32, 32},
		"p256":            {32, 65},
		"mlkem768-x25519": {32, 1216},
	}
	for _, s := range keys.Suites {
		t.Run(s.Name, func(t *testing.T) {
			if got, err := keys.ParseSuite(s.Name); err != nil || got != s {
				t.Fatalf("ParseSuite(%q) = %v, %v", s.Name, got, err)
			}
			if got, err := keys.SuiteForKEM(s.KEM); err != nil || got != s {
				t.Fatalf("SuiteForKEM(0x%04x) = %v, %v", s.KEM, got, err)
			}
			kem, err := hpke.NewKEM(s.KEM)
			if err != nil || kem.ID() != s.KEM {
				t.Fatalf("hpke.NewKEM(0x%04x): %v", s.KEM, err)
			}
			if mustKDF(t, s.KDF).ID() != keys.KDFHKDFSHA256 || mustAEAD(t, s.AEAD).ID() != keys.AEADAES256GCM {
				t.Fatal("suite does not use HKDF-SHA256 and AES-256-GCM")
			}
			priv, pub, err := s.Generate()
			if err != nil {
				t.Fatal(err)
			}
			if len(priv) != sizes[s.Name].priv || len(pub) != sizes[s.Name].pub {
				t.Fatalf("Generate: %d-byte private and %d-byte public key, want %v", len(priv), len(pub), sizes[s.Name])
			}
			k, err := s.PrivateKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k.PublicKey().Bytes(), pub) {
				t.Fatal("PrivateKey(priv).PublicKey() differs from the generated public key")
			}
			if _, err := s.PublicKey(pub); err != nil {
				t.Fatal(err)
			}
			priv2, pub2, err := s.Generate()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(priv, priv2) || bytes.Equal(pub, pub2) {
				t.Fatal("two Generate calls gave the same key")
			}
			checkPEM(t, s, pub)
		})
	}
}

func TestParseSuite(t *testing.T) {
	tests := []struct {
		name string
		want keys.Suite
		ok   bool
	}{
		{"x25519", keys.X25519, true},
		{"p256", keys.P256, true},
		{"mlkem768-x25519", keys.MLKEM768X25519, true},
		{"", keys.Suite{}, false},
		{"X25519", keys.Suite{}, false},
		{"x25519 ", keys.Suite{}, false},
		{"p-256", keys.Suite{}, false},
		{"mlkem768x25519", keys.Suite{}, false},
	}
	for _, tt := range tests {
		got, err := keys.ParseSuite(tt.name)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseSuite(%q) = %v, %v; want %v, ok=%v", tt.name, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, keys.ErrUnknownSuite) {
			t.Errorf("ParseSuite(%q) error %v is not ErrUnknownSuite", tt.name, err)
		}
	}
	for _, kem := range []uint16{0, 0x0011, 0x0021, 0x0041, 0x0050} {
		if s, err := keys.SuiteForKEM(kem); !errors.Is(err, keys.ErrUnknownSuite) {
			t.Errorf("SuiteForKEM(0x%04x) = %v, %v; want ErrUnknownSuite", kem, s, err)
		}
	}
}

var kidShape = regexp.MustCompile(`^[A-Za-z0-9_-]{43}_[1-9][0-9]*$`)

func TestKID(t *testing.T) {
	for _, s := range keys.Suites {
		_, pub, err := s.Generate()
		if err != nil {
			t.Fatal(err)
		}
		text := checkPEM(t, s, pub)
		sum := sha256.Sum256(text)
		hash := strings.TrimRight(base64.URLEncoding.EncodeToString(sum[:]), "=")
		for _, n := range []uint64{1, 2, 9, 10, 90, 12345, math.MaxUint64} {
			kid := keys.KID(text, n)
			if !kidShape.MatchString(kid) {
				t.Errorf("%s: KID(pem, %d) = %q does not have the shape %s", s.Name, n, kid, kidShape)
			}
			if want := hash + "_" + strconv.FormatUint(n, 10); kid != want {
				t.Errorf("%s: KID(pem, %d) = %q, want %q", s.Name, n, kid, want)
			}
			if got, ok := keys.ParseKIDNumber(kid); !ok || got != n {
				t.Errorf("ParseKIDNumber(%q) = %d, %v; want %d", kid, got, ok, n)
			}
		}
	}
}

func TestParseKIDNumber(t *testing.T) {
	const hash = "tGe-cVHzNyim2Z0PzHO4y0ClXCa5J6x-bh7GmGJTr3c"
	tests := []struct {
		kid string
		n   uint64
		ok  bool
	}{
		{hash + "_2", 2, true},
		{hash + "_1", 1, true},
		{hash + "_90", 90, true},
		{"a_b_c_17", 17, true}, // base64url hashes may themselves hold "_"
		{"_18446744073709551615", math.MaxUint64, true},
		{hash, 0, false},                           // no underscore
		{"", 0, false},                             // empty
		{hash + "_", 0, false},                     // no number
		{hash + "_0", 0, false},                    // numbers are 1-based
		{hash + "_00", 0, false},                   //
		{hash + "_02", 0, false},                   // not how KID writes 2
		{hash + "_x", 0, false},                    // not a number
		{hash + "_2x", 0, false},                   //
		{hash + "_+2", 0, false},                   // sign
		{hash + "_-2", 0, false},                   //
		{hash + "_ 2", 0, false},                   // space
		{hash + "_2 ", 0, false},                   //
		{hash + "_0x10", 0, false},                 // hex
		{hash + "_1_", 0, false},                   // number not at the end
		{hash + "_18446744073709551616", 0, false}, // overflows uint64
		{hash + "_99999999999999999999999", 0, false},
		{hash + "_２", 0, false}, // fullwidth digit
	}
	for _, tt := range tests {
		n, ok := keys.ParseKIDNumber(tt.kid)
		if n != tt.n || ok != tt.ok {
			t.Errorf("ParseKIDNumber(%q) = %d, %v; want %d, %v", tt.kid, n, ok, tt.n, tt.ok)
		}
	}
}

// heldSet returns a held func for AssignID that also checks AssignID only
// asks about ids in range.
func heldSet(t *testing.T, ids ...int) func(int) bool {
	set := map[int]bool{}
	for _, id := range ids {
		set[id] = true
	}
	return func(id int) bool {
		if id < keys.MinID || id > keys.MaxID {
			t.Errorf("AssignID asked about id %d, outside %d..%d", id, keys.MinID, keys.MaxID)
		}
		return set[id]
	}
}

func idRange(lo, hi int) []int {
	var ids []int
	for id := lo; id <= hi; id++ {
		ids = append(ids, id)
	}
	return ids
}

func TestAssignID(t *testing.T) {
	tests := []struct {
		name string
		n    uint64
		held []int
		want int
	}{
		{"fresh/1", 1, nil, 11},
		{"fresh/2", 2, nil, 12},
		{"fresh/89", 89, nil, 99},
		{"fresh/90", 90, nil, 10},
		{"fresh/91", 91, nil, 11},
		{"fresh/180", 180, nil, 10},
		{"fresh/0", 0, nil, 10},
		{"fresh/max", math.MaxUint64, nil, int(uint64(math.MaxUint64)%90) + 10},
		{"held-elsewhere", 1, []int{10, 12, 99}, 11},
		{"skip-one", 1, []int{11}, 12},
		{"skip-run", 1, []int{11, 12, 13}, 14},
		{"wrap-99-to-10", 89, []int{99}, 10},
		{"wrap-past-10", 89, []int{99, 10, 11}, 12},
		{"only-10-free", 1, idRange(11, 99), 10},
		{"only-one-free-is-start-minus-one", 50, append(idRange(10, 58), idRange(60, 99)...), 59},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keys.AssignID(tt.n, heldSet(t, tt.held...))
			if err != nil || got != tt.want {
				t.Fatalf("AssignID(%d) = %d, %v; want %d", tt.n, got, err, tt.want)
			}
		})
	}

	t.Run("all-held", func(t *testing.T) {
		calls := 0
		id, err := keys.AssignID(7, func(int) bool { calls++; return true })
		if !errors.Is(err, keys.ErrNoFreeID) {
			t.Fatalf("AssignID with every id held = %d, %v; want ErrNoFreeID", id, err)
		}
		if calls != 90 {
			t.Fatalf("AssignID asked %d times, want each of the 90 ids once", calls)
		}
	})

	t.Run("range", func(t *testing.T) {
		for n := range uint64(1000) {
			id, err := keys.AssignID(n, heldSet(t))
			if err != nil || id < keys.MinID || id > keys.MaxID || id != int(n%90)+10 {
				t.Fatalf("AssignID(%d) = %d, %v; want %d", n, id, err, n%90+10)
			}
		}
	})

	// Every id but one held, starting from each id: AssignID finds the free one.
	t.Run("finds-last-free", func(t *testing.T) {
		for free := keys.MinID; free <= keys.MaxID; free++ {
			for n := range uint64(90) {
				id, err := keys.AssignID(n, func(id int) bool { return id != free })
				if err != nil || id != free {
					t.Fatalf("AssignID(%d) with only %d free = %d, %v", n, free, id, err)
				}
			}
		}
	})
}

func TestOHTTPKeyID(t *testing.T) {
	tests := []struct {
		id   int
		want byte
	}{
		{10, 0x10}, {11, 0x11}, {19, 0x19}, {20, 0x20}, {42, 0x42},
		{64, 0x64}, {90, 0x90}, {98, 0x98}, {99, 0x99},
	}
	for _, tt := range tests {
		if got := keys.OHTTPKeyID(tt.id); got != tt.want {
			t.Errorf("OHTTPKeyID(%d) = 0x%02x, want 0x%02x", tt.id, got, tt.want)
		}
	}
	seen := map[byte]int{}
	for id := keys.MinID; id <= keys.MaxID; id++ {
		got := keys.OHTTPKeyID(id)
		// The two decimal digits become the two hex nibbles.
		if want := byte(id/10)<<4 | byte(id%10); got != want {
			t.Errorf("OHTTPKeyID(%d) = 0x%02x, want 0x%02x", id, got, want)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("OHTTPKeyID(%d) = OHTTPKeyID(%d) = 0x%02x", id, other, got)
		}
		seen[got] = id
	}
}
