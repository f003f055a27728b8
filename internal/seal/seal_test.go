package seal_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/seal"
)

func newSealer(t *testing.T) *seal.AESGCM {
	t.Helper()
	s, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t)
	tests := map[string]struct{ pt, ad []byte }{
		"empty":      {nil, nil},
		"no ad":      {[]byte("secret"), nil},
		"with ad":    {[]byte("secret"), []byte("tkms/entry/v1")},
		"large":      {bytes.Repeat([]byte{0x5a}, 1<<16), []byte("ad")},
		"binary ad":  {[]byte{0, 1, 2}, []byte{0, 0, 0}},
		"empty text": {[]byte{}, []byte("ad")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			blob, err := s.Seal(tc.pt, tc.ad)
			if err != nil {
				t.Fatal(err)
			}
			if want := 12 + len(tc.pt) + 16; len(blob) != want {
				t.Errorf("sealed length = %d, want nonce(12) + %d + tag(16) = %d", len(blob), len(tc.pt), want)
			}
			if len(tc.pt) > 0 && bytes.Contains(blob, tc.pt) {
				t.Errorf("sealed blob contains the plaintext")
			}
			pt, err := s.Open(blob, tc.ad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pt, tc.pt) {
				t.Errorf("Open = %x, want %x", pt, tc.pt)
			}
		})
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	s := newSealer(t)
	a, _ := s.Seal([]byte("same"), []byte("ad"))
	b, _ := s.Seal([]byte("same"), []byte("ad"))
	if bytes.Equal(a[:12], b[:12]) || bytes.Equal(a, b) {
		t.Fatalf("two seals of the same plaintext share a nonce: %x, %x", a, b)
	}
}

// assertErrOpen fails unless err is ErrOpen with its fixed message, which
// says nothing about which check failed.
func assertErrOpen(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("%s: err = %v, want ErrOpen", what, err)
	}
	if err.Error() != "seal: message authentication failed" {
		t.Fatalf("%s: message %q is not the fixed one", what, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	s := newSealer(t)
	ad := []byte("tkms/entry/v1 seq 1")
	blob, err := s.Seal([]byte("private key"), ad)
	if err != nil {
		t.Fatal(err)
	}

	_, err = s.Open(blob, []byte("tkms/entry/v1 seq 2"))
	assertErrOpen(t, "wrong ad", err)
	_, err = s.Open(blob, nil)
	assertErrOpen(t, "missing ad", err)
	_, err = newSealer(t).Open(blob, ad)
	assertErrOpen(t, "wrong key", err)

	for i := range blob {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x01
		_, err := s.Open(bad, ad)
		assertErrOpen(t, "flipped byte", err)
	}
	for n := range len(blob) {
		_, err := s.Open(blob[:n], ad)
		assertErrOpen(t, "truncated", err)
	}
	_, err = s.Open(append(bytes.Clone(blob), 0), ad)
	assertErrOpen(t, "extended", err)
}

func TestNewRefusesBadKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := seal.New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a %d-byte key", n)
		}
	}
}

func TestCreateFileThenLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "master.key")
	created, err := seal.CreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	text, _ := os.ReadFile(path)
	if len(text) != 2*seal.KeySize+1 || text[len(text)-1] != '\n' {
		t.Errorf("key file = %q, want %d hex characters and a newline", text, 2*seal.KeySize)
	}

	loaded, err := seal.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := created.Seal([]byte("x"), []byte("ad"))
	if pt, err := loaded.Open(blob, []byte("ad")); err != nil || string(pt) != "x" {
		t.Fatalf("loaded key does not open what the created key sealed: (%q, %v)", pt, err)
	}
}

func TestCreateFileRefusesExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if _, err := seal.CreateFile(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if _, err := seal.CreateFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateFile: err = %v, want ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("second CreateFile changed the existing key file")
	}
}

func TestLoadFileRefusesOpenPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if _, err := seal.CreateFile(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := seal.LoadFile(path)
		if err == nil {
			t.Fatalf("mode %v: key loaded", mode)
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %v: error %q does not say what to do", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.LoadFile(path); err != nil {
		t.Errorf("mode 0400 refused: %v", err)
	}
}

func TestLoadFileRefusesBadContent(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	tests := map[string]string{
		"empty":           "",
		"not hex":         strings.Repeat("zz", 32),
		"short":           good[:62],
		"long":            good + "00",
		"odd length":      good + "0",
		"two keys":        good + "\n" + good + "\n",
		"space inside":    good[:32] + " " + good[32:],
		"base64 of a key": "ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8=",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := seal.LoadFile(path)
			if err == nil {
				t.Fatal("key loaded")
			}
			if !strings.Contains(err.Error(), "want 64 hex characters") {
				t.Errorf("error %q does not say what a key file holds", err)
			}
		})
	}
	// Surrounding white space, as editors leave it, is accepted.
	for _, content := range []string{good, good + "\n", good + "\r\n", "  " + strings.ToUpper(good) + "\n\n"} {
		path := filepath.Join(t.TempDir(), "master.key")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := seal.LoadFile(path); err != nil {
			t.Errorf("%q refused: %v", content, err)
		}
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := seal.LoadFile(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	first, created, err := seal.LoadOrCreateFile(path)
	if err != nil || !created {
		t.Fatalf("first call: created = %v, err = %v; want a new key", created, err)
	}
	second, created, err := seal.LoadOrCreateFile(path)
	if err != nil || created {
		t.Fatalf("second call: created = %v, err = %v; want the existing key", created, err)
	}
	blob, _ := first.Seal([]byte("x"), nil)
	if _, err := second.Open(blob, nil); err != nil {
		t.Fatalf("second call returned another key: %v", err)
	}

	// A key file that exists but cannot be used is an error, never
	// replaced by a new key.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if _, _, err := seal.LoadOrCreateFile(path); err == nil {
		t.Fatal("key file with mode 0644 accepted")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("unusable key file was replaced")
	}
}
