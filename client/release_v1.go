package client

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// A wrappingKey is a fresh key pair that one release is wrapped to.
type wrappingKey struct {
	kem  uint16          // HPKE, or
	sk   hpke.PrivateKey //
	rsa  *rsa.PrivateKey // RSA
	pub  []byte          // HPKE: SerializePublicKey; RSA: DER SubjectPublicKeyInfo
	text string          // RSA for /app: the PEM text
}

func newWrappingKey(kind Wrapping) (*wrappingKey, error) {
	switch kind {
	case WrapX25519, WrapMLKEM768X25519:
		id := keys.KEMX25519HKDFSHA256
		if kind == WrapMLKEM768X25519 {
			id = keys.KEMMLKEM768X25519
		}
		kem, err := hpke.NewKEM(id)
		if err != nil {
			return nil, err
		}
		sk, err := kem.GenerateKey()
		if err != nil {
			return nil, err
		}
		return &wrappingKey{kem: id, sk: sk, pub: sk.PublicKey().Bytes()}, nil
	case WrapRSA4096:
		sk, err := rsa.GenerateKey(rand.Reader, 4096)
		if err != nil {
			return nil, err
		}
		der := wrap.CanonicalRSA(&sk.PublicKey)
		return &wrappingKey{rsa: sk, pub: der, text: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}, nil
	}
	return nil, fmt.Errorf("client: unknown wrapping %q", kind)
}

// v1Binding is REPORT_DATA[0:32] of a /v1 release: SHA-256 of the
// wrapping key's canonical encoding (wrap.CanonicalHPKE: the 2-byte KEM id
// and the public key; wrap.CanonicalRSA: the DER SubjectPublicKeyInfo).
func (w *wrappingKey) v1Binding() [32]byte {
	if w.rsa != nil {
		return wrap.V1BindingHash(w.pub)
	}
	return wrap.V1BindingHash(wrap.CanonicalHPKE(w.kem, w.pub))
}

// v1JSON is the wrapping_key of a /v1 release request.
func (w *wrappingKey) v1JSON() *api.V1WrappingKey {
	if w.rsa != nil {
		return &api.V1WrappingKey{Type: "rsa", SPKI: base64.StdEncoding.EncodeToString(w.pub)}
	}
	return &api.V1WrappingKey{Type: "hpke", KEMID: w.kem, PublicKey: base64.StdEncoding.EncodeToString(w.pub)}
}

// open unwraps a /v1 blob of key kid: HPKE base mode with info
// wrap.ReleaseInfo(kid), HKDF-SHA256 and AES-256-GCM, or RSA-OAEP-256.
func (w *wrappingKey) open(kid string, blob []byte) ([]byte, error) {
	if w.rsa != nil {
		return rsa.DecryptOAEP(sha256.New(), nil, w.rsa, blob, nil)
	}
	return hpke.Open(w.sk, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(kid), blob)
}

// destroy erases what Go lets us erase of the private half: the RSA
// private exponent and primes. (crypto/hpke keys and the RSA key's
// precomputed internal form are opaque; they are dropped.)
func (w *wrappingKey) destroy() {
	if w.rsa != nil {
		zeroInt(w.rsa.D)
		for _, p := range w.rsa.Primes {
			zeroInt(p)
		}
		zeroInt(w.rsa.Precomputed.Dp)
		zeroInt(w.rsa.Precomputed.Dq)
		zeroInt(w.rsa.Precomputed.Qinv)
	}
	w.rsa, w.sk = nil, nil
}

func zeroInt(n *big.Int) {
	if n != nil {
		clear(n.Bits())
		n.SetInt64(0)
	}
}

// attest returns evidence whose REPORT_DATA is bind || nonce.
func (k *Keys) attest(ctx context.Context, bind [32]byte, nonce []byte) (*Evidence, string, error) {
	var rd [64]byte
	copy(rd[:32], bind[:])
	copy(rd[32:], nonce)
	ev, err := k.cfg.Attester.Attest(ctx, rd)
	if err != nil {
		return nil, "", failedTo("attest", err)
	}
	if ev == nil || len(ev.Attestation) == 0 {
		return nil, "", errors.New("client: attest: the attester returned no evidence")
	}
	tok, err := k.cfg.Tokens.Token(ctx)
	if err != nil {
		return nil, "", failedTo("token", err)
	}
	return ev, tok, nil
}

func (k *Keys) nonce(ctx context.Context) ([]byte, error) {
	b, err := k.do(ctx, http.MethodGet, "/v1/nonce", nil, "")
	if err != nil {
		return nil, failedTo("nonce", err)
	}
	var body api.NonceResponse
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, failedTo("nonce", err)
	}
	n, err := hex.DecodeString(body.Nonce)
	if err != nil || len(n) != 32 {
		return nil, fmt.Errorf("client: nonce: %q is not 64 hex digits", body.Nonce)
	}
	return n, nil
}

func (k *Keys) releaseV1(ctx context.Context, kids []string, all bool) ([]released, error) {
	wk, err := newWrappingKey(k.cfg.Wrapping)
	if err != nil {
		return nil, failedTo("wrapping key", err)
	}
	defer wk.destroy()
	var nonce []byte
	if k.cfg.Nonce {
		if nonce, err = k.nonce(ctx); err != nil {
			return nil, err
		}
	}
	bind := wk.v1Binding()
	ev, tok, err := k.attest(ctx, bind, nonce)
	if err != nil {
		return nil, err
	}
	req := api.V1Request{Attestation: ev.Attestation, WrappingKey: wk.v1JSON(), Nonce: hex.EncodeToString(nonce)}
	path := "/v1/release"
	switch {
	case all:
		req.AllValid = true
	case len(kids) == 1:
		path = "/v1/keys/" + url.PathEscape(kids[0]) + "/release"
	default:
		req.Kids = kids
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b, err := k.do(ctx, http.MethodPost, path, body, tok)
	if err != nil {
		return nil, failedTo("release", err)
	}
	var resp api.V1ReleaseResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: release answer: %w", ErrRejected, err)
	}
	got := make([]string, len(resp.Keys))
	for i, rk := range resp.Keys {
		got[i] = rk.Kid
	}
	if len(got) == 0 || (!all && !sameSet(got, kids)) || !distinct(got) {
		return nil, fmt.Errorf("%w: asked for %v, the answer holds %v", ErrRejected, kids, got)
	}
	if err := k.checkReceipt(resp.Receipt, got, bind); err != nil {
		return nil, err
	}
	out := make([]released, 0, len(resp.Keys))
	for _, rk := range resp.Keys {
		priv, err := wk.open(rk.Kid, rk.Wrapped)
		if err != nil {
			for _, r := range out {
				clear(r.priv)
			}
			return nil, fmt.Errorf("%w: the wrapped key %s does not decrypt", ErrRejected, rk.Kid)
		}
		out = append(out, released{kid: rk.Kid, pub: rk.PublicKey, priv: priv})
	}
	return out, nil
}
