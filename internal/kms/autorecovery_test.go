package kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/recovery"
)

// vaultKey is a vault key of an automatic recovery member, its private
// part in the test's hands (what the vault would release).
type vaultKey struct {
	member akv.Member
	pkcs8  []byte
}

func newVaultKey(t *testing.T, version string) vaultKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	jb, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
	var ne struct{ N, E string }
	json.Unmarshal(jb, &ne)
	m := akv.Member{VaultURL: "https://tkms.vault.azure.net", KeyName: "tkms-recovery", KeyVersion: version,
		MAAInstance: "https://sharedeus2.eus2.attest.azure.net", ReleasePolicySHA256: strings.Repeat("ab", 32)}
	m.PublicKey = akv.JWK{KID: m.KID(), KTY: "RSA-HSM", N: ne.N, E: ne.E}
	return vaultKey{m, der}
}

// releasedHolder is the automatic member once the vault released its key.
type releasedHolder struct{ vaultKey }

func (h releasedHolder) Name() string                { return h.member.KID() }
func (h releasedHolder) Wrap([]byte) ([]byte, error) { panic("not used") }
func (h releasedHolder) Unwrap(_ context.Context, w []byte) ([]byte, error) {
	return akv.Open(h.pkcs8, string(w))
}

var _ recovery.Holder = releasedHolder{}
var _ recovery.Holder = (*akv.Holder)(nil)

// TestAutoRecoveryMemberShares: the recovery shares seal the recovery key
// to the automatic member's vault key, are renewed when the member changes
// or goes, and an automatic recovery is recorded naming it.
func TestAutoRecoveryMemberShares(t *testing.T) {
	f, ms := newGovFixture(t, 1, gov.DevConstitution())
	ctx := context.Background()
	secret := func() ([]byte, error) { return bytes.Clone(f.key), nil }
	enc := newEncMember(t)
	c := gov.DevConstitution()
	c.RecoveryThreshold = 1
	f.mustPropose(ms[0], act(gov.ActSetMemberEncryptionKey, gov.MemberEncryptionKeyArgs{MemberID: ms[0].m.ID, EncryptionKey: &enc.key}), act(gov.ActSetConstitution, c))
	if e, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || e == nil {
		t.Fatalf("first shares: %v, %v", e, err)
	}
	if sh, _ := f.svc.RecoveryShares(); len(sh.Held) != 0 {
		t.Fatalf("held keys without an automatic member: %+v", sh.Held)
	}

	v1 := newVaultKey(t, "v1")
	f.mustPropose(ms[0], act(gov.ActSetAutoRecoveryMember, v1.member))
	if e, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || e == nil {
		t.Fatalf("shares after the automatic member: %v, %v", e, err)
	}
	sh, seq := f.svc.RecoveryShares()
	if len(sh.Held) != 1 || sh.Held[0].Holder != v1.member.KID() {
		t.Fatalf("held %+v", sh.Held)
	}
	got, err := sh.UnwrapHeld(ctx, releasedHolder{v1})
	if err != nil || !bytes.Equal(got, f.key) {
		t.Fatalf("the released vault key opens %x, %v; want the ledger secret", got, err)
	}
	if _, err := sh.UnwrapHeld(ctx, releasedHolder{newVaultKey(t, "v2")}); recovery.CodeOf(err) != recovery.CodeNotMember {
		t.Fatalf("another vault key: %v", err)
	}
	if again, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || again != nil {
		t.Fatalf("renewed with nothing changed: %v, %v", again, err)
	}

	// An automatic recovery is recorded with its release.
	re, err := f.svc.RecordRecovery(ctx, Recovered{RecoveryID: "r1", SharesSeq: seq, Holder: v1.member.KID(), Auto: &akv.Recovery{KID: v1.member.KID(), ReleasePolicySHA256: v1.member.ReleasePolicySHA256}})
	if err != nil || !strings.Contains(string(re.Body), `"auto":{"kid":"`+v1.member.KID()) {
		t.Fatalf("%v: %s", err, re.Body)
	}

	// Removing the member renews the shares without it.
	f.mustPropose(ms[0], act(gov.ActRemoveAutoRecoveryMember, gov.RemoveAutoRecoveryMemberArgs{KID: v1.member.KID()}))
	if e, err := f.svc.RenewRecoveryShares(ctx, secret); err != nil || e == nil {
		t.Fatalf("shares after removing the member: %v, %v", e, err)
	}
	if sh, _ := f.svc.RecoveryShares(); len(sh.Held) != 0 {
		t.Fatalf("held after the removal: %+v", sh.Held)
	}
}
