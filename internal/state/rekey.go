package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
)

// Ledger-secret versions (docs/security.md "Ledger secrets and rekey").
// The ledger secret of a cluster is version 1 when it is founded; when
// governance removes a node (remove_node), the leader records a
// ledger.rekeyed entry: version n+1, HPKE-sealed to every node trusted at
// that point, with version n sealed under version n+1. Every node that
// applies it opens its own copy and seals everything after under the new
// version (internal/seal Versions); the removed node, which kept version
// n at most, opens nothing written after.

// ErrStaleSecret: a node.joined or ledger.rekeyed entry made against a
// ledger-secret version or set of trusted nodes that changed before it
// was applied; the kms makes it again.
var ErrStaleSecret = errors.New("made against a ledger secret that changed meanwhile")

// LedgerRekeyed is the body of a ledger.rekeyed entry. Everything in it is
// public; Nodes' secrets are HPKE ciphertext only each node opens, and
// Previous opens only with the new version.
type LedgerRekeyed struct {
	// Version is the new ledger-secret version.
	Version uint32 `json:"version"`
	// The reason: the remove_node proposal accepted at RemoveSeq that
	// removed RemovedNode.
	ProposalID  string `json:"proposal_id"`
	RemovedNode string `json:"removed_node"`
	RemoveSeq   uint64 `json:"remove_seq"`
	// Nodes are every node trusted at this entry (State.TrustedNodes),
	// each with the new version's secret sealed to its node key.
	Nodes []RekeyedNode `json:"nodes"`
	// Previous is the previous version's secret sealed under the new one
	// (seal.Versions.Next).
	Previous []byte `json:"previous"`
}

// RekeyedNode is a node that received a new ledger-secret version.
type RekeyedNode struct {
	Member  string `json:"member"`
	NodeID  string `json:"node_id"`
	Secrets []byte `json:"secrets"`
}

// Rekey is an applied ledger.rekeyed entry: the link of the version chain
// a node walks back.
type Rekey struct {
	Version     uint32   `json:"version"`
	Seq         uint64   `json:"seq"`
	Previous    []byte   `json:"previous"`
	RemovedNode string   `json:"removed_node"`
	NodeIDs     []string `json:"node_ids"`
}

// SecretVersion is the ledger-secret version in force: 1 until the first
// rekey.
func (s *State) SecretVersion() uint32 {
	if n := len(s.Rekeys); n > 0 {
		return s.Rekeys[n-1].Version
	}
	return 1
}

// SecretVersionAt is the ledger-secret version in force at entry seq
// (the one its data was sealed under).
func (s *State) SecretVersionAt(seq uint64) uint32 {
	v := uint32(1)
	for _, r := range s.Rekeys {
		if r.Seq > seq {
			break
		}
		v = r.Version
	}
	return v
}

// RekeyDue returns the pending remove_node effect the leader rekeys for
// next, if any.
func (s *State) RekeyDue() (Effect, bool) {
	for _, e := range s.PendingEffects {
		if e.Action == gov.ActRemoveNode {
			return e, true
		}
	}
	return Effect{}, false
}

func (s *State) applyRekeyed(e *ledger.Entry) error {
	var r LedgerRekeyed
	if err := decodeBody(e.Body, &r); err != nil {
		return err
	}
	if want := s.SecretVersion() + 1; r.Version != want {
		return fmt.Errorf("%w: ledger-secret version %d, want %d", ErrStaleSecret, r.Version, want)
	}
	if len(r.Previous) == 0 {
		return errors.New("a rekey without the previous version")
	}
	i := slices.IndexFunc(s.PendingEffects, func(ef Effect) bool {
		return ef.Action == gov.ActRemoveNode && ef.ProposalID == r.ProposalID && ef.Node == r.RemovedNode && ef.Seq == r.RemoveSeq
	})
	if i < 0 {
		return fmt.Errorf("a rekey for no pending removal (proposal %s, node %s)", r.ProposalID, r.RemovedNode)
	}
	var want, got []string
	for _, n := range s.TrustedNodes() {
		want = append(want, n.NodeID)
	}
	for _, n := range r.Nodes {
		if len(n.Secrets) == 0 {
			return fmt.Errorf("node %s named without its secret", n.NodeID)
		}
		if nd := s.Node(n.NodeID); nd == nil || nd.Member != n.Member {
			return fmt.Errorf("node %s (%s) is not a node of the cluster", n.NodeID, n.Member)
		}
		got = append(got, n.NodeID)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return fmt.Errorf("%w: the rekey names nodes %v, but the trusted nodes are %v", ErrStaleSecret, got, want)
	}
	s.PendingEffects = slices.Delete(slices.Clone(s.PendingEffects), i, i+1)
	s.Rekeys = append(s.Rekeys, &Rekey{Version: r.Version, Seq: e.Seq, Previous: r.Previous, RemovedNode: r.RemovedNode, NodeIDs: got})
	return nil
}
