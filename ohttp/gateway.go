package ohttp

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A Key is a private key a Gateway decrypts requests with: one RFC 9458
// key configuration with a single symmetric suite, as tkms issues them.
// The KEM is Private's (Private.KEM().ID()), so it cannot disagree with the
// key.
type Key struct {
	ID      byte   // the key_id of RFC 9458 §3
	KDF     uint16 // HPKE KDF id
	AEAD    uint16 // HPKE AEAD id
	Private hpke.PrivateKey
}

// A KeySource returns the key with an OHTTP key id. A service's key cache
// implements it (client.Keys). A nil key, or an error matching
// ErrUnknownKeyID, means there is no such key (the client's fault);
// DecapsulateRequest reports it as ErrUnknownKeyID. Any other error means
// the key cannot be had now (the gateway's fault); DecapsulateRequest
// reports it as ErrKeyUnavailable. Both wrap the source's error.
type KeySource interface {
	OHTTPKey(ctx context.Context, id byte) (*Key, error)
}

// A Gateway decapsulates requests and encapsulates their responses, as an
// Oblivious Gateway Resource does (RFC 9458 §4.3, §4.4, §5). It is safe
// for concurrent use (its KeySource must be too), and its fields must not
// change while it is in use.
type Gateway struct {
	Keys KeySource
	// Rand is the source of response nonces; nil means crypto/rand.
	Rand io.Reader
}

// DecapsulateRequest opens an encapsulated request of variant v
// (RFC 9458 §4.3):
//
//	[0x00 if v.Prefix] || key_id(1) kem_id(2) kdf_id(2) aead_id(2) || enc || ct
//
// It returns the request and the context to encapsulate its response
// with. The key comes from g.Keys; the header's KEM, KDF and AEAD must be
// the key's.
func (g *Gateway) DecapsulateRequest(ctx context.Context, v Variant, msg []byte) ([]byte, *GatewayContext, error) {
	if v.Prefix {
		if len(msg) == 0 || msg[0] != 0x00 {
			return nil, nil, fmt.Errorf("%w: missing 0x00 version byte", ErrMalformed)
		}
		msg = msg[1:]
	}
	if len(msg) < headerLen {
		return nil, nil, fmt.Errorf("%w: request of %d bytes has no header", ErrMalformed, len(msg))
	}
	hdr := msg[:headerLen]
	id := hdr[0]
	kemID := binary.BigEndian.Uint16(hdr[1:3])
	kdfID := binary.BigEndian.Uint16(hdr[3:5])
	aeadID := binary.BigEndian.Uint16(hdr[5:7])

	// Everything the bytes alone decide is checked before the key is
	// looked up: a key source may have to ask a KMS.
	_, kdf, aead, err := suite(kemID, kdfID, aeadID)
	if err != nil {
		return nil, nil, err
	}
	nenc, _, _ := kemSizes(kemID)
	if len(msg) < headerLen+nenc+tagLen {
		return nil, nil, fmt.Errorf("%w: request of %d bytes is too short", ErrMalformed, len(msg))
	}

	if g.Keys == nil {
		return nil, nil, fmt.Errorf("%w 0x%02x: gateway has no key source", ErrKeyUnavailable, id)
	}
	key, err := g.Keys.OHTTPKey(ctx, id)
	switch {
	case errors.Is(err, ErrUnknownKeyID):
		return nil, nil, err
	case err != nil:
		return nil, nil, fmt.Errorf("%w 0x%02x: %w", ErrKeyUnavailable, id, err)
	case key == nil || key.Private == nil || key.ID != id:
		return nil, nil, fmt.Errorf("%w 0x%02x", ErrUnknownKeyID, id)
	}
	keyKEM := key.Private.KEM().ID()
	if kemID != keyKEM || kdfID != key.KDF || aeadID != key.AEAD {
		return nil, nil, fmt.Errorf("%w: request has kem 0x%04x, kdf 0x%04x, aead 0x%04x; key 0x%02x has kem 0x%04x, kdf 0x%04x, aead 0x%04x",
			ErrUnsupportedSuite, kemID, kdfID, aeadID, id, keyKEM, key.KDF, key.AEAD)
	}
	enc := msg[headerLen : headerLen+nenc]
	ct := msg[headerLen+nenc:]

	r, err := hpke.NewRecipient(enc, key.Private, kdf, aead, requestInfo(v.RequestLabel, hdr))
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	plaintext, err := r.Open(nil, ct)
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	secret, err := r.Export(v.ResponseLabel, secretLen(aeadID))
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	rnd := g.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	return plaintext, &GatewayContext{
		keys: responseKeys{aead: aeadID, enc: bytes.Clone(enc), secret: secret},
		rand: rnd,
	}, nil
}

// A GatewayContext encapsulates the response to one request. It keeps no
// HPKE state and is safe for concurrent use.
type GatewayContext struct {
	keys responseKeys
	rand io.Reader
}

// EncapsulateResponse returns the encapsulated response carrying body
// (RFC 9458 §4.4):
//
//	secret = context.Export(response label, max(Nn, Nk))
//	response_nonce = random(max(Nn, Nk))
//	salt = concat(enc, response_nonce)
//	prk = Extract(salt, secret)
//	aead_key = Expand(prk, "key", Nk)
//	aead_nonce = Expand(prk, "nonce", Nn)
//	ct = Seal(aead_key, aead_nonce, "", body)
//	enc_response = concat(response_nonce, ct)
//
// A request has one response; a second call draws a fresh nonce and so
// never reuses a key and nonce.
func (c *GatewayContext) EncapsulateResponse(body []byte) ([]byte, error) {
	nonce := make([]byte, secretLen(c.keys.aead))
	if _, err := io.ReadFull(c.rand, nonce); err != nil {
		return nil, fmt.Errorf("ohttp: response nonce: %w", err)
	}
	return c.keys.seal(nonce, body)
}
