package ohttp_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
	"golang.org/x/crypto/chacha20poly1305"
)

// This file holds what the tests check the package against: a reference
// client and gateway written directly on crypto/hpke from RFC 9458 §4.3 and
// §4.4, sharing no code with the package, and the test keys.

// refLabels are the labels of a variant, spelled out here rather than read
// from the package.
type refLabels struct {
	req, res string
	prefix   bool
}

var refVariants = map[string]refLabels{
	"OHTTP":          {"message/bhttp request", "message/bhttp response", false},
	"BiddingAuction": {"message/auction request", "message/auction response", true},
	"TrustedSignals": {"message/ad-auction-trusted-signals-request", "message/ad-auction-trusted-signals-response", false},
}

var pkgVariants = map[string]ohttp.Variant{
	"OHTTP":          ohttp.OHTTP,
	"BiddingAuction": ohttp.BiddingAuction,
	"TrustedSignals": ohttp.TrustedSignals,
}

// refExchange is what the reference client keeps of a request.
type refExchange struct {
	aead   uint16
	enc    []byte
	secret []byte
}

func refHeader(id byte, kem, kdf, aead uint16) []byte {
	h := []byte{id}
	h = binary.BigEndian.AppendUint16(h, kem)
	h = binary.BigEndian.AppendUint16(h, kdf)
	return binary.BigEndian.AppendUint16(h, aead)
}

func refSecretLen(aead uint16) int {
	if aead == 0x0001 {
		return 16 // max(Nn=12, Nk=16)
	}
	return 32 // max(Nn=12, Nk=32)
}

// refEncapsulate is RFC 9458 §4.3 on crypto/hpke.
func refEncapsulate(t testing.TB, pk hpke.PublicKey, id byte, kdfID, aeadID uint16, l refLabels, plaintext []byte) ([]byte, refExchange) {
	t.Helper()
	kdf, err := hpke.NewKDF(kdfID)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := hpke.NewAEAD(aeadID)
	if err != nil {
		t.Fatal(err)
	}
	hdr := refHeader(id, pk.KEM().ID(), kdfID, aeadID)
	info := append(append([]byte(l.req), 0), hdr...)
	enc, s, err := hpke.NewSender(pk, kdf, aead, info)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := s.Export(l.res, refSecretLen(aeadID))
	if err != nil {
		t.Fatal(err)
	}
	var msg []byte
	if l.prefix {
		msg = append(msg, 0)
	}
	msg = append(append(append(msg, hdr...), enc...), ct...)
	return msg, refExchange{aead: aeadID, enc: enc, secret: secret}
}

// refDecapsulate is the gateway side of RFC 9458 §4.3 on crypto/hpke.
func refDecapsulate(t testing.TB, sk hpke.PrivateKey, nenc int, l refLabels, msg []byte) ([]byte, refExchange) {
	t.Helper()
	if l.prefix {
		msg = msg[1:]
	}
	hdr, enc, ct := msg[:7], msg[7:7+nenc], msg[7+nenc:]
	kdf, err := hpke.NewKDF(binary.BigEndian.Uint16(hdr[3:5]))
	if err != nil {
		t.Fatal(err)
	}
	aeadID := binary.BigEndian.Uint16(hdr[5:7])
	aead, err := hpke.NewAEAD(aeadID)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(enc, sk, kdf, aead, append(append([]byte(l.req), 0), hdr...))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := r.Open(nil, ct)
	if err != nil {
		t.Fatalf("reference gateway: %v", err)
	}
	secret, err := r.Export(l.res, refSecretLen(aeadID))
	if err != nil {
		t.Fatal(err)
	}
	return pt, refExchange{aead: aeadID, enc: enc, secret: secret}
}

// aead derives the response AEAD of RFC 9458 §4.4.
func (x refExchange) responseAEAD(t testing.TB, responseNonce []byte) (cipher.AEAD, []byte) {
	t.Helper()
	salt := append(append([]byte{}, x.enc...), responseNonce...)
	prk, err := hkdf.Extract(sha256.New, x.secret, salt)
	if err != nil {
		t.Fatal(err)
	}
	nk := 32
	if x.aead == 0x0001 {
		nk = 16
	}
	key, err := hkdf.Expand(sha256.New, prk, "key", nk)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "nonce", 12)
	if err != nil {
		t.Fatal(err)
	}
	var a cipher.AEAD
	if x.aead == 0x0003 {
		a, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			a, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return a, nonce
}

func (x refExchange) openResponse(t testing.TB, msg []byte) ([]byte, error) {
	n := refSecretLen(x.aead)
	a, nonce := x.responseAEAD(t, msg[:n])
	return a.Open(nil, nonce, msg[n:], nil)
}

func (x refExchange) sealResponse(t testing.TB, responseNonce, body []byte) []byte {
	a, nonce := x.responseAEAD(t, responseNonce)
	return a.Seal(append([]byte{}, responseNonce...), nonce, body, nil)
}

// testKEM is a KEM tkms issues keys for, with a fixed test key.
type testKEM struct {
	name string
	id   uint16
	nenc int
	sk   hpke.PrivateKey
}

func testKEMs(t testing.TB) []testKEM {
	t.Helper()
	var out []testKEM
	for _, k := range []struct {
		name string
		id   uint16
		nenc int
	}{{"x25519", 0x0020, 32}, {"p256", 0x0010, 65}, {"mlkem768-x25519", 0x647a, 1120}} {
		kem, err := hpke.NewKEM(k.id)
		if err != nil {
			t.Fatal(err)
		}
		ikm := make([]byte, 64)
		copy(ikm, "tkms ohttp test key "+k.name)
		sk, err := kem.DeriveKeyPair(ikm)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, testKEM{k.name, k.id, k.nenc, sk})
	}
	return out
}

var testAEADs = []struct {
	name string
	id   uint16
}{{"aes128gcm", 0x0001}, {"aes256gcm", 0x0002}, {"chacha20poly1305", 0x0003}}

// keyMap is an in-memory KeySource.
type keyMap map[byte]*ohttp.Key

var errNoKey = errors.New("test: no such key")

func (m keyMap) OHTTPKey(_ context.Context, id byte) (*ohttp.Key, error) {
	if k, ok := m[id]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("key 0x%02x: %w: %w", id, ohttp.ErrUnknownKeyID, errNoKey)
}

// configBytes encodes a key configuration (RFC 9458 §3.1), independently
// of the package.
func configBytes(c ohttp.KeyConfig) []byte {
	b := []byte{c.ID}
	b = binary.BigEndian.AppendUint16(b, c.KEM)
	b = append(b, c.PublicKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(4*len(c.Suites)))
	for _, s := range c.Suites {
		b = binary.BigEndian.AppendUint16(b, s.KDF)
		b = binary.BigEndian.AppendUint16(b, s.AEAD)
	}
	return b
}

// listBytes encodes an application/ohttp-keys list (RFC 9458 §3.2).
func listBytes(cs ...ohttp.KeyConfig) []byte {
	var b []byte
	for _, c := range cs {
		one := configBytes(c)
		b = binary.BigEndian.AppendUint16(b, uint16(len(one)))
		b = append(b, one...)
	}
	return b
}
