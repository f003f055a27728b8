package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
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
	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// ClusterConfig makes tkms a node of a replicated cluster: its ledger is
// replicated over hashicorp/raft (internal/raftstore) instead of kept in
// the embedded single-node file. docs/operations.md says how to run one.
type ClusterConfig struct {
	// NodeID names this node in the cluster (required; never reused).
	NodeID string `json:"node_id"`
	// Listen is the node-to-node address (raft and the cluster's API),
	// e.g. "10.0.0.1:8001". Always mutual TLS between attested nodes.
	Listen string `json:"listen"`
	// Advertise is the host:port the other nodes dial (default: the
	// address Listen bound). The operator's certificates (CertFile),
	// if any, must name its host.
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
	// Node-to-node TLS between members authenticates attested node keys:
	// each node presents the node certificate the service identity issued
	// for the TLS key its evidence binds, and a peer accepts it only while
	// the ledger trusts that node (internal/node cert.go). CertFile,
	// KeyFile and CAFile, optional (all or none), add an operator's CA as
	// an outer layer on joins: a node that is not a member yet must
	// present a certificate of CAFile (for both server and client
	// authentication; SANs naming the advertised host) to ask to join,
	// and checks the member it asks against CAFile. Without them a joining
	// node is authenticated by its evidence alone and checks nothing of
	// the node it asks (docs/operations.md).
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
	// ServiceKey, optional, is the service identity (the log key, as GET
	// /v1/log/key serves it) a node joining without an operator's CA
	// requires of the member it asks and of its handoff. A restarted
	// node takes it from its ledger.
	ServiceKey string `json:"service_key"`
	// NodePolicy is the node policy (the key release policy grammar over
	// the same claims) until governance sets one with set_node_policy:
	// a joining node's evidence must satisfy it to receive anything.
	NodePolicy json.RawMessage `json:"node_policy"`
	// Raft tunes the raft log's snapshots (optional).
	Raft *RaftConfig `json:"raft"`
}

// RaftConfig tunes when a node snapshots its raft log and trims it. A
// snapshot is the whole ledger; a node that joins, or lost its data, or
// fell behind more than the trailing entries, receives it. Zero values
// take the defaults.
type RaftConfig struct {
	// SnapshotThreshold is how many raft log entries since the last
	// snapshot trigger the next one (default 8192).
	SnapshotThreshold uint64 `json:"snapshot_threshold"`
	// TrailingLogs is how many entries a snapshot leaves in the raft log
	// for followers a little behind (default 1024).
	TrailingLogs uint64 `json:"trailing_logs"`
	// SnapshotInterval is how often the threshold is checked, a Go
	// duration such as "30s" (default "120s"; each check comes after a
	// random wait of one to two intervals).
	SnapshotInterval string `json:"snapshot_interval"`
	// HeartbeatTimeout is how long a follower hears nothing from the
	// leader before it stands for election (each time a random one to
	// two times this), and ElectionTimeout how long a candidate waits for
	// votes before it tries again: Go durations, default "1s" each.
	// Shorter ones fail over faster; too short for the network or the
	// machine's load, they elect without need.
	HeartbeatTimeout string `json:"heartbeat_timeout"`
	ElectionTimeout  string `json:"election_timeout"`
}

