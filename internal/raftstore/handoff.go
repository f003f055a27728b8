package raftstore

import "errors"

// The handoff of the ledger's secrets to a joining node, in one place.
//
// The master key seals every secret of the ledger (the log's signing key
// in the log.key entry, the private keys of key.created entries, the data
// keys of raft commands and snapshots), so it is all a joining node needs
// to sign checkpoints with the one log key and to release keys. In this
// version it travels in the answer to the join request, under the
// cluster's mutual TLS: any holder of a node certificate of the cluster
// can obtain it. The attested handoff (the master key HPKE-sealed to the
// joining node's attested key, checked against the node policy, and
// recorded as a ledger entry) replaces this function and Config.MasterKey.

// handoff returns a copy of the master key for a joining node.
func (s *Store) handoff() ([]byte, error) {
	if s.cfg.MasterKey == nil {
		return nil, errors.New("raftstore: this node cannot hand the master key to a joining node (Config.MasterKey is not set)")
	}
	return s.cfg.MasterKey()
}
