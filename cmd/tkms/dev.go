package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/devgov"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// DevInfo is what `tkms dev` writes to DATA_DIR/dev.json, for people and
// black-box tests to find the instance.
type DevInfo struct {
	KMSURL        string `json:"kms_url"`
	OperatorToken string `json:"operator_token"`
	DataDir       string `json:"data_dir"`
	PID           int    `json:"pid"`
	// IssuerURL is the built-in OIDC issuer, KMSURL + devOIDCPath: its
	// discovery document and JWK Set are served on the same listener.
	IssuerURL string `json:"issuer_url"`
	// Audience is the aud of the tokens the dev issuer mints.
	Audience string `json:"audience"`
	// WorkloadToken is a token of the default dev workload identity,
	// minted at start and valid for devWorkloadTTL.
	WorkloadToken string `json:"workload_token"`
	// LogPublicKey is the verifier key of the transparency log's
	// checkpoints (also served at /v1/log/key), for tkms audit --log-key.
	LogPublicKey string `json:"log_public_key"`
	// MemberKey is the private key file of the dev member, the one member
	// of a dev directory's governance, and MemberID its member id. Empty
	// in a directory created before governance.
	MemberKey string `json:"member_key,omitempty"`
	MemberID  string `json:"member_id,omitempty"`
	// A node of a dev cluster (--cluster, --join; devcluster.go): its
	// node id, node-to-node address and the directory of the cluster's
	// dev CA.
	NodeID      string `json:"node_id,omitempty"`
	ClusterAddr string `json:"cluster_addr,omitempty"`
	ClusterCA   string `json:"cluster_ca,omitempty"`
}

// The dev member's key files in the data directory.
const (
	devMemberKeyFile = "member.key"
	devMemberPubFile = "member.pub"
)

// The dev OIDC issuer and the identity of its default workload. Its tokens
// are shaped like the ones Entra ID issues to a managed identity.
const (
	devOIDCPath    = "/dev/oidc"
	devAudience    = "api://tkms-dev"
	devWorkloadID  = "tkms-dev-workload"
	devTenantID    = "tkms-dev-tenant"
	devWorkloadTTL = 24 * time.Hour
)

// apiHandlerWrap, when set, wraps the API handler that runServer serves.
// tkms dev sets it to mount its OIDC issuer on the same listener
// (devHandler); tkms serve never does.
var apiHandlerWrap func(http.Handler) http.Handler