// durations returns the settings parsed (0 for a default), or the first
// error, naming its field.
func (r *RaftConfig) durations() (snapshot, heartbeat, election time.Duration, err error) {
	if r == nil {
		return 0, 0, 0, nil
	}
	parse := func(name, s string) time.Duration {
		if s == "" || err != nil {
			return 0
		}
		d, e := time.ParseDuration(s)
		if e == nil && d < 100*time.Millisecond {
			e = errors.New("want at least 100ms")
		}
		if e != nil {
			err = fmt.Errorf("cluster.raft.%s %q: %w", name, s, e)
		}
		return d
	}
	snapshot = parse("snapshot_interval", r.SnapshotInterval)
	heartbeat = parse("heartbeat_timeout", r.HeartbeatTimeout)
	election = parse("election_timeout", r.ElectionTimeout)
	return snapshot, heartbeat, election, err
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
	if n := btoi(c.CertFile != "") + btoi(c.KeyFile != "") + btoi(c.CAFile != ""); n != 0 && n != 3 {
		errs = append(errs, errors.New("cluster: cert_file, key_file and ca_file go together (the operator's CA on joins), or none of them"))
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
	if c.ServiceKey != "" {
		if _, err := node.ServiceKey(c.ServiceKey); err != nil {
			errs = append(errs, fmt.Errorf("cluster.service_key: %w", err))
		}
	}
	if len(c.NodePolicy) > 0 {
		if _, err := policy.Parse(c.NodePolicy); err != nil {
			errs = append(errs, fmt.Errorf("cluster.node_policy: %w", err))
		}
	}
	if _, _, _, err := c.Raft.durations(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// clusterNode is this process's node of the cluster while it starts.
type clusterNode struct {
	cfg *ClusterConfig
	// tls is node-to-node TLS (raftstore's Config.TLS): cert is this
	// node's certificate, self-signed until the service identity endorses
	// its TLS key, checkPeer decides on peers. joinTLS is the server
	// configuration of joins, joinClient the client one (the operator's
	// CA, if configured).
	tls        *tls.Config
	joinTLS    *tls.Config
	joinClient *tls.Config
	cert       atomic.Pointer[tls.Certificate]
	// serviceKey is the service identity as known before the service
	// opens: from the handoff, or the log key of the local ledger.
	serviceKey atomic.Pointer[ed25519.PublicKey]
	// pending are the TLS keys of restarted members whose evidence passed
	// (vouch), accepted until the time they map to.
	pendMu    sync.Mutex
	pending   map[string]time.Time
	selfAdmit bool // a lone restarted node: it admits itself once open
	// pinned: serviceKey is cluster.service_key, which a handoff must name.
	pinned bool
	ln     net.Listener
	adv    string
	found  bool // the first start of the cluster's first node
	joined *raftstore.JoinResult
	rs     *raftstore.Store
	mkFile string
	// mem holds this node's ledger secret, in memory only: generated at
	// founding, otherwise from the node.joined entry of each start (a
	// restart is a new node, admitted again), never from or to a file,
	// but for the founder of a dev cluster (devKeyFile).
	mem    *memSealer
	rejoin bool // a restart: admitted again before the service opens
	// devKeyFile: this node's first ledger-secret version is also in
	// the dev-only master key file (the founder of a dev cluster, or of
	// a cluster founded before secrets stayed in memory); a restart is
	// admitted again all the same (for its node certificate, and the
	// versions a rekey made since). devKeyCreated: the file was created
	// by this start.
	devKeyFile    bool
	devKeyCreated bool
	dev           bool // a tkms dev node (its first node keeps a dev-only key file)
	ctx           context.Context
	log           *slog.Logger
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

// setupTLS makes the node-to-node TLS configurations of this node
// (n.id is its identity).
func (n *clusterNode) setupTLS() error {
	self, err := n.id.SelfSigned()
	if err != nil {
		return err
	}
	tc, err := n.id.TLSCertificate(self)
	if err != nil {
		return err
	}
	n.cert.Store(tc)
	n.tls = &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return n.cert.Load(), nil },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return n.cert.Load(), nil },
	}
	// Without an operator's CA a joining node checks the member it asks
	// against the service identity it knows (cluster.service_key, or a
	// restarted node's ledger): that member's node certificate must be
	// the service identity's. Knowing none, it checks nothing: its
	// evidence authenticates it, and what it receives is sealed to its
	// attested key (docs/operations.md says what an impostor on the
	// network could still do).
	n.joinClient = &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, VerifyConnection: n.checkJoined}
	c := n.cfg
	if c.ServiceKey != "" {
		k, err := node.ServiceKey(c.ServiceKey)
		if err != nil {
			return fmt.Errorf("cluster.service_key: %w", err)
		}
		n.pinned = true
		n.serviceKey.Store(&k)
	}
	if c.CAFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("cluster: node certificate: %w", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("cluster: %s holds no PEM certificate", c.CAFile)
	}
	n.joinTLS = &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}
	n.joinClient = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return nil
}

