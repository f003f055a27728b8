package translog_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func testRoot() tlog.Hash { return tlog.Hash(sha256.Sum256([]byte("root"))) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestSignVerify(t *testing.T) {
	for _, size := range []int64{0, 1, 2, 1000, 1 << 62} {
		c := translog.Checkpoint{Origin: testOrigin, Size: size, Root: testRoot()}
		s, err := translog.Sign(c, testSigner(t))
		if err != nil {
			t.Fatal(err)
		}
		if s.Checkpoint != c {
			t.Fatalf("Sign returned %+v, want %+v", s.Checkpoint, c)
		}
		wantText := fmt.Sprintf("%s\n%d\n%s\n\n— %s ", testOrigin, size, c.Root, testOrigin)
		if !strings.HasPrefix(string(s.Note), wantText) {
			t.Fatalf("note %q, want it to start %q", s.Note, wantText)
		}
		got, err := translog.Verify(s.Note, testVerifier(t))
		if err != nil {
			t.Fatal(err)
		}
		if got.Checkpoint != c || !bytes.Equal(got.Note, s.Note) {
			t.Fatalf("Verify = %+v, want %+v", got, s)
		}
		// Ed25519 is deterministic: one tree head, one checkpoint.
		again, _ := translog.Sign(c, testSigner(t))
		if !bytes.Equal(again.Note, s.Note) {
			t.Fatal("two signatures of one checkpoint differ")
		}
	}
}

func TestSignWrongOrigin(t *testing.T) {
	c := translog.Checkpoint{Origin: "other.example/log", Size: 1, Root: testRoot()}
	if s, err := translog.Sign(c, testSigner(t)); err == nil {
		t.Fatalf("signer for %s signed for %s: %s", testOrigin, c.Origin, s.Note)
	}
}

// signText signs arbitrary note text with the given keys.
func signText(t *testing.T, text string, keys ...string) []byte {
	t.Helper()
	var signers []note.Signer
	for _, k := range keys {
		s, err := note.NewSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	msg, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestVerifyRejects(t *testing.T) {
	good := func(size int64) string { return fmt.Sprintf("%s\n%d\n%s\n", testOrigin, size, testRoot()) }
	otherSigner, _, err := translog.GenerateKey(testOrigin) // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	short := testRoot()
	for _, tt := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"unsigned", []byte(good(1))},
		{"another key of the same name", signText(t, good(1), otherSigner)},
		{"witness only", signText(t, good(1), witnessSignerKey)},
		{"wrong origin line", signText(t, fmt.Sprintf("other.example/log\n1\n%s\n", testRoot()), testSignerKey)},
		{"origin prefix", signText(t, fmt.Sprintf("%s/x\n1\n%s\n", testOrigin, testRoot()), testSignerKey)},
		{"no root", signText(t, fmt.Sprintf("%s\n1\n", testOrigin), testSignerKey)},
		{"short root", signText(t, fmt.Sprintf("%s\n1\n%s\n", testOrigin, tlog.Hash{}.String()[:40]), testSignerKey)},
		{"root of 31 bytes", signText(t, fmt.Sprintf("%s\n1\n%s\n", testOrigin, b64(short[:31])), testSignerKey)},
		{"root of 33 bytes", signText(t, fmt.Sprintf("%s\n1\n%s\n", testOrigin, b64(append(short[:], 0))), testSignerKey)},
		{"negative size", signText(t, fmt.Sprintf("%s\n-1\n%s\n", testOrigin, testRoot()), testSignerKey)},
		{"size above 2^62", signText(t, good(1<<62+1), testSignerKey)},
		{"size above 2^64", signText(t, fmt.Sprintf("%s\n18446744073709551616\n%s\n", testOrigin, testRoot()), testSignerKey)},
		{"size not decimal", signText(t, fmt.Sprintf("%s\n0x10\n%s\n", testOrigin, testRoot()), testSignerKey)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := translog.Verify(tt.msg, testVerifier(t)); !errors.Is(err, translog.ErrBadCheckpoint) {
				t.Fatalf("Verify = %+v, %v, want ErrBadCheckpoint", got.Checkpoint, err)
			}
		})
	}
}

func TestVerifyWrongKey(t *testing.T) {
	s, _ := translog.Sign(translog.Checkpoint{Origin: testOrigin, Size: 3, Root: testRoot()}, testSigner(t))
	_, otherVerifier, err := translog.GenerateKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	for _, vkey := range []string{otherVerifier, witnessVerifierKey} {
		v, err := translog.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := translog.Verify(s.Note, v); !errors.Is(err, translog.ErrBadCheckpoint) {
			t.Errorf("verified by %s: %v", vkey, err)
		}
	}
}

// TestVerifyFlippedByte flips every bit of a signed checkpoint. The only
// changes that may still verify are those that do not change what is
// signed or who signed it: base64 allows a few spellings of one signature
// (its unused final bits), and such a note verifies to the same
// checkpoint.
func TestVerifyFlippedByte(t *testing.T) {
	s, _ := translog.Sign(translog.Checkpoint{Origin: testOrigin, Size: 1234, Root: testRoot()}, testSigner(t))
	v := testVerifier(t)
	sigLine := bytes.LastIndex(s.Note, []byte("\n— "))
	for i := range s.Note {
		for bit := range 8 {
			msg := bytes.Clone(s.Note)
			msg[i] ^= 1 << bit
			got, err := translog.Verify(msg, v)
			if err == nil && (got.Checkpoint != s.Checkpoint || i < sigLine) {
				t.Fatalf("flipping bit %d of byte %d (%q): verifies to %+v", bit, i, s.Note[i], got.Checkpoint)
			}
			if err != nil && !errors.Is(err, translog.ErrBadCheckpoint) {
				t.Fatalf("flipping bit %d of byte %d: %v, not ErrBadCheckpoint", bit, i, err)
			}
		}
	}
}

