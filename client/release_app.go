package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// itemPublicKey returns the public key of a key item (the fmt=jwk payload
// of /app/unwrapKey) in SerializePublicKey form.
func itemPublicKey(it *keys.Item) ([]byte, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch {
	case it.Kty == "OKP" && it.Crv == "X25519":
		return dec(it.X)
	case it.Kty == "EC" && it.Crv == "P-256":
		x, err := dec(it.X)
		if err != nil {
			return nil, err
		}
		y, err := dec(it.Y)
		if err != nil {
			return nil, err
		}
		return append(append([]byte{4}, x...), y...), nil
	case it.Kty == "AKP" && it.Alg == "MLKEM768-X25519":
		return dec(it.Pub)
	}
	return nil, fmt.Errorf("unknown key type %q/%q/%q", it.Kty, it.Crv, it.Alg)
}

func (k *Keys) releaseApp(ctx context.Context, kid string) ([]released, error) {
	wk, err := newWrappingKey(WrapRSA4096)
	if err != nil {
		return nil, failedTo("wrapping key", err)
	}
	defer wk.destroy()
	// The /app binding is SHA-256 of the exact PEM text sent, trailing
	// newline included (wrap.AppBindingHash).
	bind := wrap.AppBindingHash(wk.text)
	ev, tok, err := k.attest(ctx, bind, nil)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.AppRequest{Attestation: ev.Attestation, WrappingKey: wk.text, WrappedKid: kid})
	if err != nil {
		return nil, err
	}
	b, err := k.do(ctx, http.MethodPost, "/app/unwrapKey?fmt=jwk", body, tok)
	if err != nil {
		return nil, failedTo("release", err)
	}
	var resp api.AppUnwrapResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: release answer: %w", ErrRejected, err)
	}
	if err := k.checkReceipt([]byte(resp.Receipt), []string{kid}, bind); err != nil {
		return nil, err
	}
	wrapped, err := base64.StdEncoding.DecodeString(resp.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: release answer: wrapped is not standard base64", ErrRejected)
	}
	payload, err := wk.open(kid, wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key %s does not decrypt", ErrRejected, kid)
	}
	defer clear(payload)
	var it keys.Item
	if err := json.Unmarshal(payload, &it); err != nil {
		return nil, fmt.Errorf("%w: the unwrapped key %s is not a JSON key item", ErrRejected, kid)
	}
	if it.Kid != kid {
		return nil, fmt.Errorf("%w: asked for %s, the key item is %s", ErrRejected, kid, it.Kid)
	}
	pub, err := itemPublicKey(&it)
	if err != nil {
		return nil, fmt.Errorf("%w: key item %s: %w", ErrRejected, kid, err)
	}
	priv, err := base64.RawURLEncoding.DecodeString(it.D)
	if err != nil || len(priv) == 0 {
		return nil, fmt.Errorf("%w: key item %s has no private key", ErrRejected, kid)
	}
	return []released{{kid: kid, pub: pub, priv: priv}}, nil
}
