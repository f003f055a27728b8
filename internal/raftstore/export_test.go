package raftstore

import "sync"

// NodeAsks is how many POST /cluster/v1/node requests s served.
func (s *Store) NodeAsks() int64 { return s.nodeAsks.Load() }

// HoldFoundingSnapshot makes every founder wait, before it takes the
// snapshot of its ledger, until the returned function is called.
func HoldFoundingSnapshot() (release func()) {
	ch := make(chan struct{})
	hook := func() { <-ch }
	foundingSnapshotHook.Store(&hook)
	var once sync.Once
	return func() {
		once.Do(func() {
			foundingSnapshotHook.Store(nil)
			close(ch)
		})
	}
}
