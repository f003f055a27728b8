package raftstore

// NodeAsks is how many POST /cluster/v1/node requests s served.
func (s *Store) NodeAsks() int64 { return s.nodeAsks.Load() }
