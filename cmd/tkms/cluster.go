package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
)

// ClusterConfig makes tkms a node of a replicated cluster: its ledger is
// replicated over hashicorp/raft (internal/raftstore) instead of kept in
// the embedded single-node file. docs/operations.md says how to run one.
type ClusterConfig struct {
	// NodeID names this node in the cluster (required; never reused).
	NodeID string `json:"node_id"`
	// Listen is the node-to-node address (raft and the cluster's API),
	// e.g. "10.0.0.1:8001". Always mutual TLS.
	Listen string `json:"listen"`
	// Advertise is the host:port the other nodes dial (default: the
	// address Listen bound). Node certificates must name its host.
	Advertise string `json:"advertise"`
	// PublicURL is the URL clients reach this node's API at, as
	// GET /v1/cluster lists it (default: the scheme and the address the
	// API bound, which names no host a client can use when it is
	// 0.0.0.0 or behind a load balancer).
	PublicURL string `json:"public_url"`
	// Join is the node-to-node address of a member, asked on the first
	// start (an empty data directory) to add this node. Without it the
	// first start founds a new cluster. Restarts ignore it: the data
	// directory knows its cluster.
	Join string `json:"join"`
	// CertFile and KeyFile are this node's certificate (for both server
	// and client authentication; SANs naming the advertised host) and
	// key; CAFile is the cluster's CA, which every node certificate must
	// chain to. A node of another cluster is refused at the handshake.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
	// Attester produces this node's evidence (internal/node): "aci" (the
	// ACI sidecar's security context), "snp" (the SEV-SNP guest device) or
	// "simulated" (the data directory's simulated TEE; needs
	// insecure_simulated_tee). Default: "simulated" when the simulated TEE
	// is trusted, otherwise required.
	Attester string `json:"attester"`
	// SimulatedMeasurement (hex, 48 bytes) is the MEASUREMENT the
	// simulated TEE reports for this node (default: simsnp's).
	SimulatedMeasurement string `json:"simulated_measurement"`
	// NodePolicy is the node policy (the key release policy grammar over
	// the same claims) until governance sets one with set_node_policy:
	// a joining node's evidence must satisfy it to receive anything.
	NodePolicy json.RawMessage `json:"node_policy"`
}

func (c *ClusterConfig) validate() []error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.NodeID == "" || strings.ContainsAny(c.NodeID, " /\\") {
		errs = append(errs, fmt.Errorf("cluster.node_id %q: want a name without spaces or slashes", c.NodeID))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("cluster.listen %q: %w", c.Listen, err))
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		errs = append(errs, errors.New("cluster: cert_file, key_file and ca_file are required (node-to-node traffic is mutual TLS)"))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("cluster.public_url %q: want an absolute http or https URL", c.PublicURL))
		}
	}
	switch c.Attester {
	case "", "aci", "snp", "simulated":
	default:
		errs = append(errs, fmt.Errorf("cluster.attester %q: want aci, snp or simulated", c.Attester))
	}
	if m, err := hex.DecodeString(c.SimulatedMeasurement); err != nil || (len(m) != 0 && len(m) != 48) {
		errs = append(errs, fmt.Errorf("cluster.simulated_measurement %q: want 96 hex digits", c.SimulatedMeasurement))
	}
	if len(c.NodePolicy) > 0 {
		if _, err := policy.Parse(c.NodePolicy); err != nil {
			errs = append(errs, fmt.Errorf("cluster.node_policy: %w", err))
		}
	}
	return errs
}

// clusterNode is this process's node of the cluster while it starts.
type clusterNode struct {
	cfg    *ClusterConfig
	tls    *tls.Config
	ln     net.Listener
	adv    string
	found  bool // the first start of the cluster's first node
	joined *raftstore.JoinResult
	rs     *raftstore.Store
	mkFile string
	// mem holds the master key of a node that did not found the
	// cluster, in memory only: it arrives in the node.joined entry of
	// each start (a restart is a new node, admitted again), never from
	// or to a file. nil for a node whose master key file exists (the
	// founder).
	mem    *memSealer
	rejoin bool // a restart of a joined node: admitted again before the service opens
	ctx    context.Context
	log    *slog.Logger
	// id is this process's attested node identity, admit how it admits
	// joining nodes once svc is open.
	id    *node.Identity
	admit *kms.NodeAdmission
	svc   atomic.Pointer[kms.Service]
}

