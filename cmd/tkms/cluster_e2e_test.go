package main

// Clusters of real tkms dev processes (tkms dev --cluster, tkms dev --join):
// the leader killed with SIGKILL under a release storm against every node,
// a minority cut off by a TCP proxy, bad joins.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/tlscert/tlscerttest"
	"github.com/tkms-dev/tkms/internal/translog"
)

// clusterStatus is GET /v1/cluster.
type clusterStatus struct {
	Leader      string `json:"leader"`
	NodeID      string `json:"node_id"`
	CommitIndex uint64 `json:"commit_index"`
	Nodes       []struct {
		NodeID    string `json:"node_id"`
		Suffrage  string `json:"suffrage"`
		URL       string `json:"url"`
		State     string `json:"state"`
		LastIndex uint64 `json:"last_index"`
	} `json:"nodes"`
}

func getCluster(base string) (clusterStatus, error) {
	var s clusterStatus
	resp, err := httpClient.Get(base + "/v1/cluster")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /v1/cluster: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// devNode is one node of a dev cluster: its data directory, the arguments
// that (re)start it, and its process while it runs.
type devNode struct {
	data string
	args []string
	p    *proc
	id   string
}

func (n *devNode) start(t *testing.T) {
	t.Helper()
	n.p = startDev(t, n.data, n.args...)
	n.id = devNodeID(t, n.data)
}

// devNodeID reads the node id of a dev cluster node from its dev.json.
func devNodeID(t *testing.T, dir string) string {
	t.Helper()
	var d struct {
		NodeID string `json:"node_id"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil || json.Unmarshal(raw, &d) != nil || d.NodeID == "" {
		t.Fatalf("dev.json of %s names no node: %v\n%s", dir, err, raw)
	}
	return d.NodeID
}

// waitCluster polls until cond holds for the cluster as node n sees it.
func waitCluster(t *testing.T, what string, base string, cond func(clusterStatus) bool) clusterStatus {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := getCluster(base)
		if err == nil && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (last: %+v, %v)", what, s, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func voters(n int) func(clusterStatus) bool {
	return func(s clusterStatus) bool {
		v := 0
		for _, m := range s.Nodes {
			if m.Suffrage == "voter" {
				v++
			}
		}
		return s.Leader != "" && v == n
	}
}

// waitSameView waits until GET /v1/cluster on every node lists every node
// with its API URL, its state and a last index, and all name the same
// leader (in one round, so an election meanwhile is waited out).
func waitSameView(t *testing.T, nodes []*devNode) {
	t.Helper()
	urls := map[string]string{}
	for _, n := range nodes {
		urls[n.id] = n.p.URL
	}
	ok := func(s clusterStatus) bool {
		if s.Leader == "" || len(s.Nodes) != len(nodes) {
			return false
		}
		for _, m := range s.Nodes {
			want := "follower"
			if m.NodeID == s.Leader {
				want = "leader"
			}
			if m.URL != urls[m.NodeID] || m.State != want || m.LastIndex == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var views []string
		leaders := map[string]bool{}
		for _, n := range nodes {
			s, err := getCluster(n.p.URL)
			views = append(views, fmt.Sprintf("%s: %+v %v", n.id, s, err))
			if err == nil && ok(s) {
				leaders[s.Leader] = true
			} else {
				leaders[""] = true
			}
		}
		if len(leaders) == 1 && !leaders[""] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes' GET /v1/cluster do not agree:\n%s", strings.Join(views, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitConverged waits until every node serves the same checkpoint.
func waitConverged(t *testing.T, what string, nodes []*devNode) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var cps []string
		for _, n := range nodes {
			_, body := do(t, http.MethodGet, n.p.URL+"/log/checkpoint", nil)
			cps = append(cps, string(body))
		}
		same := true
		for _, c := range cps[1:] {
			same = same && c == cps[0]
		}
		if same {
			return cps[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the nodes serve different checkpoints:\n%s", what, strings.Join(cps, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDevCluster starts size dev nodes with the configuration file cfg;
// pre, if set, adjusts each node's arguments before its first start.
func startDevCluster(t *testing.T, dir, cfg string, size int, pre func(i int, n *devNode)) []*devNode {
	t.Helper()
	var nodes []*devNode
	for i := range size {
		n := &devNode{data: filepath.Join(dir, fmt.Sprint("n", i+1)), args: []string{"--config", cfg, "--cluster"}}
		if i > 0 {
			n.args = []string{"--config", cfg, "--join", nodes[0].data}
		}
		if pre != nil {
			pre(i, n)
		}
		n.start(t)
		nodes = append(nodes, n)
	}
	waitCluster(t, fmt.Sprintf("%d voters", size), nodes[0].p.URL, voters(size))
	return nodes
}

// startUnlimitedDevCluster starts size dev nodes in dir without rate
// limits, whose stderr is logged if the test fails; cluster, if set, is
// the configuration's cluster section (its raft tuning).
func startUnlimitedDevCluster(t *testing.T, dir string, size int, cluster map[string]any) []*devNode {
	t.Helper()
	cfg := filepath.Join(dir, "tkms.json")
	c := map[string]any{"limits": map[string]any{"per_address_rate": 0, "per_identity_rate": 0}}
	if cluster != nil {
		c["cluster"] = cluster
	}
	writeJSONFile(t, cfg, c)
	nodes := startDevCluster(t, dir, cfg, size, nil)
	for _, n := range nodes {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("stderr of %s:\n%s", n.id, n.p.stderr)
			}
		})
	}
	return nodes
}

// TestClusterKillLeader: a release storm against all the nodes (three, or
// TKMS_CLUSTER_NODES) while the leader is killed with SIGKILL and
// restarted, cycle after cycle (TKMS_CLUSTER_CYCLES, default 2;
// scripts/cluster-drill.sh runs 20; TKMS_CLUSTER_RAFT, a JSON object, is
// the configuration's cluster.raft). Every acknowledged release's receipt
// proves its entry on every node, the nodes converge to one checkpoint,
// and tkms audit passes against each node in turn with one state file.
// Then the first node is stopped, and the dev.json of every node works
// against every node still running.
func TestClusterKillLeader(t *testing.T) {
	cycles, size := 2, 3
	if s := os.Getenv("TKMS_CLUSTER_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("TKMS_CLUSTER_NODES"); s != "" {
		size, _ = strconv.Atoi(s)
	}
	killLeader(t, size, cycles)
}

// TestClusterKillLeaderFiveNodes is TestClusterKillLeader on five nodes,
// one cycle (NODES=5 scripts/cluster-drill.sh runs 20).
func TestClusterKillLeaderFiveNodes(t *testing.T) { killLeader(t, 5, 1) }

func killLeader(t *testing.T, size, cycles int) {
	dir := t.TempDir()
	var cluster map[string]any
	if s := os.Getenv("TKMS_CLUSTER_RAFT"); s != "" {
		cluster = map[string]any{"raft": json.RawMessage(s)}
		t.Logf("cluster.raft %s", s)
	}
	nodes := startUnlimitedDevCluster(t, dir, size, cluster)
	waitSameView(t, nodes)
	logKey := logKeyArg(t, nodes[0].p.URL)
	var acks ackLog
	rel := newReleaser(t, nodes[0].data, &acks)
	receipts := newReceiptChecker(t, logKey)
	auditState := filepath.Join(dir, "audit.json")
	// Any node's dev.json works against every node.
	token := readDevJSON(t, nodes[2].data).WorkloadToken
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var elected, committed []time.Duration

	for c := range cycles {
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{}
		hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		var wg sync.WaitGroup
		for i, n := range nodes {
			for g, api := range []string{"app", "v1"} {
				wg.Go(func() {
					rel.loop(ctx, hc, n.p.URL, token, rand.New(rand.NewPCG(seed, uint64(c*100+i*10+g))), true, api)
				})
			}
		}
		time.Sleep(200*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond))))
		st, err := getCluster(nodes[0].p.URL)
		if err != nil || st.Leader == "" {
			t.Fatalf("cycle %d: no leader: %+v %v", c, st, err)
		}
		var victim *devNode
		var rest []*devNode
		for _, n := range nodes {
			if n.id == st.Leader {
				victim = n
			} else {
				rest = append(rest, n)
			}
		}
		if victim == nil {
			t.Fatalf("cycle %d: the leader %s is none of the nodes", c, st.Leader)
		}
		killed := time.Now()
		victim.p.stop(syscall.SIGKILL)
		// The survivors elect a leader and go on releasing: the failover
		// ends with the first release whose request was sent after the
		// kill and was acknowledged (its entry committed and applied).
		waitCluster(t, "a new leader", rest[0].p.URL, func(s clusterStatus) bool { return s.Leader != "" && s.Leader != victim.id })
		elected = append(elected, time.Since(killed))
		var after []ack
		deadline := time.Now().Add(60 * time.Second)
		for len(after) < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			after = after[:0]
			for _, a := range acks.all() {
				if a.sent.After(killed) {
					after = append(after, a)
				}
			}
		}
		if len(after) < 3 {
			t.Fatalf("cycle %d: %d releases sent after the leader was killed were acknowledged in 60 s", c, len(after))
		}
		first := after[0].at
		for _, a := range after {
			if a.at.Before(first) {
				first = a.at
			}
		}
		committed = append(committed, first.Sub(killed))
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		rel.report(t, fmt.Sprintf("cycle %d", c))
		victim.start(t) // the same command rejoins
		waitConverged(t, fmt.Sprintf("cycle %d", c), nodes)
		all := acks.all()
		for _, n := range nodes {
			receipts.check(t, fmt.Sprintf("cycle %d, node %s", c, n.id), n.p.URL, all)
			runAudit(t, 0, "--kms", n.p.URL, "--log-key", logKey, "--state", auditState, "--quiet")
		}
		if t.Failed() {
			t.Fatalf("cycle %d failed", c)
		}
	}
	// Only leaders rotate, once per slot: the first key is the only
	// scheduled one, whichever node led when.
	scheduled := 0
	for _, k := range allKeys(t, nodes[1].p.URL) {
		if k.Reason == "scheduled" {
			scheduled++
		}
	}
	if scheduled != 1 {
		t.Errorf("%d scheduled keys after %d leader kills, want 1", scheduled, cycles)
	}
	devJSONWhileFirstDown(t, nodes, rel)
	for _, n := range nodes[1:] {
		n.p.stopClean(syscall.SIGTERM)
	}
	t.Logf("%d nodes, %d cycles, %d releases acknowledged with receipts, answers %v", size, cycles, len(acks.all()), rel.statuses)
	t.Logf("from SIGKILL to a new leader: %s", durationStats(elected))
	t.Logf("from SIGKILL to the first committed write (a release sent after the kill, acknowledged): %s", durationStats(committed))
}

// durationStats is "median M, p99 P, max X; sorted: ..." of ds (p99 of
// fewer than 100 is the largest but one of every hundred, so the max).
func durationStats(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	if len(s) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, d := range s {
		fmt.Fprintf(&b, " %.2f", d.Seconds())
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	p99 := s[min(len(s)-1, (len(s)*99+99)/100-1)]
	return fmt.Sprintf("median %.2f s, p99 %.2f s, max %.2f s over %d; sorted (s):%s", med.Seconds(), p99.Seconds(), s[len(s)-1].Seconds(), len(s), b.String())
}

// devJSONWhileFirstDown stops the first node and checks that the
// dev.json of every node, the stopped one's too, works against every node
// still running: its workload_token releases a key, its log_public_key
// verifies the node's checkpoint, and its member key's governance
// proposal (a rotation) is accepted.
func devJSONWhileFirstDown(t *testing.T, nodes []*devNode, rel *releaser) {
	t.Helper()
	rel.retryFor = time.Minute // an election may follow the stop
	defer func() { rel.retryFor = 0 }()
	nodes[0].p.stopClean(syscall.SIGTERM)
	running := nodes[1:]
	waitCluster(t, "a leader without the first node", running[0].p.URL, func(s clusterStatus) bool { return s.Leader != "" && s.Leader != nodes[0].id })
	for _, from := range nodes {
		var d struct {
			WorkloadToken string `json:"workload_token"`
			LogPublicKey  string `json:"log_public_key"`
			MemberKey     string `json:"member_key"`
		}
		raw := readFile(t, filepath.Join(from.data, "dev.json"))
		if err := json.Unmarshal(raw, &d); err != nil || d.WorkloadToken == "" || d.LogPublicKey == "" || d.MemberKey == "" {
			t.Fatalf("dev.json of %s: %v\n%s", from.id, err, raw)
		}
		v, err := translog.NewVerifier(d.LogPublicKey)
		if err != nil {
			t.Fatalf("log_public_key of %s: %v", from.id, err)
		}
		member, err := gov.NewFileSigner(readFile(t, d.MemberKey))
		if err != nil {
			t.Fatalf("member key of %s: %v", from.id, err)
		}
		for _, at := range running {
			what := fmt.Sprintf("the dev.json of %s at %s (the first node down)", from.id, at.id)
			rel.releaseOnce(t, at.p.URL, d.WorkloadToken, "v1")
			_, cp := do(t, http.MethodGet, at.p.URL+"/log/checkpoint", nil)
			if _, err := translog.Verify(cp, v); err != nil {
				t.Fatalf("%s: the checkpoint does not verify under its log_public_key: %v", what, err)
			}
			if resp, body := postCOSETest(t, at.p.URL+"/v1/gov/proposals", signRotate(t, member)); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
				t.Fatalf("%s: a rotation proposed with its member key: %s: %s", what, resp.Status, body)
			}
		}
	}
	rel.report(t, "the dev.json of every node with the first node down")
}

// proxy forwards TCP connections to a target until it is cut: then it
// closes the connections it carries and every new one.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *proxy) serve(c net.Conn) {
	d, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(c, d) {
		c.Close()
		if d != nil {
			d.Close()
		}
		return
	}
	go func() { io.Copy(d, c); d.Close() }()
	io.Copy(c, d)
	c.Close()
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClusterMinorityPartition: a node cut off from the others (a proxy
// in front of its node-to-node port closes every connection) loses its
// leader (or its leadership); it answers writes 503 with Retry-After and
// goes on serving public keys and the log, while the majority goes on
// writing. Healed, it catches up and every node serves one checkpoint.
func TestClusterMinorityPartition(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"limits": map[string]any{"per_address_rate": 0, "per_identity_rate": 0}})
	var px *proxy
	nodes := startDevCluster(t, dir, cfg, 3, func(i int, n *devNode) {
		if i != 2 {
			return
		}
		// The third node binds a port of its own and advertises the
		// proxy in front of it.
		real := freePort(t)
		os.MkdirAll(n.data, 0o700)
		if err := os.WriteFile(filepath.Join(n.data, "cluster.addr"), []byte(real), 0o600); err != nil {
			t.Fatal(err)
		}
		px = newProxy(t, real)
		n.args = append(n.args, "--cluster-advertise", px.ln.Addr().String())
	})
	// The node behind the proxy is a follower, unless an election on
	// the loaded machine made it the leader: cut off, it then steps down
	// (it hears from no majority) and the other two elect a leader.
	minority := nodes[2]
	var acks ackLog
	rel := newReleaser(t, nodes[0].data, &acks)
	token := readDevJSON(t, nodes[0].data).WorkloadToken
	list, ok := rel.releasable(context.Background(), httpClient, nodes[0].p.URL)
	if !ok || len(list) == 0 {
		t.Fatal("no releasable key")
	}
	release := func(base string) *http.Response {
		body, _ := json.Marshal(map[string]any{"attestation": rel.v1Ev, "wrapping_key": map[string]any{
			"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(rel.v1Pub)}})
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/keys/"+list[0].Kid+"/release", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// releaseRetrying releases at a node that may be waiting for an
	// election (or a node of the majority during the partition): 503 is
	// retried for a minute.
	releaseRetrying := func(base string) *http.Response {
		deadline := time.Now().Add(time.Minute)
		for {
			r := release(base)
			if r.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
				return r
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if r := releaseRetrying(minority.p.URL); r.StatusCode != http.StatusOK {
		t.Fatalf("release at the node before the partition: %s", r.Status)
	}

	// Every node is ready, and its metrics carry its raft state.
	for _, n := range nodes {
		waitReadyz(t, n.p.URL, true)
	}
	leaders := 0
	for _, n := range nodes {
		_, m := do(t, http.MethodGet, n.p.URL+"/metrics", nil)
		if strings.Contains(string(m), `tkms_raft_state{state="leader"} 1`) {
			leaders++
		}
		if !strings.Contains(string(m), "\ntkms_raft_caught_up 1\n") || !strings.Contains(string(m), "\ntkms_raft_commit_index ") {
			t.Errorf("%s's metrics lack its raft state", n.id)
		}
	}
	if leaders != 1 {
		t.Errorf("%d nodes report tkms_raft_state leader, want 1", leaders)
	}

	px.setCut(true)
	waitCluster(t, "the cut-off node to lose its leader", minority.p.URL, func(s clusterStatus) bool { return s.Leader == "" })
	// Not caught up: not ready (a load balancer sends it nothing), alive.
	waitReadyz(t, minority.p.URL, false)
	if resp, _ := do(t, http.MethodGet, minority.p.URL+"/livez", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("livez at the cut-off node: %s", resp.Status)
	}
	if _, m := do(t, http.MethodGet, minority.p.URL+"/metrics", nil); !strings.Contains(string(m), "\ntkms_raft_leader_known 0\n") {
		t.Errorf("the cut-off node's metrics do not say it knows no leader")
	}
	r := release(minority.p.URL)
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("release at the cut-off node: %s, Retry-After %q; want 503 with Retry-After", r.Status, r.Header.Get("Retry-After"))
	}
	for _, path := range []string{"/app/listpubkeys", "/v1/keys", "/log/checkpoint"} {
		if resp, _ := do(t, http.MethodGet, minority.p.URL+path, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s at the cut-off node: %s", path, resp.Status)
		}
	}
	if r := releaseRetrying(nodes[0].p.URL); r.StatusCode != http.StatusOK {
		t.Fatalf("release at the majority during the partition: %s", r.Status)
	}

	px.setCut(false)
	waitConverged(t, "after healing", nodes)
	waitReadyz(t, minority.p.URL, true)
	if r := releaseRetrying(minority.p.URL); r.StatusCode != http.StatusOK {
		t.Fatalf("release at the healed node: %s", r.Status)
	}
	for _, n := range nodes {
		n.p.stopClean(syscall.SIGTERM)
	}
}

// TestClusterBadJoins: joining a node of another cluster fails at the
// mutual TLS handshake, and a node id already in use is refused; neither
// starts a node. A malformed message on the node-to-node port is refused
// and changes nothing.
func TestClusterBadJoins(t *testing.T) {
	dir := t.TempDir()
	a := &devNode{data: filepath.Join(dir, "a"), args: []string{"--cluster"}}
	a.start(t)
	b := &devNode{data: filepath.Join(dir, "b"), args: []string{"--cluster"}}
	b.start(t)
	// c joins a with b's CA and certificate: a node of another cluster.
	c := filepath.Join(dir, "c")
	os.MkdirAll(c, 0o700)
	for _, f := range []string{"node.pem", "node.key"} {
		raw, err := os.ReadFile(filepath.Join(b.data, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(c, f), raw, 0o600)
	}
	raw, _ := os.ReadFile(filepath.Join(a.data, "dev.json"))
	var m map[string]any
	json.Unmarshal(raw, &m)
	m["cluster_ca"] = b.data // the CA c's certificate chains to
	fake := filepath.Join(dir, "fake-a")
	os.MkdirAll(fake, 0o700)
	writeJSONFile(t, filepath.Join(fake, "dev.json"), m)
	_, stderr, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", c, "--join", fake)
	if code == 0 || !strings.Contains(stderr, "not of this cluster") {
		t.Fatalf("join of another cluster: exit %d, stderr:\n%s", code, stderr)
	}
	// d takes a's node id.
	d := filepath.Join(dir, "d")
	os.MkdirAll(d, 0o700)
	os.WriteFile(filepath.Join(d, "node.id"), []byte(a.id+"\n"), 0o600)
	_, stderr, code = runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", d, "--join", a.data)
	if code == 0 || !strings.Contains(stderr, "node id is in use") {
		t.Fatalf("join with a node id in use: exit %d, stderr:\n%s", code, stderr)
	}
	// A malformed message on the node-to-node port (raft's AppendEntries
	// type byte, then bytes that are no TLS handshake): refused at the
	// handshake, logged, the connection closed, nothing applied.
	_, before := do(t, http.MethodGet, a.p.URL+"/log/checkpoint", nil)
	var info struct {
		ClusterAddr string `json:"cluster_addr"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(a.data, "dev.json")), &info); err != nil || info.ClusterAddr == "" {
		t.Fatalf("dev.json of a names no cluster_addr: %v", err)
	}
	conn, err := net.Dial("tcp", info.ClusterAddr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{0, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1})
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("a malformed node-to-node message: the connection was not closed: %v", err)
	}
	conn.Close()
	a.p.waitOutput(a.p.stderr, regexp.MustCompile(`node-to-node TLS handshake failed`))
	if st, err := getCluster(a.p.URL); err != nil || len(st.Nodes) != 1 {
		t.Fatalf("the refused joins changed the cluster: %+v %v", st, err)
	}
	if _, after := do(t, http.MethodGet, a.p.URL+"/log/checkpoint", nil); !bytes.Equal(before, after) {
		t.Fatalf("the malformed message changed the log:\n%s\n%s", before, after)
	}
	a.p.stopClean(syscall.SIGTERM)
	b.p.stopClean(syscall.SIGTERM)
}

