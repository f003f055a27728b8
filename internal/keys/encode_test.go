package keys_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
)

// Public keys from the vectors (testdata/PROVENANCE.md), hex.
const (
	x25519Pub = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
	p256Pub   = "04abc7e49a4c6b3566d77d0304addc6ed0e98512ffccf505e6a8e3eb25c685136f853148544876de76c0f2ef99cdc3a05ccf5ded7860c7c021238f9e2073d2356c"
)

// jsonKeys returns the member names of a JSON object in the order they appear.
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", b)
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

func TestPublicItem(t *testing.T) {
	const kid = "WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_1"
	hybrid := vectorKey(t, "hpke-pq.json", keys.KEMMLKEM768X25519)
	tests := []struct {
		name      string
		suite     keys.Suite
		pub       []byte
		expiry    int64
		wantJSON  string   // exact, when the key is short enough to write out
		wantNames []string // member order
	}{
		{
			name: "x25519", suite: keys.X25519, pub: unhex(t, x25519Pub), expiry: 1702678400000,
			wantJSON:  `{"kty":"OKP","crv":"X25519","x":"OUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0","kid":"` + kid + `","timestamp":1700000000000,"expiry":1702678400000,"id":11}`,
			wantNames: []string{"kty", "crv", "x", "kid", "timestamp", "expiry", "id"},
		},
		{
			name: "x25519/no-rotation-policy", suite: keys.X25519, pub: unhex(t, x25519Pub), expiry: 0,
			wantJSON:  `{"kty":"OKP","crv":"X25519","x":"OUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0","kid":"` + kid + `","timestamp":1700000000000,"id":11}`,
			wantNames: []string{"kty", "crv", "x", "kid", "timestamp", "id"},
		},
		{
			// x and y hold "_" and "-": base64url, not standard base64.
			name: "p256", suite: keys.P256, pub: unhex(t, p256Pub), expiry: 1702678400000,
			wantJSON:  `{"kty":"EC","crv":"P-256","x":"q8fkmkxrNWbXfQMErdxu0OmFEv_M9QXmqOPrJcaFE28","y":"hTFIVEh23nbA8u-ZzcOgXM9d7Xhgx8AhI4-eIHPSNWw","kid":"` + kid + `","timestamp":1700000000000,"expiry":1702678400000,"id":11}`,
			wantNames: []string{"kty", "crv", "x", "y", "kid", "timestamp", "expiry", "id"},
		},
		{
			name: "mlkem768-x25519", suite: keys.MLKEM768X25519, pub: hybrid, expiry: 1702678400000,
			wantJSON:  `{"kty":"AKP","alg":"MLKEM768-X25519","pub":"` + base64.RawURLEncoding.EncodeToString(hybrid) + `","kid":"` + kid + `","timestamp":1700000000000,"expiry":1702678400000,"id":11}`,
			wantNames: []string{"kty", "alg", "pub", "kid", "timestamp", "expiry", "id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := keys.PublicItem(tt.suite, tt.pub, kid, 11, 1700000000000, tt.expiry)
			if err != nil {
				t.Fatal(err)
			}
			if it.D != "" {
				t.Fatal("PublicItem set D")
			}
			b, err := json.Marshal(it)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantJSON {
				t.Errorf("JSON =\n%s\nwant\n%s", b, tt.wantJSON)
			}
			if names := jsonKeys(t, b); !slices.Equal(names, tt.wantNames) {
				t.Errorf("members %v, want %v", names, tt.wantNames)
			}
			// The key material decodes back to the public key.
			var raw []byte
			switch tt.suite.KEM {
			case keys.KEMX25519HKDFSHA256:
				raw = mustB64URL(t, it.X)
			case keys.KEMP256HKDFSHA256:
				raw = append(append([]byte{4}, mustB64URL(t, it.X)...), mustB64URL(t, it.Y)...)
			case keys.KEMMLKEM768X25519:
				raw = mustB64URL(t, it.Pub)
			}
			if !bytes.Equal(raw, tt.pub) {
				t.Errorf("item holds %x, want %x", raw, tt.pub)
			}
		})
	}
}

func mustB64URL(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		t.Fatalf("%q is not unpadded base64url: %v", s, err)
	}
	return b
}

