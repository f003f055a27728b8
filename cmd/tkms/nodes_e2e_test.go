package main

// Confidential nodes with real tkms dev processes: a node whose simulated
// TEE reports another measurement is refused with its code and never
// listed; a node that satisfies the node policy receives the ledger's
// secrets through a node.joined entry, and the audit checks every node.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// serviceDoc is GET /v1/service.
type serviceDoc struct {
	LogKey string `json:"log_key"`
	Nodes  []struct {
		NodeID      string          `json:"node_id"`
		Member      string          `json:"member"`
		NodeKey     []byte          `json:"node_key"`
		Evidence    json.RawMessage `json:"evidence"`
		Seq         uint64          `json:"seq"`
		Endorsement *struct {
			Leaf []byte `json:"leaf"`
		} `json:"endorsement"`
		TLSKey      []byte `json:"tls_key"`
		Certificate []byte `json:"certificate"`
	} `json:"nodes"`
}

func getService(t *testing.T, base string) serviceDoc {
	t.Helper()
	resp, body := do(t, http.MethodGet, base+"/v1/service", nil)
	var d serviceDoc
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &d) != nil {
		t.Fatalf("GET /v1/service: %s\n%s", resp.Status, body)
	}
	return d
}

func TestClusterNodePolicy(t *testing.T) {
	dir := t.TempDir()
	a := &devNode{data: filepath.Join(dir, "a"), args: []string{"--cluster"}}
	a.start(t)
	waitCluster(t, "a leader", a.p.URL, voters(1))

	// Another measurement: refused, with the code and the claim named.
	other := hex.EncodeToString(bytes.Repeat([]byte{0x42}, 48))
	_, stderr, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "bad"), "--join", a.data, "--simulated-measurement", other)
	if code == 0 || !strings.Contains(stderr, "NODE_POLICY_DENIED") || !strings.Contains(stderr, "x-ms-sevsnpvm-launchmeasurement") {
		t.Fatalf("join with another measurement: exit %d, stderr:\n%s", code, stderr)
	}
	if st, err := getCluster(a.p.URL); err != nil || len(st.Nodes) != 1 {
		t.Fatalf("the refused node is in the cluster: %+v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad", "master.key")); err == nil {
		t.Fatal("the refused node holds a master key")
	}
	if svc := getService(t, a.p.URL); len(svc.Nodes) != 1 || svc.Nodes[0].Member != a.id {
		t.Fatalf("GET /v1/service lists %+v, want the founder alone", svc.Nodes)
	}

	// A node with the default measurement joins through a handoff entry.
	b := &devNode{data: filepath.Join(dir, "b"), args: []string{"--join", a.data}}
	b.start(t)
	waitCluster(t, "two voters", a.p.URL, voters(2))
	waitConverged(t, "after the join", []*devNode{a, b})
	svc := getService(t, b.p.URL)
	if len(svc.Nodes) != 2 || svc.Nodes[1].Member != b.id {
		t.Fatalf("GET /v1/service lists %+v, want the founder and %s", svc.Nodes, b.id)
	}
	mk, err := seal.ReadKeyFile(filepath.Join(a.data, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range svc.Nodes {
		if n.Endorsement == nil || len(n.NodeKey) != 32 || len(n.Evidence) == 0 {
			t.Fatalf("node %d: no endorsement, key or evidence: %+v", i, n)
		}
		e, err := ledger.UnmarshalLeaf(n.Endorsement.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		var nj state.NodeJoined
		if e.Type != ledger.TypeNodeJoined || json.Unmarshal(e.Body, &nj) != nil || nj.NodeID != n.NodeID || nj.EvidenceSHA256 == "" {
			t.Fatalf("node %d: the endorsed entry is %s %s", i, e.Type, e.Body)
		}
		if i == 1 && len(nj.Secrets) == 0 {
			t.Fatal("the joined node's entry holds no sealed secrets")
		}
		for _, enc := range [][]byte{mk, []byte(hex.EncodeToString(mk)), []byte(base64.StdEncoding.EncodeToString(mk)), []byte(base64.RawURLEncoding.EncodeToString(mk))} {
			if bytes.Contains(n.Endorsement.Leaf, enc) {
				t.Fatal("the node.joined entry holds the master key")
			}
		}
	}

	// The joined node holds the master key in memory only: no file of
	// its data directory holds it.
	noMasterKeyIn(t, b.data, mk)

	// A restarted node is a new node: its fresh key is admitted again
	// (checked against the node policy) and listed instead of the old
	// one, and the master key comes to it again in that node.joined
	// entry, before its service opens: it serves, and still writes no
	// file holding the key.
	old := svc.Nodes[1].NodeID
	b.p.stopClean(syscall.SIGTERM)
	b.start(t)
	waitConverged(t, "after the restart", []*devNode{a, b})
	noMasterKeyIn(t, b.data, mk)
	var acks ackLog
	rel := newReleaser(t, a.data, &acks)
	list, ok := rel.releasable(context.Background(), httpClient, a.p.URL)
	if !ok || len(list) == 0 {
		t.Fatal("no releasable key")
	}
	body, _ := json.Marshal(map[string]any{"attestation": rel.v1Ev, "wrapping_key": map[string]any{
		"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(rel.v1Pub)}})
	h := http.Header{"Authorization": {"Bearer " + readDevJSON(t, a.data).WorkloadToken}, "Content-Type": {"application/json"}}
	if resp, rb := doBody(t, http.MethodPost, b.p.URL+"/v1/keys/"+list[0].Kid+"/release", h, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("release at the restarted joined node: %s\n%s", resp.Status, rb)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		s := getService(t, a.p.URL)
		if len(s.Nodes) == 2 && s.Nodes[1].Member == b.id && s.Nodes[1].NodeID != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node's new key is not listed: %+v", s.Nodes)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The constitution makes members trust each joining node: a node that
	// satisfies the node policy waits for a trust_node proposal naming
	// its node id (this process's key), then joins.
	c := gov.DevConstitution()
	c.NodeTrust = gov.NodeTrustProposal
	propose := func(name string, args any) {
		t.Helper()
		raw, _ := json.Marshal(args)
		msg, err := devSigner(t, a.p).SignProposal([]gov.Action{{Name: name, Args: raw}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := postCOSETest(t, a.p.URL+"/v1/gov/proposals", msg); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s proposal: %s: %s", name, resp.Status, body)
		}
	}
	propose(gov.ActSetConstitution, c)
	cp := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "c"), "--join", a.data)
	m := cp.waitOutput(cp.stderr, regexp.MustCompile(`waiting for a trust_node proposal naming this node" node_id=([0-9a-f]{64})`))
	if st, err := getCluster(a.p.URL); err != nil || len(st.Nodes) != 2 {
		t.Fatalf("a node waiting for trust is in the cluster: %+v %v", st, err)
	}
	propose(gov.ActTrustNode, map[string]string{"node_id": m[1]})
	cp.waitOutput(cp.stdout, devListening)
	waitCluster(t, "three voters", a.p.URL, voters(3))
	if svc := getService(t, a.p.URL); len(svc.Nodes) != 3 || svc.Nodes[2].NodeID != m[1] {
		t.Fatalf("GET /v1/service lists %+v, want the trusted node %s third", svc.Nodes, m[1])
	}
	cp.stopClean(syscall.SIGTERM)

	// The audit checks every node.joined entry; against a node policy the
	// nodes do not satisfy, it fails.
	logKey := logKeyArg(t, a.p.URL)
	pol := filepath.Join(dir, "node-policy.json")
	os.WriteFile(pol, devReleasePolicy(), 0o600)
	out, _ := runAudit(t, 0, "--kms", b.p.URL, "--log-key", logKey, "--node-policy", pol, "--json")
	if !strings.Contains(out, `"node.joined": 4`) {
		t.Errorf("the audit counts no four node.joined entries (founder, join, restart, trusted join):\n%s", out)
	}
	strict := filepath.Join(dir, "strict.json")
	os.WriteFile(strict, []byte(`{"claims":{"x-ms-sevsnpvm-launchmeasurement":["`+other+`"]}}`), 0o600)
	out, _ = runAudit(t, 1, "--kms", b.p.URL, "--log-key", logKey, "--node-policy", strict, "--quiet")
	if !strings.Contains(out, "node policy does not grant") {
		t.Errorf("the audit against a stricter node policy:\n%s", out)
	}
	b.p.stopClean(syscall.SIGTERM)
	a.p.stopClean(syscall.SIGTERM)
}

// noMasterKeyIn fails if a file under dir holds the master key mk, raw,
// hex or base64, or if the master key file exists.
func noMasterKeyIn(t *testing.T, dir string, mk []byte) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "master.key")); err == nil {
		t.Fatalf("the joined node %s has a master key file", dir)
	}
	encs := [][]byte{mk, []byte(hex.EncodeToString(mk)), []byte(base64.StdEncoding.EncodeToString(mk)), []byte(base64.RawURLEncoding.EncodeToString(mk))}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, enc := range encs {
			if bytes.Contains(b, enc) {
				t.Errorf("%s holds the master key", path)
			}
		}
		return nil
	})
}