// TestClusterFoundedOnSingleDevNode: a single tkms dev node with releases
// in its ledger, restarted with --cluster, founds a cluster on that
// ledger; a node that joins receives every entry written before (the
// founder's snapshot), and both serve one log that audits clean.
func TestClusterFoundedOnSingleDevNode(t *testing.T) {
	dir := t.TempDir()
	single := filepath.Join(dir, "n1")
	p := startDev(t, single)
	var acks ackLog
	rel := newReleaser(t, single, &acks)
	token := readDevJSON(t, single).WorkloadToken
	rel.releaseOnce(t, p.URL, token, "v1")
	rel.releaseOnce(t, p.URL, token, "app")
	logKey := logKeyArg(t, p.URL)
	p.stopClean(syscall.SIGTERM)

	nodes := []*devNode{
		{data: single, args: []string{"--cluster"}},
		{data: filepath.Join(dir, "n2"), args: []string{"--join", single}},
	}
	for _, n := range nodes {
		n.start(t)
	}
	waitCluster(t, "two voters", nodes[0].p.URL, voters(2))
	waitConverged(t, "the founder and the joined node", nodes)
	receipts := newReceiptChecker(t, logKey)
	for _, n := range nodes {
		receipts.check(t, "node "+n.id, n.p.URL, acks.all())
		runAudit(t, 0, "--kms", n.p.URL, "--log-key", logKey, "--quiet")
	}
	rel.retryFor = time.Minute
	rel.releaseOnce(t, nodes[1].p.URL, token, "v1")
	rel.report(t, "after the founding")
	for _, n := range nodes {
		n.p.stopClean(syscall.SIGTERM)
	}
}

