package kms

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// TestBackupUnderRotations: a backup taken while rotations run opens as a
// data directory (with the master key) holding at least the entries it
// names, the private key of every key it knows, and the same log; a second
// backup to the same directory is refused.
func TestBackupUnderRotations(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	var wg sync.WaitGroup
	stop, first := make(chan struct{}), make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			select {
			case <-first:
			default:
				close(first)
			}
		}()
		for n := 0; ; n++ {
			if n == 1 {
				close(first)
			}
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.svc.Rotate(context.Background(), "refresh"); errors.Is(err, ErrKeyLimit) {
				return // every id is taken: the backups race no more rotations
			} else if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	<-first // a rotation is done; more race the backups
	dir := filepath.Join(t.TempDir(), "b1")
	var info BackupInfo
	var err error
	for range 3 { // backups race the rotations
		if info, err = f.svc.Backup(filepath.Join(t.TempDir(), "b")); err != nil {
			t.Fatal(err)
		}
	}
	if info, err = f.svc.Backup(dir); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if _, err := f.svc.Backup(dir); err == nil {
		t.Error("a backup over an existing directory was not refused")
	}
	live := f.keys()

	g := &fixture{t: t, dir: dir, key: f.key, clock: f.clock, policy: f.policy}
	g.open()
	defer g.svc.Close()
	if g.svc.Seq() < info.Seq || g.svc.Seq() > f.svc.Seq() {
		t.Errorf("the restored ledger has %d entries; the backup names %d, the service %d", g.svc.Seq(), info.Seq, f.svc.Seq())
	}
	if g.svc.LogOrigin() != f.svc.LogOrigin() || info.LogOrigin != f.svc.LogOrigin() {
		t.Errorf("log origin %q, backup.json %q, want %q", g.svc.LogOrigin(), info.LogOrigin, f.svc.LogOrigin())
	}
	restored := g.keys()
	if len(restored) < 2 || len(restored) > len(live) {
		t.Fatalf("%d keys restored of %d", len(restored), len(live))
	}
	for i, k := range restored {
		want, err := f.svc.PrivateKey(k.Kid)
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.svc.PrivateKey(k.Kid)
		if err != nil || !bytes.Equal(got, want) || live[i].Kid != k.Kid {
			t.Errorf("key %s: restored private key differs (%v)", k.Kid, err)
		}
	}
}