// checkPeer is raftstore's Config.CheckPeer: a peer speaks raft and the
// cluster API with this node only with a node certificate the service
// identity issued for the TLS key its evidence binds, while the ledger
// trusts that node (node.CheckPeer); or with the attested TLS key of a
// restarted member this node vouched for, for a while. Before this node's
// service opens (it catches up, or is admitted again) it does not know the
// ledger's trusted nodes yet and checks the endorsement alone.
func (n *clusterNode) checkPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("cluster: the peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if bytes.Equal(leaf.RawSubjectPublicKeyInfo, n.id.TLSKey) || n.isPending(leaf.RawSubjectPublicKeyInfo) {
		return nil // this process itself (a node forwards to itself as the leader it knows), or vouched for
	}
	if svc := n.svc.Load(); svc != nil {
		_, err := node.CheckPeer(leaf.Raw, svc.ServiceKey(), time.Now(), svc.TrustedTLSKey)
		return err
	}
	var key ed25519.PublicKey
	if k := n.serviceKey.Load(); k != nil {
		key = *k
	}
	_, err := node.CheckPeer(leaf.Raw, key, time.Now(), func(string) ([]byte, error) { return leaf.RawSubjectPublicKeyInfo, nil })
	return err
}

// checkJoined checks, without an operator's CA, the member a joining (or
// restarted) node asks: its certificate must be the service identity's,
// if this node knows it (any member, endorsed: the trusted set is not
// known before the handoff).
func (n *clusterNode) checkJoined(cs tls.ConnectionState) error {
	k := n.serviceKey.Load()
	if k == nil {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("cluster: the member presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	_, err := node.CheckPeer(leaf.Raw, *k, time.Now(), func(string) ([]byte, error) { return leaf.RawSubjectPublicKeyInfo, nil })
	if err != nil {
		// A certificate verification error: no retry mends it.
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates,
			Err: fmt.Errorf("cluster: the member asked is not of this service (its certificate is not the service identity's): %w", err)}
	}
	return nil
}

// vouchFor is how long a restarted member's attested TLS key is accepted
// before its admission records its node certificate.
const vouchFor = 2 * time.Minute

func (n *clusterNode) isPending(tlsKey []byte) bool {
	n.pendMu.Lock()
	defer n.pendMu.Unlock()
	until, ok := n.pending[string(tlsKey)]
	if ok && time.Now().After(until) {
		delete(n.pending, string(tlsKey))
		return false
	}
	return ok
}

// vouch is raftstore's Config.Vouch: a restarted member whose evidence
// passes the checks of its admission (kms.Service.CheckJoin) may speak
// raft with this node for a while with its attested TLS key, so that its
// vote can elect the leader that admits it again.
func (n *clusterNode) vouch(ctx context.Context, req raftstore.JoinRequest) {
	svc := n.svc.Load()
	if svc == nil {
		return
	}
	if _, err := svc.CheckJoin(ctx, n.admit, req.NodeKey, req.TLSKey, req.Evidence); err != nil {
		n.log.Debug("cluster: a restarted member's evidence does not pass (yet)", "member", req.NodeID, "err", err)
		return
	}
	n.pendMu.Lock()
	if n.pending == nil {
		n.pending = map[string]time.Time{}
	}
	_, known := n.pending[string(req.TLSKey)]
	n.pending[string(req.TLSKey)] = time.Now().Add(vouchFor)
	n.pendMu.Unlock()
	if !known {
		n.log.Info("cluster: accepting the attested TLS key of a restarted member until it is admitted again", "member", req.NodeID, "node_id", node.ID(req.NodeKey))
	}
}

// handoff is what a joining node receives (raftstore's JoinResult.Handoff):
// its node.joined entry (the ledger's secrets sealed to its node key, its
// node certificate) and the service identity (the log key), which it
// checks its peers' certificates against until its service opens.
type handoff struct {
	Entry      []byte `json:"entry"`
	ServiceKey string `json:"service_key"`
}

// openHandoff opens this node's handoff: it returns the secrets sealed to
// it, and takes its node certificate and the service identity.
func (n *clusterNode) openHandoff(b []byte) (*ledger.Entry, []byte, error) {
	var h handoff
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, nil, fmt.Errorf("the handoff: %w", err)
	}
	e, err := ledger.UnmarshalRecord(h.Entry)
	if err != nil {
		return nil, nil, fmt.Errorf("the handoff: %w", err)
	}
	key, err := node.ServiceKey(h.ServiceKey)
	if err != nil {
		return nil, nil, fmt.Errorf("the handoff: %w", err)
	}
	if k := n.serviceKey.Load(); n.pinned && !k.Equal(key) {
		return nil, nil, fmt.Errorf("the handoff names the service identity %s, not cluster.service_key", h.ServiceKey)
	}
	mk, err := kms.OpenHandoff(e, n.id)
	if err != nil {
		return nil, nil, err
	}
	if err := n.endorsed(e); err != nil {
		clear(mk)
		return nil, nil, err
	}
	n.serviceKey.Store(&key)
	return e, mk, nil
}

