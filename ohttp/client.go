package ohttp

import (
	"bytes"
	"crypto/hpke"
	"encoding/binary"
	"fmt"
	"slices"
)

// A SymmetricSuite is one HPKE KDF and AEAD pair of a key configuration.
type SymmetricSuite struct {
	KDF  uint16
	AEAD uint16
}

// A KeyConfig is an RFC 9458 §3.1 key configuration:
//
//	key_id(1) kem_id(2) public_key(Npk) symmetric_algorithms_length(2) {kdf_id(2) aead_id(2)}...
type KeyConfig struct {
	ID        byte
	KEM       uint16
	PublicKey []byte // SerializePublicKey (RFC 9180 §4) of the KEM
	// Suites lists the symmetric algorithms as the configuration does,
	// including any this package does not implement.
	Suites []SymmetricSuite
}

// ParseKeyConfig parses one key configuration (RFC 9458 §3.1). Its KEM
// must be supported, since Npk depends on it, and its public key must be
// valid. The symmetric algorithms list must hold at least one pair.
func ParseKeyConfig(b []byte) (KeyConfig, error) {
	if len(b) < 3 {
		return KeyConfig{}, fmt.Errorf("%w: key configuration of %d bytes", ErrMalformed, len(b))
	}
	c := KeyConfig{ID: b[0], KEM: binary.BigEndian.Uint16(b[1:3])}
	_, npk, ok := kemSizes(c.KEM)
	if !ok {
		return KeyConfig{}, fmt.Errorf("%w: kem 0x%04x", ErrUnsupportedSuite, c.KEM)
	}
	b = b[3:]
	if len(b) < npk+2 {
		return KeyConfig{}, fmt.Errorf("%w: key configuration truncated in its public key", ErrMalformed)
	}
	c.PublicKey = bytes.Clone(b[:npk])
	n := int(binary.BigEndian.Uint16(b[npk : npk+2]))
	b = b[npk+2:]
	if n == 0 || n%4 != 0 || n != len(b) {
		return KeyConfig{}, fmt.Errorf("%w: symmetric algorithms length %d with %d bytes left", ErrMalformed, n, len(b))
	}
	for ; len(b) > 0; b = b[4:] {
		c.Suites = append(c.Suites, SymmetricSuite{KDF: binary.BigEndian.Uint16(b[0:2]), AEAD: binary.BigEndian.Uint16(b[2:4])})
	}
	kem, err := hpke.NewKEM(c.KEM)
	if err != nil {
		return KeyConfig{}, fmt.Errorf("%w: kem 0x%04x: %v", ErrUnsupportedSuite, c.KEM, err)
	}
	if _, err := kem.NewPublicKey(c.PublicKey); err != nil {
		return KeyConfig{}, fmt.Errorf("%w: kem 0x%04x public key: %v", ErrMalformed, c.KEM, err)
	}
	return c, nil
}

// ParseKeyConfigs parses an application/ohttp-keys body (RFC 9458 §3.2):
// one or more key configurations, each prefixed by its 2-byte length. A
// configuration whose KEM this package does not implement is skipped (its
// length lets the rest be read); if none is left, the error is
// ErrUnsupportedSuite. Any other encoding error fails the whole list.
func ParseKeyConfigs(b []byte) ([]KeyConfig, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty key configuration list", ErrMalformed)
	}
	var configs []KeyConfig
	skipped := 0
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: key configuration list truncated in a length", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b)-2 < n {
			return nil, fmt.Errorf("%w: key configuration of %d bytes with %d left", ErrMalformed, n, len(b)-2)
		}
		one := b[2 : 2+n]
		b = b[2+n:]
		if len(one) >= 3 {
			if _, _, ok := kemSizes(binary.BigEndian.Uint16(one[1:3])); !ok {
				skipped++
				continue
			}
		}
		c, err := ParseKeyConfig(one)
		if err != nil {
			return nil, err
		}
		configs = append(configs, c)
	}
	if len(configs) == 0 {
		return nil, fmt.Errorf("%w: none of %d key configurations has a supported kem", ErrUnsupportedSuite, skipped)
	}
	return configs, nil
}

// A ClientContext decapsulates the response to one request. It keeps no
// HPKE state and is safe for concurrent use.
type ClientContext struct {
	keys responseKeys
}

// EncapsulateRequest encapsulates plaintext of variant v to the key of c
// with the symmetric suite s, which c must list (RFC 9458 §4.3):
//
//	hdr = concat(key_id, kem_id, kdf_id, aead_id)
//	info = concat(request label, 0x00, hdr)
//	enc, sctxt = SetupBaseS(pkR, info)
//	enc_request = concat([0x00 if v.Prefix], hdr, enc, sctxt.Seal("", request))
//
// It returns the encapsulated request and the context to decapsulate its
// response with. The HPKE ephemeral key comes from crypto/rand.
func EncapsulateRequest(c KeyConfig, s SymmetricSuite, v Variant, plaintext []byte) ([]byte, *ClientContext, error) {
	if !slices.Contains(c.Suites, s) {
		return nil, nil, fmt.Errorf("%w: key 0x%02x does not offer kdf 0x%04x, aead 0x%04x", ErrUnsupportedSuite, c.ID, s.KDF, s.AEAD)
	}
	kem, kdf, aead, err := suite(c.KEM, s.KDF, s.AEAD)
	if err != nil {
		return nil, nil, err
	}
	pk, err := kem.NewPublicKey(c.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: kem 0x%04x public key: %v", ErrMalformed, c.KEM, err)
	}
	hdr := header(c.ID, c.KEM, s.KDF, s.AEAD)
	enc, sender, err := hpke.NewSender(pk, kdf, aead, requestInfo(v.RequestLabel, hdr))
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: hpke setup: %w", err)
	}
	ct, err := sender.Seal(nil, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: hpke seal: %w", err)
	}
	secret, err := sender.Export(v.ResponseLabel, secretLen(s.AEAD))
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: hpke export: %w", err)
	}
	msg := make([]byte, 0, 1+len(hdr)+len(enc)+len(ct))
	if v.Prefix {
		msg = append(msg, 0x00)
	}
	msg = append(msg, hdr...)
	msg = append(msg, enc...)
	msg = append(msg, ct...)
	return msg, &ClientContext{keys: responseKeys{aead: s.AEAD, enc: enc, secret: secret}}, nil
}

// DecapsulateResponse opens the encapsulated response to the request of c
// (RFC 9458 §4.4): response_nonce || ct, with the key and nonce derived
// as in GatewayContext.EncapsulateResponse.
func (c *ClientContext) DecapsulateResponse(msg []byte) ([]byte, error) {
	return c.keys.open(msg)
}
