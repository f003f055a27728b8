package api

import "time"

// V1Key is one key of GET /v1/keys.
type V1Key struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   int       `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	KEM          uint16    `json:"kem_id"`
	KDF          uint16    `json:"kdf_id"`
	AEAD         uint16    `json:"aead_id"`
	PublicKey    []byte    `json:"public_key"` // SerializePublicKey
	Created      time.Time `json:"created"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	DestroyAfter time.Time `json:"destroy_after"`
	Reason       string    `json:"reason"` // why it was created: scheduled or refresh
	// State is the key's phase: created, published, primary, retired,
	// expired or destroyed. The KMS releases keys in the first four.
	State string `json:"state"`
}

// V1Keys is the body of GET /v1/keys.
type V1Keys struct {
	Keys []V1Key `json:"keys"`
}
