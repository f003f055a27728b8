package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// A development cluster: `tkms dev --cluster` starts a first node that
// others join with `tkms dev --join DIR` (DIR: the first node's data
// directory, whose dev.json names its node-to-node address). Members
// authenticate each other by the node certificates the service identity
// issues to their attested TLS keys (cluster.go); joins also go under a dev
// CA, the operator's-CA layer, kept like every dev secret in plain files
// of the first node's data directory: a joining node reads the CA from
// there to issue its own certificate for joins, and copies the files
// that make the dev.json of any node work against every node: the OIDC
// issuer's key (tokens are minted under the first node's issuer URL), the
// simulated TEE's chain and the dev member's key.

// Files of a dev cluster node's data directory.
const (
	devNodeIDFile      = "node.id"
	devClusterAddrFile = "cluster.addr"
	devNodeCertFile    = "node.pem"
	devNodeKeyFile     = "node.key"
	devCACertFile      = "cluster-ca.pem"
	devCAKeyFile       = "cluster-ca.key"
)

// devClusterInfo is what a joining dev node reads of the first node.
type devClusterInfo struct {
	ClusterAddr string `json:"cluster_addr"`
	ClusterCA   string `json:"cluster_ca"`
	IssuerURL   string `json:"issuer_url"`
}

// setupDevCluster fills cfg.Cluster for a dev node in cfg.DataDir: the
// first node of a cluster (join == "") or one joining the node whose data
// directory is join. It returns the issuer URL tokens are minted under
// ("" for the first start of the first node: its own).
func setupDevCluster(cfg *Config, join string) (issuerURL string, err error) {
	dir := cfg.DataDir
	id, err := loadOrCreateNodeID(filepath.Join(dir, devNodeIDFile))
	if err != nil {
		return "", err
	}
	caDir := dir
	var first devClusterInfo
	if join != "" {
		raw, err := os.ReadFile(filepath.Join(join, "dev.json"))
		if err != nil {
			return "", fmt.Errorf("--join %s: %w (the data directory of a running or stopped 'tkms dev --cluster' node)", join, err)
		}
		if err := json.Unmarshal(raw, &first); err != nil || first.ClusterAddr == "" || first.ClusterCA == "" {
			return "", fmt.Errorf("--join %s: its dev.json names no cluster (start that node with --cluster)", join)
		}
		caDir = first.ClusterCA
		for _, f := range []string{oidcissuer.KeyFile, simsnp.ChainFile, devMemberKeyFile, devMemberPubFile} {
			if err := copyIfMissing(filepath.Join(join, f), filepath.Join(dir, f)); err != nil {
				return "", fmt.Errorf("--join %s: %w", join, err)
			}
		}
	}
	if err := ensureDevCA(caDir, join == ""); err != nil {
		return "", err
	}
	if err := ensureNodeCert(dir, caDir, id); err != nil {
		return "", err
	}
	listen := "127.0.0.1:0"
	if b, err := os.ReadFile(filepath.Join(dir, devClusterAddrFile)); err == nil {
		listen = strings.TrimSpace(string(b)) // a restart: the address the cluster knows
	}
	cfg.Cluster = &ClusterConfig{
		NodeID: id, Listen: listen, Join: first.ClusterAddr,
		CertFile: filepath.Join(dir, devNodeCertFile), KeyFile: filepath.Join(dir, devNodeKeyFile), CAFile: filepath.Join(caDir, devCACertFile),
	}
	// The cluster's tokens name one issuer URL, the first node's at its
	// first start: every node mints under it, across restarts on other
	// ports (the ledger trusts the issuer's key set, not its address).
	var own devClusterInfo
	if raw, err := os.ReadFile(filepath.Join(dir, "dev.json")); err == nil && json.Unmarshal(raw, &own) == nil && own.IssuerURL != "" {
		return own.IssuerURL, nil
	}
	return first.IssuerURL, nil
}

func loadOrCreateNodeID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var r [4]byte
	rand.Read(r[:])
	id := "node-" + hex.EncodeToString(r[:])
	return id, writeFileAtomic(path, []byte(id+"\n"), 0o600)
}

func copyIfMissing(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return writeFileAtomic(dst, b, 0o600)
}

// ensureDevCA creates the dev cluster's CA in dir if create is set and it
// is missing.
func ensureDevCA(dir string, create bool) error {
	if _, err := os.Stat(filepath.Join(dir, devCACertFile)); err == nil || !create {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tkms dev cluster CA (INSECURE)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	return writeCertAndKey(filepath.Join(dir, devCACertFile), filepath.Join(dir, devCAKeyFile), der, key)
}

// ensureNodeCert issues this node's certificate (127.0.0.1, localhost)
// under the dev CA in caDir, if it has none.
func ensureNodeCert(dir, caDir, id string) error {
	if _, err := os.Stat(filepath.Join(dir, devNodeCertFile)); err == nil {
		return nil
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, devCACertFile))
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(caDir, devCAKeyFile))
	if err != nil {
		return err
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return fmt.Errorf("dev cluster CA in %s: not PEM", caDir)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return err
	}
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writeCertAndKey(filepath.Join(dir, devNodeCertFile), filepath.Join(dir, devNodeKeyFile), der, key)
}

func writeCertAndKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}
