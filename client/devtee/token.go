package devtee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// The dev workload identity, as cmd/tkms's dev.go defines it for
// `tkms dev token`.
const (
	devWorkloadID  = "tkms-dev-workload"
	devTenantID    = "tkms-dev-tenant"
	devAudience    = "api://tkms-dev"
	devWorkloadTTL = 24 * time.Hour
)

// TokenOptions configure [NewTokenSource]; the zero value mints what
// `tkms dev token` mints by default.
type TokenOptions struct {
	// Subject is the workload identity (sub and oid); "" means
	// "tkms-dev-workload".
	Subject string
	// Audience is the aud claim; "" means dev.json's audience.
	Audience string
	// TTL is the tokens' lifetime; 0 means 24 hours.
	TTL time.Duration
	// Now is the clock of the cache and of the minted claims; nil means
	// time.Now.
	Now func() time.Time
}

// TokenSource mints tokens with the OIDC issuer of a `tkms dev` data
// directory, as `tkms dev token` does: the signing key is the directory's
// file, the issuer URL and audience come from its dev.json. For
// development only: whoever reads the directory mints any identity.
type TokenSource struct {
	iss    *oidcissuer.Issuer
	mi     oidcissuer.ManagedIdentity
	cached client.TokenSource
}

var _ client.TokenSource = (*TokenSource)(nil)

// DevInfo is what a service needs of DATA_DIR/dev.json, which `tkms dev`
// writes when it starts: where the KMS is, the key of its log, and the
// OIDC issuer and audience of its dev tokens.
type DevInfo struct {
	KMSURL       string `json:"kms_url"`
	LogPublicKey string `json:"log_public_key"` // KeysConfig.LogKey
	IssuerURL    string `json:"issuer_url"`
	Audience     string `json:"audience"`
}

// ReadDevInfo reads dataDir's dev.json.
func ReadDevInfo(dataDir string) (*DevInfo, error) {
	path := filepath.Join(dataDir, "dev.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w; start 'tkms dev --data %s' once first", err, dataDir)
	}
	var info DevInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("devtee: %s: %w", path, err)
	}
	return &info, nil
}

// NewTokenSource reads dataDir's dev.json and issuer key. Both exist
// once `tkms dev --data dataDir` has started; it refuses to create a key
// that no KMS trusts.
func NewTokenSource(dataDir string, opts TokenOptions) (*TokenSource, error) {
	info, err := ReadDevInfo(dataDir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, "dev.json")
	if info.IssuerURL == "" {
		return nil, fmt.Errorf("devtee: %s names no issuer_url; start 'tkms dev --data %s' with this version of tkms once", path, dataDir)
	}
	if _, err := os.Stat(filepath.Join(dataDir, oidcissuer.KeyFile)); err != nil {
		return nil, fmt.Errorf("devtee: %w; start 'tkms dev --data %s' once to create the issuer key", err, dataDir)
	}
	iss, err := oidcissuer.New(dataDir, oidcissuer.Options{URL: info.IssuerURL, Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	mi := oidcissuer.ManagedIdentity{Audience: opts.Audience, PrincipalID: opts.Subject, TenantID: devTenantID, TTL: opts.TTL}
	if mi.Audience == "" {
		mi.Audience = info.Audience
	}
	if mi.Audience == "" {
		mi.Audience = devAudience
	}
	if mi.PrincipalID == "" {
		mi.PrincipalID = devWorkloadID
	}
	if mi.TTL < 0 {
		return nil, errors.New("devtee: dev token TTL must be positive")
	}
	if mi.TTL == 0 {
		mi.TTL = devWorkloadTTL
	}
	s := &TokenSource{iss: iss, mi: mi}
	s.cached = client.NewCachingTokenSource(s.mint, client.CachingOptions{Now: opts.Now})
	return s, nil
}

// Token implements [client.TokenSource]: a token minted for the
// workload, cached until shortly before it expires.
func (s *TokenSource) Token(ctx context.Context) (string, error) { return s.cached.Token(ctx) }

func (s *TokenSource) mint(context.Context) (string, error) {
	tok, err := s.iss.MintManagedIdentity(s.mi)
	if err != nil {
		return "", fmt.Errorf("devtee: %w", err)
	}
	return tok, nil
}
