package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
	bolt "go.etcd.io/bbolt"
)

// Fail makes the store refuse every later write, snapshots included, and
// reports the failure once; reads go on.
func TestFailIsSticky(t *testing.T) {
	dir := t.TempDir()
	var reported []error
	s, err := store.Open(dir, store.Options{Sealer: newSealer(t), OnWriteFailure: func(err error) { reported = append(reported, err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Start(nil)
	mustAppend(t, s, published(1))
	if s.WriteErr() != nil {
		t.Fatalf("WriteErr() = %v before any failure", s.WriteErr())
	}
	cause := errors.New("keyring: no space left on device")
	err = s.Fail(cause)
	if !errors.Is(err, store.ErrWriteFailed) || !errors.Is(err, cause) {
		t.Fatalf("Fail() = %v, want ErrWriteFailed wrapping the cause", err)
	}
	s.Fail(errors.New("a second failure"))
	if len(reported) != 1 || !errors.Is(reported[0], cause) {
		t.Fatalf("OnWriteFailure got %v, want the first failure once", reported)
	}
	if _, err := s.Append(t.Context(), published(2)); !errors.Is(err, cause) {
		t.Fatalf("Append after Fail: %v, want the sticky error", err)
	}
	if err := s.SaveSnapshot(1, []byte("{}")); !errors.Is(err, store.ErrWriteFailed) {
		t.Fatalf("SaveSnapshot after Fail: %v, want ErrWriteFailed", err)
	}
	if !errors.Is(s.WriteErr(), cause) || s.Last() != 1 {
		t.Fatalf("WriteErr() = %v, Last() = %d", s.WriteErr(), s.Last())
	}
	if e, err := s.Get(1); err != nil || e.Seq != 1 {
		t.Fatalf("Get(1) after Fail: %v, %v", e, err)
	}
}

// Open refuses a ledger file damaged below the records (bbolt's pages)
// with ErrCorrupt naming the file, never a panic or a fault; one damaged
// meta page, which bbolt opens past, is reported as a warning saying
// whether the last transaction went with it.
func TestOpenDamagedFile(t *testing.T) {
	sealer := newSealer(t)
	golden := writeLedger(t, sealer, 40)
	page := int64(os.Getpagesize())
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		warn   string // "" if Open must fail
	}{
		{"both meta pages", func(t *testing.T, path string) {
			flip(t, path, 40)
			flip(t, path, page+40)
		}, ""},
		{"the newest meta page", func(t *testing.T, path string) { flip(t, path, newestMeta(t, path)*page+40) }, "which recorded the last transaction"},
		{"the older meta page", func(t *testing.T, path string) { flip(t, path, (1-newestMeta(t, path))*page+40) }, "nothing is lost"},
		{"the type of the records' page", func(t *testing.T, path string) { flip(t, path, recordOffset(t, path, 20)/page*page+8) }, ""},
		{"cut short", func(t *testing.T, path string) {
			if err := os.Truncate(path, recordOffset(t, path, 20)/page*page); err != nil {
				t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, store.FileName)
			if err := os.WriteFile(path, readAll(t, filepath.Join(golden, store.FileName)), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path)
			var logs bytes.Buffer
			s, err := store.Open(dir, store.Options{Sealer: sealer, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if tc.warn == "" {
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded")
				}
				if !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Open: %v, want ErrCorrupt naming %s", err, path)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			if !strings.Contains(logs.String(), tc.warn) || !strings.Contains(logs.String(), path) {
				t.Fatalf("log lacks %q naming the file:\n%s", tc.warn, logs.String())
			}
			if s.Last() < 39 {
				t.Fatalf("Last() = %d, want 39 or 40", s.Last())
			}
		})
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b := readAll(t, path)
	b[off] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// newestMeta returns the meta page (0 or 1) of the newest transaction.
func newestMeta(t *testing.T, path string) int64 {
	t.Helper()
	b := readAll(t, path)
	page := os.Getpagesize()
	if binary.LittleEndian.Uint64(b[page+64:]) > binary.LittleEndian.Uint64(b[64:]) {
		return 1
	}
	return 0
}

// recordOffset returns the offset in the file of entry seq's record.
func recordOffset(t *testing.T, path string, seq uint64) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var off int64
	db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte("entries")).Get(seqKey(seq))
		off = int64(uintptr(unsafe.Pointer(&v[0])) - db.Info().Data)
		return nil
	})
	return off
}