// endorsed installs the node certificate of this node's node.joined entry
// e: from now on it presents it to its peers.
func (n *clusterNode) endorsed(e *ledger.Entry) error {
	var nj state.NodeJoined
	if err := json.Unmarshal(e.Body, &nj); err != nil {
		return fmt.Errorf("the node.joined entry %d: %w", e.Seq, err)
	}
	if nj.NodeID != n.id.ID || len(nj.Certificate) == 0 {
		return fmt.Errorf("the node.joined entry %d holds no node certificate for this node", e.Seq)
	}
	tc, err := n.id.TLSCertificate(nj.Certificate)
	if err != nil {
		return fmt.Errorf("the node certificate of entry %d: %w", e.Seq, err)
	}
	n.cert.Store(tc)
	return nil
}

// loadServiceKey reads the service identity (the log key) of the local
// ledger, for a restarted node to check its peers before its service
// opens.
func (n *clusterNode) loadServiceKey(l store.Ledger) {
	if n.pinned {
		return
	}
	errFound := errors.New("found")
	l.Scan(1, func(e *ledger.Entry) error {
		if e.Type != ledger.TypeLogKey {
			return nil
		}
		var lk state.LogKey
		if json.Unmarshal(e.Body, &lk) == nil {
			if k, err := node.ServiceKey(lk.VerifierKey); err == nil {
				n.serviceKey.Store(&k)
			}
		}
		return errFound
	})
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
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &clusterNode{cfg: c, ln: ln, adv: c.Advertise, mkFile: cfg.MasterKeyFile, ctx: ctx, log: log}
	if n.adv == "" {
		n.adv = ln.Addr().String()
	}
	if err := n.attest(ctx, cfg, log); err != nil {
		ln.Close()
		return nil, err
	}
	if err := n.setupTLS(); err != nil {
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
		n.mem = &memSealer{Versions: &seal.Versions{}}
		return n, nil
	}
	if err := n.prepareSecret(cfg, fresh, log); err != nil {
		ln.Close()
		return nil, err
	}
	// Every restart is a new node (a new node key and TLS key): it is
	// admitted again before its service opens, which endorses its TLS
	// key, whether or not it holds a dev master key file.
	if !fresh {
		n.rejoin = true
	}
	if fresh && c.Join != "" {
		if err := n.join(ctx, log); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return n, nil
}

// prepareSecret sets up this node's ledger secret (docs/security.md
// "Ledger secrets and rekey"): in memory only. A production founder
// generates it in memory; the founder of a dev cluster creates it in its
// dev-only master key file. A joining node receives it in its handoff; a
// restarted one is admitted again and receives it anew (readmit); one
// holding the dev-only file opens with it, and alone in its cluster
// admits itself once its service opens.
func (n *clusterNode) prepareSecret(cfg *Config, fresh bool, log *slog.Logger) error {
	n.mem = &memSealer{Versions: &seal.Versions{}}
	n.dev = cfg.devMasterKey
	_, err := os.Stat(n.mkFile)
	hasFile := err == nil
	switch {
	case n.found && cfg.devMasterKey:
		if !hasFile {
			if _, err := seal.CreateFile(n.mkFile); err != nil {
				return err
			}
			n.devKeyCreated = true
		}
		return n.loadKeyFile()
	case n.found && hasFile && ledgerExists(cfg.DataDir):
		// A cluster founded on a ledger `tkms init` made (governed from
		// its genesis): its sealed parts are under that master key, so it
		// is version 1. The host had the file: say so, as for a restart.
		log.Warn("cluster: this founding node takes the master key file that sealed its ledger as version 1 of the ledger secret; the host can read that file: once the other nodes run, stop this node, move the file away and start it again (it is admitted again like any node). A rekey (after a remove_node) makes what follows unreadable with it", "file", n.mkFile)
		return n.loadKeyFile()
	case n.found:
		if hasFile {
			return fmt.Errorf("cluster: a cluster's ledger secret is generated in memory and never written to disk: move %s away to found a cluster", n.mkFile)
		}
		n.mem.Versions = seal.NewVersions()
		log.Warn("cluster: this founding node generated the ledger secret in memory; it exists only in the memory of the cluster's trusted nodes: if every node is lost at once, only recovery by the members brings the service back (docs/recovery.md)")
		return nil
	case fresh:
		if hasFile {
			return fmt.Errorf("cluster: a joining node receives the ledger secret from the cluster and keeps it in memory only: move %s away to join", n.mkFile)
		}
		return nil
	case hasFile:
		if !cfg.devMasterKey {
			log.Warn("cluster: this node keeps the first version of the ledger secret in a file, which the host can read; once the other nodes run, stop it, move the file away and start it again: it is admitted again like any node", "file", n.mkFile)
		}
		return n.loadKeyFile()
	}
	return nil // a restart: admitted again (prepareCluster sets rejoin)
}

// ledgerExists reports whether dir holds a ledger (one `tkms init` made).
func ledgerExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, store.FileName))
	return err == nil
}

