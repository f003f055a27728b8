package gov

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/tkms-dev/tkms/internal/akv"
)

// The actions of the automatic recovery member (docs/auto-recovery.md): an
// Azure Key Vault or Managed HSM key that holds the recovery key and
// releases it only to a node whose Azure Attestation token satisfies the
// key's release policy (secure key release). At most one is set.
const (
	ActSetAutoRecoveryMember    = "set_auto_recovery_member"
	ActRemoveAutoRecoveryMember = "remove_auto_recovery_member"
)

func init() {
	checkers[ActSetAutoRecoveryMember] = func(b json.RawMessage) error {
		_, err := DecodeAutoRecoveryMemberArgs(b)
		return err
	}
	checkers[ActRemoveAutoRecoveryMember] = func(b json.RawMessage) error {
		_, err := DecodeRemoveAutoRecoveryMemberArgs(b)
		return err
	}
	actionNames = append(actionNames, ActSetAutoRecoveryMember, ActRemoveAutoRecoveryMember)
	describers[ActSetAutoRecoveryMember] = func(b json.RawMessage) string {
		m, _ := DecodeAutoRecoveryMemberArgs(b)
		return fmt.Sprintf("let the vault key %s release the recovery key to nodes attested by %q under the release policy of SHA-256 %s",
			m.KID(), m.MAAInstance, m.ReleasePolicySHA256)
	}
	describers[ActRemoveAutoRecoveryMember] = func(b json.RawMessage) string {
		r, _ := DecodeRemoveAutoRecoveryMemberArgs(b)
		return "remove the automatic recovery member " + r.KID + " (recovery needs members' shares again)"
	}
}

// Key Vault's names: keys are 1-127 characters of letters, digits and
// dashes; versions are 32 lowercase hex digits in Azure (the simulated
// vault's too).
var (
	vaultKeyName    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	vaultKeyVersion = regexp.MustCompile(`^[0-9a-zA-Z]{1,64}$`)
)

// DecodeAutoRecoveryMemberArgs decodes and checks set_auto_recovery_member's
// arguments, an akv.Member: https vault and MAA instance URLs (http only to
// loopback, as for set_jwt_issuer), a key name and version, the key's
// public part as GET key gives it (an RSA key of at least 2048 bits whose
// kid is vault_url/keys/key_name/key_version, no private or wrapped
// material), and the 64-hex-digit SHA-256 of its release policy.
func DecodeAutoRecoveryMemberArgs(args json.RawMessage) (akv.Member, error) {
	var m akv.Member
	if err := decodeStrict(args, &m); err != nil {
		return m, err
	}
	if err := checkURL(m.VaultURL); err != nil {
		return m, fmt.Errorf("vault_url: %w", err)
	}
	if err := checkURL(m.MAAInstance); err != nil {
		return m, fmt.Errorf("maa_instance: %w", err)
	}
	if !vaultKeyName.MatchString(m.KeyName) {
		return m, fmt.Errorf("key_name %q: want 1 to 127 letters, digits or dashes", m.KeyName)
	}
	if !vaultKeyVersion.MatchString(m.KeyVersion) {
		return m, fmt.Errorf("key_version %q: want the key's version (letters and digits; a version is required)", m.KeyVersion)
	}
	if m.PublicKey.KeyHSM != "" {
		return m, errors.New("public_key: key_hsm is wrapped key material, never part of a proposal")
	}
	pub, err := m.PublicKey.PublicKey()
	if err != nil {
		return m, fmt.Errorf("public_key: %w", err)
	}
	if rk, ok := pub.Key.(*rsa.PublicKey); !ok || rk.N.BitLen() < 2048 {
		return m, errors.New("public_key: want an RSA key of at least 2048 bits")
	}
	if m.PublicKey.KID != m.KID() {
		return m, fmt.Errorf("public_key: kid %q is not %q (vault_url/keys/key_name/key_version)", m.PublicKey.KID, m.KID())
	}
	if !isHexID(m.ReleasePolicySHA256) {
		return m, errors.New("release_policy_sha256: want 64 lowercase hex digits (tkms gov auto-recovery-member prints it)")
	}
	return m, nil
}

// RemoveAutoRecoveryMemberArgs are the arguments of
// remove_auto_recovery_member: the kid of the member removed, so that a
// proposal made against one member never removes its successor.
type RemoveAutoRecoveryMemberArgs struct {
	KID string `json:"kid"`
}

// DecodeRemoveAutoRecoveryMemberArgs decodes remove_auto_recovery_member's
// arguments.
func DecodeRemoveAutoRecoveryMemberArgs(args json.RawMessage) (RemoveAutoRecoveryMemberArgs, error) {
	var r RemoveAutoRecoveryMemberArgs
	if err := decodeStrict(args, &r); err != nil {
		return r, err
	}
	if r.KID == "" || !printable(r.KID) {
		return r, errors.New("kid: want the member's key id (vault_url/keys/key_name/key_version)")
	}
	return r, nil
}
