package ohttp_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
)

// FuzzDecapsulateResponse feeds arbitrary encapsulated responses (what a
// client reads back from a gateway, through a relay it does not trust) to
// the client contexts of requests this process encapsulated, one per
// AEAD. Nothing may panic; every error is ErrMalformed or ErrDecrypt; and
// a response opens only if it is the gateway's response to that request
// (AEAD authenticity), to the plaintext the gateway sealed. Seeds: real
// responses of the gateway (EncapsulateResponse), truncated and extended.
func FuzzDecapsulateResponse(f *testing.F) {
	ctx := context.Background()
	g, configs, _ := testGateway(f)
	type exchange struct {
		cc       *ohttp.ClientContext
		response []byte
		body     string
	}
	var ex []exchange
	for _, name := range []string{"x25519/aes128gcm", "p256/aes256gcm", "mlkem768-x25519/chacha20poly1305"} {
		c := configs[name]
		msg, cc, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, []byte("request "+name))
		if err != nil {
			f.Fatal(err)
		}
		_, gc, err := g.DecapsulateRequest(ctx, ohttp.OHTTP, msg)
		if err != nil {
			f.Fatal(err)
		}
		body := "response " + name
		res, err := gc.EncapsulateResponse([]byte(body))
		if err != nil {
			f.Fatal(err)
		}
		i := uint8(len(ex))
		ex = append(ex, exchange{cc, res, body})
		f.Add(i, res)
		f.Add(i, res[:len(res)-1])
		f.Add(i, append(bytes.Clone(res), 0))
		f.Add(i, res[:8])
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, msg []byte) {
		e := ex[int(which)%len(ex)]
		body, err := e.cc.DecapsulateResponse(msg)
		if err != nil {
			if body != nil || (!errors.Is(err, ohttp.ErrMalformed) && !errors.Is(err, ohttp.ErrDecrypt)) {
				t.Fatalf("body %q, error %v", body, err)
			}
			return
		}
		if !bytes.Equal(msg, e.response) || string(body) != e.body {
			t.Fatalf("response %x opened to %q", msg, body)
		}
	})
}
