package gov

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as an external signing command: with
// GOV_TEST_SIGNER_MODE set it signs its standard input with the PKCS#8 key
// in the file GOV_TEST_SIGNER_KEY and exits.
func TestMain(m *testing.M) {
	if mode := os.Getenv("GOV_TEST_SIGNER_MODE"); mode != "" {
		if err := helperSign(mode, os.Getenv("GOV_TEST_SIGNER_KEY")); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperSign(mode, keyFile string) error {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("no key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	var sig []byte
	switch mode {
	case "fail":
		return errors.New("token not present")
	case "garbage":
		sig = []byte("not a signature")
	case "empty":
	case "huge":
		sig = make([]byte, 1<<20)
	case "raw", "der":
		switch k := k.(type) {
		case ed25519.PrivateKey:
			sig = ed25519.Sign(k, in)
		case *ecdsa.PrivateKey:
			var digest []byte
			if k.Curve == elliptic.P256() {
				h := sha256.Sum256(in)
				digest = h[:]
			} else {
				h := sha512.Sum384(in)
				digest = h[:]
			}
			der, err := ecdsa.SignASN1(rand.Reader, k, digest)
			if err != nil {
				return err
			}
			sig = der
			if mode == "raw" {
				raw, ok := derToRaw(der, (k.Curve.Params().BitSize+7)/8)
				if !ok {
					return errors.New("derToRaw")
				}
				sig = raw
			}
		}
	case "no-hash":
		// ECDSA over the input itself (truncated), not its hash: a
		// misconfigured command.
		ek := k.(*ecdsa.PrivateKey)
		der, err := ecdsa.SignASN1(rand.Reader, ek, in)
		if err != nil {
			return err
		}
		sig = der
	default:
		return fmt.Errorf("mode %q", mode)
	}
	_, err = os.Stdout.Write(sig)
	return err
}

func TestCommandSigner(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	envPath, err := exec.LookPath("env")
	if err != nil {
		t.Skip("no env command")
	}
	type mode struct{ name, mode, key, form, want string }
	for _, kind := range memberKinds {
		k := genKey(t, kind)
		keyFile := writeFile(t, "key.pem", k.privPEM(t))
		other := writeFile(t, "other.pem", genKey(t, kind).privPEM(t))
		modes := []mode{
			{"raw", "raw", keyFile, "public key", ""},
			{"raw with certificate", "raw", keyFile, "certificate", ""},
			{"der", "der", keyFile, "public key", ""}, // Ed25519: same as raw
			{"other key", "raw", other, "public key", "not a valid signature"},
		}
		if kind == "P-256" {
			modes = append(modes,
				mode{"exit status", "fail", keyFile, "public key", "token not present"},
				mode{"garbage", "garbage", keyFile, "public key", "not a valid signature"},
				mode{"empty", "empty", keyFile, "public key", "not a valid signature"},
				mode{"huge", "huge", keyFile, "public key", "larger than"},
				mode{"input not hashed", "no-hash", keyFile, "public key", "not a valid signature"},
			)
		}
		pubs := map[string]string{"public key": k.pubPEM(t), "certificate": k.certPEM(t)}
		m := k.member(t, "sro-a")
		for _, tt := range modes {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				argv := []string{envPath, "GOV_TEST_SIGNER_MODE=" + tt.mode, "GOV_TEST_SIGNER_KEY=" + tt.key, exe, "-test.run=^$"}
				s, err := NewCommandSigner(argv, []byte(pubs[tt.form]))
				if err != nil {
					t.Fatal(err)
				}
				if s.MemberID() != m.ID {
					t.Fatalf("MemberID %s, want %s", s.MemberID(), m.ID)
				}
				raw, err := s.SignBallot(pid, true, t0)
				if tt.want != "" {
					if err == nil || !strings.Contains(err.Error(), tt.want) {
						t.Fatalf("err = %v, want it to contain %q", err, tt.want)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				msg, err := ParseMessage(raw)
				if err != nil {
					t.Fatal(err)
				}
				if err := msg.Verify(m); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestCommandSignerOpenSSL signs with openssl, as a member would with a key
// in a file or a PKCS#11 token.
func TestCommandSignerOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	for _, tt := range []struct {
		kind string
		cmd  string
	}{
		{"P-256", "openssl dgst -sha256 -sign %s"},
		{"P-384", "openssl dgst -sha384 -sign %s"},
		// OpenSSL 3.0 cannot sign Ed25519 from a pipe: go through a file.
		{"Ed25519", `f=$(mktemp) && cat >"$f" && openssl pkeyutl -sign -rawin -inkey %s -in "$f"; rc=$?; rm -f "$f"; exit $rc`},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			k := genKey(t, tt.kind)
			keyFile := writeFile(t, "key.pem", k.privPEM(t))
			s, err := NewCommandSigner([]string{"sh", "-c", fmt.Sprintf(tt.cmd, keyFile)}, []byte(k.pubPEM(t)))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := s.SignProposal(rotate, t0)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := ParseMessage(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := msg.Verify(k.member(t, "sro-a")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewCommandSignerErrors(t *testing.T) {
	pub := genKey(t, "P-256").pubPEM(t)
	if _, err := NewCommandSigner(nil, []byte(pub)); err == nil {
		t.Error("nil argv accepted")
	}
	if _, err := NewCommandSigner([]string{""}, []byte(pub)); err == nil {
		t.Error("empty command accepted")
	}
	if _, err := NewCommandSigner([]string{"true"}, []byte(genKey(t, "RSA").pubPEM(t))); err == nil {
		t.Error("RSA key accepted")
	}
	s, err := NewCommandSigner([]string{"/nonexistent/signer"}, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SignWithdrawal(pid, t0); err == nil || !strings.Contains(err.Error(), "signing command") {
		t.Errorf("missing command: %v", err)
	}
}

func TestNewFileSigner(t *testing.T) {
	p256 := genKey(t, "P-256")
	sec1, err := x509.MarshalECPrivateKey(p256.priv.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	rsaKey := genKey(t, "RSA")
	tests := []struct {
		name string
		pem  []byte
		key  *testKey
		want string
	}{
		{"PKCS#8 P-256", p256.privPEM(t), &p256, ""},
		{"SEC 1 P-256", sec1PEM, &p256, ""},
		{"openssl ecparam -genkey", append(params, sec1PEM...), &p256, ""},
		{"PKCS#8 P-384", nil, nil, ""},
		{"PKCS#8 Ed25519", nil, nil, ""},
		{"PKCS#8 P-521", genKey(t, "P-521").privPEM(t), nil, "P-256 or P-384"},
		{"PKCS#8 RSA", rsaKey.privPEM(t), nil, "want ECDSA"},
		{"public key", []byte(p256.pubPEM(t)), nil, "want PRIVATE KEY"},
		{"nothing", []byte("key"), nil, "no PEM"},
		{"only parameters", params, nil, "no PEM"},
		{"trailing data", append(p256.privPEM(t), "x"...), nil, "trailing"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), nil, "private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, key := tt.pem, tt.key
			if b == nil {
				k := genKey(t, strings.TrimPrefix(tt.name, "PKCS#8 "))
				b, key = k.privPEM(t), &k
			}
			s, err := NewFileSigner(b)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := key.member(t, "sro-a")
			if s.MemberID() != m.ID {
				t.Fatalf("MemberID = %s, want %s", s.MemberID(), m.ID)
			}
			raw, err := s.SignProposal(rotate, t0)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := ParseMessage(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := msg.Verify(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSignErrors(t *testing.T) {
	s := genKey(t, "Ed25519").signer(t)
	if _, err := s.SignProposal(nil, t0); !errors.Is(err, ErrInvalidAction) {
		t.Errorf("no actions: %v", err)
	}
	if _, err := s.SignProposal([]Action{{Name: "nope"}}, t0); !errors.Is(err, ErrInvalidAction) {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := s.SignBallot("abc", true, t0); err == nil {
		t.Error("bad proposal id accepted")
	}
	if _, err := s.SignWithdrawal(strings.ToUpper(pid), t0); err == nil {
		t.Error("uppercase proposal id accepted")
	}
	if _, err := s.SignBallot(pid, true, t0.AddDate(-100, 0, 0)); err == nil {
		t.Error("created_at before 1970 accepted")
	}
	big := []Action{{Name: ActSetNodePolicy, Args: []byte(`{"claims":{"a":["` + strings.Repeat("x", MaxMessageSize) + `"]}}`)}}
	if _, err := s.SignProposal(big, t0); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized proposal: %v", err)
	}
	// Missing args are signed as {}.
	raw, err := s.SignProposal([]Action{{Name: ActRotateKeyNow}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := ParseMessage(raw)
	if string(m.Payload) != `{"actions":[{"name":"rotate_key_now","args":{}}]}` {
		t.Errorf("payload %s", m.Payload)
	}
}

func TestGenerateDevKey(t *testing.T) {
	priv, pub, err := GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(priv), "-----BEGIN PRIVATE KEY-----") || !strings.HasPrefix(string(pub), "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("PEM types:\n%s\n%s", priv, pub)
	}
	m, err := NewMember("dev", string(pub), "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewFileSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	if s.MemberID() != m.ID {
		t.Error("signer and member ids differ")
	}
	pk, _ := m.PublicKey()
	if alg, _ := algorithmFor(pk); alg != -7 {
		t.Errorf("alg %d, want ES256", alg)
	}
}
