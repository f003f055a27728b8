package store

import (
	"fmt"
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// ReleaseMemory tells the kernel that the process no longer needs the
// pages of the ledger file it has read (start-up verifying every record
// and replaying the ledger; a cluster node writing a raft snapshot): they
// leave the process's resident set and stay in the page cache, from where
// the next access maps them again. Without it a server that read a large
// ledger carries the whole file in its RSS. bbolt maps the file read-only
// and shared, so MADV_DONTNEED drops nothing but the mapping of clean
// pages. It runs inside a read transaction, which keeps bbolt from
// remapping the file meanwhile, so it may run while the store writes.
func (s *Store) ReleaseMemory() error {
	s.closeMu.RLock() // the mapping stays while the store is open
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(func(*bolt.Tx) error {
		fi, err := os.Stat(s.db.Path())
		if err != nil {
			return err
		}
		info := s.db.Info()
		page := int64(os.Getpagesize())
		size := fi.Size() / page * page
		if info.Data == 0 || size == 0 {
			return nil
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, info.Data, uintptr(size), syscall.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("store: madvise: %w", errno)
		}
		return nil
	})
}
