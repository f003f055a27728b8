package ohttp_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/ohttp"
)

// rfcVector is RFC 9458 Appendix A (testdata/PROVENANCE.md).
type rfcVector struct {
	KeyConfig     string `json:"key_config"`
	SkR           string `json:"skR"`
	PkR           string `json:"pkR"`
	Request       string `json:"request"`
	Enc           string `json:"enc"`
	Info          string `json:"info"`
	EncRequest    string `json:"enc_request"`
	Response      string `json:"response"`
	Secret        string `json:"secret"`
	ResponseNonce string `json:"response_nonce"`
	PRK           string `json:"prk"`
	AEADKey       string `json:"aead_key"`
	AEADNonce     string `json:"aead_nonce"`
	EncResponse   string `json:"enc_response"`
}

func loadRFCVector(t testing.TB) rfcVector {
	t.Helper()
	b, err := os.ReadFile("testdata/rfc9458-appendix-a.json")
	if err != nil {
		t.Fatal(err)
	}
	var v rfcVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rfcGateway returns a gateway holding the RFC's key 0x01 with the suite
// of its request (HKDF-SHA256, AES-128-GCM).
func rfcGateway(t testing.TB, v rfcVector) *ohttp.Gateway {
	t.Helper()
	sk, err := hpke.DHKEM(ecdh.X25519()).NewPrivateKey(unhex(t, v.SkR))
	if err != nil {
		t.Fatal(err)
	}
	return &ohttp.Gateway{Keys: keyMap{1: {ID: 1, KDF: 0x0001, AEAD: 0x0001, Private: sk}}}
}

func TestRFC9458AppendixA(t *testing.T) {
	v := loadRFCVector(t)

	c, err := ohttp.ParseKeyConfig(unhex(t, v.KeyConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := ohttp.KeyConfig{ID: 1, KEM: 0x0020, PublicKey: unhex(t, v.PkR),
		Suites: []ohttp.SymmetricSuite{{KDF: 1, AEAD: 1}, {KDF: 1, AEAD: 3}}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("ParseKeyConfig = %+v, want %+v", c, want)
	}

	g := rfcGateway(t, v)
	g.Rand = bytes.NewReader(unhex(t, v.ResponseNonce))
	pt, gc, err := g.DecapsulateRequest(context.Background(), ohttp.OHTTP, unhex(t, v.EncRequest))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(pt); got != v.Request {
		t.Fatalf("request = %s, want %s", got, v.Request)
	}
	res, err := gc.EncapsulateResponse(unhex(t, v.Response))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(res); got != v.EncResponse {
		t.Fatalf("response = %s, want %s", got, v.EncResponse)
	}

	// The reference computation reaches the RFC's intermediate values too.
	sk, _ := hpke.DHKEM(ecdh.X25519()).NewPrivateKey(unhex(t, v.SkR))
	_, x := refDecapsulate(t, sk, 32, refVariants["OHTTP"], unhex(t, v.EncRequest))
	if got := hex.EncodeToString(x.secret); got != v.Secret {
		t.Fatalf("secret = %s, want %s", got, v.Secret)
	}
	if got := hex.EncodeToString(x.enc); got != v.Enc {
		t.Fatalf("enc = %s, want %s", got, v.Enc)
	}
	info := append([]byte("message/bhttp request\x00"), unhex(t, v.EncRequest)[:7]...)
	if got := hex.EncodeToString(info); got != v.Info {
		t.Fatalf("info = %s, want %s", got, v.Info)
	}
	prk, err := hkdf.Extract(sha256.New, x.secret, append(bytes.Clone(x.enc), unhex(t, v.ResponseNonce)...))
	if err != nil || hex.EncodeToString(prk) != v.PRK {
		t.Fatalf("prk = %x, %v; want %s", prk, err, v.PRK)
	}
	if k, err := hkdf.Expand(sha256.New, prk, "key", 16); err != nil || hex.EncodeToString(k) != v.AEADKey {
		t.Fatalf("aead_key = %x, %v; want %s", k, err, v.AEADKey)
	}
	if n, err := hkdf.Expand(sha256.New, prk, "nonce", 12); err != nil || hex.EncodeToString(n) != v.AEADNonce {
		t.Fatalf("aead_nonce = %x, %v; want %s", n, err, v.AEADNonce)
	}

	// The RFC's response opens under the RFC's exchange. The package's
	// client cannot reproduce that exchange (crypto/hpke draws its own
	// ephemeral key), so it encapsulates the RFC's request to the RFC's key
	// and must give the RFC's header and length.
	body, err := x.openResponse(t, unhex(t, v.EncResponse))
	if err != nil || !bytes.Equal(body, unhex(t, v.Response)) {
		t.Fatalf("reference open of RFC response = %x, %v", body, err)
	}
	msg, cc, err := ohttp.EncapsulateRequest(c, ohttp.SymmetricSuite{KDF: 1, AEAD: 1}, ohttp.OHTTP, unhex(t, v.Request))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(msg[:7]), v.EncRequest[:14]; got != want {
		t.Fatalf("header = %s, want %s", got, want)
	}
	if len(msg) != len(v.EncRequest)/2 {
		t.Fatalf("request is %d bytes, RFC's is %d", len(msg), len(v.EncRequest)/2)
	}
	g.Rand = nil
	pt, gc, err = g.DecapsulateRequest(context.Background(), ohttp.OHTTP, msg)
	if err != nil || !bytes.Equal(pt, unhex(t, v.Request)) {
		t.Fatalf("DecapsulateRequest = %x, %v", pt, err)
	}
	res, err = gc.EncapsulateResponse(unhex(t, v.Response))
	if err != nil {
		t.Fatal(err)
	}
	if body, err := cc.DecapsulateResponse(res); err != nil || !bytes.Equal(body, unhex(t, v.Response)) {
		t.Fatalf("DecapsulateResponse = %x, %v", body, err)
	}
}

// testGateway returns a gateway with one key per KEM and AEAD, and the
// configurations a client sees for them.
func testGateway(t testing.TB) (*ohttp.Gateway, map[string]ohttp.KeyConfig, map[string]testKEM) {
	t.Helper()
	km := keyMap{}
	configs := map[string]ohttp.KeyConfig{}
	kems := map[string]testKEM{}
	id := byte(0x10)
	for _, k := range testKEMs(t) {
		for _, a := range testAEADs {
			name := k.name + "/" + a.name
			km[id] = &ohttp.Key{ID: id, KDF: 0x0001, AEAD: a.id, Private: k.sk}
			configs[name] = ohttp.KeyConfig{ID: id, KEM: k.id, PublicKey: k.sk.PublicKey().Bytes(),
				Suites: []ohttp.SymmetricSuite{{KDF: 0x0001, AEAD: a.id}}}
			kems[name] = k
			id++
		}
	}
	return &ohttp.Gateway{Keys: km}, configs, kems
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	g, configs, kems := testGateway(t)
	for name, c := range configs {
		k := kems[name]
		s := c.Suites[0]
		for vname, v := range pkgVariants {
			l := refVariants[vname]
			t.Run(name+"/"+vname, func(t *testing.T) {
				req := []byte("request to " + name + "/" + vname)
				res := []byte("response from " + name + "/" + vname)

				// Reference client -> package gateway -> reference client.
				msg, x := refEncapsulate(t, k.sk.PublicKey(), c.ID, s.KDF, s.AEAD, l, req)
				pt, gc, err := g.DecapsulateRequest(ctx, v, msg)
				if err != nil || !bytes.Equal(pt, req) {
					t.Fatalf("gateway on reference request = %q, %v", pt, err)
				}
				enc, err := gc.EncapsulateResponse(res)
				if err != nil {
					t.Fatal(err)
				}
				if len(enc) != refSecretLen(s.AEAD)+len(res)+16 {
					t.Fatalf("response is %d bytes", len(enc))
				}
				if body, err := x.openResponse(t, enc); err != nil || !bytes.Equal(body, res) {
					t.Fatalf("reference open of gateway response = %q, %v", body, err)
				}

				// Package client -> reference gateway -> package client.
				msg, cc, err := ohttp.EncapsulateRequest(c, s, v, req)
				if err != nil {
					t.Fatal(err)
				}
				wantLen := 7 + k.nenc + len(req) + 16
				if l.prefix {
					wantLen++
				}
				if len(msg) != wantLen || l.prefix && msg[0] != 0 {
					t.Fatalf("request of %d bytes starting %#x, want %d bytes (prefix %v)", len(msg), msg[0], wantLen, l.prefix)
				}
				pt, x = refDecapsulate(t, k.sk, k.nenc, l, msg)
				if !bytes.Equal(pt, req) {
					t.Fatalf("reference gateway on client request = %q", pt)
				}
				nonce := bytes.Repeat([]byte{7}, refSecretLen(s.AEAD))
				if body, err := cc.DecapsulateResponse(x.sealResponse(t, nonce, res)); err != nil || !bytes.Equal(body, res) {
					t.Fatalf("client open of reference response = %q, %v", body, err)
				}

				// Package client -> package gateway -> package client.
				msg, cc, err = ohttp.EncapsulateRequest(c, s, v, req)
				if err != nil {
					t.Fatal(err)
				}
				pt, gc, err = g.DecapsulateRequest(ctx, v, msg)
				if err != nil || !bytes.Equal(pt, req) {
					t.Fatalf("gateway on client request = %q, %v", pt, err)
				}
				enc, err = gc.EncapsulateResponse(res)
				if err != nil {
					t.Fatal(err)
				}
				if body, err := cc.DecapsulateResponse(enc); err != nil || !bytes.Equal(body, res) {
					t.Fatalf("client open of gateway response = %q, %v", body, err)
				}
			})
		}
	}
}

// TestKeysInterop parses what GET /v1/keys/ohttp serves (keys.OHTTPConfigList
// of keys.OHTTPConfig) and decrypts with the matching private keys.
func TestKeysInterop(t *testing.T) {
	ctx := context.Background()
	km := keyMap{}
	var encoded [][]byte
	for i, s := range keys.Suites {
		priv, pub, err := s.Generate()
		if err != nil {
			t.Fatal(err)
		}
		sk, err := s.PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		id := keys.OHTTPKeyID(keys.MinID + 32 + i)
		km[id] = &ohttp.Key{ID: id, KDF: s.KDF, AEAD: s.AEAD, Private: sk}
		encoded = append(encoded, keys.OHTTPConfig(id, s, pub))
	}
	configs, err := ohttp.ParseKeyConfigs(keys.OHTTPConfigList(encoded...))
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) != len(keys.Suites) {
		t.Fatalf("parsed %d configs, want %d", len(configs), len(keys.Suites))
	}
	g := &ohttp.Gateway{Keys: km}
	for i, c := range configs {
		s := keys.Suites[i]
		if c.KEM != s.KEM || !reflect.DeepEqual(c.Suites, []ohttp.SymmetricSuite{{KDF: s.KDF, AEAD: s.AEAD}}) {
			t.Fatalf("config %d = %+v, want suite %+v", i, c, s)
		}
		for vname, v := range pkgVariants {
			msg, cc, err := ohttp.EncapsulateRequest(c, c.Suites[0], v, []byte(vname))
			if err != nil {
				t.Fatal(err)
			}
			pt, gc, err := g.DecapsulateRequest(ctx, v, msg)
			if err != nil || string(pt) != vname {
				t.Fatalf("%s %s: DecapsulateRequest = %q, %v", s.Name, vname, pt, err)
			}
			res, err := gc.EncapsulateResponse(pt)
			if err != nil {
				t.Fatal(err)
			}
			if body, err := cc.DecapsulateResponse(res); err != nil || string(body) != vname {
				t.Fatalf("%s %s: DecapsulateResponse = %q, %v", s.Name, vname, body, err)
			}
		}
	}
}

// brokenSource fails every lookup with its error, or returns its key.
type brokenSource struct {
	key *ohttp.Key
	err error
}

func (b brokenSource) OHTTPKey(context.Context, byte) (*ohttp.Key, error) { return b.key, b.err }

func TestDecapsulateRequestErrors(t *testing.T) {
	ctx := context.Background()
	g, configs, kems := testGateway(t)
	c := configs["x25519/aes256gcm"]
	k := kems["x25519/aes256gcm"]
	req := []byte("request")
	ohttpMsg, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, req)
	if err != nil {
		t.Fatal(err)
	}
	baMsg, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.BiddingAuction, req)
	if err != nil {
		t.Fatal(err)
	}
	tsMsg, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.TrustedSignals, req)
	if err != nil {
		t.Fatal(err)
	}
	with := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	ctxErr := context.DeadlineExceeded
	for _, tc := range []struct {
		name string
		g    *ohttp.Gateway
		v    ohttp.Variant
		msg  []byte
		want []error
	}{
		{"unknown key id", g, ohttp.OHTTP, with(ohttpMsg, 0, 0x99), []error{ohttp.ErrUnknownKeyID, errNoKey}},
		{"key source fails", &ohttp.Gateway{Keys: brokenSource{err: ctxErr}}, ohttp.OHTTP, ohttpMsg, []error{ohttp.ErrKeyUnavailable, ctxErr}},
		{"no key source", &ohttp.Gateway{}, ohttp.OHTTP, ohttpMsg, []error{ohttp.ErrKeyUnavailable}},
		{"short request, no lookup", &ohttp.Gateway{Keys: brokenSource{err: ctxErr}}, ohttp.OHTTP, ohttpMsg[:7+32+15], []error{ohttp.ErrMalformed}},
		{"unsupported suite, no lookup", &ohttp.Gateway{Keys: brokenSource{err: ctxErr}}, ohttp.OHTTP, with(ohttpMsg, 2, 0x77), []error{ohttp.ErrUnsupportedSuite}},
		{"too short for the header's kem", g, ohttp.OHTTP, with(ohttpMsg, 2, 0x10), []error{ohttp.ErrMalformed}},
		{"key source returns nil", &ohttp.Gateway{Keys: brokenSource{}}, ohttp.OHTTP, ohttpMsg, []error{ohttp.ErrUnknownKeyID}},
		{"key source returns other id", &ohttp.Gateway{Keys: brokenSource{key: &ohttp.Key{ID: c.ID + 1, KDF: 1, AEAD: 2, Private: k.sk}}}, ohttp.OHTTP, ohttpMsg, []error{ohttp.ErrUnknownKeyID}},
		{"wrong kem", g, ohttp.OHTTP, with(append(bytes.Clone(ohttpMsg), make([]byte, 65)...), 2, 0x10), []error{ohttp.ErrUnsupportedSuite}},
		{"wrong kdf", g, ohttp.OHTTP, with(ohttpMsg, 4, 0x02), []error{ohttp.ErrUnsupportedSuite}},
		{"wrong aead", g, ohttp.OHTTP, with(ohttpMsg, 6, 0x01), []error{ohttp.ErrUnsupportedSuite}},
		{"export-only aead", g, ohttp.OHTTP, with(with(ohttpMsg, 5, 0xff), 6, 0xff), []error{ohttp.ErrUnsupportedSuite}},
		{"key with unsupported aead", &ohttp.Gateway{Keys: brokenSource{key: &ohttp.Key{ID: c.ID, KDF: 1, AEAD: 0xffff, Private: k.sk}}}, ohttp.OHTTP, with(with(ohttpMsg, 5, 0xff), 6, 0xff), []error{ohttp.ErrUnsupportedSuite}},
		{"key with unsupported kdf", &ohttp.Gateway{Keys: brokenSource{key: &ohttp.Key{ID: c.ID, KDF: 2, AEAD: 2, Private: k.sk}}}, ohttp.OHTTP, with(ohttpMsg, 4, 0x02), []error{ohttp.ErrUnsupportedSuite}},
		{"wrong prefix byte", g, ohttp.BiddingAuction, with(baMsg, 0, 0x01), []error{ohttp.ErrMalformed}},
		{"no prefix byte", g, ohttp.BiddingAuction, ohttpMsg, []error{ohttp.ErrMalformed}},
		{"empty b&a", g, ohttp.BiddingAuction, nil, []error{ohttp.ErrMalformed}},
		{"empty", g, ohttp.OHTTP, nil, []error{ohttp.ErrMalformed}},
		{"prefixed request as ohttp", g, ohttp.OHTTP, baMsg, []error{ohttp.ErrUnsupportedSuite}},
		{"trusted signals as ohttp", g, ohttp.OHTTP, tsMsg, []error{ohttp.ErrDecrypt}},
		{"ohttp as trusted signals", g, ohttp.TrustedSignals, ohttpMsg, []error{ohttp.ErrDecrypt}},
		{"trailing byte", g, ohttp.OHTTP, append(bytes.Clone(ohttpMsg), 0), []error{ohttp.ErrDecrypt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, gc, err := tc.g.DecapsulateRequest(ctx, tc.v, tc.msg)
			if err == nil || pt != nil || gc != nil {
				t.Fatalf("DecapsulateRequest = %q, %v, %v; want error", pt, gc, err)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q is not %q", err, w)
				}
			}
		})
	}
}

