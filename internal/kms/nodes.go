package kms

import (
	"bytes"
	"context"
	"crypto/ed25519"
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

// CheckJoin runs the checks of [Service.AdmitNode] on a joining node
// without recording anything: its evidence verifies, binds nodeKey and
// tlsKey and satisfies the node policy in force, and, when the
// constitution asks for it, a trust_node proposal names it. Any node of the
// cluster can run it (a restarted member's TLS is accepted once it passes,
// so that its vote can elect the leader that admits it).
func (s *Service) CheckJoin(ctx context.Context, na *NodeAdmission, nodeKey, tlsKey, evidence []byte) (*node.Admitted, error) {
	adm, _, _, err := s.checkNode(ctx, na, nodeKey, tlsKey, evidence)
	if err != nil {
		return nil, err
	}
	var needTrust bool
	var trustSeq uint64
	s.Read(func(st *state.State) {
		needTrust = st.Constitution != nil && st.Constitution.NodeTrust == gov.NodeTrustProposal
		trustSeq = st.TrustedNodeIDs[adm.NodeID]
	})
	if needTrust && trustSeq == 0 {
		return nil, notTrusted(adm.NodeID)
	}
	return adm, nil
}

// checkNode checks a node's evidence and keys against the node policy in
// force, and returns what it learned with the policy's seq and hash.
func (s *Service) checkNode(ctx context.Context, na *NodeAdmission, nodeKey, tlsKey, evidence []byte) (*node.Admitted, uint64, string, error) {
	p, pseq, phash, err := s.nodePolicy(na)
	if err != nil {
		return nil, 0, "", err
	}
	adm, err := node.Check(ctx, na.Verifier, p, nodeKey, evidence)
	if err != nil {
		return nil, 0, "", err
	}
	if err := adm.CheckTLSKey(tlsKey); err != nil {
		return nil, 0, "", err
	}
	return adm, pseq, phash, nil
}

func notTrusted(id string) error {
	return &attest.Error{Code: node.CodeNotTrusted, Err: fmt.Errorf(
		"node %s satisfies the node policy, but the constitution trusts a node only once a trust_node proposal names it: propose trust_node {\"node_id\": %q}", id, id)}
}

// AdmitNode decides, on the leader, the join of a node as cluster member
// member: its evidence must verify, bind nodeKey and satisfy the node
// policy in force (else an *attest.Error names the failing check). It
// records the node.joined entry holding the ledger's secrets sealed to
// nodeKey and returns it. A node asking again (a retried join) gets the
// entry recorded for it.
//
// The node's TLS key tlsKey (PKIX DER) must be the one the evidence binds
// in REPORT_DATA[32:64]; the entry records it with the node certificate
// the service identity issues for it (internal/node cert.go).
func (s *Service) AdmitNode(ctx context.Context, na *NodeAdmission, member string, nodeKey, tlsKey, evidence []byte) (*ledger.Entry, error) {
	adm, pseq, phash, err := s.checkNode(ctx, na, nodeKey, tlsKey, evidence)
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
		return nil, notTrusted(adm.NodeID)
	}
	cert, err := s.issueNodeCert(member, adm.NodeID, tlsKey)
	if err != nil {
		return nil, err
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
			TLSKey: tlsKey, Certificate: cert,
		}
		e, err := s.recordNode(ctx, nj)
		if errors.Is(err, state.ErrStaleSecret) && try < 3 {
			s.log.Info("node admission: the ledger secret changed meanwhile; sealing the new version", "node_id", adm.NodeID)
			continue
		}
		return e, err
	}
}

// issueNodeCert issues the node certificate of an admitted node's TLS key,
// signed by the service identity: the log's signing key, unsealed from its
// log.key entry for the signing only.
func (s *Service) issueNodeCert(member, nodeID string, tlsKey []byte) ([]byte, error) {
	var lk *state.LogKey
	var seq uint64
	s.Read(func(st *state.State) { lk, seq = st.LogKey, st.LogKeySeq })
	if lk == nil {
		return nil, errors.New("kms: no service identity yet (the ledger has no log key)")
	}
	e, err := s.store.Get(seq)
	if err != nil {
		return nil, fmt.Errorf("kms: the service identity: %w", err)
	}
	skey, err := s.store.Unseal(e)
	if err != nil {
		return nil, fmt.Errorf("kms: the service identity: %w", err)
	}
	priv, err := node.ServiceSigner(string(skey))
	clear(skey)
	if err != nil {
		return nil, err
	}
	defer clear(priv)
	return node.IssueCertificate(priv, lk.Origin, member, nodeID, tlsKey, s.now())
}

// ServiceKey returns the service identity's public key (the log key's
// Ed25519 key), which node certificates chain to; nil before the log key
// exists.
func (s *Service) ServiceKey() ed25519.PublicKey {
	k, err := node.ServiceKey(s.LogVerifierKey())
	if err != nil {
		return nil
	}
	return k
}

// TrustedTLSKey returns the TLS key of node nodeID if the ledger trusts it
// now (the last node of its member, the member not removed): the key a
// node certificate naming it must hold.
func (s *Service) TrustedTLSKey(nodeID string) ([]byte, error) {
	var n *state.Node
	s.Read(func(st *state.State) { n = st.TrustedNode(nodeID) })
	switch {
	case n == nil:
		return nil, errors.New("not a trusted node of this cluster (never admitted, replaced by a restart, or removed by remove_node)")
	case len(n.TLSKey) == 0:
		return nil, errors.New("admitted without a TLS key")
	}
	return n.TLSKey, nil
}

// RecordFounder records the node that founded the cluster (and created the
// ledger's secrets) with its evidence, which must satisfy the node policy
// as any other node's. It receives no secrets.
func (s *Service) RecordFounder(ctx context.Context, na *NodeAdmission, member string, id *node.Identity) (*ledger.Entry, error) {
	adm, pseq, phash, err := s.checkNode(ctx, na, id.Public, id.TLSKey, id.Evidence)
	if err != nil {
		return nil, fmt.Errorf("kms: this founding node fails its own node policy: %w", err)
	}
	cert, err := s.issueNodeCert(member, adm.NodeID, id.TLSKey)
	if err != nil {
		return nil, err
	}
	return s.recordNode(ctx, state.NodeJoined{
		Member: member, NodeID: adm.NodeID, NodeKey: id.Public, Evidence: id.Evidence,
		EvidenceType: adm.EvidenceType, EvidenceSHA256: adm.EvidenceSHA256, Claims: adm.Claims, Simulated: adm.Simulated,
		PolicySeq: pseq, PolicySHA256: phash, Founder: true, TLSKey: id.TLSKey, Certificate: cert,
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
