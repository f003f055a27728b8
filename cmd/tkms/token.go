package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// cmdDevToken implements `tkms dev token`: it mints a token with the
// signing key of a dev data directory's OIDC issuer. The key is a file in
// the directory, so this works whether or not tkms dev is running; the
// issuer URL comes from dev.json (it names the port of the last start).
func cmdDevToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev token", stderr)
	dataDir := fs.String("data", "tkms-dev", "data `directory` of a tkms dev instance")
	sub := fs.String("sub", devWorkloadID, "workload `identity`: the sub and oid claims")
	ttl := fs.Duration("ttl", devWorkloadTTL, "lifetime of the token (a Go `duration`, e.g. 1h30m)")
	aud := fs.String("aud", devAudience, "`audience` (aud claim)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: --ttl must be positive", errUsage)
	}
	if *sub == "" || *aud == "" {
		return fmt.Errorf("%w: --sub and --aud must not be empty", errUsage)
	}
	info, err := readDevInfo(*dataDir)
	if err != nil {
		return err
	}
	// oidcissuer.New would create a key that nobody trusts: refuse instead.
	if _, err := os.Stat(filepath.Join(*dataDir, oidcissuer.KeyFile)); err != nil {
		return fmt.Errorf("%w; start 'tkms dev --data %s' once to create the issuer key", err, *dataDir)
	}
	iss, err := oidcissuer.New(*dataDir, oidcissuer.Options{URL: info.IssuerURL})
	if err != nil {
		return err
	}
	tok, err := mintWorkloadToken(iss, *sub, *aud, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// readDevInfo reads DIR/dev.json, which must name an issuer.
func readDevInfo(dir string) (*DevInfo, error) {
	path := filepath.Join(dir, "dev.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%w; start 'tkms dev --data %s' once first", err, dir)
	}
	if err != nil {
		return nil, err
	}
	var info DevInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if info.IssuerURL == "" {
		return nil, fmt.Errorf("%s names no issuer_url; start 'tkms dev --data %s' with this version of tkms once", path, dir)
	}
	return &info, nil
}
