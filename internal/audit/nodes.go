package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"

	"github.com/google/go-sev-guest/abi"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
)

// Node is a node the ledger's secrets were handed to (a node.joined entry).
type Node struct {
	Seq          uint64 `json:"seq"`
	Member       string `json:"member"`
	NodeID       string `json:"node_id"`
	EvidenceType string `json:"evidence_type"`
	Simulated    bool   `json:"simulated,omitempty"`
	Founder      bool   `json:"founder,omitempty"`
}

// checkNode checks an accepted node.joined entry: its evidence binds its
// node key (REPORT_DATA[0:32] = SHA-256 of the key) and, with
// Options.NodePolicy, the auditor's node policy grants its claims. The
// state machine already checked the node id and the evidence hash.
func (c *checker) checkNode(l *ledger.Leaf) {
	var nj state.NodeJoined
	if err := json.Unmarshal(l.Body, &nj); err != nil {
		return // the state machine rejected it
	}
	c.r.Nodes = append(c.r.Nodes, Node{Seq: l.Seq, Member: nj.Member, NodeID: nj.NodeID, EvidenceType: nj.EvidenceType, Simulated: nj.Simulated, Founder: nj.Founder})
	u, err := attest.DecodeUnverified(nj.Evidence)
	if err != nil {
		c.violation(l.Seq, l.Type, "node %s (member %s): the evidence does not decode: %v", nj.NodeID, nj.Member, err)
		return
	}
	rep, err := abi.ReportToProto(u.Report)
	want := sha256.Sum256(nj.NodeKey)
	switch {
	case err != nil:
		c.violation(l.Seq, l.Type, "node %s (member %s): the evidence's report does not decode: %v", nj.NodeID, nj.Member, err)
	case !bytes.Equal(rep.GetReportData()[:32], want[:]):
		c.violation(l.Seq, l.Type, "node %s (member %s): the evidence's REPORT_DATA does not bind the node key", nj.NodeID, nj.Member)
	}
	if c.nodePolicy == nil {
		return
	}
	if err := policy.Evaluate(*c.nodePolicy, nj.Claims); err != nil {
		c.violation(l.Seq, l.Type, "node %s (member %s) received the ledger's secrets, but the auditor's node policy does not grant its claims: %v", nj.NodeID, nj.Member, err)
	}
}
