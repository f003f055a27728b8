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
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/tkms-dev/tkms/internal/seal"
)

// DevInfo is what `tkms dev` writes to DATA_DIR/dev.json, for people and
// black-box tests to find the instance.
type DevInfo struct {
	KMSURL        string `json:"kms_url"`
	OperatorToken string `json:"operator_token"`
	DataDir       string `json:"data_dir"`
	PID           int    `json:"pid"`
}

const devBanner = `tkms dev: DEVELOPMENT MODE. The master key and operator token are kept in plain files in %s.
tkms dev: never use this data directory for real keys; run 'tkms serve' in production.
`

func cmdDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	listen := fs.String("listen", "127.0.0.1:8000", "`address` to listen on (127.0.0.1:0 picks a free port)")
	dataDir := fs.String("data", "tkms-dev", "data `directory`")
	configPath := fs.String("config", "", "optional configuration `file`; --listen and --data override it")
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
	if cfg.ServiceName == "" {
		cfg.ServiceName = "tkms-dev"
	}
	cfg.applyDefaults("text")
	if cfg.SettingsPolicy != nil {
		cfg.SettingsPolicy.Service.Debug = true
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
	sealer, created, err := seal.LoadOrCreateFile(cfg.MasterKeyFile)
	if err != nil {
		return err
	}
	if cfg.OperatorTokenFile == "" {
		cfg.OperatorTokenFile = filepath.Join(cfg.DataDir, "operator.token")
	}
	token, err := loadOrCreateToken(cfg.OperatorTokenFile)
	if err != nil {
		return fmt.Errorf("operator token: %w", err)
	}
	fmt.Fprintf(stderr, devBanner, cfg.DataDir)
	if created {
		fmt.Fprintf(stderr, "tkms dev: created a new master key in %s\n", cfg.MasterKeyFile)
	}
	log := cfg.logger(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	infoPath := filepath.Join(cfg.DataDir, "dev.json")
	return runServer(ctx, cfg, sealer, token, log, func(addr string) error {
		info := DevInfo{KMSURL: "http://" + addr, OperatorToken: token, DataDir: cfg.DataDir, PID: os.Getpid()}
		b, _ := json.MarshalIndent(info, "", "  ")
		if err := writeFileAtomic(infoPath, append(b, '\n'), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tkms dev: listening on %s\ntkms dev: wrote %s (kms_url, operator_token)\ntkms dev: try: curl %s/app/listpubkeys\n", info.KMSURL, infoPath, info.KMSURL)
		return nil
	})
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
