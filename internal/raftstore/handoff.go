package raftstore

import (
	"context"
	"errors"
	"fmt"
)

// The handoff of the ledger's secrets to a joining node, in one place.
//
// A joining node sends its node key and the evidence that binds it
// (internal/node). The leader hands both to Config.Admit, which checks the
// evidence against the node policy and records the node.joined entry that
// holds the ledger's secrets HPKE-sealed to the node key
// (kms.Service.AdmitNode) with the node certificate of its attested TLS
// key; that record, with the service identity the node checks its peers
// against, is the answer (cmd/tkms's handoff). A refused
// node receives an error naming the failed check, and nothing else; the
// store never sees a secret.

// ErrNodeRefused: the cluster refused a joining node (its evidence, or
// the node policy); no retry mends it.
var ErrNodeRefused = errors.New("raftstore: the cluster refused the node")

// handoff asks Config.Admit for a joining node's handoff.
func (s *Store) handoff(ctx context.Context, req JoinRequest) ([]byte, error) {
	if s.cfg.Admit == nil {
		return nil, errors.New("raftstore: this node admits no node (Config.Admit is not set)")
	}
	h, err := s.cfg.Admit(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNodeRefused, err)
	}
	return h, nil
}
