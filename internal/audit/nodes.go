package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
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
// node key (REPORT_DATA[0:32] = SHA-256 of the key) and its TLS key, if
// any ([32:64]), whose node certificate the log key signed; and, with
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
	case len(nj.TLSKey) > 0:
		c.checkNodeCert(l, &nj, rep.GetReportData())
	}
	if c.nodePolicy == nil {
		return
	}
	if err := policy.Evaluate(*c.nodePolicy, nj.Claims); err != nil {
		c.violation(l.Seq, l.Type, "node %s (member %s) received the ledger's secrets, but the auditor's node policy does not grant its claims: %v", nj.NodeID, nj.Member, err)
	}
}

// checkNodeCert checks a node.joined entry's TLS key and node certificate:
// the evidence binds the key (REPORT_DATA[32:64] = its SHA-256), and the
// certificate, valid when the entry was written, is the service
// identity's (the log key's) for that key and node id.
func (c *checker) checkNodeCert(l *ledger.Leaf, nj *state.NodeJoined, reportData []byte) {
	want := sha256.Sum256(nj.TLSKey)
	if len(reportData) < 64 || !bytes.Equal(reportData[32:64], want[:]) {
		c.violation(l.Seq, l.Type, "node %s (member %s): the evidence's REPORT_DATA[32:64] does not bind its TLS key", nj.NodeID, nj.Member)
		return
	}
	if c.st.LogKey == nil {
		return // the state machine needs the log key first
	}
	sk, err := node.ServiceKey(c.st.LogKey.VerifierKey)
	if err != nil {
		return // checkLogKey reports it
	}
	if _, err := node.CheckPeer(nj.Certificate, sk, l.Time, func(id string) ([]byte, error) {
		if id != nj.NodeID {
			return nil, fmt.Errorf("the certificate names node %s", id)
		}
		return nj.TLSKey, nil
	}); err != nil {
		c.violation(l.Seq, l.Type, "node %s (member %s): its node certificate: %v", nj.NodeID, nj.Member, err)
	}
}
