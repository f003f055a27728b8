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
	"sync"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/seal"
)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	configPath := fs.String("config", "", "configuration `file` (JSON; see README)")
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
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config %s: %w", *configPath, err)
	}
	// serve never creates a master key: a missing one means the wrong
	// data directory or a lost key, and a fresh key would silently start
	// a new, empty service.
	sealer, err := seal.LoadFile(cfg.MasterKeyFile)
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%w (serve requires an existing master key; 'tkms dev' creates one for development)", err)
	}
	if err != nil {
		return err
	}
	token, err := cfg.operatorToken()
	if err != nil {
		return fmt.Errorf("operator token: %w", err)
	}
	log := cfg.logger(stderr)
	if token == "" {
		log.Warn("no operator token configured: POST /app/refresh is disabled")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runServer(ctx, cfg, sealer, token, log, nil)
}

// runServer opens the service, starts the scheduler and the HTTP server,
// and runs until ctx ends; then it shuts down cleanly. onListening, if set,
// is called with the bound address before serving.
func runServer(ctx context.Context, cfg *Config, sealer seal.Sealer, operatorToken string, log *slog.Logger, onListening func(addr string) error) error {
	svc, err := kms.Open(ctx, kms.Config{
		DataDir:        cfg.DataDir,
		Sealer:         sealer,
		ServiceName:    cfg.ServiceName,
		RotationPolicy: *cfg.KeyRotationPolicy,
		Settings:       *cfg.SettingsPolicy,
		Logger:         log,
		SnapshotEvery:  cfg.SnapshotEvery,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	// The first key exists before the server answers. A failed tick is
	// no reason not to serve the keys that exist: the scheduler retries.
	if _, err := svc.Tick(ctx); err != nil {
		log.Error("key scheduler", "err", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	if onListening != nil {
		if err := onListening(addr); err != nil {
			ln.Close()
			return err
		}
	}
	srv := httpapi.NewHTTPServer(addr, httpapi.New(svc, httpapi.Options{OperatorToken: operatorToken, Logger: log}), log, httpapi.DefaultLimits())

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); svc.Run(runCtx) }()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("tkms listening", "addr", addr, "data_dir", cfg.DataDir, "seq", svc.Seq())

	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		shCtx, shCancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(shCtx)
		shCancel()
	}
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
