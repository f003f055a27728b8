package release

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/api"
)

// Freshness nonces (GET /v1/nonce). A nonce is 32 bytes:
//
//	expiry (8 bytes, big-endian Unix seconds) || random (8 bytes) || tag (16 bytes)
//
// where tag is HMAC-SHA256(key, "tkms/v1 nonce" || 0x00 || expiry || random)
// truncated to 16 bytes (RFC 2104; truncation as RFC 2104 §5 allows, to 128
// bits). The server keeps no state: a nonce is valid when its tag verifies
// under the process's key and its expiry has not passed. A guest puts the
// nonce in REPORT_DATA[32:64] to show its evidence is at most NonceTTL old.
//
// A nonce is not single-use: within its lifetime it may be presented any
// number of times. The key is random per process, so a nonce is valid only
// at the replica that issued it and not after a restart.
const (
	NonceSize = 32
	NonceTTL  = 5 * time.Minute
)

const (
	nonceBodySize = 16
	nonceTagSize  = NonceSize - nonceBodySize
	nonceLabel    = "tkms/v1 nonce\x00"
)

// Nonce errors (the *Error of a release wraps them).
var (
	ErrNonceInvalid = errors.New("release: invalid nonce")
	ErrNonceExpired = errors.New("release: nonce expired")
)

// processNonceKey is the MAC key of this process's nonces.
var processNonceKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	rand.Read(k) // never fails (crypto/rand panics rather)
	return k
})

// Nonce returns a fresh nonce, valid for NonceTTL by the KMS clock.
func (s *Service) Nonce() api.NonceResponse {
	n, exp := newNonce(processNonceKey(), s.cfg.KMS.Now())
	return api.NonceResponse{Nonce: hex.EncodeToString(n), Expires: exp.UTC().Format(time.RFC3339)}
}

// newNonce returns a nonce under key that expires NonceTTL after now
// (rounded down to the second).
func newNonce(key []byte, now time.Time) ([]byte, time.Time) {
	exp := now.Add(NonceTTL).Unix()
	n := make([]byte, NonceSize)
	binary.BigEndian.PutUint64(n, uint64(exp))
	rand.Read(n[8:nonceBodySize])
	copy(n[nonceBodySize:], nonceTag(key, n[:nonceBodySize]))
	return n, time.Unix(exp, 0)
}

func nonceTag(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nonceLabel))
	m.Write(body)
	return m.Sum(nil)[:nonceTagSize]
}

// checkNonce checks a nonce's tag under key (ErrNonceInvalid) and then its
// expiry at now (ErrNonceExpired). The tag is checked first, so the expiry
// read is authentic.
func checkNonce(key, n []byte, now time.Time) error {
	if len(n) != NonceSize {
		return ErrNonceInvalid
	}
	if !hmac.Equal(n[nonceBodySize:], nonceTag(key, n[:nonceBodySize])) {
		return ErrNonceInvalid
	}
	exp := binary.BigEndian.Uint64(n)
	if exp > uint64(1<<62) || !now.Before(time.Unix(int64(exp), 0)) {
		return ErrNonceExpired
	}
	return nil
}

// parseNonce decodes the hex nonce of a request (NONCE_INVALID).
func parseNonce(s string) ([]byte, error) {
	n, err := hex.DecodeString(s)
	if err != nil || len(n) != NonceSize {
		return nil, fail(KindRefused, CodeNonceInvalid, "nonce must be 64 hex digits, as GET /v1/nonce returns", ErrNonceInvalid)
	}
	return n, nil
}

// verifyNonce checks a request's nonce against this process's key and the
// KMS clock, mapping the outcome to NONCE_INVALID or NONCE_EXPIRED.
func (s *Service) verifyNonce(n []byte) error {
	switch err := checkNonce(processNonceKey(), n, s.cfg.KMS.Now()); {
	case errors.Is(err, ErrNonceExpired):
		return fail(KindRefused, CodeNonceExpired, "the nonce has expired; fetch a new one from GET /v1/nonce", err)
	case err != nil:
		return fail(KindRefused, CodeNonceInvalid, "the nonce was not issued by this server", err)
	}
	return nil
}