// devHandler serves the dev OIDC issuer's documents below devOIDCPath and
// everything else with api. It is a prefix test rather than an
// http.ServeMux so that api keeps seeing requests exactly as sent (a
// ServeMux would redirect unclean paths before api could answer them).
func devHandler(iss *oidcissuer.Issuer, api http.Handler) http.Handler {
	oidc := iss.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, devOIDCPath+"/") {
			oidc.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// mintWorkloadToken mints a token for the dev workload identity sub (the
// sub and oid claims) and audience aud, valid for ttl.
func mintWorkloadToken(iss *oidcissuer.Issuer, sub, aud string, ttl time.Duration) (string, error) {
	return iss.MintManagedIdentity(oidcissuer.ManagedIdentity{
		Audience:    aud,
		PrincipalID: sub,
		TenantID:    devTenantID,
		TTL:         ttl,
	})
}

const devBanner = `tkms dev: DEVELOPMENT MODE. The master key and operator token are kept in plain files in %[1]s.
tkms dev: INSECURE: it trusts its own OIDC issuer and the SIMULATED TEE of %[1]s (not a TEE: anyone with the directory forges evidence).
tkms dev: never use this data directory for real keys; run 'tkms serve' in production.
`

func cmdDev(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return cmdDevToken(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "vault" {
		return cmdDevVault(args[1:], stdout, stderr)
	}
	fs := newFlagSet("dev", stderr)
	listen := fs.String("listen", "127.0.0.1:8000", "`address` to listen on (127.0.0.1:0 picks a free port)")
	dataDir := fs.String("data", "tkms-dev", "data `directory`")
	configPath := fs.String("config", "", "optional configuration `file`; --listen and --data override it")
	releasePolicy := fs.String("release-policy", "", "key release policy `file` (JSON, either grammar); default on a new data directory: the simulated TEE's measurement, no debug")
	jwtPolicy := fs.String("jwt-policy", "", "`file` with the claims (JSON object) tokens of the dev issuer must carry; default {\"idtyp\":\"app\"}")
	cluster := fs.Bool("cluster", false, "run as the first node of a development cluster that 'tkms dev --join' nodes join")
	join := fs.String("join", "", "data `directory` of a 'tkms dev --cluster' node whose cluster to join (its dev.json names it)")
	advertise := fs.String("cluster-advertise", "", "node-to-node `address` the other nodes dial, if not the one this node binds (a proxy in front of it)")
	var ro recoverOptions
	recoverFrom := fs.String("recover", "", "recover the ledger copy in `DIR` (a copy of a dev cluster node's data directory, without any master key) into --data, with members' recovery shares (docs/recovery.md)")
	fs.StringVar(&ro.stateFile, "recover-state", "", "with --recover: a tkms audit state `FILE` whose checkpoint the ledger copy must extend")
	fs.StringVar(&ro.logKey, "recover-log-key", "", "with --recover: the log key `VKEY` the ledger copy must verify with (default: the copy's own)")
	simMeasurement := fs.String("simulated-measurement", "", "MEASUREMENT (96 `hex` digits) this cluster node's simulated TEE reports, instead of the default that the dev node policy admits")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := &Config{}
	if *configPath != "" {
		var err error
		if cfg, err = loadConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["listen"] || cfg.Listen == "" {
		cfg.Listen = *listen
	}
	if set["data"] || cfg.DataDir == "" {
		cfg.DataDir = *dataDir
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	cfg.DataDir = abs
	if *recoverFrom != "" {
		if *join != "" {
			return fmt.Errorf("%w: --recover founds a new cluster on the recovered ledger: it joins none", errUsage)
		}
		if err := copyLedgerCopy(*recoverFrom, cfg.DataDir); err != nil {
			return err
		}
		*cluster = true
		cfg.recovering = true
	}
	_, err = os.Stat(filepath.Join(cfg.DataDir, store.FileName))
	newDir := errors.Is(err, os.ErrNotExist)
	if *releasePolicy != "" {
		b, err := os.ReadFile(*releasePolicy)
		if err != nil {
			return fmt.Errorf("release policy: %w", err)
		}
		cfg.KeyReleasePolicy = b
	} else if cfg.KeyReleasePolicy == nil && newDir {
		cfg.KeyReleasePolicy = devReleasePolicy()
	}
	devClaims := map[string]any{"idtyp": "app"}
	if *jwtPolicy != "" {
		b, err := os.ReadFile(*jwtPolicy)
		if err != nil {
			return fmt.Errorf("jwt policy: %w", err)
		}
		if err := json.Unmarshal(b, &devClaims); err != nil {
			return fmt.Errorf("jwt policy %s: want a JSON object of claims: %w", *jwtPolicy, err)
		}
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "tkms-dev"
	}
	cfg.applyDefaults("text")
	if cfg.SettingsPolicy != nil {
		devSettingsPolicy(cfg.SettingsPolicy)
	}
	if err := checkDevListen(cfg); err != nil {
		return err
	}
	// --cluster and --join make the cluster section: a configuration
	// file's section without a node id gives only its raft tuning.
	var raftTuning *RaftConfig
	if (*cluster || *join != "") && cfg.Cluster != nil && cfg.Cluster.NodeID == "" {
		raftTuning, cfg.Cluster = cfg.Cluster.Raft, nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	// Temporary files of a write interrupted by a crash; the files they
	// were to replace are intact.
	for _, name := range []string{"dev.json", "operator.token"} {
		stale, _ := filepath.Glob(filepath.Join(cfg.DataDir, name+".tmp*"))
		for _, f := range stale {
			os.Remove(f)
		}
	}
	log := cfg.logger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var joinIssuer string // a joined node mints under the first node's issuer URL
	if *cluster || *join != "" || cfg.Cluster != nil {
		if cfg.Cluster == nil {
			if joinIssuer, err = setupDevCluster(cfg, *join); err != nil {
				return err
			}
			cfg.Cluster.Advertise = *advertise
			cfg.Cluster.Raft = raftTuning
		}
		if *simMeasurement != "" {
			cfg.Cluster.SimulatedMeasurement = *simMeasurement
		}
		if len(cfg.Cluster.NodePolicy) == 0 {
			// The dev node policy: the simulated TEE's default
			// measurement, debug off (as the dev release policy).
			cfg.Cluster.NodePolicy = devReleasePolicy()
		}
		if errs := cfg.Cluster.validate(); len(errs) > 0 {
			return fmt.Errorf("%w: %w", errUsage, errors.Join(errs...))
		}
		// Dev nodes run in the simulated TEE of the data directory (the
		// first node's chain, copied by setupDevCluster), which every
		// node trusts. A joining node receives the master key from the
		// cluster, sealed to its attested node key.
		cfg.InsecureSimulatedTEE = true
		cfg.devMasterKey = true
		if cfg.node, err = prepareCluster(ctx, cfg, log); err != nil {
			return err
		}
		if cfg.recovering {
			unlock, err := devRecover(ctx, cfg, ro, log)
			if err != nil {
				return err
			}
			defer unlock()
		}
		if err := writeFileAtomic(filepath.Join(cfg.DataDir, devClusterAddrFile), []byte(cfg.node.ln.Addr().String()+"\n"), 0o600); err != nil {
			return err
		}
	}
	// A cluster node's ledger secret stays in memory (a joined node's
	// comes from the cluster; the dev founder's first version is also in
	// its dev-only master key file).
	var sealer seal.Sealer = cfg.node.sealer()
	created := cfg.node != nil && cfg.node.devKeyCreated
	if sealer == nil {
		if sealer, created, err = seal.LoadOrCreateFile(cfg.MasterKeyFile); err != nil {
			return err
		}
	}
	if cfg.OperatorTokenFile == "" {
		cfg.OperatorTokenFile = filepath.Join(cfg.DataDir, "operator.token")
	}
	token, err := loadOrCreateToken(cfg.OperatorTokenFile)
	if err != nil {
		return fmt.Errorf("operator token: %w", err)
	}
	// A new directory is governed by one dev member whose key is kept in
	// it; a directory created before governance stays ungoverned.
	member, err := devMember(cfg.DataDir, newDir)
	if err != nil {
		return fmt.Errorf("dev member: %w", err)
	}
	if newDir {
		cfg.governance = &kms.GovInit{Members: []gov.Member{member.Member}, Constitution: gov.DevConstitution()}
	}
	// The issuer's signing key lives in the data directory, so tokens
	// minted before a restart still verify after it.
	issuer, err := oidcissuer.New(cfg.DataDir, oidcissuer.Options{})
	if err != nil {
		return err
	}
	apiHandlerWrap = func(api http.Handler) http.Handler { return devHandler(issuer, api) }
	// tkms dev trusts the simulated TEE of its data directory, the chain
	// `tkms attest simulate --data DIR` signs with.
	cfg.InsecureSimulatedTEE = true
	fmt.Fprintf(stderr, devBanner, cfg.DataDir)
	if created {
		fmt.Fprintf(stderr, "tkms dev: created a new master key in %s (dev only: a production cluster keeps its ledger secret in memory)\n", cfg.MasterKeyFile)
	}
	infoPath := filepath.Join(cfg.DataDir, "dev.json")
	var info DevInfo
	return runServer(ctx, cfg, sealer, token, log, func(addr string) error {
		scheme := "http://"
		if cfg.tlsEnabled() {
			scheme = "https://"
		}
		info = DevInfo{KMSURL: scheme + addr, OperatorToken: token, DataDir: cfg.DataDir, PID: os.Getpid(), Audience: devAudience}
		if member != nil {
			info.MemberKey, info.MemberID = member.keyFile, member.ID
		}
		info.IssuerURL = info.KMSURL + devOIDCPath
		if joinIssuer != "" {
			info.IssuerURL = joinIssuer
		}
		if n := cfg.node; n != nil {
			info.NodeID, info.ClusterAddr, info.ClusterCA = n.cfg.NodeID, n.adv, filepath.Dir(n.cfg.CAFile)
		}
		if err := issuer.SetURL(info.IssuerURL); err != nil {
			return err
		}
		wt, err := mintWorkloadToken(issuer, devWorkloadID, devAudience, devWorkloadTTL)
		if err != nil {
			return err
		}
		info.WorkloadToken = wt
		// Trust the issuer with its key set as a static JWKS: the key is
		// in the data directory, and nothing is served yet to discover.
		cfg.JWTIssuers = append(cfg.JWTIssuers, devIssuerEntry(info.IssuerURL, issuer.JWKS()))
		if cfg.JWTValidationPolicy == nil {
			cfg.JWTValidationPolicy = map[string]map[string]any{}
		}
		cfg.JWTValidationPolicy[info.IssuerURL] = devClaims
		return cfg.Validate()
	}, func(svc *kms.Service) error {
		if svc.Governed() && !newDir && joinIssuer == "" {
			// The configuration no longer changes a governed ledger's
			// policies; the dev issuer's own entry, whose URL changes with
			// the port, is proposed by the dev member.
			for _, f := range []string{"release-policy", "jwt-policy"} {
				if set[f] {
					return fmt.Errorf("--%s: the data directory %s is governed: policies change by proposals; propose it (tkms gov propose --data %s ACTIONS.json)", f, cfg.DataDir, cfg.DataDir)
				}
			}
			if err := devgov.SyncIssuer(ctx, svc, member.proposer(), devIssuerEntry(info.IssuerURL, issuer.JWKS()), devClaims, log); err != nil {
				return err
			}
		}
		info.LogPublicKey = svc.LogVerifierKey()
		b, _ := json.MarshalIndent(info, "", "  ")
		if err := writeFileAtomic(infoPath, append(b, '\n'), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tkms dev: listening on %s\n"+
			"tkms dev: OIDC issuer %s (audience %s; more tokens: tkms dev token --data %s)\n"+
			"tkms dev: transparency log key %s\n"+
			"tkms dev: wrote %s (kms_url, operator_token, issuer_url, audience, workload_token, log_public_key, member_key, member_id)\n"+
			"tkms dev: try: curl %s/app/listpubkeys\n"+
			"tkms dev: audit: tkms audit --kms %s --log-key %s\n",
			info.KMSURL, info.IssuerURL, info.Audience, cfg.DataDir, info.LogPublicKey, infoPath, info.KMSURL, info.KMSURL, info.LogPublicKey)
		if member != nil && svc.Governed() {
			fmt.Fprintf(stdout, "tkms dev: governed by the dev member %s (key %s); change policies with: tkms gov propose --data %s ACTIONS.json\n",
				member.ID, member.keyFile, cfg.DataDir)
		}
		return nil
	})
}

// devSettingsPolicy makes a settings policy the one tkms dev records: it
// says debug, and sets the attestation settings explicitly (the defaults,
// unless the configuration sets them), so that the ledger shows the floors
// in force.
func devSettingsPolicy(s *state.Settings) {
	s.Service.Debug = true
	if s.Attestation == nil {
		a := policy.DefaultAttestation()
		s.Attestation = &a
	}
}

// devReleasePolicy is the key release policy of a new dev data directory:
// evidence of the simulated TEE with its default measurement, debug off.
func devReleasePolicy() []byte {
	b, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-is-debuggable":     false,
		"x-ms-sevsnpvm-launchmeasurement": []string{hex.EncodeToString([]byte(simsnp.DefaultMeasurement))},
	}})
	return b
}

// loadOrCreateToken returns the token in path, creating a random one first
// if the file does not exist.
func loadOrCreateToken(path string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		var b [24]byte
		rand.Read(b[:])
		if err := writeFileAtomic(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	return readSecretFile(path)
}

// writeFileAtomic writes data to path through a synced temporary file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// devIssuerEntry is the trusted issuer entry of the dev OIDC issuer at url.
func devIssuerEntry(url string, jwks []byte) state.JWTIssuer {
	return state.JWTIssuer{Issuer: url, Audiences: []string{devAudience}, JWKS: jwks}
}

// A devMemberKey is the dev member and its signer.
type devMemberKey struct {
	gov.Member
	keyFile string
	signer  *gov.Signer
}

// devMember returns the dev member of dataDir: on a new directory it
// creates its key (member.key, 0600, and member.pub) unless a start that
// did not get as far as the ledger left one. On an existing directory it
// returns nil if there is no member key (a directory of a tkms before
// governance).
func devMember(dataDir string, newDir bool) (*devMemberKey, error) {
	keyFile := filepath.Join(dataDir, devMemberKeyFile)
	pubFile := filepath.Join(dataDir, devMemberPubFile)
	_, err := os.Stat(keyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !newDir:
		return nil, nil
	case errors.Is(err, fs.ErrNotExist):
		priv, pub, err := gov.GenerateDevKey()
		if err != nil {
			return nil, err
		}
		// Public, but a file of the data directory: 0600 like all of them.
		if err := writeFileAtomic(pubFile, pub, 0o600); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(keyFile, priv, 0o600); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	signer, err := loadMemberKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(pubFile)
	if err != nil {
		return nil, err
	}
	m, err := gov.NewMember("dev", string(pub), "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pubFile, err)
	}
	if m.ID != signer.MemberID() {
		return nil, fmt.Errorf("%s is not the public key of %s", pubFile, keyFile)
	}
	return &devMemberKey{Member: m, keyFile: keyFile, signer: signer}, nil
}

// proposer is the dev member's signer, nil when there is no dev member.
func (m *devMemberKey) proposer() *gov.Signer {
	if m == nil {
		return nil
	}
	return m.signer
}