func TestPublicItemRejects(t *testing.T) {
	x, p := unhex(t, x25519Pub), unhex(t, p256Pub)
	hybrid := vectorKey(t, "hpke-pq.json", keys.KEMMLKEM768X25519)
	tests := []struct {
		name  string
		suite keys.Suite
		pub   []byte
	}{
		{"x25519/short", keys.X25519, x[:31]},
		{"x25519/long", keys.X25519, append(bytes.Clone(x), 0)},
		{"p256/compressed", keys.P256, append([]byte{2}, p[1:33]...)},
		{"p256/x25519-key", keys.P256, x},
		{"p256/bad-prefix", keys.P256, append([]byte{5}, p[1:]...)},
		{"hybrid/short", keys.MLKEM768X25519, hybrid[:len(hybrid)-1]},
		{"hybrid/x25519-key", keys.MLKEM768X25519, x},
		{"hybrid/empty", keys.MLKEM768X25519, nil},
		{"unknown-suite", keys.Suite{Name: "x448", KEM: 0x0021}, x},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if it, err := keys.PublicItem(tt.suite, tt.pub, "k_1", 11, 1, 2); err == nil {
				t.Fatalf("PublicItem accepted %x: %+v", tt.pub, it)
			}
		})
	}
	if _, err := keys.PublicItem(keys.Suite{KEM: 0x0021}, x, "k_1", 11, 1, 2); !errors.Is(err, keys.ErrUnknownSuite) {
		t.Errorf("unknown KEM: %v, want ErrUnknownSuite", err)
	}
}