// nodeAttester returns the attester of this node's evidence.
func nodeAttester(cfg *Config) (client.Attester, error) {
	c := cfg.Cluster
	kind := c.Attester
	if kind == "" && cfg.InsecureSimulatedTEE {
		kind = "simulated"
	}
	switch kind {
	case "simulated":
		if !cfg.InsecureSimulatedTEE {
			return nil, errors.New("cluster.attester simulated needs insecure_simulated_tee (no other node would trust it)")
		}
		var m []byte // nil: simsnp's default
		if c.SimulatedMeasurement != "" {
			m, _ = hex.DecodeString(c.SimulatedMeasurement)
		}
		// The data directory's simulated TEE (a joining dev node's is the
		// first node's, copied), created on the first start.
		if _, err := simsnp.LoadOrCreate(cfg.DataDir); err != nil {
			return nil, err
		}
		return devtee.NewAttester(cfg.DataDir, devtee.AttesterOptions{Measurement: m})
	case "aci":
		return client.NewACIAttester(client.ACIOptions{})
	case "snp":
		return client.NewSNPAttester(client.SNPOptions{}), nil
	}
	return nil, errors.New("cluster.attester is required: aci, snp, or simulated (with insecure_simulated_tee)")
}

// nodeTLS is the mutual TLS configuration of node-to-node traffic.
func nodeTLS(c *ClusterConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: node certificate: %w", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster: %s holds no PEM certificate", c.CAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}, nil
}

