package ohttphttp_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
	"github.com/tkms-dev/tkms/ohttp/ohttphttp"
)

// echo answers with what it received, so that tests see the inner request.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/big":
		w.Write(bytes.Repeat([]byte("x"), 2000))
		return
	case "/teapot":
		w.Header().Set("X-Kind", "teapot")
		w.WriteHeader(http.StatusTeapot)
		return
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Remote", r.RemoteAddr)
	fmt.Fprintf(w, "%s %s host=%s x-test=%s body=%s", r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Test"), body)
})

func startGateway(t *testing.T, g *ohttp.Gateway) *httptest.Server {
	t.Helper()
	mw := ohttphttp.Middleware(g, ohttphttp.MiddlewareOptions{MaxRequestBytes: 4096, MaxResponseBytes: 1000, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(mw(echo))
	t.Cleanup(srv.Close)
	return srv
}

func TestMiddlewareAndTransport(t *testing.T) {
	g, configs := testGateway(t)
	srv := startGateway(t, g)
	for _, name := range []string{"x25519/aes128gcm", "p256/chacha20poly1305", "mlkem768-x25519/aes256gcm"} {
		c, ok := configs[name]
		if !ok {
			t.Fatalf("no test key %s", name)
		}
		t.Run(name, func(t *testing.T) {
			hc := &http.Client{Transport: &ohttphttp.Transport{RelayURL: srv.URL, KeyConfig: c, Base: srv.Client().Transport}}
			req, _ := http.NewRequest(http.MethodPost, "https://kv.example/lookup?keys=a,b", strings.NewReader("payload"))
			req.Header.Set("X-Test", "yes")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := "POST /lookup?keys=a,b host=kv.example x-test=yes body=payload"
			if resp.StatusCode != http.StatusOK || string(body) != want || resp.Header.Get("Content-Type") != "text/plain" {
				t.Fatalf("got %d %q (%v), want 200 %q", resp.StatusCode, body, resp.Header, want)
			}
			if resp.Header.Get("X-Remote") != "" {
				t.Errorf("the inner request has the relay's address %q", resp.Header.Get("X-Remote"))
			}

			resp, err = hc.Get("https://kv.example/teapot")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusTeapot || resp.Header.Get("X-Kind") != "teapot" {
				t.Fatalf("teapot: %d %v", resp.StatusCode, resp.Header)
			}
			// A response over MaxResponseBytes is an encapsulated 500.
			resp, err = hc.Get("https://kv.example/big")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				t.Fatalf("big response: %d", resp.StatusCode)
			}
		})
	}

	// A key id the gateway does not have: 422 with the ohttp-key problem.
	c := configs["x25519/aes128gcm"]
	c.ID = 0x01
	hc := &http.Client{Transport: &ohttphttp.Transport{RelayURL: srv.URL, KeyConfig: c}}
	_, err := hc.Get("https://kv.example/")
	var ge *ohttphttp.GatewayError
	if !errors.Is(err, ohttp.ErrUnknownKeyID) || !errors.As(err, &ge) || ge.Status != http.StatusUnprocessableEntity {
		t.Fatalf("unknown key id: %v", err)
	}

	// A key source that fails: 503.
	down := startGateway(t, &ohttp.Gateway{Keys: brokenSource{err: context.DeadlineExceeded}})
	hc = &http.Client{Transport: &ohttphttp.Transport{RelayURL: down.URL, KeyConfig: configs["x25519/aes128gcm"]}}
	if _, err := hc.Get("https://kv.example/"); !errors.Is(err, ohttp.ErrKeyUnavailable) {
		t.Fatalf("key source down: %v", err)
	}
}

// TestMiddlewareOuterErrors: errors of the outer layer are answered in the
// clear with RFC 9458's statuses; one inside the encapsulation encapsulated.
func TestMiddlewareOuterErrors(t *testing.T) {
	g, configs := testGateway(t)
	srv := startGateway(t, g)
	c := configs["x25519/aes128gcm"]
	garbage, cc, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, []byte("not binary http"))
	if err != nil {
		t.Fatal(err)
	}
	valid, _, err := ohttp.EncapsulateRequest(c, c.Suites[0], ohttp.OHTTP, []byte{0})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, ctype string
		body                []byte
		want                int
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed},
		{"wrong media type", http.MethodPost, "application/octet-stream", valid, http.StatusUnsupportedMediaType},
		{"too large", http.MethodPost, ohttphttp.MediaTypeRequest, make([]byte, 5000), http.StatusRequestEntityTooLarge},
		{"malformed", http.MethodPost, ohttphttp.MediaTypeRequest, valid[:10], http.StatusBadRequest},
		{"does not decrypt", http.MethodPost, ohttphttp.MediaTypeRequest, append(bytes.Clone(valid), 1), http.StatusBadRequest},
		{"unknown key", http.MethodPost, ohttphttp.MediaTypeRequest, append([]byte{0x01}, valid[1:]...), http.StatusUnprocessableEntity},
		{"not binary http inside", http.MethodPost, ohttphttp.MediaTypeRequest, garbage, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL, bytes.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusUnprocessableEntity && !bytes.Contains(body, []byte(ohttphttp.ProblemKey)) {
				t.Errorf("422 without the ohttp-key problem type: %s", body)
			}
			if tc.name == "not binary http inside" {
				inner, err := cc.DecapsulateResponse(body)
				// Known-length response (framing indicator 1), status 400.
				if err != nil || len(inner) < 3 || inner[0] != 1 || inner[1] != 0x41 || inner[2] != 0x90 {
					t.Fatalf("encapsulated answer %x, %v; want a Binary HTTP 400", inner, err)
				}
			}
		})
	}
}

// keyMap is a KeySource of fixed keys.
type keyMap map[byte]*ohttp.Key

func (m keyMap) OHTTPKey(_ context.Context, id byte) (*ohttp.Key, error) {
	if k := m[id]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: 0x%02x", ohttp.ErrUnknownKeyID, id)
}

// brokenSource fails every lookup.
type brokenSource struct{ err error }

func (b brokenSource) OHTTPKey(context.Context, byte) (*ohttp.Key, error) { return nil, b.err }

// testGateway returns a gateway with an X25519 and an MLKEM768-X25519 key
// and their configurations, by "kem/aead" name.
func testGateway(t testing.TB) (*ohttp.Gateway, map[string]ohttp.KeyConfig) {
	t.Helper()
	km := keyMap{}
	configs := map[string]ohttp.KeyConfig{}
	for i, k := range []struct {
		name string
		kem  hpke.KEM
		aead uint16
	}{
		{"x25519/aes128gcm", hpke.DHKEM(ecdh.X25519()), 0x0001},
		{"p256/chacha20poly1305", hpke.DHKEM(ecdh.P256()), 0x0003},
		{"mlkem768-x25519/aes256gcm", hpke.MLKEM768X25519(), 0x0002},
	} {
		sk, err := k.kem.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		id := byte(0x10 + i)
		km[id] = &ohttp.Key{ID: id, KDF: 0x0001, AEAD: k.aead, Private: sk}
		configs[k.name] = ohttp.KeyConfig{ID: id, KEM: k.kem.ID(), PublicKey: sk.PublicKey().Bytes(),
			Suites: []ohttp.SymmetricSuite{{KDF: 0x0001, AEAD: k.aead}}}
	}
	return &ohttp.Gateway{Keys: km}, configs
}
