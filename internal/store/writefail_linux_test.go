//go:build linux

package store_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
)

// A failed commit makes the store refuse every later write until it is
// reopened, because what reached the disk is unknown.
//
// The failure is a real one: the test runs itself in a child process whose
// file size limit (RLIMIT_FSIZE) is the ledger file's current size, so the
// kernel refuses to grow the file (EFBIG; Go ignores SIGXFSZ). The limit
// applies to the whole process, hence the child.
func TestWriteFailureIsSticky(t *testing.T) {
	if dir := os.Getenv("TKMS_TEST_WRITE_FAILURE_DIR"); dir != "" {
		writeFailureChild(t, dir)
		return
	}
	dir := t.TempDir()
	key := seal.NewKey()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteFailureIsSticky$", "-test.v")
	cmd.Env = append(os.Environ(), "TKMS_TEST_WRITE_FAILURE_DIR="+dir, "TKMS_TEST_WRITE_FAILURE_KEY="+keyFile)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWriteFailureIsSticky") {
		t.Fatalf("child process: %v\n%s", err, out)
	}

	// After a restart the store holds exactly the acknowledged entries
	// and accepts writes again.
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, sealer, nil)
	assertDense(t, scanAll(t, s), 3)
	if es := mustAppend(t, s, published(4)); es[0].Seq != 4 {
		t.Fatalf("append after restart got seq %d, want 4", es[0].Seq)
	}
}

func writeFailureChild(t *testing.T, dir string) {
	key, err := os.ReadFile(os.Getenv("TKMS_TEST_WRITE_FAILURE_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, sealer, nil)
	mustAppend(t, s, published(1), published(2), published(3))

	fi, err := os.Stat(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	restore := limit
	limit.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	// About 1 MiB in entries that each fit a log leaf.
	var big []store.Proposal
	for range 20 {
		big = append(big, store.Proposal{Time: t0, Type: ledger.TypeSettingsPolicy, Body: bytes.Repeat([]byte("x"), 60000)})
	}
	es, err := s.Append(ctx, big...)
	if err == nil || es != nil {
		t.Fatalf("append past the file size limit = (%v, %v), want an error and no entries", es, err)
	}
	t.Logf("append past the limit: %v", err)
	if _, err := s.Append(ctx, published(4)); err == nil || !strings.Contains(err.Error(), "refusing further writes until restart") {
		t.Fatalf("small append after the failure: err = %v, want the sticky error", err)
	}

	// Lifting the limit does not help: only a restart, which re-reads what
	// is really in the file, does.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &restore); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, published(4)); err == nil {
		t.Fatal("append after lifting the limit succeeded before a restart")
	}
	if s.Last() != 3 {
		t.Fatalf("Last() = %d after failed appends, want 3", s.Last())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
