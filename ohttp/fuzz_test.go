package ohttp_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
)

var variantList = []string{"OHTTP", "BiddingAuction", "TrustedSignals"}

// FuzzDecapsulateRequest feeds arbitrary requests to a gateway holding the
// RFC 9458 key and one key per tkms KEM and AEAD. Nothing may panic, every
// error must be one of the package's, and a request that opens must open to
// a plaintext that was encapsulated to that key in that variant. Seeds are
// encapsulated afresh in every fuzzing process (crypto/hpke draws its own
// ephemeral keys), so the check is by plaintext, which names the key and
// the variant; the client of a request this process encapsulated must open
// the response.
func FuzzDecapsulateRequest(f *testing.F) {
	ctx := context.Background()
	v := loadRFCVector(f)
	g, configs, _ := testGateway(f)
	rfc := rfcGateway(f, v)
	g.Keys.(keyMap)[1] = must(rfc.Keys.OHTTPKey(ctx, 1))

	// plaintexts[k] is the plaintext encapsulated to key id k.id in
	// variant k.variant; clients holds the client of each request this
	// process encapsulated.
	type kv struct {
		id      byte
		variant int
	}
	plaintexts := map[kv]string{{1, 0}: string(unhex(f, v.Request))}
	clients := map[string]*ohttp.ClientContext{}
	f.Add(unhex(f, v.EncRequest), uint8(0))
	for _, name := range []string{"x25519/aes128gcm", "p256/aes256gcm", "mlkem768-x25519/chacha20poly1305", "x25519/chacha20poly1305"} {
		c := configs[name]
		for vi, vname := range variantList {
			pt := "fuzz seed " + name + " " + vname
			msg, cc, err := ohttp.EncapsulateRequest(c, c.Suites[0], pkgVariants[vname], []byte(pt))
			if err != nil {
				f.Fatal(err)
			}
			plaintexts[kv{c.ID, vi}] = pt
			clients[string(msg)] = cc
			f.Add(msg, uint8(vi))
		}
	}

	f.Fuzz(func(t *testing.T, msg []byte, vi uint8) {
		vi %= uint8(len(variantList))
		pt, gc, err := g.DecapsulateRequest(ctx, pkgVariants[variantList[vi]], msg)
		if err != nil {
			if pt != nil || gc != nil {
				t.Fatal("error with a result")
			}
			if !errors.Is(err, ohttp.ErrMalformed) && !errors.Is(err, ohttp.ErrUnknownKeyID) &&
				!errors.Is(err, ohttp.ErrUnsupportedSuite) && err != ohttp.ErrDecrypt {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		id := msg[0]
		if variantList[vi] == "BiddingAuction" {
			id = msg[1]
		}
		want, ok := plaintexts[kv{id, int(vi)}]
		if !ok || string(pt) != want {
			t.Fatalf("request %x opened as variant %d to %q, but key 0x%02x was sent %q", msg, vi, pt, id, want)
		}
		res, err := gc.EncapsulateResponse(pt)
		if err != nil {
			t.Fatal(err)
		}
		if cc := clients[string(msg)]; cc != nil {
			if body, err := cc.DecapsulateResponse(res); err != nil || !bytes.Equal(body, pt) {
				t.Fatalf("response opened to %q, %v", body, err)
			}
		}
	})
}

// FuzzParseKeyConfigs parses arbitrary application/ohttp-keys lists and
// single configurations. Nothing may panic, and what parses must encode
// back to bytes that parse to the same configurations: a list to exactly
// its input less the configurations skipped, a single configuration to
// exactly its input.
func FuzzParseKeyConfigs(f *testing.F) {
	v := loadRFCVector(f)
	_, configs, _ := testGateway(f)
	rfc := unhex(f, v.KeyConfig)
	f.Add(rfc)
	f.Add(append([]byte{0, byte(len(rfc))}, rfc...))
	f.Add(listBytes(configs["x25519/aes256gcm"], configs["p256/aes128gcm"], configs["mlkem768-x25519/chacha20poly1305"]))
	f.Add([]byte{0, 10, 0x05, 0x00, 0x21, 0xaa, 0x00, 0x04, 0x00, 0x01, 0x00, 0x01})

	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ohttp.ParseKeyConfig(b); err == nil {
			if got := configBytes(c); !bytes.Equal(got, b) {
				t.Fatalf("config %x encodes back as %x", b, got)
			}
		} else if !errors.Is(err, ohttp.ErrMalformed) && !errors.Is(err, ohttp.ErrUnsupportedSuite) {
			t.Fatalf("ParseKeyConfig: unexpected error %v", err)
		}

		cs, err := ohttp.ParseKeyConfigs(b)
		if err != nil {
			if cs != nil {
				t.Fatal("error with a result")
			}
			if !errors.Is(err, ohttp.ErrMalformed) && !errors.Is(err, ohttp.ErrUnsupportedSuite) {
				t.Fatalf("ParseKeyConfigs: unexpected error %v", err)
			}
			return
		}
		enc := listBytes(cs...)
		if len(enc) > len(b) {
			t.Fatalf("list %x encodes back longer, as %x", b, enc)
		}
		if len(enc) == len(b) && !bytes.Equal(enc, b) {
			t.Fatalf("list %x encodes back as %x", b, enc)
		}
		again, err := ohttp.ParseKeyConfigs(enc)
		if err != nil || !reflect.DeepEqual(again, cs) {
			t.Fatalf("re-encoded list parses as %+v, %v; want %+v", again, err, cs)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
