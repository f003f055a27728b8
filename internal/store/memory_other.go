//go:build !linux

package store

// ReleaseMemory does nothing on this platform.
func (s *Store) ReleaseMemory() error { return nil }
