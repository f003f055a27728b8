package kms

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/state"
)

// A failed write of the keyring (here: a directory where its file goes,
// which makes the rename fail even for root) makes the service refuse
// every write, releases included, until it is reopened; reads go on.
func TestKeyringWriteFailureStopsWrites(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	kr := filepath.Join(f.dir, keyring.FileName)
	saved, err := os.ReadFile(kr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(kr); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(kr, 0o700); err != nil {
		t.Fatal(err)
	}
	seq := f.svc.Seq()
	if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); !errors.Is(err, ErrStorage) {
		t.Fatalf("Rotate with an unwritable keyring: %v, want ErrStorage", err)
	}
	if err := f.svc.WriteErr(); !errors.Is(err, ErrStorage) || !strings.Contains(err.Error(), "keyring") {
		t.Fatalf("WriteErr() = %v, want ErrStorage naming the keyring", err)
	}
	var kid string
	var policySeq uint64
	f.svc.Read(func(st *state.State) { kid, policySeq = st.Keys[0].Kid, st.ReleasePolicySeq })
	if _, err := f.svc.RecordRelease(context.Background(), state.KeyReleased{Kids: []string{kid}, PolicySeq: policySeq}); !errors.Is(err, ErrStorage) {
		t.Fatalf("RecordRelease after the failure: %v, want ErrStorage", err)
	}
	if _, err := f.svc.Tick(context.Background()); !errors.Is(err, ErrStorage) {
		t.Fatalf("Tick after the failure: %v, want ErrStorage", err)
	}
	if f.svc.Seq() != seq || len(f.keys()) != 1 {
		t.Fatalf("after the failure: seq %d (was %d), %d keys", f.svc.Seq(), seq, len(f.keys()))
	}
	if _, err := f.svc.PrivateKey(kid); err != nil {
		t.Fatalf("PrivateKey after the failure: %v", err)
	}

	// Repaired and reopened, it writes again.
	if err := os.Remove(kr); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kr, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if f.svc.WriteErr() != nil {
		t.Fatalf("WriteErr() = %v after reopening", f.svc.WriteErr())
	}
	f.clock.Set(t0.Add(time.Minute))
	if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); err != nil {
		t.Fatal(err)
	}
}