// TestTruncatedAndFlipped cuts every request at every length and flips
// every byte after the header, for every KEM and variant.
func TestTruncatedAndFlipped(t *testing.T) {
	ctx := context.Background()
	g, configs, kems := testGateway(t)
	for _, name := range []string{"x25519/aes128gcm", "p256/aes256gcm", "mlkem768-x25519/chacha20poly1305"} {
		c, k := configs[name], kems[name]
		for vname, v := range pkgVariants {
			t.Run(name+"/"+vname, func(t *testing.T) {
				msg, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], v, []byte("hi"))
				if err != nil {
					t.Fatal(err)
				}
				p := 0
				if v.Prefix {
					p = 1
				}
				minLen := p + 7 + k.nenc + 16
				for n := range len(msg) {
					_, _, err := g.DecapsulateRequest(ctx, v, msg[:n])
					want := ohttp.ErrMalformed
					if n >= minLen {
						want = ohttp.ErrDecrypt
					}
					if !errors.Is(err, want) {
						t.Fatalf("cut at %d: %v, want %v", n, err, want)
					}
				}
				for i := p + 7; i < len(msg); i++ {
					for _, bit := range []byte{0x01, 0x80} {
						bad := bytes.Clone(msg)
						bad[i] ^= bit
						_, _, err := g.DecapsulateRequest(ctx, v, bad)
						if err != ohttp.ErrDecrypt {
							t.Fatalf("flip %#x at %d: %v, want exactly ErrDecrypt", bit, i, err)
						}
					}
				}
			})
		}
	}
}

