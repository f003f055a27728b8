package store

import (
	"fmt"
	"os"
	"syscall"
)

// ReleaseMemory tells the kernel that the process no longer needs the
// pages of the ledger file that start-up read (verifying every record,
// replaying the ledger): they leave the process's resident set and stay in
// the page cache, from where the next access maps them again. Without it a
// server that verified a large ledger at start carries the whole file in
// its RSS. bbolt maps the file read-only and shared, so MADV_DONTNEED
// drops nothing but the mapping of clean pages.
func (s *Store) ReleaseMemory() error {
	s.closeMu.RLock() // the mapping stays while the store is open
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
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
}
