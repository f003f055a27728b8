package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
)

// ledgerFixture is a single-node ledger under a master key, opened and
// closed around each change.
type ledgerFixture struct {
	t   *testing.T
	key []byte
}

func (l *ledgerFixture) open(dir string) *kms.Service {
	l.t.Helper()
	sealer, err := seal.New(l.key)
	if err != nil {
		l.t.Fatal(err)
	}
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: dir, Sealer: sealer, ServiceName: "recover-test",
		RotationPolicy: state.DefaultRotationPolicy(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return svc
}

// rotate adds n keys (and their entries) to the ledger in dir.
func (l *ledgerFixture) rotate(dir string, n int) {
	l.t.Helper()
	svc := l.open(dir)
	defer svc.Close()
	for range n {
		if _, err := svc.Rotate(context.Background(), "test"); err != nil {
			l.t.Fatal(err)
		}
	}
}

// stateFile writes a tkms audit state file holding the signed checkpoint
// of the ledger in dir, as an audit that passed would.
func (l *ledgerFixture) stateFile(dir, path string) {
	l.t.Helper()
	svc := l.open(dir)
	defer svc.Close()
	cp := svc.Checkpoint()
	b, _ := json.Marshal(map[string]any{"origin": cp.Origin, "size": cp.Size, "root": cp.Root, "checkpoint": string(cp.Note), "time": time.Now().UTC()})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		l.t.Fatal(err)
	}
}

func copyLedger(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{store.FileName, "keyring"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoveryAuditsTheCopy: a ledger copy that is tampered with, or
// truncated or forked against a supplied checkpoint, is refused with
// RECOVERY_LEDGER_AUDIT_FAILED before anything is opened.
func TestRecoveryAuditsTheCopy(t *testing.T) {
	l := &ledgerFixture{t: t, key: seal.NewKey()}
	root := t.TempDir()
	orig := filepath.Join(root, "orig")
	l.rotate(orig, 1)
	early := filepath.Join(root, "early")
	copyLedger(t, orig, early) // the ledger before the next rotations
	l.rotate(orig, 1)
	state := filepath.Join(root, "audit.state")
	l.stateFile(orig, state)
	fork := filepath.Join(root, "fork")
	copyLedger(t, early, fork)
	l.rotate(fork, 3) // other entries after the common prefix, a longer log
	tampered := filepath.Join(root, "tampered")
	copyLedger(t, orig, tampered)
	db := filepath.Join(tampered, store.FileName)
	b, _ := os.ReadFile(db)
	i := bytes.Index(b, []byte("recover-test"))
	if i < 0 {
		t.Fatal("the service name is not in the ledger file")
	}
	b[i] ^= 0x20
	os.WriteFile(db, b, 0o600)

	_, otherKey, err := translog.GenerateKey("tkms/recover-test/other")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	for _, tc := range []struct {
		name, dir string
		opts      recoverOptions
		ok        bool
	}{
		{"intact", orig, recoverOptions{}, true},
		{"intact, against its checkpoint", orig, recoverOptions{stateFile: state}, true},
		{"older copy, no checkpoint", early, recoverOptions{}, true},
		{"truncated against the checkpoint", early, recoverOptions{stateFile: state}, false},
		{"forked against the checkpoint", fork, recoverOptions{stateFile: state}, false},
		{"tampered", tampered, recoverOptions{}, false},
		{"another log key", orig, recoverOptions{logKey: otherKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := auditCopy(ctx, tc.dir, tc.opts, log)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && recovery.CodeOf(err) != recovery.CodeAuditFailed {
				t.Fatalf("code %q (%v), want %s", recovery.CodeOf(err), err, recovery.CodeAuditFailed)
			}
		})
	}
}

// TestRecoveryLock: a second recovery of a copy while one runs is
// refused; a lock its process left behind is taken over.
func TestRecoveryLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockRecovery(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockRecovery(dir); recovery.CodeOf(err) != recovery.CodeInProgress {
		t.Fatalf("second recovery: %v", err)
	}
	unlock()
	// A lock of a process that is gone (pid 0 is no process of ours).
	os.WriteFile(filepath.Join(dir, recoveryLockFile), []byte("999999999\n"), 0o600)
	unlock, err = lockRecovery(dir)
	if err != nil {
		t.Fatalf("a stale lock: %v", err)
	}
	unlock()
}
