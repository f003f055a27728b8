package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
)

// Config is the configuration file of `tkms serve` (and, optionally,
// `tkms dev`). Secrets are never in it: it names files holding them.
type Config struct {
	// Listen is the address to serve HTTP on (default 127.0.0.1:8000).
	// Without TLS it must be loopback unless PlainHTTP is set.
	Listen string `json:"listen"`
	// TLSCertFile and TLSKeyFile are the server's certificate chain (PEM,
	// leaf first) and private key (PEM); both or neither. With them tkms
	// serves HTTPS only (TLS 1.2 or later) and reloads the pair when the
	// files change (tls.go).
	TLSCertFile string `json:"tls_cert_file"`
	TLSKeyFile  string `json:"tls_key_file"`
	// PlainHTTP allows plain HTTP on an address that is not loopback: only
	// behind a TLS-terminating proxy on the same host or on a trusted
	// network. tkms dev does not honour it: without TLS it listens on
	// loopback only.
	PlainHTTP bool `json:"plain_http"`
	// Readers are PEM files of TLS client certificates that identify
	// readers at GET /app/auth ("user_cert"), besides the certificates
	// members registered with (readers.go). They need TLS.
	Readers []string `json:"readers"`
	// DataDir holds the ledger and keyring (required for serve).
	DataDir string `json:"data_dir"`
	// MasterKeyFile holds the 256-bit master key as hex, mode 0600
	// (default DATA_DIR/master.key). serve requires it to exist, except
	// on a node that joined a cluster: that node holds the master key in
	// memory only, from the cluster, and refuses to join beside this file.
	MasterKeyFile string `json:"master_key_file"`
	// OperatorTokenFile holds the bearer token that authorises
	// POST /app/refresh. The environment variable TKMS_OPERATOR_TOKEN
	// may be used instead. Without either, refresh is disabled.
	OperatorTokenFile string `json:"operator_token_file"`
	// ServiceName names this instance in the ledger's genesis entry.
	ServiceName string `json:"service_name"`
	// LogOrigin names the transparency log in its checkpoints, e.g.
	// "kms.sro.example/depa" (C2SP tlog-checkpoint origin line; no spaces
	// or '+'). It is fixed when the ledger is created; the default is
	// "tkms/<service_name>/<8 random hex>".
	LogOrigin string `json:"log_origin"`
	// KeyRotationPolicy defaults to DEPA's (31 days, 7 days grace).
	KeyRotationPolicy *state.RotationPolicy `json:"key_rotation_policy"`
	// SettingsPolicy is served at /app/settingsPolicy.
	SettingsPolicy *state.Settings `json:"settings_policy"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `json:"log_level"`
	// LogFormat is json (default for serve) or text (default for dev).
	LogFormat string `json:"log_format"`
	// SnapshotEvery is the number of ledger entries between state
	// snapshots (default 10000).
	SnapshotEvery uint64 `json:"snapshot_every"`

	// JWTIssuers are the token issuers trusted for key release (Entra ID
	// v1/v2, or any OIDC issuer): issuer, audiences and one key source
	// (discovery_url, jwks_url or a static jwks). Without issuers the
	// release endpoints answer 503 RELEASE_NOT_CONFIGURED.
	JWTIssuers []state.JWTIssuer `json:"jwt_issuers"`
	// JWTValidationPolicy is, per issuer, the claims its tokens must carry
	// (a value or a list of values).
	JWTValidationPolicy map[string]map[string]any `json:"jwt_validation_policy"`
	// KeyReleasePolicy is the key release policy, in the Azure-compatible
	// {claims, gte, gt} grammar or the Azure SKR grammar. Unset denies
	// every release.
	KeyReleasePolicy json.RawMessage `json:"key_release_policy"`
	// UVMTrusted lists the UVM endorsers (did:x509 and feed) trusted for
	// ACI evidence; empty means Microsoft's ACI and Confidential AKS feeds.
	UVMTrusted []uvm.Endorser `json:"uvm_trusted"`
	// UVMMinSVN is the least UVM endorsement SVN accepted.
	UVMMinSVN uint64 `json:"uvm_min_svn"`
	// MaxVMPL is the highest VMPL accepted in SNP reports (default 0).
	MaxVMPL int `json:"max_vmpl"`
	// InsecureSimulatedTEE trusts the simulated TEE of the data directory
	// (internal/attest/simsnp) besides real AMD hardware. For development
	// only: anyone with the data directory can forge evidence. Every
	// release under it is marked simulated in the ledger.
	InsecureSimulatedTEE bool `json:"insecure_simulated_tee"`
	// MAAInstances are the Azure Attestation instances whose tokens are
	// accepted as "maa" evidence: {"issuer": URL, "jwks": static JWK Set
	// (optional; else fetched from the issuer's OpenID configuration)},
	// until governance sets them (set_maa_instances), which then rules.
	MAAInstances []maa.Instance `json:"maa_instances"`
	// TDXCollateral is Intel PCS collateral per TDX platform (FMSPC), for
	// quotes that carry none: their TCB status is then evaluated.
	TDXCollateral []api.TDXCollateral `json:"tdx_collateral"`
	// MetricsListen, if set, is the address (host:port) that serves
	// GET /metrics, in plain HTTP, instead of the API's address: keep it
	// on a private network for the scraper.
	MetricsListen string `json:"metrics_listen"`
	// BackupDir, if set, is where serve writes a backup of the ledger and
	// the keyring when it receives SIGUSR1 (docs/operations.md "Backup
	// and restore"): a new directory tkms-<time>-<seq> each time.
	BackupDir string `json:"backup_dir"`
	// Limits is admission control: rate limits, the verification pool,
	// trusted proxies and body caps (limits.go; unset: the defaults).
	Limits *LimitsConfig `json:"limits"`
	// Cluster, if set, makes this tkms a node of a replicated cluster
	// (cluster.go); unset, the ledger is the embedded single-node file.
	Cluster *ClusterConfig `json:"cluster"`
	// AutoRecovery lets a recovering node use the ledger's automatic
	// recovery member (autorecover.go, docs/auto-recovery.md).
	AutoRecovery *AutoRecoveryConfig `json:"auto_recovery"`

	// node is the cluster node prepared by serve or dev (cluster.go).
	node *clusterNode
	// devMasterKey, set by tkms dev, lets the founder of a dev cluster
	// keep its ledger secret's first version in MasterKeyFile (dev-only,
	// insecure); a production founder generates it in memory.
	devMasterKey bool

	// recovering makes the node recover the ledger copy in the data
	// directory (recover.go); recovered, once members' shares recovered
	// it, is what its service.recovered entry records.
	recovering bool
	recovered  *kms.Recovered

	// governance, set by tkms dev on a new data directory, makes the new
	// ledger governed (never read from the file).
	governance *kms.GovInit

	// rotationDefault and settingsDefault: applyDefaults filled in the
	// policy (the file named none), so a governed ledger's own is no
	// difference worth a warning.
	rotationDefault, settingsDefault bool
}

// loadConfig reads a config file. Unknown fields are errors: a typo must not
// silently fall back to a default.
func loadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("config %s: trailing data after the JSON object", path)
	}
	return &c, nil
}

// applyDefaults fills unset fields.
func (c *Config) applyDefaults(defaultFormat string) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8000"
	}
	if c.MasterKeyFile == "" && c.DataDir != "" {
		c.MasterKeyFile = filepath.Join(c.DataDir, "master.key")
	}
	if c.ServiceName == "" {
		c.ServiceName = "tkms"
	}
	if c.KeyRotationPolicy == nil {
		c.rotationDefault = true
		p := state.DefaultRotationPolicy()
		c.KeyRotationPolicy = &p
	}
	if c.SettingsPolicy == nil {
		c.settingsDefault = true
		c.SettingsPolicy = &state.Settings{Service: state.ServiceSettings{
			Name: c.ServiceName, Description: "tkms: confidential, transparent key management for DEPA inferencing", Version: version,
		}}
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = defaultFormat
	}
}

// Validate checks the configuration, reporting every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen %q: %w", c.MetricsListen, err))
		}
	}
	errs = append(errs, c.validateTLS(time.Now())...)
	if _, err := c.loadReaders(); err != nil {
		errs = append(errs, err)
	}
	if c.LogOrigin != "" {
		if err := translog.ValidOrigin(c.LogOrigin); err != nil {
			errs = append(errs, fmt.Errorf("log_origin: %w", err))
		}
	}
	if c.KeyRotationPolicy != nil {
		if err := c.KeyRotationPolicy.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SettingsPolicy != nil {
		if err := c.SettingsPolicy.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("settings_policy: %w", err))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.MaxVMPL < 0 || c.MaxVMPL > 3 {
		errs = append(errs, fmt.Errorf("max_vmpl %d: want 0..3", c.MaxVMPL))
	}
	for i, in := range c.MAAInstances {
		if in.Simulated {
			errs = append(errs, fmt.Errorf("maa_instances[%d]: \"simulated\" is not a setting (insecure_simulated_tee trusts the simulated instance)", i))
		} else if !strings.HasPrefix(in.Issuer, "https://") {
			errs = append(errs, fmt.Errorf("maa_instances[%d]: issuer %q: want an https URL", i, in.Issuer))
		}
	}
	if len(c.JWTIssuers) > 0 {
		if err := c.jwtPolicy().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("jwt_issuers: %w", err))
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log_format %q: want json or text", c.LogFormat))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Cluster.validate()...)
	errs = append(errs, c.AutoRecovery.validate()...)
	return errors.Join(errs...)
}

// jwtPolicy is the JWT policy the configuration asks for, or nil.
func (c *Config) jwtPolicy() *state.JWTPolicy {
	if len(c.JWTIssuers) == 0 {
		return nil
	}
	return &state.JWTPolicy{Issuers: c.JWTIssuers, Claims: c.JWTValidationPolicy}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (c *Config) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// operatorToken reads the operator token from the environment or the
// configured file. A configured file that cannot be read is fatal.
func (c *Config) operatorToken() (string, error) {
	if t := os.Getenv("TKMS_OPERATOR_TOKEN"); t != "" {
		return t, nil
	}
	if c.OperatorTokenFile == "" {
		return "", nil
	}
	return readSecretFile(c.OperatorTokenFile)
}

// readSecretFile reads a one-line secret from a file that only its owner
// may read.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s: permissions %v are too open; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	clear(b) // the secret lives on in t, a string, which cannot be cleared
	if t == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return t, nil
}
