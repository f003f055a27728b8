package main

// Node-to-node TLS between real tkms dev processes: every trusted node's
// certificate, listed by GET /v1/service, is the service identity's
// endorsement of its attested TLS key; a node removed by governance and
// left running is refused at the TLS handshake by its former peers, and
// nothing written after its removal reaches its ledger.

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/node"
)

// checkNodeCerts checks, as a client of GET /v1/service can, that each
// listed node's certificate is the service identity's (the log key's) for
// the node's TLS key.
func checkNodeCerts(t *testing.T, base string, want int) {
	t.Helper()
	svc := getService(t, base)
	key, err := node.ServiceKey(svc.LogKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Nodes) != want {
		t.Fatalf("GET /v1/service lists %d nodes, want %d", len(svc.Nodes), want)
	}
	for _, n := range svc.Nodes {
		listed := func(id string) ([]byte, error) {
			if id != n.NodeID {
				return nil, errors.New("not this node")
			}
			return n.TLSKey, nil
		}
		if id, err := node.CheckPeer(n.Certificate, key, time.Now(), listed); err != nil || id != n.NodeID {
			t.Fatalf("node %s (%s): its certificate: %v", n.NodeID, n.Member, err)
		}
	}
}

func TestClusterRemovedNodeTLS(t *testing.T) {
	nodes := startUnlimitedDevCluster(t, t.TempDir(), 3, nil)
	waitSameView(t, nodes)
	checkNodeCerts(t, nodes[1].p.URL, 3)

	// Governance removes a follower, which goes on running.
	st, _ := getCluster(nodes[0].p.URL)
	gone, stay := nodes[2], []*devNode{nodes[0], nodes[1]}
	if gone.id == st.Leader {
		gone, stay = nodes[1], []*devNode{nodes[0], nodes[2]}
	}
	args, _ := json.Marshal(map[string]string{"node_id": gone.id})
	msg, err := devSigner(t, stay[0].p).SignProposal([]gov.Action{{Name: "remove_node", Args: args}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := postCOSETest(t, stay[0].p.URL+"/v1/gov/proposals", msg); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("remove_node proposal: %s: %s", resp.Status, body)
	}
	for _, n := range stay {
		waitCluster(t, "two nodes", n.p.URL, func(s clusterStatus) bool { return s.Leader != "" && s.Leader != gone.id && len(s.Nodes) == 2 })
	}
	checkNodeCerts(t, stay[0].p.URL, 2)

	// Its former peers refuse its TLS: asked for its view of the cluster
	// it asks them over the cluster API, and finds them unreachable; they
	// log the refused handshake with the code of the failed check.
	refusals := func() int {
		return strings.Count(stay[0].p.stderr.String()+stay[1].p.stderr.String(), "TLS handshake failed")
	}
	waitRefused := func(what string, after int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			s, err := getCluster(gone.p.URL)
			unreachable := err == nil && len(s.Nodes) > 0
			for _, m := range s.Nodes {
				if m.NodeID != gone.id && m.State != "unreachable" {
					unreachable = false
				}
			}
			if unreachable && refusals() > after {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the removed node's view %+v (%v), %d refused handshakes logged", what, s, err, refusals())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitRefused("after the removal", 0)
	if out := stay[0].p.stderr.String() + stay[1].p.stderr.String(); !strings.Contains(out, node.CodePeerNotTrusted) {
		t.Error("no peer logged the removed node's refusal with its code")
	}
	removedAt := logSize(t, gone.p.URL)

	// Entries written after the removal reach the others, never it.
	r := refresh(t, stay[1].p.URL, "")
	size := waitConvergedSize(t, stay)
	if size <= removedAt {
		t.Fatalf("the refresh (%s) wrote nothing: size %d", r.Kid, size)
	}
	waitRefused("after the refresh", refusals())
	if got := logSize(t, gone.p.URL); got >= size {
		t.Fatalf("the removed node's ledger has %d entries, the cluster's %d: entries written after its removal reached it", got, size)
	}
	for _, n := range nodes {
		n.p.stopClean(syscall.SIGTERM)
	}
}

// waitConvergedSize waits until the nodes serve one checkpoint and returns
// its size.
func waitConvergedSize(t *testing.T, nodes []*devNode) int64 {
	t.Helper()
	waitConverged(t, "the remaining nodes", nodes)
	return logSize(t, nodes[0].p.URL)
}
