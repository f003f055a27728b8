package kms

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

// TestLogCheckpointsAndReceipts checks the log the service keeps: every
// append returns with a signed checkpoint covering it, receipts verify
// against the verifier key recorded in the ledger, and a restart signs the
// same checkpoint again (Ed25519 is deterministic) from stored hashes.
func TestLogCheckpointsAndReceipts(t *testing.T) {
	f := newFixture(t)
	v, err := translog.NewVerifier(f.svc.LogVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if v.Name() != f.svc.LogOrigin() {
		t.Fatalf("verifier named %q, origin %q", v.Name(), f.svc.LogOrigin())
	}
	for range 5 {
		k, err := f.svc.Rotate(context.Background(), ReasonRefresh)
		if err != nil {
			t.Fatal(err)
		}
		cp := f.svc.Checkpoint()
		if cp.Size != int64(f.svc.Seq()) || cp.Size < int64(k.Seq) {
			t.Fatalf("checkpoint size %d after key %s at seq %d (ledger at %d)", cp.Size, k.Kid, k.Seq, f.svc.Seq())
		}
		if _, err := translog.Verify(cp.Note, v); err != nil {
			t.Fatal(err)
		}
		r, err := f.svc.Receipt(k.Seq)
		if err != nil {
			t.Fatal(err)
		}
		// Through JSON, as a client gets it.
		r, err = translog.ParseReceipt(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		leaf, _, err := r.Verify(v)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Type != ledger.TypeKeyCreated || leaf.Seq != k.Seq || !leaf.HasSealed() {
			t.Fatalf("receipt leaf = seq %d %s sealed=%v, want key.created at %d", leaf.Seq, leaf.Type, leaf.HasSealed(), k.Seq)
		}
	}
	// The root over the stored hashes is the root recomputed from the
	// entries themselves.
	cp := f.svc.Checkpoint()
	leaves, err := f.svc.ReadLeaves(0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if got := rootOf(t, leaves); got != cp.Root {
		t.Fatalf("root from entries %v, checkpoint %v", got, cp.Root)
	}
	before := string(cp.Note)
	f.reopen()
	if after := string(f.svc.Checkpoint().Note); after != before {
		t.Fatalf("checkpoint after restart:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := f.svc.Receipt(uint64(cp.Size) + 1); err == nil {
		t.Fatal("receipt of an entry beyond the tree")
	}
}

// TestLogHashesBackfilled opens a ledger whose hashes were never stored
// (written by a tkms before the log, simulated by deleting them): the
// store computes them once and the log is whole.
func TestLogHashesBackfilled(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); err != nil {
			t.Fatal(err)
		}
	}
	want := f.svc.Checkpoint()
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(f.dir, store.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("hashes")); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Delete([]byte("tree_size"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	f.open()
	if got := f.svc.Checkpoint(); string(got.Note) != string(want.Note) {
		t.Fatalf("checkpoint after backfill:\n%s\nwant:\n%s", got.Note, want.Note)
	}
	if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	cp := f.svc.Checkpoint()
	leaves, err := f.svc.ReadLeaves(0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if got := rootOf(t, leaves); got != cp.Root {
		t.Fatalf("root from entries %v, checkpoint %v", got, cp.Root)
	}
}

// rootOf computes the RFC 6962 root of leaves in memory.
func rootOf(t *testing.T, leaves [][]byte) tlog.Hash {
	t.Helper()
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	h, err := tlog.TreeHash(int64(len(leaves)), r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRecordReleaseRechecks: a release is recorded only if, at the time the
// entry is stamped, every kid is still released and the policy it was
// decided under is still in force; otherwise nothing is written. An
// auditor replaying the log then finds every release allowed where it is.
func TestRecordReleaseRechecks(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	k := f.keys()[0]
	rel := state.KeyReleased{Kids: []string{k.Kid}, API: "v1/release", Issuer: "https://issuer", Identity: "w", EvidenceType: "snp"}
	e, err := f.svc.RecordRelease(context.Background(), rel)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Time.Equal(f.clock.Now()) {
		t.Fatalf("release stamped %v, clock at %v", e.Time, f.clock.Now())
	}
	seq := f.svc.Seq()

	changed := rel
	changed.PolicySeq = 99
	if _, err := f.svc.RecordRelease(context.Background(), changed); !errors.Is(err, ErrPolicyChanged) {
		t.Fatalf("release under a policy no longer in force: %v, want ErrPolicyChanged", err)
	}
	unknown := rel
	unknown.Kids = []string{k.Kid, "nope_9"}
	if _, err := f.svc.RecordRelease(context.Background(), unknown); !errors.Is(err, ErrNotReleasable) {
		t.Fatalf("release of an unknown kid: %v, want ErrNotReleasable", err)
	}
	// At release_until the key is expired, marker or not.
	f.clock.Set(k.ReleaseUntil)
	if _, err := f.svc.RecordRelease(context.Background(), rel); !errors.Is(err, ErrNotReleasable) {
		t.Fatalf("release at release_until: %v, want ErrNotReleasable", err)
	}
	if f.svc.Seq() != seq {
		t.Fatalf("refused releases wrote %d entries", f.svc.Seq()-seq)
	}
}
