package state

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/translog"
)

func encKey(t *testing.T, suite keys.Suite) *gov.EncryptionKey {
	t.Helper()
	_, pub, err := suite.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &gov.EncryptionKey{Suite: suite.Name, PublicKey: pub}
}

func setEncKey(id string, k *gov.EncryptionKey) gov.Action {
	if k == nil {
		return action(gov.ActSetMemberEncryptionKey, gov.MemberEncryptionKeyArgs{MemberID: id, Remove: true})
	}
	return action(gov.ActSetMemberEncryptionKey, gov.MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: k})
}

func withThreshold(k int) gov.Action {
	c := gov.DevConstitution()
	c.RecoveryThreshold = k
	return action(gov.ActSetConstitution, c)
}

// TestRecoveryThreshold: the threshold is satisfiable by the members
// holding an encryption key, whatever changes them.
func TestRecoveryThreshold(t *testing.T) {
	f := newGovFixture(t, 3, gov.DevConstitution())
	a, b, c := f.signers[0], f.signers[1], f.signers[2]
	if _, err := f.submit(f.signProposal(a, withThreshold(2))); !errors.Is(err, gov.ErrUnsafeConstitution) {
		t.Fatalf("threshold 2 with no keys: %v", err)
	}
	f.propose(a, setEncKey(a.m.ID, encKey(t, keys.X25519)), setEncKey(b.m.ID, encKey(t, keys.MLKEM768X25519)), withThreshold(2))
	if f.st.Constitution.RecoveryThreshold != 2 {
		t.Fatalf("threshold %d", f.st.Constitution.RecoveryThreshold)
	}
	rs, k := f.st.RecoveryRecipients()
	if k != 2 || len(rs) != 2 {
		t.Fatalf("recipients %d, threshold %d", len(rs), k)
	}
	for name, acts := range map[string][]gov.Action{
		"removing a key":    {setEncKey(b.m.ID, nil)},
		"removing a holder": {action(gov.ActRemoveMember, gov.RemoveMemberArgs{MemberID: a.m.ID})},
		"threshold 3 of 2":  {withThreshold(3)},
	} {
		if _, err := f.submit(f.signProposal(c, acts...)); !errors.Is(err, gov.ErrUnsafeConstitution) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := f.submit(f.signProposal(c, setEncKey(c.m.ID, nil))); !errors.Is(err, gov.ErrInvalidAction) {
		t.Fatalf("removing a key that is not there: %v", err)
	}
	// Rotating a key changes the configuration the shares are made for.
	secret := bytes.Repeat([]byte{1}, 32)
	id := recovery.SecretID(secret)
	if !f.st.RecoverySharesDue(id) {
		t.Fatal("no shares due")
	}
	rs, k = f.st.RecoveryRecipients()
	sh, err := recovery.Split(secret, rs, k, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.apply(ledger.TypeRecoveryShares, sh); err != nil {
		t.Fatal(err)
	}
	if f.st.RecoverySharesDue(id) {
		t.Fatal("shares due after writing them")
	}
	if !f.st.RecoverySharesDue(recovery.SecretID([]byte("another secret"))) {
		t.Fatal("no shares due for a new ledger secret")
	}
	// Shares for an older configuration are refused.
	f.propose(c, setEncKey(a.m.ID, encKey(t, keys.X25519)))
	if !f.st.RecoverySharesDue(id) {
		t.Fatal("no shares due after a key rotation")
	}
	sh.Version = 2
	if err := f.apply(ledger.TypeRecoveryShares, sh); err == nil {
		t.Fatal("shares of an older configuration applied")
	}
	rs, k = f.st.RecoveryRecipients()
	sh2, _ := recovery.Split(secret, rs, k, 3)
	if err := f.apply(ledger.TypeRecoveryShares, sh2); err == nil {
		t.Fatal("shares of version 3 after version 1 applied")
	}
	sh2, _ = recovery.Split(secret, rs, k, 2)
	if err := f.apply(ledger.TypeRecoveryShares, sh2); err != nil {
		t.Fatal(err)
	}
}

func TestServiceRecoveredRefusals(t *testing.T) {
	f := newGovFixture(t, 3, gov.DevConstitution())
	a, b := f.signers[0], f.signers[1]
	f.propose(a, setEncKey(a.m.ID, encKey(t, keys.X25519)), setEncKey(b.m.ID, encKey(t, keys.X25519)), withThreshold(2))
	_, oldKey, _ := translog.GenerateKey("tkms/test/log")
	_, newKey, _ := translog.GenerateKey("tkms/test/log")
	_, otherLog, _ := translog.GenerateKey("tkms/other/log")
	if err := f.st.Apply(f.entry(ledger.TypeLogKey, f.now, LogKey{Origin: "tkms/test/log", VerifierKey: oldKey}, []byte{1})); err != nil {
		t.Fatal(err)
	}
	rs, k := f.st.RecoveryRecipients()
	sh, _ := recovery.Split(bytes.Repeat([]byte{1}, 32), rs, k, 1)
	if err := f.apply(ledger.TypeRecoveryShares, sh); err != nil {
		t.Fatal(err)
	}
	sharesSeq := f.st.Seq
	good := ServiceRecovered{RecoveryID: "r", PreviousLogKey: oldKey, LogKey: newKey, SharesSeq: sharesSeq, Members: []string{a.m.ID, b.m.ID}}
	for name, mod := range map[string]func(*ServiceRecovered){
		"another previous key":   func(r *ServiceRecovered) { r.PreviousLogKey = newKey },
		"another log":            func(r *ServiceRecovered) { r.LogKey = otherLog },
		"the same key":           func(r *ServiceRecovered) { r.LogKey = oldKey },
		"older shares":           func(r *ServiceRecovered) { r.SharesSeq-- },
		"below the threshold":    func(r *ServiceRecovered) { r.Members = r.Members[:1] },
		"a member without share": func(r *ServiceRecovered) { r.Members = []string{a.m.ID, f.signers[2].m.ID} },
		"an unknown holder":      func(r *ServiceRecovered) { r.Members, r.Holder = nil, "vault" },
	} {
		r := good
		mod(&r)
		if err := f.st.Apply(f.entry(ledger.TypeServiceRecovered, f.now, r, []byte{1})); err == nil {
			t.Fatalf("%s: applied", name)
		}
	}
	if err := f.st.Apply(f.entry(ledger.TypeServiceRecovered, f.now, good, []byte{1})); err != nil {
		t.Fatal(err)
	}
	if f.st.LogKey.VerifierKey != newKey || len(f.st.PreviousLogKeys) != 1 || f.st.PreviousLogKeys[0].VerifierKey != oldKey {
		t.Fatalf("log key %s, previous %+v", f.st.LogKey.VerifierKey, f.st.PreviousLogKeys)
	}
}