// TestClusterRestarts: a governed rotation posted at a follower; a rolling
// restart, every node in turn stopped (SIGTERM) and started again while a
// client that retries on 503 releases at the others (none of its releases
// fails); then a follower whose
// data directory is lost (all but its node id and address, as a production
// node keeps them in its configuration) joins again under its id and
// catches up with the whole ledger through a raft snapshot (the others
// trimmed their raft logs). Every acknowledged release is in the
// log of every node, and the rejoined node audits clean.
func TestClusterRestarts(t *testing.T) {
	dir := t.TempDir()
	// Raft snapshots every 16 entries, checked every 200 ms, leaving 4
	// in the log: the wiped follower below cannot be sent the log from
	// its start, it must restore a snapshot.
	nodes := startUnlimitedDevCluster(t, dir, 3, map[string]any{"raft": map[string]any{
		"snapshot_threshold": 16, "trailing_logs": 4, "snapshot_interval": "200ms"}})
	logKey := logKeyArg(t, nodes[0].p.URL)
	var acks ackLog
	rel := newReleaser(t, nodes[0].data, &acks)
	// A client that retries a release answered 503 (after its
	// Retry-After) for up to a minute: none of its releases may fail.
	rel.retryFor = time.Minute
	token := readDevJSON(t, nodes[0].data).WorkloadToken
	seed := uint64(time.Now().UnixNano())
	// A governed rotation posted at a node that does not lead: the leader
	// carries it out, once, and the answer has the new key.
	st, _ := getCluster(nodes[0].p.URL)
	follower := nodes[1]
	if follower.id == st.Leader {
		follower = nodes[2]
	}
	r := refresh(t, follower.p.URL, "")
	rotated := 0
	for _, k := range allKeys(t, follower.p.URL) {
		if strings.HasPrefix(k.Reason, "governance") {
			rotated++
		}
	}
	if rotated != 1 {
		t.Fatalf("a rotation posted at a follower made %d keys (answered %s)", rotated, r.Kid)
	}
	for i, victim := range nodes {
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{}
		hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		var wg sync.WaitGroup
		for j, n := range nodes {
			if n == victim {
				continue
			}
			wg.Go(func() { rel.loop(ctx, hc, n.p.URL, token, rand.New(rand.NewPCG(seed, uint64(i*10+j))), false, "v1") })
		}
		time.Sleep(300 * time.Millisecond)
		before := len(acks.all())
		victim.p.stopClean(syscall.SIGTERM)
		victim.start(t)
		waitCluster(t, "three voters", victim.p.URL, voters(3))
		deadline := time.Now().Add(30 * time.Second)
		for len(acks.all()) <= before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		rel.report(t, fmt.Sprintf("restart of %s", victim.id))
		if len(acks.all()) <= before {
			t.Fatalf("no release acknowledged while %s restarted", victim.id)
		}
	}
	waitConverged(t, "after the rolling restart", nodes)

	st, _ = getCluster(nodes[0].p.URL)
	victim := nodes[1]
	if victim.id == st.Leader {
		victim = nodes[2]
	}
	victim.p.stop(syscall.SIGKILL)
	entries, err := os.ReadDir(victim.data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "node.id" && e.Name() != "cluster.addr" {
			if err := os.RemoveAll(filepath.Join(victim.data, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	rel.releaseOnce(t, nodes[0].p.URL, token, "app") // while it is gone
	// Every running node has taken a raft snapshot (and so trimmed the
	// start of its raft log).
	for _, n := range nodes {
		if n == victim {
			continue
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			if m, _ := filepath.Glob(filepath.Join(n.data, "raft", "snapshots", "*", "meta.json")); len(m) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s took no raft snapshot", n.id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	victim.start(t)
	victim.p.waitOutput(victim.p.stderr, regexp.MustCompile(`ledger restored from a snapshot`))
	waitConverged(t, "after the wiped node rejoined", nodes)
	if st := waitCluster(t, "three voters", victim.p.URL, voters(3)); len(st.Nodes) != 3 {
		t.Fatalf("the rejoined node is not the same member: %+v", st)
	}
	receipts := newReceiptChecker(t, logKey)
	for _, n := range nodes {
		receipts.check(t, "node "+n.id, n.p.URL, acks.all())
	}
	runAudit(t, 0, "--kms", victim.p.URL, "--log-key", logKey, "--quiet")

	// Governance removes a node (remove_node, proposed at another node):
	// the leader takes it out, the others go on, and it may not join
	// again under its id.
	gone := nodes[2]
	proposeRemoveNode(t, nodes[1], gone.id)
	waitCluster(t, "two nodes", nodes[0].p.URL, func(s clusterStatus) bool { return s.Leader != "" && len(s.Nodes) == 2 })
	rel.releaseOnce(t, nodes[1].p.URL, token, "v1")
	runAudit(t, 0, "--kms", nodes[0].p.URL, "--log-key", logKey, "--quiet")
	gone.p.stopClean(syscall.SIGTERM)
	for _, e := range []string{"raft", "ledger.db", "keyring", "master.key", "dev.json"} {
		os.RemoveAll(filepath.Join(gone.data, e))
	}
	_, stderr, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", gone.data, "--join", nodes[0].data)
	if code == 0 || !strings.Contains(stderr, "removed from the cluster by governance") {
		t.Fatalf("a removed node joining again: exit %d, stderr:\n%s", code, stderr)
	}
	for _, n := range nodes[:2] {
		n.p.stopClean(syscall.SIGTERM)
	}
	t.Logf("%d releases acknowledged, answers %v, %d tries again after a 503 or no answer", len(acks.all()), rel.statuses, rel.retried.Load())
}

// proposeRemoveNode has the dev member propose, at node at, the removal
// of node id (accepted at once under the dev constitution).
func proposeRemoveNode(t *testing.T, at *devNode, id string) {
	t.Helper()
	args, _ := json.Marshal(map[string]string{"node_id": id})
	msg, err := devSigner(t, at.p).SignProposal([]gov.Action{{Name: "remove_node", Args: args}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := postCOSETest(t, at.p.URL+"/v1/gov/proposals", msg); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("remove_node proposal: %s: %s", resp.Status, body)
	}
}

// TestClusterServe: two `tkms serve` nodes with certificates of an
// operator's CA for joins: the second joins with --join, receives the master key
// into memory only, catches up and serves the same checkpoint; a restart
// is admitted again and receives the master key in a new handoff.
func TestClusterServe(t *testing.T) { clusterServe(t, true) }

// TestClusterServeNoCA is TestClusterServe without an operator's CA: the
// nodes authenticate each other by their node certificates alone, and a
// join by its evidence.
func TestClusterServeNoCA(t *testing.T) { clusterServe(t, false) }

func clusterServe(t *testing.T, withCA bool) {
	dir := t.TempDir()
	ca := tlscerttest.NewCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	config := func(i int, clusterAddr, serviceKey string) string {
		path := filepath.Join(dir, fmt.Sprintf("tkms%d.json", i))
		cluster := map[string]any{
			"node_id": fmt.Sprint("kms-", i), "listen": clusterAddr,
			"attester": "simulated", "node_policy": json.RawMessage(devReleasePolicy()),
		}
		if serviceKey != "" {
			cluster["service_key"] = serviceKey
		}
		if withCA {
			cert, key := tlscerttest.WritePair(t, dir, fmt.Sprint("node", i), ca.Issue(t, tlscerttest.Leaf{Serial: int64(10 + i), EKU: both}))
			cluster["cert_file"], cluster["key_file"], cluster["ca_file"] = cert, key, caFile
		}
		writeJSONFile(t, path, map[string]any{
			"listen": "127.0.0.1:0", "data_dir": filepath.Join(dir, fmt.Sprint("data", i)),
			// The nodes run in one simulated TEE (its chain copied below).
			"insecure_simulated_tee": true,
			"cluster":                cluster,
		})
		return path
	}
	addr1, addr2 := freePort(t), freePort(t)
	c1, c2 := config(1, addr1, ""), config(2, addr2, "")
	// A founder with a master key file is refused: a cluster's ledger
	// secret is generated in memory.
	mkFile := filepath.Join(dir, "data1", "master.key")
	if _, err := seal.CreateFile(mkFile); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runTkms(t, "serve", "--config", c1); code == 0 || !strings.Contains(stderr, "generated in memory and never written to disk") {
		t.Fatalf("a founder with a master key file: exit %d\n%s", code, stderr)
	}
	os.Remove(mkFile)
	p1 := startServe(t, c1)
	waitCluster(t, "the first node to lead", p1.URL, voters(1))
	// Its members hold no encryption keys: losing every node would lose
	// every key, and the operator is told.
	p1.waitOutput(p1.stderr, regexp.MustCompile(`no recovery shares can be made`))
	chain, err := os.ReadFile(filepath.Join(dir, "data1", simsnp.ChainFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"data2", "data3"} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
		os.WriteFile(filepath.Join(dir, d, simsnp.ChainFile), chain, 0o600)
	}
	if !withCA {
		// Without the operator's CA, a joining node that pins the
		// service identity (cluster.service_key) refuses a member of
		// another service, and joins this one.
		_, other, err := translog.GenerateKey("tkms/another/1")
		if err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runTkms(t, "serve", "--config", config(3, freePort(t), other), "--join", addr1)
		if code == 0 || !strings.Contains(stderr, "not of this service") {
			t.Fatalf("a join pinning another service identity: exit %d, stderr:\n%s", code, stderr)
		}
		_, vkey := do(t, http.MethodGet, p1.URL+"/v1/log/key", nil)
		c2 = config(2, addr2, strings.TrimSpace(string(vkey)))
	}
	p2 := startProc(t, "serve", "--config", c2, "--join", addr1)
	m := p2.waitOutput(p2.stderr, serveListening)
	p2.URL = "http://" + m[1]
	waitCluster(t, "two voters", p2.URL, voters(2))
	// Neither node keeps a master key file (TestClusterSecretsNotOnDisk
	// searches a dev cluster's files for every version of the secret).
	noKeyFile := func() {
		t.Helper()
		for _, d := range []string{"data1", "data2"} {
			if _, err := os.Stat(filepath.Join(dir, d, "master.key")); err == nil {
				t.Fatalf("%s has a master key file", d)
			}
		}
	}
	noKeyFile()
	converged := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, a := do(t, http.MethodGet, p1.URL+"/log/checkpoint", nil)
			_, b := do(t, http.MethodGet, p2.URL+"/log/checkpoint", nil)
			if bytes.Equal(a, b) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the two nodes serve different checkpoints %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	converged("after the join")
	p2.stopClean(syscall.SIGTERM)
	p2 = startProc(t, "serve", "--config", c2) // a restart: no --join needed
	m = p2.waitOutput(p2.stderr, serveListening)
	p2.URL = "http://" + m[1]
	waitCluster(t, "two voters after the restart", p2.URL, voters(2))
	// It opened its ledger with the ledger secret of a new handoff.
	converged("after the restart")
	noKeyFile()
	// The founder restarted is a new node too: the other node admits it
	// again and hands it the ledger secret.
	p1.stopClean(syscall.SIGTERM)
	p1 = startServe(t, c1)
	waitCluster(t, "two voters after the founder's restart", p1.URL, voters(2))
	converged("after the founder's restart")
	noKeyFile()
	// Both stopped, neither holds the ledger secret: a node started
	// alone waits to be admitted by a running node (recovery, when the
	// whole cluster is lost) and opens nothing meanwhile.
	p2.stopClean(syscall.SIGTERM)
	p1.stopClean(syscall.SIGTERM)
	p1 = startProc(t, "serve", "--config", c1)
	p1.waitOutput(p1.stderr, regexp.MustCompile(`waits to be admitted again by a running node`))
	if strings.Contains(p1.stderr.String(), "ledger replayed") {
		t.Fatal("a node without the ledger secret opened its ledger")
	}
	p1.stopClean(syscall.SIGTERM)
}

// waitReadyz polls GET /readyz of base until it answers ready (200) or, with
// ready false, not ready (503 NOT_READY with a reason).
func waitReadyz(t *testing.T, base string, ready bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, body := do(t, http.MethodGet, base+"/readyz", nil)
		switch {
		case ready && resp.StatusCode == http.StatusOK:
			return
		case !ready && resp.StatusCode == http.StatusServiceUnavailable:
			if resp.Header.Get("x-ms-kms-error-code") != "NOT_READY" || !strings.Contains(string(body), "cluster: ") {
				t.Fatalf("readyz of a node not caught up: %s %s", resp.Status, body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz still answers %s %s; want ready %v", base, resp.Status, body, ready)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterOnInit runs the cluster procedure of deploy/azure/README.md
// with tkms serve nodes (in the simulated TEE): the founder on the
// governed ledger tkms init made, taking its master key file as the first
// version of the ledger secret (and saying so), a second node joining on
// an empty data directory while pinning the service identity, both ready;
// then the founder stopped, its master key file moved away, and started
// again: admitted by the other node, it serves without any key file, and
// the members govern the cluster (a rotation accepted by a second ballot,
// seen on both nodes).
func TestClusterOnInit(t *testing.T) {
	g := newGovService(t)
	addr0, addr1 := freePort(t), freePort(t)
	config := func(i int, data, clusterAddr string, extra map[string]any) string {
		cluster := map[string]any{"node_id": fmt.Sprint("kms-", i), "listen": clusterAddr,
			"attester": "simulated", "node_policy": json.RawMessage(devReleasePolicy())}
		for k, v := range extra {
			cluster[k] = v
		}
		path := filepath.Join(g.dir, fmt.Sprintf("kms-%d.json", i))
		writeJSONFile(t, path, map[string]any{"listen": "127.0.0.1:0", "data_dir": data,
			"insecure_simulated_tee": true, "cluster": cluster})
		return path
	}
	c0 := config(0, g.data, addr0, nil)
	start := func(cfg string) *proc {
		t.Helper()
		p := startProc(t, "serve", "--config", cfg)
		p.URL = "http://" + p.waitOutput(p.stderr, serveListening)[1]
		return p
	}
	p0 := start(c0)
	if s := p0.stderr.String(); !strings.Contains(s, "takes the master key file that sealed its ledger as version 1") {
		t.Fatalf("the founder on tkms init's ledger does not say it took the master key file:\n%s", s)
	}
	waitCluster(t, "the founder to lead", p0.URL, voters(1))

	// The second node: an empty data directory (the simulated TEE's chain
	// shared, as every simulated node needs), joining with the service
	// identity pinned.
	data1 := filepath.Join(g.dir, "data1")
	os.MkdirAll(data1, 0o700)
	chain := readFile(t, filepath.Join(g.data, simsnp.ChainFile))
	os.WriteFile(filepath.Join(data1, simsnp.ChainFile), chain, 0o600)
	_, vkey := do(t, http.MethodGet, p0.URL+"/v1/log/key", nil)
	c1 := config(1, data1, addr1, map[string]any{"join": addr0, "service_key": strings.TrimSpace(string(vkey))})
	p1 := start(c1)
	waitCluster(t, "two voters", p1.URL, voters(2))
	waitReadyz(t, p0.URL, true)
	waitReadyz(t, p1.URL, true)

	// Step 6: the founder's master key file off the host.
	p0.stopClean(syscall.SIGTERM)
	vault := filepath.Join(t.TempDir(), "master.key")
	if err := os.Rename(filepath.Join(g.data, "master.key"), vault); err != nil {
		t.Fatal(err)
	}
	p0 = start(c0)
	waitCluster(t, "two voters after the founder's restart", p0.URL, voters(2))
	waitReadyz(t, p0.URL, true)
	for _, d := range []string{g.data, data1} {
		if _, err := os.Stat(filepath.Join(d, "master.key")); err == nil {
			t.Errorf("%s holds a master key file", d)
		}
	}

	// Governed: a rotation by A, accepted by B's ballot, on both nodes.
	before := len(allKeys(t, p1.URL))
	id := proposalID(t, govCLI(t, "keys", "rotate", "--kms", p0.URL, "--key", g.a.key, "--reason", "cluster"))
	if out := govCLI(t, "gov", "vote", "--kms", p1.URL, "--key", g.b.key, "--yes", id, "approve"); !strings.Contains(out, "state accepted") {
		t.Fatalf("the second ballot:\n%s", out)
	}
	for _, p := range []*proc{p0, p1} {
		deadline := time.Now().Add(time.Minute)
		for len(allKeys(t, p.URL)) != before+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s lists %d keys after the rotation, want %d", p.URL, len(allKeys(t, p.URL)), before+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	p1.stopClean(syscall.SIGTERM)
	p0.stopClean(syscall.SIGTERM)
}