// TestVerifyCosigned checks that a witness cosignature, by a key Verify
// does not know, is ignored: the checkpoint verifies, whatever the order
// of the signatures.
func TestVerifyCosigned(t *testing.T) {
	text := fmt.Sprintf("%s\n42\n%s\n", testOrigin, testRoot())
	want := translog.Checkpoint{Origin: testOrigin, Size: 42, Root: testRoot()}
	for _, msg := range [][]byte{
		signText(t, text, testSignerKey, witnessSignerKey),
		signText(t, text, witnessSignerKey, testSignerKey),
	} {
		got, err := translog.Verify(msg, testVerifier(t))
		if err != nil || got.Checkpoint != want || !bytes.Equal(got.Note, msg) {
			t.Fatalf("Verify(cosigned) = %+v, %v", got.Checkpoint, err)
		}
	}
	// A bad signature line under the log's key name and hash is refused,
	// not skipped as a witness's would be. (note.Open skips repeated
	// lines of one key after the first, so the bad one comes first.)
	msg := signText(t, text, testSignerKey)
	at := bytes.LastIndex(msg, []byte("\n— ")) + 1
	good := msg[at:]
	bad := bytes.Clone(good)
	bad[len(bad)-20] ^= 1
	forged := append(append(bytes.Clone(msg[:at]), bad...), good...)
	if _, err := translog.Verify(forged, testVerifier(t)); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Errorf("a bad signature by the log key before a good one: %v", err)
	}
}

// TestVerifyExtensionLines checks that C2SP checkpoint extension lines,
// signed with the rest, are allowed (and not part of the tree head).
func TestVerifyExtensionLines(t *testing.T) {
	msg := signText(t, fmt.Sprintf("%s\n7\n%s\nextension line\n", testOrigin, testRoot()), testSignerKey)
	got, err := translog.Verify(msg, testVerifier(t))
	if err != nil || got.Size != 7 || got.Root != testRoot() {
		t.Fatalf("Verify = %+v, %v", got.Checkpoint, err)
	}
}

func TestValidOrigin(t *testing.T) {
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"kms.example.org/depa", true},
		{"example.com/log", true},
		{"a", true},
		{strings.Repeat("a", 200), true},
		{"", false},
		{strings.Repeat("a", 201), false},
		{"kms example", false},
		{"kms+example", false},
		{"kms\texample", false},
		{"kms\nexample", false},
		{"kms\u00a0example", false},
		{"kms\u2028example", false},
	} {
		err := translog.ValidOrigin(tt.origin)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, translog.ErrOrigin)) {
			t.Errorf("ValidOrigin(%q) = %v, want ok %v", tt.origin, err, tt.ok)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	skey, vkey, err := translog.GenerateKey("kms.example.org/depa")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	// The key as served at /v1/log/key, with its newline.
	v, err := translog.NewVerifier(vkey + "\n")
	if err != nil {
		t.Fatal(err)
	}
	s, err := translog.Sign(translog.Checkpoint{Origin: "kms.example.org/depa", Size: 1, Root: testRoot()}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := translog.Verify(s.Note, v); err != nil {
		t.Fatal(err)
	}
	if _, _, err := translog.GenerateKey("bad origin"); !errors.Is(err, translog.ErrOrigin) {
		t.Errorf("GenerateKey(bad origin): %v", err)
	}
	for _, bad := range []string{"", "garbage", skey, testVerifierKey[:len(testVerifierKey)-2]} {
		if _, err := translog.NewVerifier(bad); err == nil {
			t.Errorf("NewVerifier(%q) succeeded", bad)
		}
	}
}

func ExampleSign() {
	signer, err := note.NewSigner("PRIVATE+KEY+example.com/log+dd39a8b4+AdYELk6bVZndhYJjXypRfGA2NAH6S6Z8KO3kWWIWZQIh")
	if err != nil {
		panic(err)
	}
	// The tree of one leaf.
	root := tlog.RecordHash([]byte("hello"))
	s, err := translog.Sign(translog.Checkpoint{Origin: "example.com/log", Size: 1, Root: root}, signer)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s", s.Note)
	// Output:
	// example.com/log
	// 1
	// iipcm3aIJ95alVLDigRMZpWcaPbS8htSYK9U0vh9uCc=
	//
	// — example.com/log 3TmotLX1+amBN2xR3OJl4WynFMokm25KfxDNqcvMb27Scjz3bJapcdPJOe9AV93Xhg7W90UVg05oOKE/7VNeaOeSXQI=
}

func ExampleVerify() {
	msg := []byte(`example.com/log
1
iipcm3aIJ95alVLDigRMZpWcaPbS8htSYK9U0vh9uCc=

— example.com/log 3TmotLX1+amBN2xR3OJl4WynFMokm25KfxDNqcvMb27Scjz3bJapcdPJOe9AV93Xhg7W90UVg05oOKE/7VNeaOeSXQI=
`)
	// The verifier key, as GET /v1/log/key serves it.
	v, err := translog.NewVerifier("example.com/log+dd39a8b4+AcgVwznwKPmffh3w8Kb1oegJnNXmA/LTI6OgF1fjdlr9\n")
	if err != nil {
		panic(err)
	}
	cp, err := translog.Verify(msg, v)
	if err != nil {
		panic(err)
	}
	fmt.Println(cp.Origin, cp.Size, cp.Root == tlog.RecordHash([]byte("hello")))

	// A single changed byte breaks the signature.
	msg[len("example.com/log\n")] = '2'
	_, err = translog.Verify(msg, v)
	fmt.Println(errors.Is(err, translog.ErrBadCheckpoint))
	// Output:
	// example.com/log 1 true
	// true
}
