package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	configPath := fs.String("config", "", "configuration `file` (JSON; docs/operations.md lists every field)")
	allowUngoverned := fs.Bool("allow-ungoverned", false, "let serve create a new ledger without governance (members, constitution) on an empty data directory; nothing can govern it later (use tkms init instead)")
	join := fs.String("join", "", "node-to-node `address` of a cluster member to join on the first start (sets cluster.join)")
	var ro recoverOptions
	doRecover := fs.Bool("recover", false, "recover the ledger copy in the data directory with members' recovery shares (docs/recovery.md); needs the cluster section")
	fs.StringVar(&ro.stateFile, "recover-state", "", "with --recover: a tkms audit state `FILE` whose checkpoint the ledger copy must extend")
	fs.StringVar(&ro.logKey, "recover-log-key", "", "with --recover: the log key `VKEY` the ledger copy must verify with (default: the copy's own)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return fmt.Errorf("%w: --config is required", errUsage)
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	cfg.applyDefaults("json")
	if *join != "" {
		if cfg.Cluster == nil {
			return fmt.Errorf("%w: --join needs the cluster section of the configuration (node_id, listen, cert_file, key_file, ca_file)", errUsage)
		}
		cfg.Cluster.Join = *join
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s: %w", *configPath, err)
	}
	if *doRecover && cfg.Cluster == nil {
		return fmt.Errorf("%w: --recover needs the cluster section of the configuration: the recovered node founds a new cluster that others join", errUsage)
	}
	cfg.recovering = *doRecover
	log := cfg.logger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A node joining a cluster receives the master key from it (a
	// restarted one again, sealed to its fresh key), into memory only.
	if cfg.node, err = prepareCluster(ctx, cfg, log); err != nil {
		return err
	}
	if cfg.recovering {
		secret, rec, unlock, err := waitForRecovery(ctx, cfg, ro, log)
		if err != nil {
			return err
		}
		defer unlock()
		err = cfg.node.mem.set(secret)
		clear(secret)
		if err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
		cfg.recovered = rec
	}
	// serve never creates a master key: a missing one means the wrong
	// data directory or a lost key, and a fresh key would silently start
	// a new, empty service.
	// A node that joined a cluster holds the master key in memory only
	// (from its node.joined entry; a restart is admitted again).
	var sealer seal.Sealer = cfg.node.sealer()
	if sealer == nil {
		fsealer, err := seal.LoadFile(cfg.MasterKeyFile)
		if errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("%w (serve requires an existing master key: 'tkms init' creates a governed service with one; 'tkms dev' one for development)", err)
		}
		if err != nil {
			return err
		}
		sealer = fsealer
	}
	// A node that joins a cluster gets the cluster's ledger.
	if joining := cfg.node != nil && !cfg.node.found; !joining && !cfg.recovering {
		if err := checkNewLedger(cfg.DataDir, *allowUngoverned); err != nil {
			return err
		}
	}
	token, err := cfg.operatorToken()
	if err != nil {
		return fmt.Errorf("operator token: %w", err)
	}
	return runServer(ctx, cfg, sealer, token, log, nil, func(svc *kms.Service) error {
		warnUngoverned(svc, token, log)
		go backupOnSignal(ctx, svc, cfg.BackupDir, log)
		return nil
	})
}

