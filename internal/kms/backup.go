package kms

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
)

// BackupInfo describes a backup; Backup writes it as backup.json.
type BackupInfo struct {
	Dir       string    `json:"-"`
	Time      time.Time `json:"time"`
	Seq       uint64    `json:"seq"` // the ledger entries the backup holds at least
	LogOrigin string    `json:"log_origin"`
	Service   string    `json:"service_name"`
}

// BackupInfoFile names the description of a backup in its directory.
const BackupInfoFile = "backup.json"

// Backup writes a consistent copy of the ledger and the keyring into the
// new directory dir (mode 0700) while the service keeps serving: releases
// go on; rotations and other lifecycle writes wait for it. The ledger and
// the keyring are copied under the lock those writes take, so the keyring
// holds the data key of every live key the ledger copy has. The copy is
// written in a temporary directory beside dir and renamed into place once
// complete and durable. The master key is not copied: back it up apart
// (docs/operations.md). A data directory made of the two files and the
// master key opens as the service did at the backup.
func (s *Service) Backup(dir string) (info BackupInfo, err error) {
	if _, err := os.Lstat(dir); err == nil {
		return info, fmt.Errorf("backup: %s exists", dir)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	s.writeMu.RLock()
	info = BackupInfo{Dir: dir, Time: s.now().UTC(), Seq: s.Seq(), LogOrigin: s.LogOrigin(), Service: s.cfg.ServiceName}
	err = writeSynced(filepath.Join(tmp, store.FileName), s.store.Backup)
	if err == nil {
		err = writeSynced(filepath.Join(tmp, keyring.FileName), s.keyring.Backup)
	}
	s.writeMu.RUnlock()
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := writeSynced(filepath.Join(tmp, BackupInfoFile), func(w io.Writer) (int64, error) {
		n, err := w.Write(append(b, '\n'))
		return int64(n), err
	}); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := seal.SyncDir(tmp); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := seal.SyncDir(filepath.Dir(dir)); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	return info, nil
}

// writeSynced creates path (mode 0600), fills it with write and fsyncs it.
// A write of nothing leaves no file.
func writeSynced(path string, write func(io.Writer) (int64, error)) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n == 0 {
		err = os.Remove(path)
	}
	return err
}
