package ohttphttp_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
	"github.com/tkms-dev/tkms/ohttp/ohttphttp"
)

// FuzzMiddlewareBinaryHTTP feeds the Binary HTTP decoder behind
// Middleware arbitrary decrypted bytes (what any client holding the public
// key can send): the gateway must answer 200 with an encapsulated
// response, valid or 400, and never panic.
func FuzzMiddlewareBinaryHTTP(f *testing.F) {
	g, configs := testGateway(f)
	c := configs["x25519/aes128gcm"]
	h := ohttphttp.Middleware(g, ohttphttp.MiddlewareOptions{Logger: slog.New(slog.DiscardHandler)})(echo)
	// Seeds: RFC 9292 §5.1's known-length GET, an indeterminate-length
	// request, a response, and truncations.
	get := []byte{0x00, 0x03, 'G', 'E', 'T', 0x05, 'h', 't', 't', 'p', 's', 0x00, 0x0a, '/', 'h', 'e', 'l', 'l', 'o', '.', 't', 'x', 't',
		0x40, 0x6c, 0x0a, 'u', 's', 'e', 'r', '-', 'a', 'g', 'e', 'n', 't', 0x05, 'c', 'u', 'r', 'l', '/', 0x00, 0x00}
	f.Add(get)
	f.Add(get[:12])
	f.Add([]byte{0x02, 0x04, 'P', 'O', 'S', 'T', 0x04, 'h', 't', 't', 'p', 0x01, 'x', 0x01, '/', 0x00, 0x03, 'a', 'b', 'c', 0x00, 0x00})
	f.Add([]byte{0x01, 0x40, 0xc8, 0x00, 0x00, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, plain []byte) {
		msg, cc, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, plain)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(msg))
		req.Header.Set("Content-Type", ohttphttp.MediaTypeRequest)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("outer status %d for a request that decrypts", rec.Code)
		}
		body, _ := io.ReadAll(rec.Body)
		inner, err := cc.DecapsulateResponse(body)
		if err != nil || len(inner) == 0 || inner[0] != 0x01 {
			t.Fatalf("answer %x, %v; want a known-length Binary HTTP response", inner, err)
		}
	})
}
