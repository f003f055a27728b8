package kms

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// Storage faults (docs/operations.md): a write to the data directory that
// fails (disk full, file system turned read-only, I/O error) makes the
// service refuse every later write until it is restarted, since what
// reached the disk is no longer known; it goes on serving what it holds in
// memory and in the ledger (public keys, the log). Nothing is acknowledged
// that is not durable.

// ErrStorage is wrapped by the errors of writers refused because the data
// directory cannot be written (store.ErrWriteFailed).
var ErrStorage = store.ErrWriteFailed

// WriteErr returns the error that makes the service refuse writes (it
// wraps ErrStorage), or nil while the data directory is writable.
func (s *Service) WriteErr() error { return s.store.WriteErr() }

// storageFailed returns the store's OnWriteFailure hook: it logs, once,
// what happened and what the operator must do.
func storageFailed(log *slog.Logger, dir string) func(error) {
	return func(err error) {
		log.Error("STORAGE FAILURE: a write to the data directory failed; tkms now refuses every write "+
			"(key releases, rotations, governance) and answers them 503 STORAGE_FAILED, while it goes on serving public keys and the log; "+
			"free space or make the data directory writable, then restart tkms, which re-reads what is on disk",
			"data_dir", dir, "err", err)
	}
}

// writeCheckPrefix names the file checkWritable creates and removes.
const writeCheckPrefix = ".tkms-write-check-"

// checkWritable fails, naming the directory and what to do, if dir exists
// but a file cannot be created in it: a KMS that cannot record releases and
// rotations does not start (it fails closed), rather than run without
// rotating keys or releasing any.
func checkWritable(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil // created by the store
	}
	// Left by a check that a crash interrupted.
	if stale, err := filepath.Glob(filepath.Join(dir, writeCheckPrefix+"*")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	f, err := os.CreateTemp(dir, writeCheckPrefix+"*")
	if err == nil {
		name := f.Name()
		_, err = f.Write([]byte("tkms"))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		os.Remove(name)
	}
	if err == nil {
		return nil
	}
	why := "it cannot be written"
	switch {
	case errors.Is(err, syscall.EROFS):
		why = "its file system is read-only"
	case errors.Is(err, fs.ErrPermission):
		why = "permission denied"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		why = "no space left"
	}
	return fmt.Errorf("kms: the data directory %s is not writable (%s: %w): tkms records every key release and rotation in its ledger there and does not start without it; "+
		"make it writable (remount it read-write, free space or fix its owner and mode) and start again; to inspect it meanwhile, use tkms keys list --data %s",
		dir, why, err, dir)
}

// checkLedgerPresent refuses to start a new, empty ledger in a data
// directory whose keyring shows that keys were made there: the ledger
// file was lost or emptied, and a fresh start would answer with new keys
// and then erase the data keys of the old ones as orphans.
func checkLedgerPresent(dir string) error {
	ledgerPath := filepath.Join(dir, store.FileName)
	fi, err := os.Stat(ledgerPath)
	if err == nil && fi.Size() > 0 {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("kms: ledger %s: %w", ledgerPath, err)
	}
	kr := filepath.Join(dir, keyring.FileName)
	if _, err := os.Stat(kr); errors.Is(err, fs.ErrNotExist) {
		return nil // a new data directory
	}
	what := "missing"
	if fi != nil {
		what = "empty"
	}
	return fmt.Errorf("kms: the ledger %s is %s but the keyring %s holds the data keys of keys made here: the ledger was lost; "+
		"restore the data directory from a backup (check it with tkms audit); tkms does not start a new ledger over it", ledgerPath, what, kr)
}

// checkKeyring refuses a keyring that lacks the data key of a live key:
// keys are created with their data key written first and destroyed with
// it erased last, so a gap means the keyring file was lost, damaged or
// restored from a copy older than the ledger, and the keys would be lost
// for good if the service ran on and rewrote it.
func (s *Service) checkKeyring() error {
	have := map[string]bool{}
	for _, kid := range s.keyring.Kids() {
		have[kid] = true
	}
	var missing []string
	s.Read(func(st *state.State) {
		for _, k := range st.Live() {
			if k.DestroyedSeq == 0 && !have[k.Kid] {
				missing = append(missing, k.Kid)
			}
		}
	})
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("kms: keyring %s lacks the data keys of %d live keys (%s): it is missing, damaged or older than the ledger",
		filepath.Join(s.cfg.DataDir, keyring.FileName), len(missing), strings.Join(missing, ", "))
}
