package raftstore

import (
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// raftStates are the values of tkms_raft_state's state label.
var raftStates = []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown}

var (
	descState = prometheus.NewDesc("tkms_raft_state",
		"1 for this node's raft state (follower, candidate, leader, shutdown), 0 for the others.", []string{"state"}, nil)
	descLeader = prometheus.NewDesc("tkms_raft_leader_known",
		"1 if this node knows a leader of its cluster, else 0 (an election, or cut off from the majority).", nil, nil)
	descCaughtUp = prometheus.NewDesc("tkms_raft_caught_up",
		"1 if this node knows a leader and has applied what is committed (GET /readyz requires it), else 0.", nil, nil)
	descCommit = prometheus.NewDesc("tkms_raft_commit_index",
		"The last raft index this node knows to be committed.", nil, nil)
	descApplied = prometheus.NewDesc("tkms_raft_applied_index",
		"The last raft index this node applied to its ledger.", nil, nil)
	descLast = prometheus.NewDesc("tkms_raft_last_index",
		"The last raft index in this node's raft log.", nil, nil)
	descMembers = prometheus.NewDesc("tkms_raft_members",
		"Members of the cluster's raft configuration, by suffrage (voter, nonvoter).", []string{"suffrage"}, nil)
	descContact = prometheus.NewDesc("tkms_raft_last_contact_seconds",
		"On a follower, the time since its leader last reached it.", nil, nil)
)

// Collector returns the node's raft state as Prometheus metrics, read
// when /metrics is scraped: its state, whether it knows a leader and is
// caught up, its raft indexes, the configuration's members and, on a
// follower, the time since the leader's last contact. It asks no other
// node.
func (s *Store) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Store }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descLeader, descCaughtUp, descCommit, descApplied, descLast, descMembers, descContact} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.raft
	state := r.State()
	for _, st := range raftStates {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, b2f(st == state), strings.ToLower(st.String()))
	}
	id, _ := c.s.Leader()
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, b2f(id != ""))
	ch <- prometheus.MustNewConstMetric(descCaughtUp, prometheus.GaugeValue, b2f(c.s.CaughtUp() == nil))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(r.LastIndex()))
	if f := r.GetConfiguration(); f.Error() == nil {
		var voters, nonvoters int
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(voters), "voter")
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(nonvoters), "nonvoter")
	}
	if last := r.LastContact(); state == raft.Follower && !last.IsZero() {
		ch <- prometheus.MustNewConstMetric(descContact, prometheus.GaugeValue, time.Since(last).Seconds())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
