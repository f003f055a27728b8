package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
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
// master key, which is written to the master key file before the service
// opens. It returns nil without a cluster configuration.
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
	n := &clusterNode{cfg: c, tls: t, ln: ln, adv: c.Advertise, mkFile: cfg.MasterKeyFile}
	if n.adv == "" {
		n.adv = ln.Addr().String()
	}
	_, err = os.Stat(filepath.Join(cfg.DataDir, "raft", "raft.db"))
	fresh := errors.Is(err, fs.ErrNotExist)
	n.found = fresh && c.Join == ""
	if fresh && c.Join != "" {
		if err := n.join(ctx, log); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return n, nil
}

// join asks the member at cluster.join to add this node, retrying while
// the cluster elects a leader, and keeps the master key it hands over.
func (n *clusterNode) join(ctx context.Context, log *slog.Logger) error {
	addr := strings.TrimPrefix(strings.TrimPrefix(n.cfg.Join, "https://"), "tcp://")
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := raftstore.Join(ctx, addr, n.cfg.NodeID, n.adv, n.tls)
		if err == nil {
			n.joined = res
			break
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
	defer clear(n.joined.MasterKey)
	// The handoff (raftstore/handoff.go): the cluster's master key.
	if old, err := seal.ReadKeyFile(n.mkFile); err == nil {
		same := bytes.Equal(old, n.joined.MasterKey)
		clear(old)
		if !same {
			return fmt.Errorf("cluster: the master key file %s holds another key than the cluster's; move it away to join", n.mkFile)
		}
	} else if _, err := seal.WriteFile(n.mkFile, n.joined.MasterKey); err != nil {
		return err
	}
	log.Info("cluster: joined as a non-voter; promoted once caught up", "node_id", n.cfg.NodeID, "leader", n.joined.Leader, "commit_index", n.joined.CommitIndex)
	return nil
}

// kmsConfig makes the service open its ledger on this node.
func (n *clusterNode) kmsConfig(kc *kms.Config, url string, log *slog.Logger) {
	kc.Joined = !n.found
	kc.OpenLedger = func(dir string, opts store.Options) (store.Ledger, error) {
		rs, err := raftstore.Open(dir, opts, raftstore.Config{
			NodeID: n.cfg.NodeID, Listener: n.ln, Advertise: n.adv, TLS: n.tls, URL: url,
			Bootstrap: n.found, Joined: n.joined, Logger: log,
			MasterKey: func() ([]byte, error) { return seal.ReadKeyFile(n.mkFile) },
		})
		n.rs = rs
		return rs, err
	}
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
		api.ServeHTTP(&retryAfterWriter{ResponseWriter: w}, r)
	})
}

type retryAfterWriter struct{ http.ResponseWriter }

func (w *retryAfterWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
