package state

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
)

// NodeJoined is the body of a node.joined entry: which attested node
// received the ledger's secrets, on what evidence, under which node
// policy. Everything in it is public; Secrets is HPKE ciphertext that only
// the holder of NodeKey's private key opens (internal/node).
type NodeJoined struct {
	// Member is the cluster member id the node joined as.
	Member string `json:"member"`
	// NodeID is the hex SHA-256 of NodeKey.
	NodeID string `json:"node_id"`
	// NodeKey is the node's X25519 public key, fresh at each process start.
	NodeKey []byte `json:"node_key"`
	// Evidence is the node's attestation object; its REPORT_DATA[0:32] is
	// the SHA-256 of NodeKey.
	Evidence       []byte         `json:"evidence"`
	EvidenceType   string         `json:"evidence_type"`
	EvidenceSHA256 string         `json:"evidence_sha256"`
	Claims         map[string]any `json:"claims"`
	Simulated      bool           `json:"simulated,omitempty"`
	// PolicySeq is the set_node_policy proposal in force (0: the node
	// policy of the admitting node's configuration, before governance set
	// one); PolicySHA256 the hash of that policy (policy.Hash).
	PolicySeq    uint64 `json:"policy_seq"`
	PolicySHA256 string `json:"policy_sha256"`
	// TrustSeq is the trust_node proposal that named the node, when the
	// constitution asks for one (node_trust "proposal").
	TrustSeq uint64 `json:"trust_seq,omitempty"`
	// Founder marks the node that created the ledger's secrets: it
	// received none.
	Founder bool `json:"founder,omitempty"`
	// Secrets are the ledger's secrets HPKE-sealed to NodeKey: the
	// ledger secret of version SecretVersion (rekey.go), which must be the
	// version in force when the entry is applied (0: an entry written
	// before versions, version 1).
	Secrets       []byte `json:"secrets,omitempty"`
	SecretVersion uint32 `json:"secret_version,omitempty"`
	// TLSKey is the node's TLS public key (PKIX DER); the evidence's
	// REPORT_DATA[32:64] is its SHA-256. Certificate is the node
	// certificate (X.509 DER) the service identity issued for it
	// (internal/node cert.go): peers accept node-to-node TLS only from
	// it, while the node is trusted. Both are absent from entries
	// written before node certificates.
	TLSKey      []byte `json:"tls_key,omitempty"`
	Certificate []byte `json:"certificate,omitempty"`
}

// Node is an applied node.joined entry.
type Node struct {
	NodeJoined
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// Check checks what the state machine requires of a node.joined body.
func (n *NodeJoined) Check() error {
	switch {
	case n.Member == "":
		return errors.New("node.joined names no member")
	case len(n.NodeKey) != 32:
		return fmt.Errorf("node key of %d bytes, want 32 (X25519)", len(n.NodeKey))
	case len(n.Evidence) == 0:
		return errors.New("node.joined without evidence")
	case n.Founder == (len(n.Secrets) > 0):
		return errors.New("node.joined: the founder receives no secrets, every other node does")
	}
	h := sha256.Sum256(n.NodeKey)
	if id := hex.EncodeToString(h[:]); n.NodeID != id {
		return fmt.Errorf("node id %s is not the SHA-256 of the node key (%s)", n.NodeID, id)
	}
	if len(n.Certificate) > 0 {
		c, err := x509.ParseCertificate(n.Certificate)
		if err != nil {
			return fmt.Errorf("node.joined: the node certificate: %w", err)
		}
		if !bytes.Equal(c.RawSubjectPublicKeyInfo, n.TLSKey) || c.Subject.CommonName != n.NodeID {
			return errors.New("node.joined: the node certificate is not for the node's TLS key and node id")
		}
	}
	h = sha256.Sum256(n.Evidence)
	if eh := hex.EncodeToString(h[:]); n.EvidenceSHA256 != eh {
		return fmt.Errorf("evidence_sha256 %s is not the SHA-256 of the evidence (%s)", n.EvidenceSHA256, eh)
	}
	return nil
}

func (s *State) applyNodeJoined(e *ledger.Entry) error {
	var n NodeJoined
	if err := decodeBody(e.Body, &n); err != nil {
		return err
	}
	if err := n.Check(); err != nil {
		return err
	}
	if at, ok := s.RemovedNodes[n.Member]; ok {
		return fmt.Errorf("%s was removed from the cluster at seq %d", n.Member, at)
	}
	if s.Node(n.NodeID) != nil {
		return fmt.Errorf("node %s joined already", n.NodeID)
	}
	if cur := s.SecretVersion(); !n.Founder && n.SecretVersion != 0 && n.SecretVersion != cur {
		// Admitted while a rekey was being recorded: the admission is
		// made again with the version now in force.
		return fmt.Errorf("%w: node %s received ledger-secret version %d, but version %d is in force", ErrStaleSecret, n.NodeID, n.SecretVersion, cur)
	}
	if s.Constitution != nil && s.Constitution.NodeTrust == gov.NodeTrustProposal && !n.Founder {
		if at := s.TrustedNodeIDs[n.NodeID]; at == 0 || at != n.TrustSeq {
			return fmt.Errorf("node %s received the ledger's secrets, but the constitution wants a trust_node proposal naming it (trust_seq %d, trusted at %d)", n.NodeID, n.TrustSeq, at)
		}
	}
	s.Nodes = append(s.Nodes, &Node{NodeJoined: n, Seq: e.Seq, Time: e.Time})
	return nil
}

// Node returns the node with node id id, or nil.
func (s *State) Node(id string) *Node {
	for _, n := range s.Nodes {
		if n.NodeID == id {
			return n
		}
	}
	return nil
}

// TrustedNodes returns the nodes whose member is still in the cluster: for
// each member, the last node that joined as it.
func (s *State) TrustedNodes() []*Node {
	last := map[string]int{}
	for i, n := range s.Nodes {
		last[n.Member] = i
	}
	var out []*Node
	for i, n := range s.Nodes {
		if _, removed := s.RemovedNodes[n.Member]; last[n.Member] == i && !removed && n.Seq > s.lastRecoverySeq() {
			out = append(out, n)
		}
	}
	return out
}

// TrustedNode returns the node with node id id if the ledger trusts it now
// (it is the last node of its member, and the member was not removed),
// else nil.
func (s *State) TrustedNode(id string) *Node {
	n := s.Node(id)
	if n == nil || n.Seq < s.lastRecoverySeq() {
		return nil
	}
	if _, removed := s.RemovedNodes[n.Member]; removed {
		return nil
	}
	for i := len(s.Nodes) - 1; i >= 0; i-- {
		if s.Nodes[i].Member == n.Member {
			if s.Nodes[i] != n {
				return nil // a later node of the member (a restart) replaced it
			}
			return n
		}
	}
	return nil
}

// lastRecoverySeq is the seq of the last service.recovered entry (0: none).
// The nodes admitted before a recovery are not trusted after it: the
// recovery presumed them lost, and one still running (cut off, say) gets
// nothing more; its peers must join the recovered node again.
func (s *State) lastRecoverySeq() uint64 {
	if len(s.Recoveries) == 0 {
		return 0
	}
	return s.Recoveries[len(s.Recoveries)-1].Seq
}
