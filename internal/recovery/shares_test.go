package recovery

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
)

type member struct {
	id   string
	key  gov.EncryptionKey
	priv []byte
}

func newMembers(t testing.TB, n int, suite keys.Suite) []member {
	t.Helper()
	var ms []member
	for i := range n {
		priv, pub, err := suite.Generate()
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{id: fmt.Sprintf("%064x", i+1), key: gov.EncryptionKey{Suite: suite.Name, PublicKey: pub}, priv: priv})
	}
	return ms
}

func recipients(ms []member) []Recipient {
	var rs []Recipient
	for _, m := range ms {
		rs = append(rs, Recipient{MemberID: m.id, Key: m.key})
	}
	return rs
}

func TestSplitCombine(t *testing.T) {
	for _, suite := range []keys.Suite{keys.X25519, keys.MLKEM768X25519} {
		t.Run(suite.Name, func(t *testing.T) {
			ms := newMembers(t, 3, suite)
			secret := bytes.Repeat([]byte{7}, 32)
			sh, err := Split(secret, recipients(ms), 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			// Through JSON, as the ledger holds it.
			b, _ := json.Marshal(sh)
			var got Shares
			if err := json.Unmarshal(b, &got); err != nil || got.Check() != nil {
				t.Fatalf("round trip: %v %v", err, got.Check())
			}
			if bytes.Contains(b, secret) {
				t.Fatal("the secret is in the public entry")
			}
			opened := map[string][]byte{}
			for _, m := range ms[1:] {
				s, err := got.OpenShare(m.id, m.key, m.priv)
				if err != nil {
					t.Fatal(err)
				}
				if err := got.Verify(m.id, s); err != nil {
					t.Fatal(err)
				}
				opened[m.id] = s
			}
			out, err := got.Combine(opened)
			if err != nil || !bytes.Equal(out, secret) {
				t.Fatalf("Combine = %x, %v", out, err)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	ms := newMembers(t, 3, keys.X25519)
	other := newMembers(t, 1, keys.X25519)[0]
	other.id = fmt.Sprintf("%064x", 99)
	secret := bytes.Repeat([]byte{9}, 32)
	sh, err := Split(secret, recipients(ms), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	s0, _ := sh.OpenShare(ms[0].id, ms[0].key, ms[0].priv)
	s1, _ := sh.OpenShare(ms[1].id, ms[1].key, ms[1].priv)
	flipped := bytes.Clone(s1)
	flipped[len(flipped)-1] ^= 1
	renewed, _ := Split(secret, recipients(ms), 2, 2)
	old2, _ := renewed.OpenShare(ms[2].id, ms[2].key, ms[2].priv)

	for _, tc := range []struct {
		name string
		run  func() error
		code string
	}{
		{"below threshold", func() error { _, err := sh.Combine(map[string][]byte{ms[0].id: s0}); return err }, CodeBelowThreshold},
		{"altered share", func() error {
			_, err := sh.Combine(map[string][]byte{ms[0].id: s0, ms[1].id: flipped})
			return err
		}, CodeShareInvalid},
		{"share of another member", func() error { return sh.Verify(ms[0].id, s1) }, CodeShareInvalid},
		{"share of another version", func() error { return sh.Verify(ms[2].id, old2) }, CodeShareInvalid},
		{"not a holder", func() error { return sh.Verify(other.id, s0) }, CodeNotMember},
		{"opened with another key", func() error { _, err := sh.OpenShare(ms[0].id, other.key, other.priv); return err }, CodeWrongKey},
		{"private key of another key", func() error { _, err := sh.OpenShare(ms[0].id, ms[0].key, other.priv); return err }, CodeWrongKey},
		{"truncated share", func() error { return sh.Verify(ms[0].id, s0[:10]) }, CodeShareInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}

// testHolder holds the recovery key under an AES key of its own: a
// stand-in for a vault.
type testHolder struct{ aead cipher.AEAD }

func newTestHolder() *testHolder {
	k := make([]byte, 32)
	rand.Read(k)
	b, _ := aes.NewCipher(k)
	a, _ := cipher.NewGCM(b)
	return &testHolder{a}
}

func (h *testHolder) Name() string { return "test-vault" }
func (h *testHolder) Wrap(rk []byte) ([]byte, error) {
	n := make([]byte, 12)
	rand.Read(n)
	return h.aead.Seal(n, n, rk, nil), nil
}
func (h *testHolder) Unwrap(_ context.Context, w []byte) ([]byte, error) {
	if len(w) < 12 {
		return nil, errors.New("short")
	}
	return h.aead.Open(nil, w[:12], w[12:], nil)
}

var _ Holder = (*testHolder)(nil)

func TestHolder(t *testing.T) {
	ms := newMembers(t, 2, keys.X25519)
	h := newTestHolder()
	secret := []byte("the ledger secret, 32 bytes long")
	sh, err := Split(secret, recipients(ms), 2, 1, h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sh.UnwrapHeld(context.Background(), h)
	if err != nil || !bytes.Equal(out, secret) {
		t.Fatalf("UnwrapHeld = %q, %v", out, err)
	}
	if _, err := sh.UnwrapHeld(context.Background(), newTestHolderNamed("other")); CodeOf(err) != CodeNotMember {
		t.Fatalf("another holder: %v", err)
	}
}

type namedHolder struct {
	*testHolder
	name string
}

func (h namedHolder) Name() string { return h.name }

func newTestHolderNamed(n string) Holder { return namedHolder{newTestHolder(), n} }