// loadKeyFile installs the dev-only master key file as version 1 of the
// ledger secret.
func (n *clusterNode) loadKeyFile() error {
	k, err := seal.ReadKeyFile(n.mkFile)
	if err != nil {
		return err
	}
	defer clear(k)
	n.devKeyFile = true
	return n.mem.set(k)
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
		Secrets: func() ([]byte, error) { return n.mem.keyCopy() },
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
	e, err := svc.AdmitNode(ctx, n.admit, req.NodeID, req.NodeKey, req.TLSKey, req.Evidence)
	if err != nil {
		return nil, err
	}
	return json.Marshal(handoff{Entry: ledger.MarshalRecord(e), ServiceKey: svc.LogVerifierKey()})
}

// opened is called once the service is open and caught up: the founding
// node records itself, and joins are admitted from now on.
func (n *clusterNode) opened(ctx context.Context, svc *kms.Service, log *slog.Logger) error {
	if n.found {
		e, err := svc.RecordFounder(ctx, n.admit, n.cfg.NodeID, n.id)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if err := n.endorsed(e); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		log.Info("cluster: founding node recorded", "node_id", n.id.ID, "seq", e.Seq)
	}
	n.svc.Store(svc)
	if n.selfAdmit {
		go n.reattest(ctx, svc, log)
	}
	if v := svc.SecretVersion(); n.devKeyFile && v > 1 {
		log.Info("cluster: the ledger was rekeyed since the dev master key file was written (it holds version 1 only); this node runs on the version its handoff brought", "version", v)
	}
	var holders, threshold int
	svc.Read(func(st *state.State) {
		rs, k := st.RecoveryRecipients()
		holders, threshold = len(rs), k
	})
	if !n.dev && (threshold == 0 || holders < threshold) {
		log.Warn("cluster: no recovery shares can be made (the constitution's recovery_threshold is unset, or fewer members hold an encryption key): the ledger secret exists only in the nodes' memory, so if every node is lost at once every key is lost; give members encryption keys and set recovery_threshold (docs/recovery.md)", "threshold", threshold, "members_with_encryption_keys", holders)
	}
	return nil
}

