package ohttphttp_test

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/tkms-dev/tkms/ohttp"
	"github.com/tkms-dev/tkms/ohttp/ohttphttp"
)

// oneKey is a KeySource of one key; a service uses its client.Keys.
type oneKey struct{ k *ohttp.Key }

func (s oneKey) OHTTPKey(_ context.Context, id byte) (*ohttp.Key, error) {
	if id != s.k.ID {
		return nil, ohttp.ErrUnknownKeyID
	}
	return s.k, nil
}

// A service puts Middleware in front of its handler; a client sends
// through a Transport. The handler sees an ordinary request.
func ExampleMiddleware() {
	sk, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	key := &ohttp.Key{ID: 0x21, KDF: 0x0001, AEAD: 0x0001, Private: sk}
	gw := &ohttp.Gateway{Keys: oneKey{key}} // in a service: &ohttp.Gateway{Keys: keys}, keys a *client.Keys

	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s, you asked for %s", r.Host, r.URL.Path)
	})
	srv := httptest.NewServer(ohttphttp.Middleware(gw, ohttphttp.MiddlewareOptions{})(hello))
	defer srv.Close()

	// The client knows the gateway's key configuration (GET /v1/keys/ohttp
	// on the KMS) and the relay's URL; the target URL travels encrypted.
	cfg := ohttp.KeyConfig{ID: 0x21, KEM: 0x0020, PublicKey: sk.PublicKey().Bytes(),
		Suites: []ohttp.SymmetricSuite{{KDF: 0x0001, AEAD: 0x0001}}}
	hc := &http.Client{Transport: &ohttphttp.Transport{RelayURL: srv.URL, KeyConfig: cfg}}
	resp, err := hc.Get("https://inference.example/v1/score")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello inference.example, you asked for /v1/score
}
