package keys_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
)

// FuzzParseKIDNumber checks that a kid number has one spelling: whatever
// ParseKIDNumber accepts, KID writes back the same way.
func FuzzParseKIDNumber(f *testing.F) {
	for _, s := range []string{
		"tGe-cVHzNyim2Z0PzHO4y0ClXCa5J6x-bh7GmGJTr3c_2",
		"WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_18446744073709551615",
		"a_b_1", "_0", "_07", "_x", "_", "", "_18446744073709551616", "_+1", "_-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, kid string) {
		n, ok := keys.ParseKIDNumber(kid)
		if !ok {
			if n != 0 {
				t.Fatalf("ParseKIDNumber(%q) = %d, false; want 0 on failure", kid, n)
			}
			return
		}
		if n == 0 {
			t.Fatalf("ParseKIDNumber(%q) accepted key number 0", kid)
		}
		i := strings.LastIndexByte(kid, '_')
		if want := strconv.FormatUint(n, 10); kid[i+1:] != want {
			t.Fatalf("ParseKIDNumber(%q) = %d, but KID writes %q", kid, n, want)
		}
		if got := keys.KID([]byte(kid), n); !strings.HasSuffix(got, "_"+kid[i+1:]) {
			t.Fatalf("KID(_, %d) = %q", n, got)
		}
	})
}

// FuzzParseSuite checks that ParseSuite accepts exactly the suite names.
func FuzzParseSuite(f *testing.F) {
	for _, s := range keys.Suites {
		f.Add(s.Name)
	}
	f.Add("")
	f.Add("X25519")
	f.Add("mlkem768-x25519\x00")
	f.Fuzz(func(t *testing.T, name string) {
		s, err := keys.ParseSuite(name)
		if err != nil {
			if s != (keys.Suite{}) {
				t.Fatalf("ParseSuite(%q) failed but returned %v", name, s)
			}
			return
		}
		if s.Name != name {
			t.Fatalf("ParseSuite(%q) = suite %q", name, s.Name)
		}
		if _, err := keys.SuiteForKEM(s.KEM); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzPublicKey feeds arbitrary bytes as a public key of each suite to
// everything that takes one. Nothing may panic, and the functions must agree
// on what is a valid key.
func FuzzPublicKey(f *testing.F) {
	seeds := [][]byte{nil, {0}, bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0}, 65)}
	for _, file := range []string{"rfc9180-base.json", "hpke-pq.json"} {
		for _, v := range loadVectors(f, file) {
			if _, err := keys.SuiteForKEM(v.KEM); err == nil && v.KDF == keys.KDFHKDFSHA256 {
				seeds = append(seeds, unhex(f, v.PkRm), unhex(f, v.SkRm))
			}
		}
	}
	for i, b := range seeds {
		f.Add(uint8(i), b)
	}
	p, _ := hex.DecodeString(p256Pub)
	f.Add(uint8(1), append([]byte{2}, p[1:33]...))

	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		s := keys.Suites[int(which)%len(keys.Suites)]
		_, pubErr := s.PublicKey(b)
		_, _ = s.PrivateKey(b)
		text, pemErr := keys.PublicPEM(s, b)
		_, itemErr := keys.PublicItem(s, b, "k_1", 11, 0, 0)
		if (pubErr == nil) != (pemErr == nil) || (pubErr == nil) != (itemErr == nil) {
			t.Fatalf("%s key %x: PublicKey %v, PublicPEM %v, PublicItem %v disagree", s.Name, b, pubErr, pemErr, itemErr)
		}
		if pubErr != nil {
			return
		}
		block, rest := pem.Decode(text)
		if block == nil || len(rest) != 0 {
			t.Fatalf("PublicPEM(%x) is not one PEM block:\n%s", b, text)
		}
		if !bytes.HasSuffix(block.Bytes, b) {
			t.Fatalf("SPKI %x does not end with the key %x", block.Bytes, b)
		}
		if s.KEM != keys.KEMMLKEM768X25519 {
			if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
				t.Fatalf("x509 cannot parse the SPKI of %x: %v", b, err)
			}
		}
		_ = keys.OHTTPConfig(0x11, s, b)
	})
}