// prepareCluster binds the node-to-node listener and, on the first start
// of a joining node, joins: the cluster adds the node and hands it the
// master key, which it keeps in memory only. A restarted joined node (no
// master key file) is admitted again, under its fresh key, once its raft
// runs and before the service opens (kmsConfig). It returns nil without a
// cluster configuration.
func prepareCluster(ctx context.Context, cfg *Config, log *slog.Logger) (*clusterNode, error) {
	c := cfg.Cluster
	if c == nil {
		return nil, nil
	}
	t, err := nodeTLS(c)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &clusterNode{cfg: c, tls: t, ln: ln, adv: c.Advertise, mkFile: cfg.MasterKeyFile, ctx: ctx, log: log}
	if n.adv == "" {
		n.adv = ln.Addr().String()
	}
	if err := n.attest(ctx, cfg, log); err != nil {
		ln.Close()
		return nil, err
	}
	_, err = os.Stat(filepath.Join(cfg.DataDir, "raft", "raft.db"))
	fresh := errors.Is(err, fs.ErrNotExist)
	n.found = fresh && c.Join == ""
	if cfg.recovering {
		// A recovering node founds a new cluster on the ledger copy; its
		// master key comes from members' shares, into memory.
		switch {
		case !fresh:
			ln.Close()
			return nil, recoveryError(recovery.CodeInProgress, "%s holds a node's raft state: it is not a ledger copy to recover (or it was recovered already; start it without --recover)", cfg.DataDir)
		case c.Join != "":
			ln.Close()
			return nil, fmt.Errorf("%w: a recovering node founds a new cluster: it joins none", errUsage)
		}
		if _, err := os.Stat(n.mkFile); err == nil {
			ln.Close()
			return nil, fmt.Errorf("recovery: %s exists: a recovery brings the master key back from members' shares; recover a ledger copy without it", n.mkFile)
		}
		n.mem = &memSealer{}
		return n, nil
	}
	if !n.found {
		if _, err := os.Stat(n.mkFile); errors.Is(err, fs.ErrNotExist) {
			n.mem = &memSealer{}
			n.rejoin = !fresh
		} else if fresh {
			ln.Close()
			return nil, fmt.Errorf("cluster: a joining node receives the master key from the cluster and keeps it in memory only: move %s away to join", n.mkFile)
		}
	}
	if fresh && c.Join != "" {
		if err := n.join(ctx, log); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return n, nil
}

// attest makes this process's node identity and the admission of others.
func (n *clusterNode) attest(ctx context.Context, cfg *Config, log *slog.Logger) error {
	a, err := nodeAttester(cfg)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if n.id, err = node.New(ctx, a); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	// Node evidence: the configuration's MAA instances (nodes join before
	// the ledger's state is read).
	v, _, err := newVerifier(cfg, log, nil)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.admit = &kms.NodeAdmission{
		Verifier: v, DefaultPolicy: n.cfg.NodePolicy,
		Secrets: func() ([]byte, error) {
			if n.mem != nil {
				return n.mem.keyCopy()
			}
			return seal.ReadKeyFile(n.mkFile)
		},
	}
	log.Info("cluster: node identity", "node_id", n.id.ID, "simulated", n.id.Simulated)
	return nil
}

// admitNode is the raftstore's Config.Admit: the kms decides, and the
// handoff is the record of the node.joined entry.
func (n *clusterNode) admitNode(ctx context.Context, req raftstore.JoinRequest) ([]byte, error) {
	svc := n.svc.Load()
	if svc == nil {
		return nil, fmt.Errorf("%w: this node's service is still opening", raftstore.ErrNoLeader)
	}
	e, err := svc.AdmitNode(ctx, n.admit, req.NodeID, req.NodeKey, req.Evidence)
	if err != nil {
		return nil, err
	}
	return ledger.MarshalRecord(e), nil
}

// opened is called once the service is open and caught up: the founding
// node records itself, and joins are admitted from now on.
func (n *clusterNode) opened(ctx context.Context, svc *kms.Service, log *slog.Logger) error {
	if n.found {
		e, err := svc.RecordFounder(ctx, n.admit, n.cfg.NodeID, n.id)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		log.Info("cluster: founding node recorded", "node_id", n.id.ID, "seq", e.Seq)
	}
	n.svc.Store(svc)
	if !n.found && n.joined == nil && !n.rejoin {
		go n.reattest(ctx, svc, log)
	}
	return nil
}

// reattest has a restarted node admitted again under this process's fresh
// node key, in the background: its evidence is checked against the node
// policy in force, and a node.joined entry records its new key (the last
// one of each member is the one GET /v1/service lists). Until then, and if
// it is refused, it goes on with the secrets it holds; a refusal is
// logged as an error.
func (n *clusterNode) reattest(ctx context.Context, svc *kms.Service, log *slog.Logger) {
	req := raftstore.JoinRequest{NodeID: n.cfg.NodeID, Address: n.adv, NodeKey: n.id.Public, Evidence: n.id.Evidence}
	for {
		var e *ledger.Entry
		var err error
		if _, addr := n.rs.Leader(); n.rs.IsLeader() {
			e, err = svc.AdmitNode(ctx, n.admit, req.NodeID, req.NodeKey, req.Evidence)
		} else if addr == "" {
			err = raftstore.ErrNoLeader
		} else {
			var res *raftstore.JoinResult
			if res, err = raftstore.Join(ctx, addr, req, n.tls); err == nil {
				e, err = ledger.UnmarshalRecord(res.Handoff)
			}
		}
		if err == nil {
			var mk []byte
			if mk, err = kms.OpenHandoff(e, n.id); err == nil {
				clear(mk)
				log.Info("cluster: this restarted node was admitted under its new node key", "node_id", n.id.ID, "seq", e.Seq)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, raftstore.ErrNoLeader) && !strings.Contains(err.Error(), node.CodeNotTrusted) {
			log.Error("cluster: this restarted node's new node key is refused; it is not listed as trusted", "node_id", n.id.ID, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// join asks the member at cluster.join to add this node, retrying while
// the cluster elects a leader, and opens the ledger's secrets from the
// node.joined entry it receives.
func (n *clusterNode) join(ctx context.Context, log *slog.Logger) error {
	addr := strings.TrimPrefix(strings.TrimPrefix(n.cfg.Join, "https://"), "tcp://")
	deadline := time.Now().Add(time.Minute)
	waitingTrust := false
	for {
		req := raftstore.JoinRequest{NodeID: n.cfg.NodeID, Address: n.adv, NodeKey: n.id.Public, Evidence: n.id.Evidence}
		res, err := raftstore.Join(ctx, addr, req, n.tls)
		if err == nil {
			n.joined = res
			break
		}
		if errors.Is(err, raftstore.ErrNodeRefused) && strings.Contains(err.Error(), node.CodeNotTrusted) {
			// The constitution wants members to trust this node (this
			// process's key) first: wait for their trust_node proposal.
			if !waitingTrust {
				log.Warn("cluster: waiting for a trust_node proposal naming this node", "node_id", n.id.ID, "proposal", fmt.Sprintf(`{"name":"trust_node","args":{"node_id":%q}}`, n.id.ID))
				waitingTrust = true
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if !errors.Is(err, raftstore.ErrNoLeader) || time.Now().After(deadline) {
			var cerr *tls.CertificateVerificationError
			if errors.As(err, &cerr) || strings.Contains(err.Error(), "certificate") {
				return fmt.Errorf("cluster: %w: the node at %s is not of this cluster (its certificate does not chain to cluster.ca_file, or ours does not to its CA)", err, addr)
			}
			return fmt.Errorf("cluster: %w", err)
		}
		log.Info("cluster: waiting for the cluster to elect a leader to join", "join", addr, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// The handoff (raftstore/handoff.go): the node.joined entry whose
	// secrets only this node's key opens.
	e, err := ledger.UnmarshalRecord(n.joined.Handoff)
	if err != nil {
		return fmt.Errorf("cluster: the handoff: %w", err)
	}
	mk, err := kms.OpenHandoff(e, n.id)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := n.mem.set(mk); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	log.Info("cluster: joined as a non-voter; promoted once caught up", "node_id", n.cfg.NodeID, "handoff_seq", e.Seq, "leader", n.joined.Leader, "commit_index", n.joined.CommitIndex)
	return nil
}

// kmsConfig makes the service open its ledger on this node.
func (n *clusterNode) kmsConfig(kc *kms.Config, url string, log *slog.Logger) {
	kc.Joined = !n.found
	kc.OpenLedger = func(dir string, opts store.Options) (store.Ledger, error) {
		rs, err := raftstore.Open(dir, opts, raftstore.Config{
			NodeID: n.cfg.NodeID, Listener: n.ln, Advertise: n.adv, TLS: n.tls, URL: url,
			Bootstrap: n.found, Joined: n.joined, Logger: log,
			Admit: n.admitNode,
		})
		n.rs = rs
		if err == nil && n.rejoin {
			if err = n.readmit(); err != nil {
				rs.Close()
				return nil, err
			}
		}
		return rs, err
	}
}

// sealer is the master key of this node: in memory for a node that did
// not found the cluster, nil otherwise (the master key file's).
func (n *clusterNode) sealer() seal.Sealer {
	if n == nil || n.mem == nil {
		return nil
	}
	return n.mem
}

// readmit has a restarted joined node admitted again under this
// process's fresh node key, its raft running (a two-node cluster needs
// its vote to commit the node.joined entry) and its service not yet
// open: the master key it needs to open the ledger comes from that entry.
// Not holding the key, it hands leadership over if it wins an election.
func (n *clusterNode) readmit() error {
	req := raftstore.JoinRequest{NodeID: n.cfg.NodeID, Address: n.adv, NodeKey: n.id.Public, Evidence: n.id.Evidence}
	waitingTrust := false
	for {
		var err error
		if _, addr := n.rs.Leader(); n.rs.Raft().State() == raft.Leader {
			err = n.rs.Raft().LeadershipTransfer().Error()
			if err == nil {
				err = raftstore.ErrNoLeader
			}
		} else if addr == "" {
			err = raftstore.ErrNoLeader
		} else {
			var res *raftstore.JoinResult
			if res, err = raftstore.Join(n.ctx, addr, req, n.tls); err == nil {
				n.rs.RaiseCaughtUpFloor(res.CommitIndex)
				var e *ledger.Entry
				if e, err = ledger.UnmarshalRecord(res.Handoff); err == nil {
					var mk []byte
					if mk, err = kms.OpenHandoff(e, n.id); err == nil {
						err = n.mem.set(mk)
						if err == nil {
							n.log.Info("cluster: this restarted node was admitted under its new node key", "node_id", n.id.ID, "seq", e.Seq)
							return nil
						}
					}
				}
				return fmt.Errorf("cluster: the handoff: %w", err)
			}
		}
		if n.ctx.Err() != nil {
			return n.ctx.Err()
		}
		if errors.Is(err, raftstore.ErrNodeRefused) && strings.Contains(err.Error(), node.CodeNotTrusted) {
			if !waitingTrust {
				n.log.Warn("cluster: waiting for a trust_node proposal naming this node", "node_id", n.id.ID, "proposal", fmt.Sprintf(`{"name":"trust_node","args":{"node_id":%q}}`, n.id.ID))
				waitingTrust = true
			}
		} else if !errors.Is(err, raftstore.ErrNoLeader) {
			return fmt.Errorf("cluster: this restarted node is not admitted again: %w", err)
		}
		select {
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// memSealer is a master key held in memory only, set once from a
// handoff; it seals nothing before.
type memSealer struct {
	mu  sync.Mutex
	key []byte
	s   *seal.AESGCM
}

func (m *memSealer) set(key []byte) error {
	s, err := seal.New(key)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key, m.s = bytes.Clone(key), s
	return nil
}

func (m *memSealer) get() (*seal.AESGCM, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.s == nil {
		return nil, errors.New("cluster: the master key has not arrived from the cluster yet")
	}
	return m.s, nil
}

func (m *memSealer) keyCopy() ([]byte, error) {
	if _, err := m.get(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.key), nil
}

func (m *memSealer) Seal(plaintext, ad []byte) ([]byte, error) {
	s, err := m.get()
	if err != nil {
		return nil, err
	}
	return s.Seal(plaintext, ad)
}

func (m *memSealer) Open(sealed, ad []byte) ([]byte, error) {
	s, err := m.get()
	if err != nil {
		return nil, err
	}
	return s.Open(sealed, ad)
}

// close releases the listener if the store never took it.
func (n *clusterNode) close() {
	if n.rs == nil {
		n.ln.Close()
	}
}

// handler serves GET /v1/cluster and adds Retry-After to every 503 of
// api (a write without a leader is to be retried shortly).
func (n *clusterNode) handler(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/cluster" {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(n.rs.Status())
			return
		}
		if r.URL.Path == "/v1/service" {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			svc := n.svc.Load()
			if svc == nil {
				http.Error(w, "the service is opening", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(serviceIdentity(svc))
			return
		}
		api.ServeHTTP(&retryAfterWriter{ResponseWriter: w}, r)
	})
}

// serviceView is GET /v1/service: the service's identity (its log, whose
// signing key is a ledger secret only attested nodes hold) and every
// trusted node with the evidence that binds its key, endorsed by the log:
// the receipt of its node.joined entry under a checkpoint signed by the
// service's log key.
type serviceView struct {
	LogOrigin string        `json:"log_origin"`
	LogKey    string        `json:"log_key"`
	Nodes     []serviceNode `json:"nodes"`
}

type serviceNode struct {
	NodeID       string            `json:"node_id"`
	Member       string            `json:"member"`
	NodeKey      []byte            `json:"node_key"`
	Evidence     json.RawMessage   `json:"evidence"`
	EvidenceType string            `json:"evidence_type"`
	Claims       map[string]any    `json:"claims"`
	Simulated    bool              `json:"simulated,omitempty"`
	Seq          uint64            `json:"seq"`
	Endorsement  *translog.Receipt `json:"endorsement,omitempty"`
}

func serviceIdentity(svc *kms.Service) serviceView {
	v := serviceView{LogOrigin: svc.LogOrigin(), LogKey: svc.LogVerifierKey(), Nodes: []serviceNode{}}
	var nodes []*state.Node
	svc.Read(func(st *state.State) { nodes = st.TrustedNodes() })
	for _, nd := range nodes {
		sn := serviceNode{
			NodeID: nd.NodeID, Member: nd.Member, NodeKey: nd.NodeKey, Evidence: nd.Evidence,
			EvidenceType: nd.EvidenceType, Claims: nd.Claims, Simulated: nd.Simulated, Seq: nd.Seq,
		}
		if !json.Valid(nd.Evidence) {
			sn.Evidence, _ = json.Marshal(nd.Evidence) // base64 of evidence that is not JSON
		}
		sn.Endorsement, _ = svc.Receipt(nd.Seq) // nil until a checkpoint covers it
		v.Nodes = append(v.Nodes, sn)
	}
	return v
}

type retryAfterWriter struct{ http.ResponseWriter }

func (w *retryAfterWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