func TestDecapsulateResponseErrors(t *testing.T) {
	ctx := context.Background()
	g, configs, _ := testGateway(t)
	for _, name := range []string{"x25519/aes128gcm", "x25519/aes256gcm", "x25519/chacha20poly1305"} {
		c := configs[name]
		t.Run(name, func(t *testing.T) {
			msgA, ccA, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, []byte("a"))
			if err != nil {
				t.Fatal(err)
			}
			_, ccB, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, []byte("b"))
			if err != nil {
				t.Fatal(err)
			}
			_, gcA, err := g.DecapsulateRequest(ctx, ohttp.OHTTP, msgA)
			if err != nil {
				t.Fatal(err)
			}
			res, err := gcA.EncapsulateResponse([]byte("answer"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ccA.DecapsulateResponse(res); err != nil {
				t.Fatal(err)
			}
			if _, err := ccB.DecapsulateResponse(res); err != ohttp.ErrDecrypt {
				t.Fatalf("response to the wrong context: %v, want ErrDecrypt", err)
			}
			// The same request read as another variant gives another secret.
			msgTS, ccTS, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.TrustedSignals, []byte("a"))
			if err != nil {
				t.Fatal(err)
			}
			_, gcTS, err := g.DecapsulateRequest(ctx, ohttp.TrustedSignals, msgTS)
			if err != nil {
				t.Fatal(err)
			}
			resTS, err := gcTS.EncapsulateResponse([]byte("answer"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ccTS.DecapsulateResponse(resTS); err != nil {
				t.Fatal(err)
			}
			if _, err := ccA.DecapsulateResponse(resTS); err != ohttp.ErrDecrypt {
				t.Fatalf("response of another variant: %v, want ErrDecrypt", err)
			}
			nonceLen := refSecretLen(c.Suites[0].AEAD)
			for n := range len(res) {
				_, err := ccA.DecapsulateResponse(res[:n])
				want := ohttp.ErrMalformed
				if n >= nonceLen+16 {
					want = ohttp.ErrDecrypt
				}
				if !errors.Is(err, want) {
					t.Fatalf("cut at %d: %v, want %v", n, err, want)
				}
			}
			for i := range res {
				bad := bytes.Clone(res)
				bad[i] ^= 0x01
				if _, err := ccA.DecapsulateResponse(bad); err != ohttp.ErrDecrypt {
					t.Fatalf("flip at %d: %v, want ErrDecrypt", i, err)
				}
			}
		})
	}
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

func TestEncapsulateResponseRandFails(t *testing.T) {
	g, configs, _ := testGateway(t)
	c := configs["x25519/aes256gcm"]
	msg, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Rand = failingReader{}
	_, gc, err := g.DecapsulateRequest(context.Background(), ohttp.OHTTP, msg)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := gc.EncapsulateResponse([]byte("x")); err == nil {
		t.Fatalf("EncapsulateResponse = %x with a failing Rand", res)
	}
}

func TestEncapsulateRequestErrors(t *testing.T) {
	_, configs, _ := testGateway(t)
	c := configs["x25519/aes256gcm"]
	bad := c
	bad.PublicKey = c.PublicKey[:31]
	badP256 := configs["p256/aes256gcm"]
	badP256.PublicKey = bytes.Repeat([]byte{4}, 65)
	unknownKEM := c
	unknownKEM.KEM = 0x0011
	unimplemented := c
	unimplemented.Suites = append(unimplemented.Suites, ohttp.SymmetricSuite{KDF: 0x0002, AEAD: 0x0002})
	for _, tc := range []struct {
		name string
		c    ohttp.KeyConfig
		s    ohttp.SymmetricSuite
		want error
	}{
		{"suite not offered", c, ohttp.SymmetricSuite{KDF: 1, AEAD: 1}, ohttp.ErrUnsupportedSuite},
		{"suite not implemented", unimplemented, ohttp.SymmetricSuite{KDF: 2, AEAD: 2}, ohttp.ErrUnsupportedSuite},
		{"kem not implemented", unknownKEM, c.Suites[0], ohttp.ErrUnsupportedSuite},
		{"short x25519 key", bad, c.Suites[0], ohttp.ErrMalformed},
		{"p256 key off the curve", badP256, badP256.Suites[0], ohttp.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ohttp.EncapsulateRequest(tc.c, tc.s, ohttp.OHTTP, nil); !errors.Is(err, tc.want) {
				t.Fatalf("EncapsulateRequest: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseKeyConfigs(t *testing.T) {
	v := loadRFCVector(t)
	rfc := unhex(t, v.KeyConfig)
	_, configs, _ := testGateway(t)
	p256, mlkem := configs["p256/aes256gcm"], configs["mlkem768-x25519/aes128gcm"]
	list := listBytes(p256, mlkem)
	got, err := ohttp.ParseKeyConfigs(list)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []ohttp.KeyConfig{p256, mlkem}) {
		t.Fatalf("ParseKeyConfigs = %+v", got)
	}

	// A configuration with a KEM this package lacks is skipped.
	other := []byte{0x05, 0x00, 0x21, 0xaa, 0x00, 0x04, 0x00, 0x01, 0x00, 0x01}
	withOther := append([]byte{0, byte(len(other))}, other...)
	withOther = append(withOther, list...)
	if got, err := ohttp.ParseKeyConfigs(withOther); err != nil || len(got) != 2 {
		t.Fatalf("ParseKeyConfigs with an X448 config = %d configs, %v", len(got), err)
	}

	prefixed := append([]byte{0, byte(len(rfc))}, rfc...)
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ohttp.ErrMalformed},
		{"one length byte", []byte{0}, ohttp.ErrMalformed},
		{"length past the end", append([]byte{0, byte(len(rfc) + 1)}, rfc...), ohttp.ErrMalformed},
		{"trailing byte", append(bytes.Clone(prefixed), 0), ohttp.ErrMalformed},
		{"only unsupported", append([]byte{0, byte(len(other))}, other...), ohttp.ErrUnsupportedSuite},
		{"unprefixed config", rfc, ohttp.ErrMalformed},
		{"zero-length config", []byte{0, 0}, ohttp.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := ohttp.ParseKeyConfigs(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("ParseKeyConfigs = %+v, %v; want %v", got, err, tc.want)
			}
		})
	}

	oddSuites := bytes.Clone(rfc)
	oddSuites[36] = 6
	noSuites := append(bytes.Clone(rfc[:35]), 0, 0)
	badPoint := configBytes(ohttp.KeyConfig{ID: 1, KEM: 0x0010, PublicKey: bytes.Repeat([]byte{4}, 65), Suites: p256.Suites})
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"odd symmetric length", oddSuites, ohttp.ErrMalformed},
		{"no symmetric algorithms", noSuites, ohttp.ErrMalformed},
		{"trailing byte", append(bytes.Clone(rfc), 0), ohttp.ErrMalformed},
		{"p256 point off the curve", badPoint, ohttp.ErrMalformed},
		{"unknown kem", other, ohttp.ErrUnsupportedSuite},
	} {
		t.Run("single/"+tc.name, func(t *testing.T) {
			if got, err := ohttp.ParseKeyConfig(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("ParseKeyConfig = %+v, %v; want %v", got, err, tc.want)
			}
		})
	}
	for n := range len(rfc) {
		if _, err := ohttp.ParseKeyConfig(rfc[:n]); !errors.Is(err, ohttp.ErrMalformed) {
			t.Fatalf("cut at %d: %v, want ErrMalformed", n, err)
		}
	}

	// The parsed public key is a copy.
	b := bytes.Clone(rfc)
	c, err := ohttp.ParseKeyConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	b[3] ^= 0xff
	if !bytes.Equal(c.PublicKey, unhex(t, v.PkR)) {
		t.Fatal("KeyConfig.PublicKey aliases its input")
	}
}

func TestErrDecryptIsFixed(t *testing.T) {
	if got := fmt.Sprint(ohttp.ErrDecrypt); got != "ohttp: decryption failed" {
		t.Fatalf("ErrDecrypt = %q", got)
	}
}
