package gov

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
)

func TestMemberEncryptionKeyArgs(t *testing.T) {
	_, x, _ := keys.X25519.Generate()
	_, h, _ := keys.MLKEM768X25519.Generate()
	_, p, _ := keys.P256.Generate()
	id := strings.Repeat("ab", 32)
	arg := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	for _, tc := range []struct {
		name string
		args json.RawMessage
		ok   bool
	}{
		{"x25519", arg(MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: &EncryptionKey{Suite: "x25519", PublicKey: x}}), true},
		{"mlkem768-x25519", arg(MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: &EncryptionKey{Suite: "mlkem768-x25519", PublicKey: h}}), true},
		{"remove", arg(MemberEncryptionKeyArgs{MemberID: id, Remove: true}), true},
		{"p256", arg(MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: &EncryptionKey{Suite: "p256", PublicKey: p}}), false},
		{"x25519 of 31 bytes", arg(MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: &EncryptionKey{Suite: "x25519", PublicKey: x[:31]}}), false},
		{"a hybrid key as x25519", arg(MemberEncryptionKeyArgs{MemberID: id, EncryptionKey: &EncryptionKey{Suite: "x25519", PublicKey: h}}), false},
		{"remove with a key", arg(MemberEncryptionKeyArgs{MemberID: id, Remove: true, EncryptionKey: &EncryptionKey{Suite: "x25519", PublicKey: x}}), false},
		{"neither", arg(MemberEncryptionKeyArgs{MemberID: id}), false},
		{"bad member id", arg(MemberEncryptionKeyArgs{MemberID: "ab", Remove: true}), false},
		{"unknown field", json.RawMessage(`{"member_id":"` + id + `","remove":true,"x":1}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAction(Action{Name: ActSetMemberEncryptionKey, Args: tc.args})
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidAction)) {
				t.Fatalf("ValidateAction = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && strings.Contains(DescribeAction(Action{Name: ActSetMemberEncryptionKey, Args: tc.args}), "(invalid)") {
				t.Fatal("described as invalid")
			}
		})
	}
}

func TestRecoveryThresholdBounds(t *testing.T) {
	c := DevConstitution()
	c.RecoveryThreshold = 2
	b, _ := json.Marshal(c)
	if _, err := ParseConstitution(b); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateRecovery(1); !errors.Is(err, ErrUnsafeConstitution) {
		t.Fatalf("2 of 1: %v", err)
	}
	if err := c.ValidateRecovery(2); err != nil {
		t.Fatalf("2 of 2: %v", err)
	}
	c.RecoveryThreshold = MaxRecoveryThreshold + 1
	b, _ = json.Marshal(c)
	if _, err := ParseConstitution(b); !errors.Is(err, ErrUnsafeConstitution) {
		t.Fatalf("threshold %d: %v", c.RecoveryThreshold, err)
	}
}
