package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// Rekey (docs/security.md "Ledger secrets and rekey"). When governance
// removes a node of a cluster (remove_node), the state machine makes the
// removal's rekey a pending effect; the leader carries it out like the
// other effects (runEffectsLocked, on every Tick until it is recorded, so
// a leader change mid-rekey only moves it to the next leader): a new
// ledger-secret version, HPKE-sealed to every node trusted at that point
// and recorded with the previous version sealed under it in a
// ledger.rekeyed entry. Every node applying the entry opens its copy with
// its node key and seals everything after under the new version: the
// entries' sealed parts and data keys (raftstore), its keyring file
// (rewritten at once) and snapshots.
//
// A rekey racing a join: the state machine refuses a ledger.rekeyed entry
// that does not name exactly the nodes trusted when it is applied, and a
// node.joined entry whose secret is not the version in force then
// (state.ErrStaleSecret); the leader makes either again. So a node
// admitted while a rekey is recorded receives the new version one way or
// the other.

// learnRekeys gives this node's ledger secret the version chain of the
// replayed ledger (a state snapshot holds it too): the previous version
// each rekey sealed under the next, which a node that holds only the
// current version walks back to open older data.
func (s *Service) learnRekeys() {
	if s.cfg.Versions == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.st.Rekeys {
		s.cfg.Versions.AddPrevious(r.Version, r.Previous)
	}
}

// followRekey switches this node to the version of an applied
// ledger.rekeyed entry: it records the link to the previous version and,
// if the entry names this process's node, installs the new version from
// its sealed copy, then rewrites the keyring under it. A node the entry
// does not name (the removed node; a node restarted since, which was
// admitted again with the current version) installs nothing.
func (s *Service) followRekey(e *ledger.Entry) {
	if s.cfg.Versions == nil {
		return
	}
	var r state.LedgerRekeyed
	if err := json.Unmarshal(e.Body, &r); err != nil {
		s.log.Error("ledger.rekeyed: cannot read the entry", "seq", e.Seq, "err", err)
		return
	}
	s.cfg.Versions.AddPrevious(r.Version, r.Previous)
	if s.cfg.Identity == nil {
		return
	}
	for _, n := range r.Nodes {
		if n.NodeID != s.cfg.Identity.ID {
			continue
		}
		blob, err := s.cfg.Identity.Open(n.Secrets)
		if err == nil {
			if v, _, perr := seal.ParseSecret(blob); perr != nil || v != r.Version {
				err = fmt.Errorf("the sealed secret is not version %d (%v)", r.Version, perr)
			} else {
				err = s.cfg.Versions.Install(blob)
			}
			clear(blob)
		}
		if err == nil && s.keyring != nil {
			// The keyring is rewritten under the new version at once.
			err = s.keyring.Reseal()
		}
		if err != nil {
			s.log.Error("ledger.rekeyed: this node cannot take the new ledger-secret version", "seq", e.Seq, "version", r.Version, "err", err)
			return
		}
		s.log.Info("ledger secret: this node switched to the rekey's new version", "version", r.Version, "seq", e.Seq, "removed_node", r.RemovedNode)
		return
	}
}

// rekeyLocked records the rekey of a remove_node effect. The caller holds
// writeMu.
func (s *Service) rekeyLocked(ctx context.Context, now time.Time, ef state.Effect) error {
	if s.cfg.Versions == nil {
		return errors.New("kms: this node holds no versioned ledger secret (not a node of a cluster)")
	}
	var nodes []*state.Node
	var cur uint32
	var due bool
	s.Read(func(st *state.State) {
		pending, ok := st.RekeyDue()
		due = ok && pending == ef
		nodes, cur = st.TrustedNodes(), st.SecretVersion()
	})
	if !due {
		return nil // recorded meanwhile
	}
	if have := s.cfg.Versions.Current(); have != cur {
		return fmt.Errorf("kms: this node holds ledger-secret version %d, the ledger is at %d", have, cur)
	}
	blob, prev, err := s.cfg.Versions.Next()
	if err != nil {
		return err
	}
	defer clear(blob)
	r := state.LedgerRekeyed{
		Version: cur + 1, ProposalID: ef.ProposalID, RemovedNode: ef.Node, RemoveSeq: ef.Seq, Previous: prev,
	}
	for _, n := range nodes {
		sealed, err := node.Seal(n.NodeKey, blob)
		if err != nil {
			return fmt.Errorf("kms: sealing the new ledger secret to node %s: %w", n.NodeID, err)
		}
		r.Nodes = append(r.Nodes, state.RekeyedNode{Member: n.Member, NodeID: n.NodeID, Secrets: sealed})
	}
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	es, err := s.store.Append(ctx, store.Proposal{Time: now, Type: ledger.TypeLedgerRekeyed, Body: body})
	if err != nil {
		return fmt.Errorf("kms: rekey: %w", err)
	}
	s.log.Info("ledger rekeyed after a node's removal", "seq", es[0].Seq, "version", r.Version, "removed_node", ef.Node, "proposal", ef.ProposalID, "nodes", len(r.Nodes))
	return nil
}

// checkStale re-checks, just before it is applied, an entry that the
// ledger-secret version or the trusted nodes decide (node.joined,
// ledger.rekeyed): on a trial copy of the state, so one made against a
// state that changed meanwhile is never written (the maker makes it
// again).
func (s *Service) checkStale(e *ledger.Entry) error {
	var err error
	s.Read(func(st *state.State) {
		trial := st.Clone()
		te := *e
		te.Seq = trial.Seq + 1 // the entry's place once those before it in its command are applied
		err = trial.Apply(&te)
	})
	return err
}

// SecretVersion is the ledger-secret version in force.
func (s *Service) SecretVersion() uint32 {
	var v uint32
	s.Read(func(st *state.State) { v = st.SecretVersion() })
	return v
}
