package raftstore_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tkms-dev/tkms/internal/store"
)

// scrape returns n's raft metrics in the Prometheus text format.
func scrape(t *testing.T, n *node) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(n.Collector()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape %s: %d %s", n.id, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestCaughtUp: every node of a cluster is caught up once it applied what
// is committed (joining nodes are promoted to voters then), and its metrics say its state; a node with more to apply
// than it has (a joining node's floor) and a node cut off from the
// majority are not, and say why.
func TestCaughtUp(t *testing.T) {
	sealer, key := newKey(t)
	c := startCluster(t, t.TempDir(), sealer, key, store.Options{}, nil)
	defer c.Close()
	waitFor(t, "every node caught up and a voter", func() bool {
		for _, n := range c.nodes {
			if n.CaughtUp() != nil || !strings.Contains(scrape(t, n), `tkms_raft_members{suffrage="voter"} 3`) {
				return false
			}
		}
		return true
	})
	leaders := 0
	var follower *node
	for _, n := range c.nodes {
		m := scrape(t, n)
		for _, want := range []string{"tkms_raft_leader_known 1\n", "tkms_raft_caught_up 1\n", `tkms_raft_members{suffrage="voter"} 3` + "\n", "tkms_raft_commit_index ", "tkms_raft_applied_index "} {
			if !strings.Contains(m, want) {
				t.Errorf("%s's metrics lack %q:\n%s", n.id, want, m)
			}
		}
		if strings.Contains(m, `tkms_raft_state{state="leader"} 1`) {
			leaders++
		} else if strings.Contains(m, `tkms_raft_state{state="follower"} 1`) {
			follower = n
			if !strings.Contains(m, "tkms_raft_last_contact_seconds ") {
				t.Errorf("follower %s reports no last contact:\n%s", n.id, m)
			}
		}
	}
	if leaders != 1 || follower == nil {
		t.Fatalf("%d leaders in the metrics, follower %v; want one leader and a follower", leaders, follower)
	}

	// A floor past what the follower applied: not caught up.
	follower.RaiseCaughtUpFloor(follower.Raft().AppliedIndex() + 1000)
	if err := follower.CaughtUp(); err == nil || !strings.Contains(err.Error(), "catching up") {
		t.Errorf("a follower with 1000 indexes to apply: CaughtUp() = %v", err)
	}
	if m := scrape(t, follower); !strings.Contains(m, "tkms_raft_caught_up 0\n") {
		t.Errorf("a follower catching up reports:\n%s", m)
	}

	// The last node left: no leader, not caught up.
	var last *node
	for _, n := range c.nodes {
		if n != follower {
			n.Close()
			continue
		}
		last = n
	}
	waitFor(t, "the last node to lose its leader", func() bool {
		err := last.CaughtUp()
		return err != nil && strings.Contains(err.Error(), "no leader known")
	})
	if m := scrape(t, last); !strings.Contains(m, "tkms_raft_leader_known 0\n") || strings.Contains(m, `tkms_raft_state{state="leader"} 1`) {
		t.Errorf("a node alone of three reports:\n%s", m)
	}
}