// runServer opens the service, starts the scheduler and the HTTP server,
// and runs until ctx ends; then it shuts down cleanly. onListening, if set,
// is called with the bound address before the service opens; onOpen, if
// set, once it is open, before serving.
func runServer(ctx context.Context, cfg *Config, sealer seal.Sealer, operatorToken string, log *slog.Logger, onListening func(addr string) error, onOpen func(*kms.Service) error) error {
	tuneGC(log)
	tlsConf, err := newServerTLS(cfg, log) // nil: plain HTTP
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := checkPlainListen(cfg, ln.Addr()); err != nil {
		return err
	}
	addr := ln.Addr().String()
	// The hook runs before the service opens: tkms dev completes the
	// configuration with the address (its issuer's URL) here.
	if onListening != nil {
		if err := onListening(addr); err != nil {
			return err
		}
	}
	warnOpenDataDir(log, cfg.DataDir)
	kc := kms.Config{
		DataDir:         cfg.DataDir,
		Sealer:          sealer,
		ServiceName:     cfg.ServiceName,
		RotationPolicy:  *cfg.KeyRotationPolicy,
		Settings:        *cfg.SettingsPolicy,
		RotationDefault: cfg.rotationDefault,
		SettingsDefault: cfg.settingsDefault,
		ReleasePolicy:   cfg.KeyReleasePolicy,
		JWT:             cfg.jwtPolicy(),
		Logger:          log,
		SnapshotEvery:   cfg.SnapshotEvery,
		LogOrigin:       cfg.LogOrigin,
		Governance:      cfg.governance,
	}
	if cfg.node != nil {
		defer cfg.node.close()
		scheme := "http://"
		if tlsConf != nil {
			scheme = "https://"
		}
		url := scheme + addr
		if cfg.Cluster.PublicURL != "" {
			url = strings.TrimSuffix(cfg.Cluster.PublicURL, "/")
		}
		cfg.node.kmsConfig(&kc, url, log)
	}
	svc, err := kms.Open(ctx, kc)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped while waiting (a restarted cluster node waiting to be
		// admitted again): a clean stop.
		log.Info("stopped before the service opened")
		return nil
	}
	if err != nil {
		return err
	}
	defer svc.Close()
	if cfg.recovered != nil {
		// The first entry after the recovered ledger: the new log key.
		e, err := svc.RecordRecovery(ctx, *cfg.recovered)
		if err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
		log.Info("recovery: recorded", "seq", e.Seq, "log_key", svc.LogVerifierKey())
	}
	if cfg.node != nil {
		// Serve the cluster's state, not an old one: wait (a while) to
		// catch up with the leader.
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		if !cfg.node.rs.WaitCaughtUp(wctx) {
			log.Warn("cluster: not caught up with a leader; serving what this node holds", "seq", svc.Seq())
		}
		cancel()
		if err := cfg.node.opened(ctx, svc, log); err != nil {
			return err
		}
	}
	log.Info("transparency log", "origin", svc.LogOrigin(), "size", svc.Checkpoint().Size, "log_key", svc.LogVerifierKey())

	// The first key exists before the server answers. A failed tick is
	// no reason not to serve the keys that exist: the scheduler retries.
	if _, err := svc.Tick(ctx); err != nil {
		log.Error("key scheduler", "err", err)
	}
	adm, err := cfg.Limits.admission()
	if err != nil {
		return err
	}
	rel, closeRelease, err := newRelease(ctx, svc, cfg, log, adm)
	if err != nil {
		return err
	}
	defer closeRelease()
	if onOpen != nil {
		if err := onOpen(svc); err != nil {
			return err
		}
	}
	readers, err := cfg.loadReaders()
	if err != nil {
		return err
	}
	opts := httpapi.Options{OperatorToken: operatorToken, Logger: log, Release: rel,
		Bodies: adm.bodies, PerAddress: adm.perAddress, TrustedProxies: adm.trustedProxies, Readers: readers,
		Version: readBuildVersion().Version, Collectors: tlsExpiryCollector(tlsConf), MetricsElsewhere: cfg.MetricsListen != ""}
	if cfg.node != nil {
		// A node serves the cluster's state only once caught up: until
		// then (or while cut off from the majority) it is not ready, and
		// its raft state is in the metrics.
		opts.Ready = cfg.node.rs.CaughtUp
		opts.Collectors = append(opts.Collectors, cfg.node.rs.Collector())
	}
	api := httpapi.New(svc, opts)
	if cfg.MetricsListen != "" {
		stopMetrics, err := serveMetrics(cfg.MetricsListen, api.MetricsHandler(), log)
		if err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
		defer stopMetrics()
	}
	var h http.Handler = api
	if apiHandlerWrap != nil {
		h = apiHandlerWrap(h)
	}
	if cfg.node != nil {
		h = cfg.node.handler(h)
	}
	srv := httpapi.NewHTTPServer(addr, h, log, httpapi.DefaultLimits())
	srv.TLSConfig = tlsConf

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); svc.Run(runCtx) }()
	// The recovery shares follow the ledger secret, the members, their
	// keys and the threshold (internal/kms/recovery.go).
	go func() { defer wg.Done(); svc.RunRecoveryShares(runCtx, ledgerSecret(cfg)) }()

	err = serveUntil(ctx, srv, ln, log, func() {
		log.Info("tkms listening", "addr", addr, "tls", tlsConf != nil, "data_dir", cfg.DataDir, "seq", svc.Seq())
	})
	cancel()
	wg.Wait()
	return err
}

// ledgerSecret returns how this node reads the ledger secret: the one a
// joining node receives (NodeAdmission.Secrets), or on a single node its
// master key file.
func ledgerSecret(cfg *Config) func() ([]byte, error) {
	if cfg.node != nil {
		return cfg.node.admit.Secrets
	}
	return func() ([]byte, error) { return seal.ReadKeyFile(cfg.MasterKeyFile) }
}

// serveUntil serves on ln until the server fails or ctx ends, then shuts
// the server down gracefully (10 s for requests in flight). With
// srv.TLSConfig it serves HTTPS (and HTTP/2) only. listening is called
// once serving has begun. A clean shutdown returns nil.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, log *slog.Logger, listening func()) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	listening()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		shCtx, shCancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(shCtx)
		shCancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// trustSimulatedTDX makes cfg trust the simulated TDX chain of dir
// (internal/attest/simtdx), creating it if create is set; without create, a
// directory without one is left alone.
func trustSimulatedTDX(cfg *attest.Config, dir string, create bool) error {
	if !create {
		if _, err := os.Stat(filepath.Join(dir, simtdx.ChainFile)); errors.Is(err, iofs.ErrNotExist) {
			return nil
		}
	}
	chain, err := simtdx.LoadOrCreate(dir)
	if err != nil {
		return err
	}
	cfg.TDX.Roots = append(cfg.TDX.Roots, chain.Root())
	return nil
}

