package client

import (
	"context"
	"errors"

	"github.com/tkms-dev/tkms/ohttp"
)

var _ ohttp.KeySource = (*Keys)(nil)

// OHTTPKey implements ohttp.KeySource: the unexpired key whose OHTTP key
// id is id (ByOHTTPID), fetched from the KMS when it is not cached (unless
// KeysConfig.PrefetchedOnly). ErrKeyNotFound and ErrKeyExpired also match
// ohttp.ErrUnknownKeyID (so a gateway answers the client 422); every other
// error is ErrUnavailable (503).
func (k *Keys) OHTTPKey(ctx context.Context, id byte) (*ohttp.Key, error) {
	key, err := k.ByOHTTPID(ctx, id)
	if err != nil {
		if errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrKeyExpired) {
			return nil, unknownKeyError{err}
		}
		return nil, err
	}
	return &ohttp.Key{ID: key.OHTTPKeyID, KDF: key.KDF, AEAD: key.AEAD, Private: key.PrivateKey}, nil
}

// An unknownKeyError is a missing key, as ohttp.ErrUnknownKeyID.
type unknownKeyError struct{ err error }

func (e unknownKeyError) Error() string        { return e.err.Error() }
func (e unknownKeyError) Unwrap() error        { return e.err }
func (e unknownKeyError) Is(target error) bool { return target == ohttp.ErrUnknownKeyID }
