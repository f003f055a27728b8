package gov

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/internal/keys"
)

// ActSetMemberEncryptionKey sets, rotates or removes a member's encryption
// key: the HPKE public key that the member's recovery share is sealed to
// (docs/recovery.md). Each change renews the recovery shares.
const ActSetMemberEncryptionKey = "set_member_encryption_key"

// MaxRecoveryThreshold bounds the constitution's recovery_threshold.
const MaxRecoveryThreshold = 64

func init() {
	checkers[ActSetMemberEncryptionKey] = func(b json.RawMessage) error {
		_, err := DecodeMemberEncryptionKeyArgs(b)
		return err
	}
	actionNames = append(actionNames, ActSetMemberEncryptionKey)
}

// An EncryptionKey is a member's HPKE public key for recovery shares: the
// suite ("x25519", or the post-quantum hybrid "mlkem768-x25519") and the
// public key as RFC 9180 SerializePublicKey gives it.
type EncryptionKey struct {
	Suite     string `json:"suite"`
	PublicKey []byte `json:"public_key"` // standard base64 in JSON
}

// Check checks that the suite is one shares are sealed with and that the
// public key is a key of that suite.
func (k *EncryptionKey) Check() error {
	s, err := k.ParsedSuite()
	if err != nil {
		return err
	}
	if _, err := s.PublicKey(k.PublicKey); err != nil {
		return fmt.Errorf("encryption key: %s public key: %w", s.Name, err)
	}
	return nil
}

// ParsedSuite returns the key's suite: X25519 or MLKEM768-X25519 (a P-256
// key would work, but nothing asks for it: it is refused).
func (k *EncryptionKey) ParsedSuite() (keys.Suite, error) {
	switch k.Suite {
	case keys.X25519.Name:
		return keys.X25519, nil
	case keys.MLKEM768X25519.Name:
		return keys.MLKEM768X25519, nil
	}
	return keys.Suite{}, fmt.Errorf("encryption key: suite %q: want %q or %q", k.Suite, keys.X25519.Name, keys.MLKEM768X25519.Name)
}

// Hash returns the lowercase hex SHA-256 of the suite name and the public
// key: what the ledger says a share was sealed to.
func (k *EncryptionKey) Hash() string {
	h := sha256.New()
	h.Write([]byte(k.Suite))
	h.Write([]byte{0})
	h.Write(k.PublicKey)
	return hex.EncodeToString(h.Sum(nil))
}

// MemberEncryptionKeyArgs are the arguments of set_member_encryption_key:
// the member and its new key, or Remove alone.
type MemberEncryptionKeyArgs struct {
	MemberID      string         `json:"member_id"`
	EncryptionKey *EncryptionKey `json:"encryption_key,omitempty"`
	Remove        bool           `json:"remove,omitempty"`
}

// DecodeMemberEncryptionKeyArgs decodes and checks the arguments of
// set_member_encryption_key.
func DecodeMemberEncryptionKeyArgs(args json.RawMessage) (MemberEncryptionKeyArgs, error) {
	var a MemberEncryptionKeyArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if !isHexID(a.MemberID) {
		return a, fmt.Errorf("member_id %q: want 64 lowercase hex characters", a.MemberID)
	}
	switch {
	case a.Remove && a.EncryptionKey != nil:
		return a, errors.New(`"remove" takes only "member_id"`)
	case !a.Remove && a.EncryptionKey == nil:
		return a, errors.New(`want "encryption_key" or "remove": true`)
	case a.EncryptionKey != nil:
		if err := a.EncryptionKey.Check(); err != nil {
			return a, err
		}
	}
	return a, nil
}

func describeMemberEncryptionKey(args json.RawMessage) string {
	a, _ := DecodeMemberEncryptionKeyArgs(args)
	if a.Remove {
		return "remove the encryption key of member " + a.MemberID + " (it holds no recovery share from now on)"
	}
	return fmt.Sprintf("set the encryption key of member %s to %s key %s (recovery shares are sealed to it)", a.MemberID, a.EncryptionKey.Suite, a.EncryptionKey.Hash()[:16])
}
