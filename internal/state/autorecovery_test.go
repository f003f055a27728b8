package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/recovery"
)

func autoMember(t *testing.T, version string) map[string]any {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jb, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
	var pub map[string]any
	_ = json.Unmarshal(jb, &pub)
	pub["kty"], pub["kid"] = "RSA-HSM", "https://tkms.vault.azure.net/keys/tkms-recovery/"+version
	return map[string]any{
		"vault_url": "https://tkms.vault.azure.net", "key_name": "tkms-recovery", "key_version": version,
		"maa_instance": "https://sharedeus2.eus2.attest.azure.net", "public_key": pub,
		"release_policy_sha256": strings.Repeat("cd", 32),
	}
}

// TestGovAutoRecoveryMember: set_auto_recovery_member sets the member at
// the accepting entry and survives a snapshot; a second one replaces it;
// remove_auto_recovery_member removes only the member it names.
func TestGovAutoRecoveryMember(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	if f.st.AutoRecovery != nil {
		t.Fatal("a new ledger has an automatic recovery member")
	}
	f.propose(f.signers[0], action(gov.ActSetAutoRecoveryMember, autoMember(t, "v1")))
	first := f.st.AutoRecovery
	if first == nil || f.st.AutoRecoverySeq != f.st.Seq || first.KID() != "https://tkms.vault.azure.net/keys/tkms-recovery/v1" {
		t.Fatalf("member %+v at %d (seq %d)", first, f.st.AutoRecoverySeq, f.st.Seq)
	}
	b, err := f.st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || back.AutoRecovery == nil || back.AutoRecovery.PublicKey.N != first.PublicKey.N || back.AutoRecoverySeq != f.st.AutoRecoverySeq {
		t.Fatalf("snapshot: %+v, %v", back.AutoRecovery, err)
	}

	f.now = f.now.Add(time.Minute)
	f.propose(f.signers[0], action(gov.ActSetAutoRecoveryMember, autoMember(t, "v2")))
	if f.st.AutoRecovery.KeyVersion != "v2" || first.KeyVersion != "v1" {
		t.Fatalf("replace: %+v (the first now %+v)", f.st.AutoRecovery, first)
	}

	seq := f.st.AutoRecoverySeq
	err = f.st.applyRemoveAutoRecoveryMember(action(gov.ActRemoveAutoRecoveryMember, map[string]any{"kid": first.KID()}), seq+1)
	if gov.Code(err) != gov.CodeInvalidAction || f.st.AutoRecovery == nil {
		t.Fatalf("removing the replaced member: %v", err)
	}
	f.now = f.now.Add(time.Minute)
	f.propose(f.signers[0], action(gov.ActRemoveAutoRecoveryMember, map[string]any{"kid": f.st.AutoRecovery.KID()}))
	if f.st.AutoRecovery != nil || f.st.AutoRecoverySeq != f.st.Seq {
		t.Fatalf("after removal: %+v at %d", f.st.AutoRecovery, f.st.AutoRecoverySeq)
	}
	err = f.st.applyRemoveAutoRecoveryMember(action(gov.ActRemoveAutoRecoveryMember, map[string]any{"kid": first.KID()}), f.st.Seq+1)
	if gov.Code(err) != gov.CodeInvalidAction {
		t.Fatalf("removing with none set: %v", err)
	}
}

// nameHolder wraps for a holder name without any key (the state machine
// reads only the names).
type nameHolder string

func (h nameHolder) Name() string                                   { return string(h) }
func (h nameHolder) Wrap(k []byte) ([]byte, error)                  { return bytes.Clone(k), nil }
func (h nameHolder) Unwrap(context.Context, []byte) ([]byte, error) { return nil, errors.New("no") }

// TestAutoRecoveryHeldShares: recovery shares hold the recovery key only
// for the automatic member in force, and its change makes new shares due.
func TestAutoRecoveryHeldShares(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	a := f.signers[0]
	f.propose(a, setEncKey(a.m.ID, encKey(t, keys.X25519)), withThreshold(1))
	secret := bytes.Repeat([]byte{1}, 32)
	rs, k := f.st.RecoveryRecipients()
	kid := "https://tkms.vault.azure.net/keys/tkms-recovery/v1"
	sh, _ := recovery.Split(secret, rs, k, 1, nameHolder(kid))
	if err := f.apply(ledger.TypeRecoveryShares, sh); err == nil {
		t.Fatalf("a held key without an automatic member: %v", err)
	}
	sh, _ = recovery.Split(secret, rs, k, 1)
	if err := f.apply(ledger.TypeRecoveryShares, sh); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Minute)
	f.propose(a, action(gov.ActSetAutoRecoveryMember, autoMember(t, "v1")))
	if !f.st.RecoverySharesDue(recovery.SecretID(secret)) {
		t.Fatal("no shares due for the new automatic member")
	}
	other, _ := recovery.Split(secret, rs, k, 2, nameHolder(kid+"0"))
	if err := f.apply(ledger.TypeRecoveryShares, other); err == nil {
		t.Fatal("a key held for another vault key applied")
	}
	sh, _ = recovery.Split(secret, rs, k, 2, nameHolder(kid))
	if err := f.apply(ledger.TypeRecoveryShares, sh); err != nil {
		t.Fatal(err)
	}
	if f.st.RecoverySharesDue(recovery.SecretID(secret)) {
		t.Fatal("shares due after writing them")
	}
}
