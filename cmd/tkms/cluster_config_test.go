package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestClusterConfigValidate: each malformed cluster setting is named.
func TestClusterConfigValidate(t *testing.T) {
	valid := func() *ClusterConfig {
		return &ClusterConfig{NodeID: "kms-1", Listen: "127.0.0.1:8001", CertFile: "n.pem", KeyFile: "n.key", CAFile: "ca.pem"}
	}
	for _, tc := range []struct {
		name string
		edit func(*ClusterConfig)
		want string // "" valid
	}{
		{"minimal", func(*ClusterConfig) {}, ""},
		{"public url", func(c *ClusterConfig) { c.PublicURL = "https://kms-1.example.org" }, ""},
		{"public url with path", func(c *ClusterConfig) { c.PublicURL = "http://10.0.0.1:8000/" }, ""},
		{"public url relative", func(c *ClusterConfig) { c.PublicURL = "kms-1.example.org" }, "cluster.public_url"},
		{"public url other scheme", func(c *ClusterConfig) { c.PublicURL = "ftp://kms-1" }, "cluster.public_url"},
		{"public url no host", func(c *ClusterConfig) { c.PublicURL = "https://" }, "cluster.public_url"},
		{"node id with slash", func(c *ClusterConfig) { c.NodeID = "a/b" }, "cluster.node_id"},
		{"no node id", func(c *ClusterConfig) { c.NodeID = "" }, "cluster.node_id"},
		{"listen without port", func(c *ClusterConfig) { c.Listen = "127.0.0.1" }, "cluster.listen"},
		{"no ca", func(c *ClusterConfig) { c.CAFile = "" }, "ca_file"},
		{"no operator's CA at all", func(c *ClusterConfig) { c.CAFile, c.CertFile, c.KeyFile = "", "", "" }, ""},
		{"service key", func(c *ClusterConfig) {
			c.ServiceKey = "tkms/tkms-dev/21f91b39+7d30b654+AcRrEUzTqrPeXDMhFK0y0zaL8or7qTo2qbPGY7XadiU2"
		}, ""},
		{"service key not a note key", func(c *ClusterConfig) { c.ServiceKey = "abc" }, "cluster.service_key"},
		{"attester", func(c *ClusterConfig) { c.Attester = "tpm" }, "cluster.attester"},
		{"measurement", func(c *ClusterConfig) { c.SimulatedMeasurement = "abcd" }, "cluster.simulated_measurement"},
		{"node policy", func(c *ClusterConfig) { c.NodePolicy = json.RawMessage(`{"anyOf":7}`) }, "cluster.node_policy"},
		{"raft tuning", func(c *ClusterConfig) {
			c.Raft = &RaftConfig{SnapshotThreshold: 16, TrailingLogs: 4, SnapshotInterval: "200ms"}
		}, ""},
		{"raft interval not a duration", func(c *ClusterConfig) { c.Raft = &RaftConfig{SnapshotInterval: "2"} }, "cluster.raft.snapshot_interval"},
		{"raft interval too short", func(c *ClusterConfig) { c.Raft = &RaftConfig{SnapshotInterval: "1ms"} }, "cluster.raft.snapshot_interval"},
		{"raft timeouts", func(c *ClusterConfig) { c.Raft = &RaftConfig{HeartbeatTimeout: "700ms", ElectionTimeout: "700ms"} }, ""},
		{"raft heartbeat timeout", func(c *ClusterConfig) { c.Raft = &RaftConfig{HeartbeatTimeout: "fast"} }, "cluster.raft.heartbeat_timeout"},
		{"raft election timeout", func(c *ClusterConfig) { c.Raft = &RaftConfig{ElectionTimeout: "10ms"} }, "cluster.raft.election_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(c)
			errs := c.validate()
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("valid configuration refused: %v", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want one naming %s", errs, tc.want)
			}
		})
	}
}
