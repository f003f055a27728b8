package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
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
//
// NodeID, Address and Suffrage come from the raft configuration this node
// holds. URL, State and LastIndex are what the member itself reports: the
// answering node asks every other member over the cluster API (mutual TLS,
// POST /cluster/v1/node) when it builds its Status, so a member's URL is
// the one it serves at now (a dev node that restarts on another port
// reports its new one) and its last index is its own, not the leader's
// estimate. Nothing is stored, so the view survives restarts and leader
// changes alike. A member that does not answer within a second is
// "unreachable"; its URL is then the one it last reported to this node
// since this node started, if any.
type NodeStatus struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address"` // the node-to-node address
	// URL is the node's API (its Config.URL).
	URL string `json:"url,omitempty"`
	// Suffrage is voter or nonvoter (a joining node until it caught up).
	Suffrage string `json:"suffrage"`
	// State is the raft state the node reports (leader, follower,
	// candidate), or unreachable.
	State string `json:"state"`
	// LastIndex is the last raft index the node holds (absent when
	// unreachable).
	LastIndex uint64 `json:"last_index,omitempty"`
}

// peerTimeout bounds how long Status waits for another member's answer.
const peerTimeout = time.Second

// nodeRequest asks a member for its own status; NodeID is the id the
// asking node's configuration gives the address, which the member checks.
type nodeRequest struct {
	NodeID string `json:"node_id"`
}

// self is this node's own view of itself.
func (s *Store) self() NodeStatus {
	return NodeStatus{NodeID: s.cfg.NodeID, URL: s.cfg.URL, State: strings.ToLower(s.raft.State().String()), LastIndex: s.raft.LastIndex()}
}

// serveNode answers POST /cluster/v1/node with this node's own status.
func (s *Store) serveNode(w http.ResponseWriter, r *http.Request) {
	var req nodeRequest
	if err := readJSON(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	s.nodeAsks.Add(1)
	if req.NodeID != s.cfg.NodeID {
		writeErr(w, http.StatusConflict, fmt.Errorf("raftstore: this is node %s, not %s", s.cfg.NodeID, req.NodeID))
		return
	}
	writeJSON(w, http.StatusOK, s.self())
}

// Status returns the cluster as this node sees it: its configuration, and
// what every member reports of itself (see NodeStatus). It waits at most
// about a second for the other members.
func (s *Store) Status() Status {
	st := Status{NodeID: s.cfg.NodeID, CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(), LedgerSize: s.local.Last()}
	st.Leader, _ = s.Leader()
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return st
	}
	servers := f.Configuration().Servers
	st.Nodes = make([]NodeStatus, len(servers))
	for i, srv := range servers {
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			st.Nodes[i] = s.self()
		}
	}
	s.askPeers(servers, st.Nodes)
	for i, srv := range servers {
		n := &st.Nodes[i]
		n.NodeID, n.Address, n.Suffrage = string(srv.ID), string(srv.Address), "voter"
		if srv.Suffrage != raft.Voter {
			n.Suffrage = "nonvoter"
		}
	}
	return st
}

type peerView struct {
	at time.Time // when the call that got n started
	n  NodeStatus
}

// askPeers fills nodes[i] for every member of servers but this node, by
// asking them all at once (at most peerTimeout). GET /v1/cluster is public
// and each answer costs a call to every other member, so concurrent
// requests share: a caller that waited while another asked takes the
// answers of calls that started after it arrived, which are as fresh as
// its own would be.
func (s *Store) askPeers(servers []raft.Server, nodes []NodeStatus) {
	arrived := time.Now()
	s.peerViewMu.Lock()
	defer s.peerViewMu.Unlock()
	if s.peerViews == nil {
		s.peerViews = map[raft.ServerID]peerView{}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	var wg sync.WaitGroup
	asked := make([]bool, len(servers))
	for i, srv := range servers {
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			continue
		}
		if v, ok := s.peerViews[srv.ID]; ok && !v.at.Before(arrived) {
			nodes[i] = v.n
			continue
		}
		asked[i] = true
		wg.Go(func() { nodes[i] = s.askNode(ctx, srv) })
	}
	wg.Wait()
	for i, srv := range servers {
		if asked[i] {
			s.peerViews[srv.ID] = peerView{at: start, n: nodes[i]}
		}
	}
}

// askNode asks the member srv for its own status.
func (s *Store) askNode(ctx context.Context, srv raft.Server) NodeStatus {
	id := string(srv.ID)
	var n NodeStatus
	err := post(ctx, s.client, s.cfg.TLS, string(srv.Address), "/cluster/v1/node", nodeRequest{NodeID: id}, &n)
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	if err != nil || n.NodeID != id {
		return NodeStatus{URL: s.peerURLs[id], State: "unreachable"}
	}
	if s.peerURLs == nil {
		s.peerURLs = map[string]string{}
	}
	s.peerURLs[id] = n.URL
	return n
}

// RaiseCaughtUpFloor records that this node is caught up only once it
// applied raft index i (the leader's commit index when it admitted the
// node, JoinResult.CommitIndex).
func (s *Store) RaiseCaughtUpFloor(i uint64) {
	for {
		old := s.caughtUpFloor.Load()
		if i <= old || s.caughtUpFloor.CompareAndSwap(old, i) {
			return
		}
	}
}

// WaitCaughtUp waits, at most until ctx ends, until this node knows a
// leader and has applied the cluster's log as far as it is committed (and
// at least as far as the floor RaiseCaughtUpFloor set), so that it serves
// the cluster's state rather than an old one. It reports whether it
// caught up.
func (s *Store) WaitCaughtUp(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if s.CaughtUp() == nil {
			return true
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

// CaughtUp reports, without waiting, whether this node serves the
// cluster's state: it knows a leader and has applied the cluster's log as
// far as it is committed (and at least as far as the floor
// RaiseCaughtUpFloor set). Otherwise it says why not. GET /readyz asks it:
// a node cut off from its leader, or still catching up, is not ready.
func (s *Store) CaughtUp() error {
	if id, _ := s.Leader(); id == "" {
		return errors.New("cluster: no leader known (an election, or this node is cut off from the majority)")
	}
	committed, floor, applied := s.raft.CommitIndex(), s.caughtUpFloor.Load(), s.raft.AppliedIndex()
	c := max(committed, floor)
	if c == 0 {
		return errors.New("cluster: nothing committed yet")
	}
	if applied < c {
		return fmt.Errorf("cluster: catching up: applied raft index %d of %d", applied, c)
	}
	return nil
}
