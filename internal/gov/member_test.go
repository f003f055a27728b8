package gov

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func TestNewMemberKeys(t *testing.T) {
	for _, kind := range memberKinds {
		k := genKey(t, kind)
		der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		wantID := hex.EncodeToString(sum[:])
		for form, p := range map[string]string{"public key": k.pubPEM(t), "certificate": k.certPEM(t)} {
			t.Run(kind+"/"+form, func(t *testing.T) {
				m, err := NewMember("sro-a", "\n  "+p+"\n", "")
				if err != nil {
					t.Fatal(err)
				}
				if m.ID != wantID {
					t.Errorf("ID = %s, want %s", m.ID, wantID)
				}
				if m.SigningKey != p {
					t.Errorf("SigningKey not normalised:\n%s", m.SigningKey)
				}
				if err := m.Check(); err != nil {
					t.Errorf("Check: %v", err)
				}
				pub, err := m.PublicKey()
				if err != nil {
					t.Fatal(err)
				}
				if id, _ := memberID(pub); id != wantID {
					t.Errorf("PublicKey id = %s", id)
				}
			})
		}
	}
}

func TestNewMemberErrors(t *testing.T) {
	p256 := genKey(t, "P-256")
	good := p256.pubPEM(t)
	recovery := genKey(t, "RSA").pubPEM(t)
	block, _ := pem.Decode([]byte(good))
	withHeader := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes}))
	privPEM := string(p256.privPEM(t))
	tests := []struct {
		name, member, key, recovery, want string
	}{
		{"ok", "sro-a", good, "", ""},
		{"ok with recovery key", "sro-a", good, recovery, ""},
		{"ok 64 characters", strings.Repeat("é", 64), good, "", ""},
		{"empty name", "", good, "", "empty"},
		{"long name", strings.Repeat("a", 65), good, "", "printable"},
		{"newline in name", "a\nb", good, "", "printable"},
		{"control in name", "a\x00b", good, "", "printable"},
		{"invalid utf-8 name", "a\xffb", good, "", "printable"},
		{"no PEM", "sro-a", "not a key", "", "no PEM block"},
		{"leading text", "sro-a", "junk\n" + good, "", "no PEM block"},
		{"two blocks", "sro-a", good + good, "", "more than one"},
		{"trailing data", "sro-a", good + "junk", "", "trailing"},
		{"PEM headers", "sro-a", withHeader, "", "headers"},
		{"private key", "sro-a", privPEM, "", "want PUBLIC KEY or CERTIFICATE"},
		{"P-521", "sro-a", genKey(t, "P-521").pubPEM(t), "", "P-256 or P-384"},
		{"RSA", "sro-a", recovery, "", "want ECDSA"},
		{"RSA certificate", "sro-a", genKey(t, "RSA").certPEM(t), "", "want ECDSA"},
		{"garbage DER", "sro-a", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})), "", "signing_key"},
		{"bad recovery key", "sro-a", good, "junk", "recovery_key"},
		{"recovery certificate", "sro-a", good, p256.certPEM(t), "recovery_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMember(tt.member, tt.key, tt.recovery)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestMemberCheck(t *testing.T) {
	a, b := genKey(t, "P-256"), genKey(t, "Ed25519")
	m := a.member(t, "sro-a")
	other := b.member(t, "sro-b")
	tests := []struct {
		name string
		edit func(*Member)
	}{
		{"wrong id", func(m *Member) { m.ID = other.ID }},
		{"empty id", func(m *Member) { m.ID = "" }},
		{"swapped key", func(m *Member) { m.SigningKey = other.SigningKey }},
		{"bad name", func(m *Member) { m.Name = "" }},
		{"bad key", func(m *Member) { m.SigningKey = "x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := m
			tt.edit(&c)
			if err := c.Check(); err == nil {
				t.Fatal("Check passed")
			}
		})
	}
	if _, err := (Member{Name: "x", SigningKey: "x"}).PublicKey(); err == nil {
		t.Error("PublicKey of a bad key succeeded")
	}
}

func membersFile(t *testing.T, ms ...map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"members": ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMembersFile(t *testing.T) {
	a, b := genKey(t, "P-256"), genKey(t, "P-384")
	ma := a.member(t, "sro-a")
	tests := []struct {
		name string
		file []byte
		want string // error substring, "" for success
	}{
		{"two members", membersFile(t,
			map[string]string{"name": "sro-a", "signing_key": a.pubPEM(t)},
			map[string]string{"name": "sro-b", "signing_key": b.certPEM(t), "recovery_key": genKey(t, "RSA").pubPEM(t)}), ""},
		{"with matching id", membersFile(t, map[string]string{"id": ma.ID, "name": "sro-a", "signing_key": a.pubPEM(t)}), ""},
		{"wrong id", membersFile(t, map[string]string{"id": strings.Repeat("0", 64), "name": "sro-a", "signing_key": a.pubPEM(t)}), "not the id"},
		{"duplicate name", membersFile(t,
			map[string]string{"name": "sro-a", "signing_key": a.pubPEM(t)},
			map[string]string{"name": "sro-a", "signing_key": b.pubPEM(t)}), "listed twice"},
		{"duplicate key, other form", membersFile(t,
			map[string]string{"name": "sro-a", "signing_key": a.pubPEM(t)},
			map[string]string{"name": "sro-b", "signing_key": a.certPEM(t)}), "already listed"},
		{"no members", []byte(`{"members":[]}`), "no members"},
		{"empty object", []byte(`{}`), "no members"},
		{"unknown field", []byte(`{"members":[],"x":1}`), "unknown field"},
		{"unknown member field", membersFile(t, map[string]string{"name": "sro-a", "signing_key": a.pubPEM(t), "role": "admin"}), "unknown field"},
		{"trailing data", append(membersFile(t, map[string]string{"name": "sro-a", "signing_key": a.pubPEM(t)}), " {}"...), "trailing"},
		{"not JSON", []byte(`members:`), "members file"},
		{"bad member", membersFile(t, map[string]string{"name": "", "signing_key": a.pubPEM(t)}), "members[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := ParseMembersFile(tt.file)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if err := m.Check(); err != nil {
					t.Errorf("member %q: %v", m.Name, err)
				}
			}
		})
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("x"), ""},
		{ErrInvalidMessage, CodeInvalidMessage},
		{ErrBadSignature, CodeBadSignature},
		{ErrInvalidAction, CodeInvalidAction},
		{ErrStale, CodeStale},
		{ErrUnsafeConstitution, CodeUnsafeConstitution},
		{errors.Join(ErrInvalidAction, ErrUnsafeConstitution), CodeUnsafeConstitution},
		{ValidateActions([]Action{{Name: ActSetConstitution, Args: json.RawMessage(`{"rules":{},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`)}}), CodeUnsafeConstitution},
		{ValidateActions(nil), CodeInvalidAction},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
