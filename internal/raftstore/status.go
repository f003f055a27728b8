package raftstore

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Status is a node's view of its cluster, served at GET /v1/cluster.
type Status struct {
	// Leader is the node id of the leader this node knows ("" during an
	// election or in a minority).
	Leader string `json:"leader"`
	// NodeID is this node.
	NodeID string `json:"node_id"`
	// CommitIndex and AppliedIndex are this node's raft indexes;
	// LedgerSize is the number of ledger entries it holds.
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LedgerSize   uint64       `json:"ledger_size"`
	Nodes        []NodeStatus `json:"nodes"`
}

// NodeStatus is one member of the cluster's configuration.
type NodeStatus struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address"` // the node-to-node address
	// URL is the node's API, known for this node only (Config.URL).
	URL string `json:"url,omitempty"`
	// Suffrage is voter or nonvoter (a joining node until it caught up).
	Suffrage string `json:"suffrage"`
	// State is the raft state of this node (Leader, Follower,
	// Candidate); for the others, leader or follower as this node knows.
	State string `json:"state"`
	// LastIndex is the last raft index this node holds (this node only).
	LastIndex uint64 `json:"last_index,omitempty"`
}

// Status returns the node's view of the cluster.
func (s *Store) Status() Status {
	st := Status{NodeID: s.cfg.NodeID, CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(), LedgerSize: s.local.Last()}
	st.Leader, _ = s.Leader()
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return st
	}
	for _, srv := range f.Configuration().Servers {
		n := NodeStatus{NodeID: string(srv.ID), Address: string(srv.Address), Suffrage: "voter", State: "follower"}
		if srv.Suffrage != raft.Voter {
			n.Suffrage = "nonvoter"
		}
		if n.NodeID == st.Leader {
			n.State = "leader"
		}
		if n.NodeID == s.cfg.NodeID {
			n.URL, n.State, n.LastIndex = s.cfg.URL, strings.ToLower(s.raft.State().String()), s.raft.LastIndex()
		}
		st.Nodes = append(st.Nodes, n)
	}
	return st
}

// WaitCaughtUp waits, at most until ctx ends, until this node knows a
// leader and has applied the cluster's log as far as it is committed, so
// that it serves the cluster's state rather than an old one. It reports
// whether it caught up.
func (s *Store) WaitCaughtUp(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := s.Leader(); id != "" {
			if c := s.raft.CommitIndex(); c > 0 && s.raft.AppliedIndex() >= c {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.closing:
			return false
		case <-t.C:
		}
	}
}