// newVerifier returns the verifier of evidence, releases' and nodes' alike:
// the configured attestation settings, and the simulated TEEs of the data
// directory when the configuration trusts them.
func newVerifier(cfg *Config, log *slog.Logger, svc *kms.Service) (*attest.Verifier, *release.MAAFollow, error) {
	attCfg := attest.Config{SNP: snp.Options{MaxVMPL: cfg.MaxVMPL}, UVM: uvm.Options{Trusted: cfg.UVMTrusted, MinSVN: cfg.UVMMinSVN}, Simulated: cfg.InsecureSimulatedTEE}
	attCfg.TDX.Collateral = cfg.TDXCollateral
	// The trusted MAA instances follow the ledger: governance's list
	// (set_maa_instances) once set, else the configuration's; the
	// simulated instance besides either when the simulated TEE is trusted.
	follow := &release.MAAFollow{Configured: cfg.MAAInstances}
	if cfg.InsecureSimulatedTEE {
		chain, err := simsnp.LoadOrCreate(cfg.DataDir)
		if err != nil {
			return nil, nil, fmt.Errorf("simulated TEE: %w", err)
		}
		chain.Trust(&attCfg)
		if err := trustSimulatedTDX(&attCfg, cfg.DataDir, true); err != nil {
			return nil, nil, fmt.Errorf("simulated TEE: %w", err)
		}
		sim, err := simmaa.LoadOrCreate(cfg.DataDir)
		if err != nil {
			return nil, nil, fmt.Errorf("simulated TEE: %w", err)
		}
		follow.Always = append(follow.Always, sim.Trusted())
	}
	maaIns := append(slices.Clone(follow.Configured), follow.Always...)
	if svc != nil {
		svc.Read(func(st *state.State) {
			maaIns, follow.Seq = release.MAAInstances(st, follow.Configured, follow.Always), st.MAASeq
			if st.MAA != nil && len(cfg.MAAInstances) > 0 {
				log.Warn("the configuration's maa_instances are ignored: governance has set the trusted MAA instances (set_maa_instances)", "maa_policy_seq", st.MAASeq)
			}
		})
	}
	attCfg.MAA = maa.Options{Instances: maaIns, Logger: log}
	v, err := attest.New(attCfg)
	return v, follow, err
}

// newRelease builds the attested release service from the JWT policy in the
// ledger (which the configuration may just have changed) and the
// attestation settings. The service follows later changes of the JWT
// policy (governance decisions) without a restart. Without trusted issuers
// on an ungoverned ledger there is no release service, and the release
// endpoints answer 503; a governed ledger may gain issuers by a proposal.
func newRelease(ctx context.Context, svc *kms.Service, cfg *Config, log *slog.Logger, adm *admission) (*release.Service, func(), error) {
	var (
		ac       jwtauth.Config
		jwtSeq   uint64
		governed bool
	)
	svc.Read(func(st *state.State) { ac, jwtSeq, governed = release.AuthConfig(st.JWT), st.JWTSeq, st.Governed() })
	// A cluster node follows the cluster's ledger, whose issuers may come
	// by replication after this point: it always follows the JWT policy.
	if len(ac.Issuers) == 0 && !governed && cfg.node == nil {
		log.Warn("no trusted token issuer: key release is disabled (set jwt_issuers)")
		return nil, func() {}, nil
	}
	newAuth := func(ctx context.Context, ac jwtauth.Config) (*jwtauth.Authenticator, error) {
		ac.Logger = log
		return jwtauth.New(ctx, ac)
	}
	var auth *jwtauth.Authenticator
	if len(ac.Issuers) > 0 {
		var err error
		if auth, err = newAuth(ctx, ac); err != nil {
			return nil, nil, fmt.Errorf("jwt issuers: %w", err)
		}
	} else {
		log.Warn("no trusted token issuer: key release refuses every token until the ledger names one (a proposal: set_jwt_issuer)")
	}
	closeAuth := func() {
		if auth != nil {
			auth.Close()
		}
	}
	av, follow, err := newVerifier(cfg, log, svc)
	if err != nil {
		closeAuth()
		return nil, nil, err
	}
	if cfg.InsecureSimulatedTEE {
		log.Warn("INSECURE: the simulated TEE of the data directory is trusted; releases under it are marked simulated in the ledger")
	}
	rel, err := release.New(release.Config{
		MAA: follow,
		KMS: svc, Auth: auth, AuthSeq: jwtSeq, NewAuth: newAuth,
		Attest: av, Logger: log,
		IdentityLimit: adm.perIdentity, Verify: adm.verify,
	})
	if err != nil {
		closeAuth()
		av.Close()
		return nil, nil, err
	}
	log.Info("key release enabled", "issuers", len(ac.Issuers), "simulated_tee", cfg.InsecureSimulatedTEE)
	return rel, func() { rel.Close(); av.Close() }, nil
}