// TestTinkPublic checks the fmt=tink answer against the shape in
// docs/spec/azure-compat.md ("GET /app/pubkey").
func TestTinkPublic(t *testing.T) {
	tests := []struct {
		name string
		pub  []byte
		id   int
		want string
	}{
		{
			"vector-key", unhex(t, x25519Pub), 42,
			`{"primaryKeyId":42,"key":[{"keyData":{"typeUrl":"https://schema.org/PublicKey/Azure/HpkePublicKey","value":"OUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0=","keyMaterialType":"ASYMMETRIC_PUBLIC"},"status":"ENABLED","keyId":42,"outputPrefixType":"RAW"}]}`,
		},
		{
			// Standard, padded base64: "/" and "=", never "_".
			"all-ones", bytes.Repeat([]byte{0xff}, 32), 99,
			`{"primaryKeyId":99,"key":[{"keyData":{"typeUrl":"https://schema.org/PublicKey/Azure/HpkePublicKey","value":"//////////////////////////////////////////8=","keyMaterialType":"ASYMMETRIC_PUBLIC"},"status":"ENABLED","keyId":99,"outputPrefixType":"RAW"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(keys.TinkPublic(tt.pub, tt.id))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON =\n%s\nwant\n%s", b, tt.want)
			}
		})
	}
}

func TestOHTTPConfig(t *testing.T) {
	x := unhex(t, x25519Pub)
	// RFC 9458 §3.1: key_id(8) kem_id(16) public_key(8*Npk)
	// symmetric_algorithms_length(16) {kdf_id(16) aead_id(16)}.
	want := "11" + "0020" + x25519Pub + "0004" + "0001" + "0002"
	c := keys.OHTTPConfig(0x11, keys.X25519, x)
	if got := hex.EncodeToString(c); got != want {
		t.Fatalf("OHTTPConfig =\n%s\nwant\n%s", got, want)
	}
	if len(c) != 41 {
		t.Fatalf("x25519 config has %d bytes, want 41", len(c))
	}

	sizes := map[string]int{"x25519": 41, "p256": 74, "mlkem768-x25519": 1225}
	for _, s := range keys.Suites {
		_, pub, err := s.Generate()
		if err != nil {
			t.Fatal(err)
		}
		c := keys.OHTTPConfig(0x99, s, pub)
		if len(c) != sizes[s.Name] {
			t.Errorf("%s config has %d bytes, want %d", s.Name, len(c), sizes[s.Name])
		}
		n := len(c)
		if c[0] != 0x99 || binary.BigEndian.Uint16(c[1:]) != s.KEM || !bytes.Equal(c[3:3+len(pub)], pub) ||
			!bytes.Equal(c[n-6:], []byte{0, 4, 0, 1, 0, 2}) {
			t.Errorf("%s config %x has the wrong layout", s.Name, c)
		}
	}

	// RFC 9458 §3.2: each configuration prefixed by its 2-byte length.
	c2 := keys.OHTTPConfig(0x42, keys.P256, unhex(t, p256Pub))
	list := keys.OHTTPConfigList(c, c2)
	wantList := "0029" + want + "004a" + hex.EncodeToString(c2)
	if got := hex.EncodeToString(list); got != wantList {
		t.Fatalf("OHTTPConfigList =\n%s\nwant\n%s", got, wantList)
	}
	if got := keys.OHTTPConfigList(); len(got) != 0 {
		t.Fatalf("OHTTPConfigList() = %x, want empty", got)
	}
}

// The rest of this file is a test-only OHTTP client and gateway following
// RFC 9458 §4.3 to §4.4 and the Bidding & Auction variant (docs/spec/
// azure-compat.md, "Request encryption"), to show that what OHTTPConfig
// advertises is what a client needs to reach the private key.

// ohttpConfig is one parsed RFC 9458 key configuration.
type ohttpConfig struct {
	keyID byte
	kem   uint16
	pub   []byte
	algs  [][2]uint16 // {kdf, aead}
}

// npk and nenc are the public key and encapsulated key sizes of each KEM
// (RFC 9180 §7.1, draft-ietf-hpke-pq).
var (
	npk  = map[uint16]int{0x0020: 32, 0x0010: 65, 0x647a: 1216}
	nenc = map[uint16]int{0x0020: 32, 0x0010: 65, 0x647a: 1120}
)

// parseConfigList parses an application/ohttp-keys body.
func parseConfigList(b []byte) ([]ohttpConfig, error) {
	var out []ohttpConfig
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated length")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("truncated configuration")
		}
		c, err := parseConfig(b[2 : 2+n])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		b = b[2+n:]
	}
	return out, nil
}

func parseConfig(b []byte) (ohttpConfig, error) {
	var c ohttpConfig
	if len(b) < 3 {
		return c, errors.New("truncated header")
	}
	c.keyID, c.kem = b[0], binary.BigEndian.Uint16(b[1:])
	n, ok := npk[c.kem]
	if !ok {
		return c, fmt.Errorf("unknown KEM 0x%04x", c.kem)
	}
	b = b[3:]
	if len(b) < n+2 {
		return c, errors.New("truncated public key")
	}
	c.pub, b = b[:n], b[n:]
	symLen := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if symLen != len(b) || symLen == 0 || symLen%4 != 0 {
		return c, fmt.Errorf("symmetric algorithms length %d for %d bytes", symLen, len(b))
	}
	for ; len(b) > 0; b = b[4:] {
		c.algs = append(c.algs, [2]uint16{binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])})
	}
	return c, nil
}

// An ohttpVariant is a use of the OHTTP encapsulation: its labels and
// whether requests carry a leading version byte.
type ohttpVariant struct {
	name                string
	reqLabel, respLabel string
	hasVersion          bool
}

var (
	bhttp   = ohttpVariant{name: "bhttp", reqLabel: "message/bhttp request", respLabel: "message/bhttp response"}
	auction = ohttpVariant{name: "auction", reqLabel: "message/auction request", respLabel: "message/auction response", hasVersion: true}
)

// hdr is key_id || kem_id || kdf_id || aead_id.
func hdr(keyID byte, kem, kdf, aead uint16) []byte {
	b := []byte{keyID}
	b = binary.BigEndian.AppendUint16(b, kem)
	b = binary.BigEndian.AppendUint16(b, kdf)
	return binary.BigEndian.AppendUint16(b, aead)
}

func requestInfo(label string, h []byte) []byte {
	return append(append([]byte(label), 0), h...)
}

// encapsulate builds an encapsulated request to c (RFC 9458 §4.3).
func encapsulate(v ohttpVariant, c ohttpConfig, msg []byte) (req []byte, s *hpke.Sender, enc []byte, err error) {
	kem, err := hpke.NewKEM(c.kem)
	if err != nil {
		return nil, nil, nil, err
	}
	pk, err := kem.NewPublicKey(c.pub)
	if err != nil {
		return nil, nil, nil, err
	}
	kdf, err := hpke.NewKDF(c.algs[0][0])
	if err != nil {
		return nil, nil, nil, err
	}
	aead, err := hpke.NewAEAD(c.algs[0][1])
	if err != nil {
		return nil, nil, nil, err
	}
	h := hdr(c.keyID, c.kem, kdf.ID(), aead.ID())
	enc, s, err = hpke.NewSender(pk, kdf, aead, requestInfo(v.reqLabel, h))
	if err != nil {
		return nil, nil, nil, err
	}
	ct, err := s.Seal(nil, msg)
	if err != nil {
		return nil, nil, nil, err
	}
	if v.hasVersion {
		req = []byte{0x00}
	}
	req = append(append(append(req, h...), enc...), ct...)
	return req, s, enc, nil
}

// gateway holds one private key, as a DEPA service does after unwrapKey.
type gateway struct {
	keyID byte
	suite keys.Suite
	priv  []byte
}

// decapsulate opens an encapsulated request (RFC 9458 §4.3, server side).
func (g gateway) decapsulate(v ohttpVariant, req []byte) (msg []byte, r *hpke.Recipient, enc []byte, err error) {
	if v.hasVersion {
		if len(req) < 1 || req[0] != 0x00 {
			return nil, nil, nil, errors.New("unsupported version")
		}
		req = req[1:]
	}
	if len(req) < 7 {
		return nil, nil, nil, errors.New("truncated header")
	}
	h, req := req[:7], req[7:]
	if h[0] != g.keyID {
		return nil, nil, nil, fmt.Errorf("unknown key id 0x%02x", h[0])
	}
	if !bytes.Equal(h, hdr(g.keyID, g.suite.KEM, g.suite.KDF, g.suite.AEAD)) {
		return nil, nil, nil, fmt.Errorf("unsupported algorithms %x", h[1:])
	}
	n := nenc[g.suite.KEM]
	if len(req) < n {
		return nil, nil, nil, errors.New("truncated enc")
	}
	enc, ct := req[:n], req[n:]
	k, err := g.suite.PrivateKey(g.priv)
	if err != nil {
		return nil, nil, nil, err
	}
	kdf, err := hpke.NewKDF(g.suite.KDF)
	if err != nil {
		return nil, nil, nil, err
	}
	aead, err := hpke.NewAEAD(g.suite.AEAD)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err = hpke.NewRecipient(enc, k, kdf, aead, requestInfo(v.reqLabel, h))
	if err != nil {
		return nil, nil, nil, err
	}
	msg, err = r.Open(nil, ct)
	if err != nil {
		return nil, nil, nil, err
	}
	return msg, r, enc, nil
}

// exporter is the half of an HPKE context that response encryption needs.
type exporter interface {
	Export(exporterContext string, length int) ([]byte, error)
}

// responseAEAD derives the response key and nonce (RFC 9458 §4.4) for
// AES-256-GCM (Nk = 32, Nn = 12) and HKDF-SHA256.
func responseAEAD(ctx exporter, label string, enc, nonce []byte) (cipher.AEAD, []byte, error) {
	secret, err := ctx.Export(label, 32)
	if err != nil {
		return nil, nil, err
	}
	prk, err := hkdf.Extract(sha256.New, secret, append(bytes.Clone(enc), nonce...))
	if err != nil {
		return nil, nil, err
	}
	key, err := hkdf.Expand(sha256.New, prk, "key", 32)
	if err != nil {
		return nil, nil, err
	}
	iv, err := hkdf.Expand(sha256.New, prk, "nonce", 12)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	a, err := cipher.NewGCM(block)
	return a, iv, err
}

// respNonceLen is max(Nn, Nk) for AES-256-GCM.
const respNonceLen = 32

func encapsulateResponse(v ohttpVariant, r *hpke.Recipient, enc, body []byte) ([]byte, error) {
	nonce := make([]byte, respNonceLen)
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, err
	}
	a, iv, err := responseAEAD(r, v.respLabel, enc, nonce)
	if err != nil {
		return nil, err
	}
	return a.Seal(nonce, iv, body, nil), nil
}

func decapsulateResponse(v ohttpVariant, s *hpke.Sender, enc, resp []byte) ([]byte, error) {
	if len(resp) < respNonceLen {
		return nil, errors.New("truncated response")
	}
	a, iv, err := responseAEAD(s, v.respLabel, enc, resp[:respNonceLen])
	if err != nil {
		return nil, err
	}
	return a.Open(nil, iv, resp[respNonceLen:], nil)
}

// TestOHTTPEndToEnd publishes each suite's key as an OHTTP key
// configuration, has a client encrypt to the parsed configuration with
// crypto/hpke, and has a gateway holding the private key decrypt it and
// answer, for plain OHTTP and for Bidding & Auction.
func TestOHTTPEndToEnd(t *testing.T) {
	for _, s := range keys.Suites {
		for _, v := range []ohttpVariant{bhttp, auction} {
			t.Run(s.Name+"/"+v.name, func(t *testing.T) {
				priv, pub, err := s.Generate()
				if err != nil {
					t.Fatal(err)
				}
				id, err := keys.AssignID(3, func(int) bool { return false })
				if err != nil {
					t.Fatal(err)
				}
				keyID := keys.OHTTPKeyID(id) // 13 -> 0x13
				other, otherPub, err := keys.X25519.Generate()
				if err != nil {
					t.Fatal(err)
				}
				body := keys.OHTTPConfigList(
					keys.OHTTPConfig(0x12, keys.X25519, otherPub),
					keys.OHTTPConfig(keyID, s, pub),
				)

				// Client: parse the advertised list and pick our key.
				configs, err := parseConfigList(body)
				if err != nil {
					t.Fatalf("parsing OHTTPConfigList output: %v", err)
				}
				if len(configs) != 2 || configs[1].keyID != 0x13 || configs[1].kem != s.KEM ||
					!bytes.Equal(configs[1].pub, pub) || !slices.Equal(configs[1].algs, [][2]uint16{{s.KDF, s.AEAD}}) {
					t.Fatalf("parsed configs %+v", configs)
				}
				msg := []byte("GET /bid " + strings.Repeat("x", 100))
				req, sender, enc, err := encapsulate(v, configs[1], msg)
				if err != nil {
					t.Fatal(err)
				}
				wantLen := 7 + nenc[s.KEM] + len(msg) + 16
				if v.hasVersion {
					wantLen++
				}
				if len(req) != wantLen {
					t.Fatalf("request has %d bytes, want %d", len(req), wantLen)
				}

				// Gateway: decrypt with the private key and answer.
				g := gateway{keyID: keyID, suite: s, priv: priv}
				got, recipient, genc, err := g.decapsulate(v, req)
				if err != nil {
					t.Fatalf("decapsulate: %v", err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("gateway read %q, want %q", got, msg)
				}
				answer := []byte("200 OK bid=1")
				resp, err := encapsulateResponse(v, recipient, genc, answer)
				if err != nil {
					t.Fatal(err)
				}
				got, err = decapsulateResponse(v, sender, enc, resp)
				if err != nil {
					t.Fatalf("client could not open the response: %v", err)
				}
				if !bytes.Equal(got, answer) {
					t.Fatalf("client read %q, want %q", got, answer)
				}

				// Every header, enc and ciphertext byte is bound: flip one.
				off := 0
				if v.hasVersion {
					off = 1
				}
				for _, pos := range []int{0, off, off + 1, off + 4, off + 6, off + 7, off + 7 + nenc[s.KEM] - 1, len(req) - 1} {
					if pos == 0 && !v.hasVersion {
						continue // same as off
					}
					bad := bytes.Clone(req)
					bad[pos] ^= 0x01
					if _, _, _, err := g.decapsulate(v, bad); err == nil {
						t.Errorf("gateway accepted the request with byte %d flipped", pos)
					}
				}
				// The label is bound: a request for one variant does not
				// open as the other.
				otherV := bhttp
				if v == bhttp {
					otherV = auction
				}
				if _, _, _, err := g.decapsulate(otherV, req); err == nil {
					t.Errorf("a %s request opened as %s", v.name, otherV.name)
				}
				// Another key does not open it.
				wrong := gateway{keyID: keyID, suite: keys.X25519, priv: other}
				if s == keys.X25519 {
					if _, _, _, err := wrong.decapsulate(v, req); err == nil {
						t.Error("a request opened with the wrong private key")
					}
				}
				// A flipped response byte is rejected.
				resp[len(resp)-1] ^= 0x01
				if _, err := decapsulateResponse(v, sender, enc, resp); err == nil {
					t.Error("client accepted a response with a flipped byte")
				}
			})
		}
	}
}
