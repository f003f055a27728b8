package kms

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// The admission of cluster nodes (docs/security.md "The host as
// adversary"): a joining node presents its node key and evidence; the
// node policy in force must grant the evidence's claims; the ledger's
// secrets are HPKE-sealed to the node key and recorded, with the node's
// evidence and claims, in a node.joined entry that the joining node reads
// its secrets from. A refused node receives nothing.

// NodeAdmission is how this node admits others.
type NodeAdmission struct {
	// Verifier verifies nodes' evidence: the release verifier.
	Verifier *attest.Verifier
	// DefaultPolicy is the node policy (JSON of internal/policy's grammar)
	// until governance sets one (set_node_policy). Empty: none, and no
	// node is admitted until governance sets one.
	DefaultPolicy []byte
	// Secrets returns the ledger's secrets handed to an admitted node:
	// the current ledger secret blob (seal.Versions.Secret: version and
	// master key), which seals every other secret of the ledger (the
	// log's signing key, private keys, data keys); older versions open by
	// walking back the ledger's rekeys. This opaque blob is the one thing
	// a node obtains: the node that opens a handoff (OpenHandoff) or a
	// recovery installs exactly it (seal.Versions.Install, cmd/tkms's
	// memSealer.set). A caller clears it after use.
	Secrets func() ([]byte, error)
}

// nodePolicy returns the node policy in force, the seq of the proposal
// that set it (0: the default) and its hash.
func (s *Service) nodePolicy(na *NodeAdmission) (policy.Policy, uint64, string, error) {
	raw, seq := na.DefaultPolicy, uint64(0)
	s.Read(func(st *state.State) {
		if st.NodePolicySeq != 0 {
			raw, seq = st.NodePolicy, st.NodePolicySeq
		}
	})
	if len(bytes.TrimSpace(raw)) == 0 {
		return policy.Policy{}, seq, "", nil
	}
	p, err := policy.Parse(raw)
	if err != nil {
		return p, seq, "", fmt.Errorf("kms: the node policy: %w", err)
	}
	h := policy.Hash(p)
	return p, seq, hex.EncodeToString(h[:]), nil
}

// AdmitNode decides, on the leader, the join of a node as cluster member
// member: its evidence must verify, bind nodeKey and satisfy the node
// policy in force (else an *attest.Error names the failing check). It
// records the node.joined entry holding the ledger's secrets sealed to
// nodeKey and returns it. A node asking again (a retried join) gets the
// entry recorded for it.
func (s *Service) AdmitNode(ctx context.Context, na *NodeAdmission, member string, nodeKey, evidence []byte) (*ledger.Entry, error) {
	p, pseq, phash, err := s.nodePolicy(na)
	if err != nil {
		return nil, err
	}
	adm, err := node.Check(ctx, na.Verifier, p, nodeKey, evidence)
	if err != nil {
		return nil, err
	}
	// One admission at a time: a retried join racing its first attempt
	// finds the entry recorded for it rather than recording a second.
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var prev, trustSeq uint64
	var needTrust bool
	s.Read(func(st *state.State) {
		if n := st.Node(adm.NodeID); n != nil && n.Member == member {
			prev = n.Seq
		}
		needTrust = st.Constitution != nil && st.Constitution.NodeTrust == gov.NodeTrustProposal
		trustSeq = st.TrustedNodeIDs[adm.NodeID]
	})
	if prev != 0 {
		return s.store.Get(prev)
	}
	if needTrust && trustSeq == 0 {
		return nil, &attest.Error{Code: node.CodeNotTrusted, Err: fmt.Errorf(
			"node %s satisfies the node policy, but the constitution trusts a node only once a trust_node proposal names it: propose trust_node {\"node_id\": %q}", adm.NodeID, adm.NodeID)}
	}
	// The secret in force when the entry is applied: one made against a
	// version a rekey replaced meanwhile (on another leader) is refused
	// at apply time, and made again with the new one.
	for try := 0; ; try++ {
		secret, err := na.Secrets()
		if err != nil {
			return nil, fmt.Errorf("kms: this node cannot hand the ledger's secrets over: %w", err)
		}
		version, _, err := seal.ParseSecret(secret)
		if err != nil {
			clear(secret)
			return nil, fmt.Errorf("kms: this node's ledger secret: %w", err)
		}
		sealed, err := node.Seal(nodeKey, secret)
		clear(secret)
		if err != nil {
			return nil, err
		}
		nj := state.NodeJoined{
			Member: member, NodeID: adm.NodeID, NodeKey: nodeKey, Evidence: evidence,
			EvidenceType: adm.EvidenceType, EvidenceSHA256: adm.EvidenceSHA256, Claims: adm.Claims, Simulated: adm.Simulated,
			PolicySeq: pseq, PolicySHA256: phash, TrustSeq: trustSeq, Secrets: sealed, SecretVersion: version,
		}
		e, err := s.recordNode(ctx, nj)
		if errors.Is(err, state.ErrStaleSecret) && try < 3 {
			s.log.Info("node admission: the ledger secret changed meanwhile; sealing the new version", "node_id", adm.NodeID)
			continue
		}
		return e, err
	}
}

// RecordFounder records the node that founded the cluster (and created the
// ledger's secrets) with its evidence, which must satisfy the node policy
// as any other node's. It receives no secrets.
func (s *Service) RecordFounder(ctx context.Context, na *NodeAdmission, member string, id *node.Identity) (*ledger.Entry, error) {
	p, pseq, phash, err := s.nodePolicy(na)
	if err != nil {
		return nil, err
	}
	adm, err := node.Check(ctx, na.Verifier, p, id.Public, id.Evidence)
	if err != nil {
		return nil, fmt.Errorf("kms: this founding node fails its own node policy: %w", err)
	}
	return s.recordNode(ctx, state.NodeJoined{
		Member: member, NodeID: adm.NodeID, NodeKey: id.Public, Evidence: id.Evidence,
		EvidenceType: adm.EvidenceType, EvidenceSHA256: adm.EvidenceSHA256, Claims: adm.Claims, Simulated: adm.Simulated,
		PolicySeq: pseq, PolicySHA256: phash, Founder: true,
	})
}

func (s *Service) recordNode(ctx context.Context, nj state.NodeJoined) (*ledger.Entry, error) {
	if err := nj.Check(); err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	body, err := json.Marshal(nj)
	if err != nil {
		return nil, err
	}
	es, err := s.store.Append(ctx, store.Proposal{Time: s.now(), Type: ledger.TypeNodeJoined, Body: body})
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// OpenHandoff reads this node's secrets from the node.joined entry e.
func OpenHandoff(e *ledger.Entry, id *node.Identity) ([]byte, error) {
	if e.Type != ledger.TypeNodeJoined {
		return nil, fmt.Errorf("kms: the handoff is a %s entry, want %s", e.Type, ledger.TypeNodeJoined)
	}
	var nj state.NodeJoined
	if err := json.Unmarshal(e.Body, &nj); err != nil {
		return nil, fmt.Errorf("kms: the handoff entry: %w", err)
	}
	if nj.NodeID != id.ID {
		return nil, fmt.Errorf("kms: the handoff entry %d is for node %s, not this node (%s)", e.Seq, nj.NodeID, id.ID)
	}
	return id.Open(nj.Secrets)
}
