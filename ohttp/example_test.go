package ohttp_test

import (
	"context"
	"crypto/hpke"
	"encoding/hex"
	"fmt"
	"log"

	"github.com/tkms-dev/tkms/ohttp"
)

// staticKeys is a KeySource holding one key. A service uses its cache of
// keys released by tkms instead.
type staticKeys struct{ key *ohttp.Key }

func (s staticKeys) OHTTPKey(_ context.Context, id byte) (*ohttp.Key, error) {
	if id != s.key.ID {
		return nil, fmt.Errorf("%w: 0x%02x", ohttp.ErrUnknownKeyID, id)
	}
	return s.key, nil
}

func ExampleGateway() {
	// The service's key, as tkms would release it.
	sk, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	key := &ohttp.Key{ID: 0x42, KDF: 0x0001, AEAD: 0x0002, Private: sk}
	gw := &ohttp.Gateway{Keys: staticKeys{key}}

	// A client encrypts to the published key configuration.
	config := ohttp.KeyConfig{ID: 0x42, KEM: 0x647a, PublicKey: sk.PublicKey().Bytes(),
		Suites: []ohttp.SymmetricSuite{{KDF: 0x0001, AEAD: 0x0002}}}
	req, client, err := ohttp.EncapsulateRequest(config, config.Suites[0], ohttp.BiddingAuction, []byte("bid request"))
	if err != nil {
		log.Fatal(err)
	}

	// The service decrypts the request and encrypts its response.
	plaintext, rc, err := gw.DecapsulateRequest(context.Background(), ohttp.BiddingAuction, req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("service got %q\n", plaintext)
	res, err := rc.EncapsulateResponse([]byte("bid response"))
	if err != nil {
		log.Fatal(err)
	}

	// The client decrypts the response.
	body, err := client.DecapsulateResponse(res)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("client got %q\n", body)
	// Output:
	// service got "bid request"
	// client got "bid response"
}

func ExampleParseKeyConfigs() {
	// An application/ohttp-keys body holding the key configuration of
	// RFC 9458 Appendix A, as GET /v1/keys/ohttp serves such lists.
	body, _ := hex.DecodeString("002d" +
		"01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003")
	configs, err := ohttp.ParseKeyConfigs(body)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range configs {
		fmt.Printf("key 0x%02x kem 0x%04x public key %x...\n", c.ID, c.KEM, c.PublicKey[:4])
		for _, s := range c.Suites {
			fmt.Printf("  kdf 0x%04x aead 0x%04x\n", s.KDF, s.AEAD)
		}
	}
	// Output:
	// key 0x01 kem 0x0020 public key 31e1f05a...
	//   kdf 0x0001 aead 0x0001
	//   kdf 0x0001 aead 0x0003
}
