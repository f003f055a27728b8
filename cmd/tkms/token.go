package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tkms-dev/tkms/client/devtee"
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
	// The client package's dev token source is what services use: it
	// refuses a directory without an issuer key rather than create one
	// that nobody trusts.
	src, err := devtee.NewTokenSource(*dataDir, devtee.TokenOptions{Subject: *sub, Audience: *aud, TTL: *ttl})
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "client: "))
	}
	tok, err := src.Token(context.Background())
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