// reattest has a restarted node that is alone in its cluster admitted
// again under this process's fresh node key, in the background, once its
// service opened: its evidence is checked against the node policy in
// force, and a node.joined entry records its new key and node certificate
// (the last one of each member is the one GET /v1/service lists). Until
// then, and if it is refused, it goes on with the secrets it holds; a
// refusal is logged as an error.
func (n *clusterNode) reattest(ctx context.Context, svc *kms.Service, log *slog.Logger) {
	req := n.joinRequest()
	for {
		var e *ledger.Entry
		var mk []byte
		var err error
		if _, addr := n.rs.Leader(); n.rs.IsLeader() {
			if e, err = svc.AdmitNode(ctx, n.admit, req.NodeID, req.NodeKey, req.TLSKey, req.Evidence); err == nil {
				if mk, err = kms.OpenHandoff(e, n.id); err == nil {
					err = n.endorsed(e)
				}
			}
		} else if addr == "" {
			err = raftstore.ErrNoLeader
		} else {
			var res *raftstore.JoinResult
			if res, err = raftstore.Join(ctx, addr, req, n.joinClient); err == nil {
				e, mk, err = n.openHandoff(res.Handoff)
			}
		}
		clear(mk)
		if err == nil {
			log.Info("cluster: this restarted node was admitted under its new node key", "node_id", n.id.ID, "seq", e.Seq)
			return
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
		res, err := raftstore.Join(ctx, addr, n.joinRequest(), n.joinClient)
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
		// A founder snapshotting a large ledger is waited for as long as
		// it takes; an election, a minute.
		founding := errors.Is(err, raftstore.ErrFounding)
		if !errors.Is(err, raftstore.ErrNoLeader) || (time.Now().After(deadline) && !founding) {
			var cerr *tls.CertificateVerificationError
			if errors.As(err, &cerr) || strings.Contains(err.Error(), "certificate") {
				return fmt.Errorf("cluster: %w: the node at %s is not of this cluster (its certificate does not chain to cluster.ca_file or is not the service identity's, cluster.service_key; or ours does not chain to its CA)", err, addr)
			}
			return fmt.Errorf("cluster: %w", err)
		}
		if founding {
			log.Info("cluster: waiting for the founding node to snapshot its ledger before joining", "join", addr)
		} else {
			log.Info("cluster: waiting for the cluster to elect a leader to join", "join", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// The handoff (raftstore/handoff.go): the node.joined entry whose
	// secrets only this node's key opens, and its node certificate.
	e, mk, err := n.openHandoff(n.joined.Handoff)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	err = n.mem.set(mk)
	clear(mk)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	log.Info("cluster: joined as a non-voter; promoted once caught up", "node_id", n.cfg.NodeID, "handoff_seq", e.Seq, "leader", n.joined.Leader, "commit_index", n.joined.CommitIndex)
	return nil
}

// kmsConfig makes the service open its ledger on this node.
func (n *clusterNode) kmsConfig(kc *kms.Config, url string, log *slog.Logger) {
	kc.Joined = !n.found
	kc.Versions, kc.Identity = n.mem.Versions, n.id
	kc.OpenLedger = func(dir string, opts store.Options) (store.Ledger, error) {
		rcfg := raftstore.Config{
			NodeID: n.cfg.NodeID, Listener: n.ln, Advertise: n.adv, URL: url,
			TLS: n.tls, CheckPeer: n.checkPeer, JoinTLS: n.joinTLS, Vouch: n.vouch,
			Bootstrap: n.found, Joined: n.joined, Logger: log,
			Admit: n.admitNode,
		}
		if r := n.cfg.Raft; r != nil {
			rcfg.SnapshotThreshold, rcfg.TrailingLogs = r.SnapshotThreshold, r.TrailingLogs
			rcfg.SnapshotInterval, rcfg.HeartbeatTimeout, rcfg.ElectionTimeout, _ = r.durations() // validated
		}
		rs, err := raftstore.Open(dir, opts, rcfg)
		n.rs = rs
		if err == nil && n.rejoin {
			n.loadServiceKey(rs)
			if err = n.readmit(); err != nil {
				rs.Close()
				return nil, err
			}
		}
		return rs, err
	}
}

// sealer is the ledger secret of this node, in memory; nil without a
// cluster (the master key file's).
func (n *clusterNode) sealer() seal.Sealer {
	if n == nil {
		return nil
	}
	return n.mem
}

// joinRequest is this process's request to join (or be admitted again).
func (n *clusterNode) joinRequest() raftstore.JoinRequest {
	return raftstore.JoinRequest{NodeID: n.cfg.NodeID, Address: n.adv, NodeKey: n.id.Public, TLSKey: n.id.TLSKey, Evidence: n.id.Evidence}
}

// readmit has a restarted node admitted again under this process's fresh
// node key and TLS key, its raft running (a two-node cluster needs its
// vote to commit the node.joined entry) and its service not yet open: the
// entry holds its node certificate, without which its peers refuse its
// TLS, and, for a node without a master key file, the master key it needs
// to open the ledger. While no leader is known it asks its peers in turn,
// which vouch for its attested TLS key (vouch) so that its vote counts.
// Not endorsed yet, it hands leadership over if it wins an election. A
// node alone in its cluster, holding the master key in a file, admits
// itself once its service opens (reattest).
func (n *clusterNode) readmit() error {
	req := n.joinRequest()
	waitingTrust := false
	n.log.Info("cluster: this restarted node is a new node: it waits to be admitted again by a running node, which hands it the ledger secret; if every node of the cluster was lost, only recovery by the members brings the service back (docs/recovery.md)", "node_id", n.id.ID)
	for try := 0; ; try++ {
		var err error
		_, addr := n.rs.Leader()
		peers := n.peers()
		switch {
		case len(peers) == 0 && n.devKeyFile:
			n.selfAdmit = true
			return nil
		case n.rs.Raft().State() == raft.Leader:
			err = n.rs.Raft().LeadershipTransfer().Error()
			if err == nil {
				err = raftstore.ErrNoLeader
			}
		case addr == "" && len(peers) == 0:
			err = raftstore.ErrNoLeader
		default:
			viaPeer := addr == ""
			if viaPeer {
				addr = peers[try%len(peers)] // no leader known: a peer vouches, or forwards
			}
			// A peer that does not answer (a non-voter that never
			// serves, a host that drops packets) must not hold the
			// loop: each attempt is bounded, shorter via a peer.
			timeout := 30 * time.Second
			if viaPeer {
				timeout = 5 * time.Second
			}
			actx, cancel := context.WithTimeout(n.ctx, timeout)
			var res *raftstore.JoinResult
			res, err = raftstore.Join(actx, addr, req, n.joinClient)
			cancel()
			if err != nil && viaPeer && !errors.Is(err, raftstore.ErrNodeRefused) {
				// That peer may be restarting too (not endorsed yet): ask
				// the next one.
				err = fmt.Errorf("%w (%v)", raftstore.ErrNoLeader, err)
			}
			if err == nil {
				n.rs.RaiseCaughtUpFloor(res.CommitIndex)
				var e *ledger.Entry
				var mk []byte
				if e, mk, err = n.openHandoff(res.Handoff); err == nil {
					err = n.mem.set(mk)
					clear(mk)
					if err == nil {
						n.log.Info("cluster: this restarted node was admitted under its new node key", "node_id", n.id.ID, "seq", e.Seq)
						return nil
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

// peers returns the node-to-node addresses of the other voters of the
// cluster's configuration: those whose vouching lets this node's vote
// count while no leader is known (a non-voter knows no leader either).
func (n *clusterNode) peers() []string {
	f := n.rs.Raft().GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) != n.cfg.NodeID && srv.Suffrage == raft.Voter {
			out = append(out, string(srv.Address))
		}
	}
	return out
}

// memSealer is this node's ledger secret, held in memory only: every
// version it holds (internal/seal Versions), the current one sealing.
//
// The ledger secret's contract, for the handoff and for recovery: the
// blob keyCopy returns (NodeAdmission.Secrets, what a joining node is
// handed) is the one opaque byte string a node obtains, and set is the
// one way a node installs one (a handoff's, a readmission's, a
// recovered secret's).
type memSealer struct {
	*seal.Versions
}

// set installs a ledger secret blob (seal.Versions.Install).
func (m *memSealer) set(blob []byte) error { return m.Install(blob) }

// keyCopy returns the current ledger secret blob (seal.Versions.Secret);
// the caller clears it.
func (m *memSealer) keyCopy() ([]byte, error) { return m.Secret() }

// close releases the listener if the store never took it.
func (n *clusterNode) close() {
	if n.rs == nil {
		n.ln.Close()
	}
}

// handler serves GET /v1/cluster and adds Retry-After to every 503 of
// next, the API (a write without a leader is to be retried shortly).
func (n *clusterNode) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/cluster" {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				apierror.Write(w, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use GET")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(n.rs.Status())
			return
		}
		if r.URL.Path == "/v1/service" {
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				apierror.Write(w, http.StatusMethodNotAllowed, httpapi.CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use GET")
				return
			}
			svc := n.svc.Load()
			if svc == nil {
				apierror.Write(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the service is opening: retry shortly")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(serviceIdentity(svc))
			return
		}
		next.ServeHTTP(&retryAfterWriter{ResponseWriter: w}, r)
	})
}

// serviceIdentity is GET /v1/service (api.Service): the service's identity
// and every trusted node with the evidence that binds its keys, endorsed by
// the log: the receipt of its node.joined entry under a checkpoint signed by
// the service's log key, and its node certificate, which the log key signed
// for its attested TLS key (a client checks it with node.CheckPeer: the
// certificate holds tls_key, whose SHA-256 is the evidence's
// REPORT_DATA[32:64]).
func serviceIdentity(svc *kms.Service) api.Service {
	v := api.Service{LogOrigin: svc.LogOrigin(), LogKey: svc.LogVerifierKey(), Nodes: []api.ServiceNode{}}
	var nodes []*state.Node
	svc.Read(func(st *state.State) { nodes = st.TrustedNodes() })
	for _, nd := range nodes {
		sn := api.ServiceNode{
			NodeID: nd.NodeID, Member: nd.Member, NodeKey: nd.NodeKey, Evidence: nd.Evidence,
			EvidenceType: nd.EvidenceType, Claims: nd.Claims, Simulated: nd.Simulated, Seq: nd.Seq,
			TLSKey: nd.TLSKey, Certificate: nd.Certificate,
		}
		if !json.Valid(nd.Evidence) {
			sn.Evidence, _ = json.Marshal(nd.Evidence) // base64 of evidence that is not JSON
		}
		if rc, err := svc.Receipt(nd.Seq); err == nil { // none until a checkpoint covers it
			sn.Endorsement, _ = json.Marshal(rc)
		}
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
