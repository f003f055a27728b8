package client

import (
	"context"

	"github.com/tkms-dev/tkms/ohttp"
)

var _ ohttp.KeySource = (*Keys)(nil)

// OHTTPKey implements ohttp.KeySource: the unexpired key whose OHTTP key
// id is id (ByOHTTPID), fetched from the KMS when it is not cached.
func (k *Keys) OHTTPKey(ctx context.Context, id byte) (*ohttp.Key, error) {
	key, err := k.ByOHTTPID(ctx, id)
	if err != nil {
		return nil, err
	}
	return &ohttp.Key{ID: key.OHTTPKeyID, KDF: key.KDF, AEAD: key.AEAD, Private: key.PrivateKey}, nil
}
