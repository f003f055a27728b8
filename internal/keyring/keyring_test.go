package keyring_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/keyring"
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

func open(t *testing.T, dir string, s seal.Sealer) *keyring.Keyring {
	t.Helper()
	k, err := keyring.Open(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func add(t *testing.T, k *keyring.Keyring, kid string) []byte {
	t.Helper()
	dek, err := k.Add(kid)
	if err != nil {
		t.Fatal(err)
	}
	if len(dek) != keyring.DEKSize {
		t.Fatalf("DEK of %s has %d bytes, want %d", kid, len(dek), keyring.DEKSize)
	}
	return dek
}

func assertDEK(t *testing.T, k *keyring.Keyring, kid string, want []byte) {
	t.Helper()
	got, err := k.Get(kid)
	if err != nil {
		t.Fatalf("Get(%s): %v", kid, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s) = %x, want %x", kid, got, want)
	}
}

func TestAddPersistsAcrossReopen(t *testing.T) {
	dir, s := t.TempDir(), newSealer(t)
	k := open(t, dir, s)
	if kids := k.Kids(); len(kids) != 0 {
		t.Fatalf("new keyring has kids %v", kids)
	}
	b := add(t, k, "kid_b")
	a := add(t, k, "kid_a")
	if bytes.Equal(a, b) {
		t.Fatal("two keys got the same DEK")
	}
	assertDEK(t, k, "kid_a", a)

	k = open(t, dir, s)
	assertDEK(t, k, "kid_a", a)
	assertDEK(t, k, "kid_b", b)
	if kids := k.Kids(); !slices.Equal(kids, []string{"kid_a", "kid_b"}) {
		t.Errorf("Kids() = %v, want [kid_a kid_b]", kids)
	}
}

func TestGetReturnsACopy(t *testing.T) {
	k := open(t, t.TempDir(), newSealer(t))
	dek := add(t, k, "kid_1")
	want := bytes.Clone(dek)
	clear(dek)
	got, _ := k.Get("kid_1")
	clear(got)
	assertDEK(t, k, "kid_1", want)
}

func TestAddRefusesExistingKid(t *testing.T) {
	dir, s := t.TempDir(), newSealer(t)
	k := open(t, dir, s)
	dek := add(t, k, "kid_1")
	if _, err := k.Add("kid_1"); err == nil {
		t.Fatal("second Add of the same kid accepted")
	}
	assertDEK(t, open(t, dir, s), "kid_1", dek)
}

func TestDeletePersistsAcrossReopen(t *testing.T) {
	dir, s := t.TempDir(), newSealer(t)
	k := open(t, dir, s)
	add(t, k, "kid_1")
	keep := add(t, k, "kid_2")
	add(t, k, "kid_3")
	if err := k.Delete("kid_1", "kid_3", "never_added"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get("kid_1"); !errors.Is(err, keyring.ErrNoDEK) {
		t.Fatalf("Get after Delete: err = %v, want ErrNoDEK", err)
	}

	k = open(t, dir, s)
	for _, kid := range []string{"kid_1", "kid_3", "never_added"} {
		if dek, err := k.Get(kid); !errors.Is(err, keyring.ErrNoDEK) {
			t.Errorf("Get(%s) after reopen = (%x, %v), want ErrNoDEK", kid, dek, err)
		}
	}
	assertDEK(t, k, "kid_2", keep)
	if kids := k.Kids(); !slices.Equal(kids, []string{"kid_2"}) {
		t.Errorf("Kids() = %v, want [kid_2]", kids)
	}
}

func TestDeleteOfUnknownKidsWritesNothing(t *testing.T) {
	dir := t.TempDir()
	k := open(t, dir, newSealer(t))
	if err := k.Delete("kid_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyring.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keyring file written for a no-op Delete: %v", err)
	}
}

// The file is sealed as a whole: no DEK and no kid appear in it, in any of
// the encodings the file could plausibly use.
func TestFileIsSealed(t *testing.T) {
	dir := t.TempDir()
	k := open(t, dir, newSealer(t))
	kids := []string{"kid_alpha", "kid_beta", "kid_gamma"}
	var deks [][]byte
	for _, kid := range kids {
		deks = append(deks, add(t, k, kid))
	}
	raw, err := os.ReadFile(filepath.Join(dir, keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for i, dek := range deks {
		for _, enc := range [][]byte{
			dek,
			dek[:8],
			[]byte(base64.StdEncoding.EncodeToString(dek)),
			[]byte(base64.StdEncoding.EncodeToString(dek[:9])), // a prefix of the base64 of dek
			[]byte(hex.EncodeToString(dek)),
		} {
			if bytes.Contains(raw, enc) {
				t.Errorf("keyring file contains DEK %d as %q", i, enc)
			}
		}
	}
	for _, kid := range kids {
		if bytes.Contains(raw, []byte(kid)) {
			t.Errorf("keyring file contains kid %s in clear", kid)
		}
	}
}

func TestFileModeAndNoTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	k := open(t, dir, newSealer(t))
	add(t, k, "kid_1")
	add(t, k, "kid_2")
	if err := k.Delete("kid_1"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("keyring file mode = %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("data directory holds %v, want only %s", names, keyring.FileName)
	}
}

func TestOpenWithAnotherMasterKey(t *testing.T) {
	dir := t.TempDir()
	add(t, open(t, dir, newSealer(t)), "kid_1")
	path := filepath.Join(dir, keyring.FileName)
	before, _ := os.ReadFile(path)

	_, err := keyring.Open(dir, newSealer(t))
	if !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("err = %v, want ErrOpen", err)
	}
	if !strings.Contains(err.Error(), "cannot be opened with this master key") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file and the cause", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("failed Open changed the keyring file")
	}
}

func TestOpenRefusesModifiedFile(t *testing.T) {
	dir, s := t.TempDir(), newSealer(t)
	add(t, open(t, dir, s), "kid_1")
	path := filepath.Join(dir, keyring.FileName)
	raw, _ := os.ReadFile(path)
	for _, i := range []int{0, len(raw) / 2, len(raw) - 1} {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x80
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := keyring.Open(dir, s); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("byte %d flipped: err = %v, want ErrOpen", i, err)
		}
	}
}

// TestStaleTempFilesRemoved: temporary files left by a crash during a
// rewrite are removed at open, and the keyring in place is kept.
func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	sealer, _ := seal.New(seal.NewKey())
	k, err := keyring.Open(dir, sealer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Add("a_1"); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, keyring.FileName+".tmp12345")
	if err := os.WriteFile(stale, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err = keyring.Open(dir, sealer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file still there: %v", err)
	}
	if _, err := k.Get("a_1"); err != nil {
		t.Fatalf("keyring lost a data key: %v", err)
	}
}
