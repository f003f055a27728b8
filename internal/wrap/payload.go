package wrap

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/internal/keys"
)

// JWKPayload returns the fmt=jwk payload: the JSON key item including "d",
// the base64url (unpadded) raw private key. item.D must be set.
func JWKPayload(item keys.Item) ([]byte, error) {
	if item.D == "" {
		return nil, fmt.Errorf("%w: key item has no private key", ErrWrap)
	}
	d, err := base64.RawURLEncoding.DecodeString(item.D)
	clear(d) // decoded only to check it
	if err != nil || len(d) == 0 {
		return nil, fmt.Errorf("%w: key item's d is not unpadded base64url", ErrWrap)
	}
	b, err := json.Marshal(item)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrap, err)
	}
	return b, nil
}

// Tink constants of the fmt=tink payload.
const (
	TinkHPKEPrivateKeyTypeURL = "type.googleapis.com/google.crypto.tink.HpkePrivateKey"
	// TinkKeyID is the key id and primary key id the originals use.
	TinkKeyID = 0
)

// TinkKeyset returns the fmt=tink payload: a binary google.crypto.tink.Keyset
// holding the private key, laid out as docs/spec/azure-compat.md ("POST
// /app/unwrapKey") says:
//
//	Keyset{primary_key_id: 0, key: [{key_id: 0, status: ENABLED,
//	  output_prefix_type: TINK, key_data: {type_url: TinkHPKEPrivateKeyTypeURL,
//	  key_material_type: ASYMMETRIC_PRIVATE, value: HpkePrivateKey{version: 0,
//	    public_key: HpkePublicKey{version: 0, params: {kem: DHKEM_X25519_HKDF_SHA256,
//	      kdf: HKDF_SHA256, aead: AES_256_GCM}, public_key: pub},
//	    private_key: priv}}}]}
//
// The originals leave HpkePrivateKey.public_key empty, which tink-go refuses;
// the data-plane C++ reads only private_key, so this form serves both. Only
// X25519 keys (the suite DEPA uses) have a Tink form here; pub must be the
// public key of priv. The encoding is deterministic.
func TinkKeyset(suite keys.Suite, priv, pub []byte) ([]byte, error) {
	if suite.KEM != keys.KEMX25519HKDFSHA256 || suite.KDF != keys.KDFHKDFSHA256 || suite.AEAD != keys.AEADAES256GCM {
		return nil, fmt.Errorf("%w: no tink form for suite %q (only x25519)", ErrWrap, suite.Name)
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: x25519 private key: %v", ErrWrap, err)
	}
	if !bytes.Equal(k.PublicKey().Bytes(), pub) {
		return nil, fmt.Errorf("%w: public key does not match the private key", ErrWrap)
	}
	det := proto.MarshalOptions{Deterministic: true}
	value, err := det.Marshal(&hpke_proto.HpkePrivateKey{
		Version: 0,
		PublicKey: &hpke_proto.HpkePublicKey{
			Version: 0,
			Params: &hpke_proto.HpkeParams{
				Kem:  hpke_proto.HpkeKem_DHKEM_X25519_HKDF_SHA256,
				Kdf:  hpke_proto.HpkeKdf_HKDF_SHA256,
				Aead: hpke_proto.HpkeAead_AES_256_GCM,
			},
			PublicKey: pub,
		},
		PrivateKey: priv,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrap, err)
	}
	// value holds the private key; the keyset copies it.
	defer clear(value)
	ks, err := det.Marshal(&tinkpb.Keyset{
		PrimaryKeyId: TinkKeyID,
		Key: []*tinkpb.Keyset_Key{{
			KeyData: &tinkpb.KeyData{
				TypeUrl:         TinkHPKEPrivateKeyTypeURL,
				Value:           value,
				KeyMaterialType: tinkpb.KeyData_ASYMMETRIC_PRIVATE,
			},
			Status:           tinkpb.KeyStatusType_ENABLED,
			KeyId:            TinkKeyID,
			OutputPrefixType: tinkpb.OutputPrefixType_TINK,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrap, err)
	}
	return ks, nil
}
