package gov

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// autoMemberArgs returns valid set_auto_recovery_member arguments, edited.
func autoMemberArgs(t testing.TB, bits int, edit func(m map[string]any)) json.RawMessage {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	jb, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
	var pub map[string]any
	_ = json.Unmarshal(jb, &pub)
	pub["kty"], pub["kid"] = "RSA-HSM", "https://tkms.vault.azure.net/keys/tkms-recovery/0123456789abcdef0123456789abcdef"
	m := map[string]any{
		"vault_url": "https://tkms.vault.azure.net", "key_name": "tkms-recovery", "key_version": "0123456789abcdef0123456789abcdef",
		"maa_instance": "https://sharedeus2.eus2.attest.azure.net", "public_key": pub,
		"release_policy_sha256": strings.Repeat("ab", 32),
	}
	if edit != nil {
		edit(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func TestAutoRecoveryMemberArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
		msg  string // "" when valid
	}{
		{"valid", nil, ""},
		{"http vault", func(m map[string]any) { m["vault_url"] = "http://tkms.vault.azure.net" }, "vault_url"},
		{"http MAA", func(m map[string]any) { m["maa_instance"] = "http://maa.example" }, "maa_instance"},
		{"no version", func(m map[string]any) { m["key_version"] = "" }, "key_version"},
		{"bad name", func(m map[string]any) { m["key_name"] = "a/b" }, "key_name"},
		{"kid of another key", func(m map[string]any) { m["key_name"] = "other" }, "public_key: kid"},
		{"wrapped material", func(m map[string]any) { m["public_key"].(map[string]any)["key_hsm"] = "x" }, "key_hsm"},
		{"EC key", func(m map[string]any) { m["public_key"].(map[string]any)["kty"] = "EC-HSM" }, "public_key"},
		{"short hash", func(m map[string]any) { m["release_policy_sha256"] = "ab" }, "release_policy_sha256"},
		{"unknown field", func(m map[string]any) { m["sealed"] = "x" }, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAction(Action{Name: ActSetAutoRecoveryMember, Args: autoMemberArgs(t, 2048, tc.edit)})
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if Code(err) != CodeInvalidAction || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("%v, want %s %q", err, CodeInvalidAction, tc.msg)
			}
		})
	}
	if err := ValidateAction(Action{Name: ActSetAutoRecoveryMember, Args: autoMemberArgs(t, 1024, nil)}); err == nil || !strings.Contains(err.Error(), "2048") {
		t.Fatalf("RSA-1024: %v", err)
	}
	for args, want := range map[string]string{
		`{"kid":"https://tkms.vault.azure.net/keys/k/1"}`: "",
		`{}`:           "kid",
		`{"kid":"\n"}`: "kid",
	} {
		err := ValidateAction(Action{Name: ActRemoveAutoRecoveryMember, Args: json.RawMessage(args)})
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v", args, err)
		}
	}
}

func TestDescribeAutoRecoveryMember(t *testing.T) {
	got := DescribeAction(Action{Name: ActSetAutoRecoveryMember, Args: autoMemberArgs(t, 2048, nil)})
	want := `set_auto_recovery_member: let the vault key https://tkms.vault.azure.net/keys/tkms-recovery/0123456789abcdef0123456789abcdef release the recovery key to nodes attested by "https://sharedeus2.eus2.attest.azure.net" under the release policy of SHA-256 ` + strings.Repeat("ab", 32)
	if got != want {
		t.Fatalf("%s\nwant %s", got, want)
	}
	got = DescribeAction(Action{Name: ActRemoveAutoRecoveryMember, Args: json.RawMessage(`{"kid":"https://v/keys/k/1"}`)})
	if got != "remove_auto_recovery_member: remove the automatic recovery member https://v/keys/k/1 (recovery needs members' shares again)" {
		t.Fatal(got)
	}
	if !knownAction(ActSetAutoRecoveryMember) || !knownAction(ActRemoveAutoRecoveryMember) {
		t.Fatal("not known actions (constitution rules cannot name them)")
	}
}

// FuzzAutoRecoveryMemberArgs: no arguments panic the decoder, and what it
// accepts it can describe.
func FuzzAutoRecoveryMemberArgs(f *testing.F) {
	f.Add([]byte(autoMemberArgs(f, 2048, nil)))
	f.Add([]byte(`{"kid":"https://v/keys/k/1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, name := range []string{ActSetAutoRecoveryMember, ActRemoveAutoRecoveryMember} {
			a := Action{Name: name, Args: b}
			if ValidateAction(a) == nil && strings.HasPrefix(DescribeAction(a), name+": (invalid)") {
				t.Fatalf("valid but described as invalid: %s", b)
			}
		}
	})
}
