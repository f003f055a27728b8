package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/tkms-dev/tkms/internal/kms"
)

// backupOnSignal writes a backup of svc into a new directory of dir on
// every SIGUSR1 until ctx ends (`systemctl kill -s USR1 tkms`; docs/
// operations.md "Backup and restore"). Without dir it says so, and the
// signal does no harm.
func backupOnSignal(ctx context.Context, svc *kms.Service, dir string, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		if dir == "" {
			log.Warn("SIGUSR1 asks for a backup, but no backup_dir is configured")
			continue
		}
		info, err := backupNow(svc, dir)
		if err != nil {
			log.Error("backup failed", "err", err)
			continue
		}
		log.Info("backup written", "dir", info.Dir, "seq", info.Seq)
	}
}

// backupNow writes a backup of svc into a new directory of dir, named by
// the time and the ledger's length so that names sort by age.
func backupNow(svc *kms.Service, dir string) (kms.BackupInfo, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return kms.BackupInfo{}, err
	}
	name := fmt.Sprintf("tkms-%s-%012d", svc.Now().UTC().Format("20060102T150405.000Z"), svc.Seq())
	return svc.Backup(filepath.Join(dir, name))
}
