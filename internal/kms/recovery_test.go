package kms

import (
	"bytes"
	"context"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
)

// encMember is a member's encryption key pair.
type encMember struct {
	key  gov.EncryptionKey
	priv []byte
}

func newEncMember(t *testing.T) encMember {
	t.Helper()
	priv, pub, err := keys.X25519.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return encMember{gov.EncryptionKey{Suite: "x25519", PublicKey: pub}, priv}
}

func TestRecoverySharesAndRecovery(t *testing.T) {
	f, ms := newGovFixture(t, 3, gov.DevConstitution())
	ctx := context.Background()
	secret := func() ([]byte, error) { return bytes.Clone(f.key), nil }
	if e, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || e != nil {
		t.Fatalf("shares without a threshold: %v, %v", e, err)
	}
	enc := []encMember{newEncMember(t), newEncMember(t), newEncMember(t)}
	c := gov.DevConstitution()
	c.RecoveryThreshold = 2
	var acts []gov.Action
	for i, m := range ms {
		acts = append(acts, act(gov.ActSetMemberEncryptionKey, gov.MemberEncryptionKeyArgs{MemberID: m.m.ID, EncryptionKey: &enc[i].key}))
	}
	f.mustPropose(ms[0], append(acts, act(gov.ActSetConstitution, c))...)
	e, err := f.svc.RenewRecoveryShares(ctx, secret)
	if err != nil || e == nil || e.Type != ledger.TypeRecoveryShares {
		t.Fatalf("first shares: %v, %v", e, err)
	}
	if again, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || again != nil {
		t.Fatalf("shares renewed with nothing changed: %v, %v", again, err)
	}
	v1, _ := f.svc.RecoveryShares()
	open := func(i int) []byte {
		s, err := v1.OpenShare(ms[i].m.ID, enc[i].key, enc[i].priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	got, err := v1.Combine(map[string][]byte{ms[0].m.ID: open(0), ms[2].m.ID: open(2)})
	if err != nil || !bytes.Equal(got, f.key) {
		t.Fatalf("two shares open %x, %v; want the master key", got, err)
	}

	// A new ledger secret (a rekey) renews them; the old shares open only
	// the old secret.
	newKey := bytes.Repeat([]byte{7}, 32)
	if e, err := f.svc.RenewRecoveryShares(ctx, func() ([]byte, error) { return bytes.Clone(newKey), nil }); err != nil || e == nil {
		t.Fatalf("shares after a new secret: %v, %v", e, err)
	}
	v2, seq2 := f.svc.RecoveryShares()
	if v2.Version != 2 || v2.SecretID == v1.SecretID {
		t.Fatalf("renewed shares: version %d", v2.Version)
	}
	if _, err := v2.Combine(map[string][]byte{ms[0].m.ID: open(0), ms[2].m.ID: open(2)}); err == nil {
		t.Fatal("old shares combine under the new shares")
	}

	// The recovery: a new log key, the previous one cosigns.
	before := f.svc.Checkpoint()
	oldKey := f.svc.LogVerifierKey()
	re, err := f.svc.RecordRecovery(ctx, Recovered{RecoveryID: "r", SharesSeq: seq2, Members: []string{ms[0].m.ID, ms[1].m.ID}})
	if err != nil {
		t.Fatal(err)
	}
	newKeyV := f.svc.LogVerifierKey()
	if newKeyV == oldKey || re.Type != ledger.TypeServiceRecovered {
		t.Fatalf("log key %s after the recovery (was %s)", newKeyV, oldKey)
	}
	check := func() {
		t.Helper()
		cp := f.svc.Checkpoint()
		if cp.Size < int64(re.Seq) {
			t.Fatalf("checkpoint of %d entries, the recovery is entry %d", cp.Size, re.Seq)
		}
		for _, k := range []string{oldKey, newKeyV} {
			v, _ := translog.NewVerifier(k)
			if _, err := translog.Verify(cp.Note, v); err != nil {
				t.Fatalf("checkpoint does not verify with %s: %v", k, err)
			}
		}
	}
	check()
	if before.Size >= int64(re.Seq) {
		t.Fatal("checkpoint before the recovery covers it")
	}
	f.reopen()
	f.at(0) // an entry after the reopen, if any is due
	check()
	if f.svc.LogVerifierKey() != newKeyV {
		t.Fatal("the new log key did not survive a restart")
	}
}
