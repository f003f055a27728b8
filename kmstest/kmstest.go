// Package kmstest starts an in-process tkms for the tests of services that
// use package client, in the style of net/http/httptest: a real KMS (its
// key store on a temporary directory, the HTTP API, the release service
// with its log receipts) on a loopback port, a real OIDC issuer that it
// trusts, and a simulated TEE whose evidence it trusts.
//
//	srv, err := kmstest.Start(kmstest.Options{})
//	...
//	defer srv.Close()
//	keys, err := client.NewKeys(srv.KeysConfig())
//
// The attester and the token source are as insecure as tkms dev's: they
// are for tests only, and only this server accepts what they produce.
package kmstest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// Audience is the audience the server's tokens carry and it requires.
const Audience = "api://tkms-kmstest"

// DefaultHostData is the HOST_DATA of the attester's reports and of the
// release policy when Options.HostData is nil.
var DefaultHostData = [32]byte{'k', 'm', 's', 't', 'e', 's', 't'}

// Options configure Start; the zero value is a KMS with one x25519 key.
type Options struct {
	// Suite is the suite of the KMS's keys: "x25519" (default), "p256" or
	// "mlkem768-x25519".
	Suite string
	// HostData is the HOST_DATA the release policy requires and the
	// attester reports; nil means DefaultHostData. (A test of a refused
	// release gives the attester other host data with NewAttester.)
	HostData []byte
	// RequireNonce makes the release service require a fresh nonce
	// (KeysConfig.Nonce).
	RequireNonce bool
	// Logger receives the KMS's logs; nil discards them.
	Logger *slog.Logger
}

// A Server is a running KMS. Its fields must not be changed.
type Server struct {
	// URL is the KMS's base URL, http on 127.0.0.1 (KeysConfig.KMS).
	URL string
	// LogKey is the KMS log's note verifier key (KeysConfig.LogKey).
	LogKey string

	svc      *kms.Service
	srv      *httptest.Server
	iss      *oidcissuer.Issuer
	chain    *simsnp.Chain
	at       time.Time // a time inside the simulated chain's validity
	hostData []byte
	dir      string

	mu       sync.Mutex
	releases int
	stops    []func()
}

// Start starts a KMS with its first key and returns it. Close stops it.
func Start(opts Options) (s *Server, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hostData := opts.HostData
	if hostData == nil {
		hostData = DefaultHostData[:]
	}
	if len(hostData) != 32 {
		return nil, fmt.Errorf("kmstest: HostData is %d bytes, want 32", len(hostData))
	}
	s = &Server{hostData: hostData}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	ctx := context.Background()
	if s.dir, err = os.MkdirTemp("", "kmstest-"); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { os.RemoveAll(s.dir) })

	if s.iss, err = oidcissuer.New(filepath.Join(s.dir, "issuer"), oidcissuer.Options{Algorithm: "ES256"}); err != nil {
		return nil, err
	}
	issSrv := httptest.NewServer(s.iss.Handler())
	s.stops = append(s.stops, issSrv.Close)
	if err := s.iss.SetURL(issSrv.URL); err != nil {
		return nil, err
	}

	if s.chain, err = simsnp.Fixture(); err != nil {
		return nil, err
	}
	s.at = s.chain.VCEK().NotBefore.Add(24 * time.Hour)

	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		return nil, err
	}
	pol, err := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-hostdata": []string{hex.EncodeToString(hostData)}, "x-ms-sevsnpvm-is-debuggable": false,
	}})
	if err != nil {
		return nil, err
	}
	rp := state.DefaultRotationPolicy()
	if opts.Suite != "" {
		rp.Suite = opts.Suite
	}
	s.svc, err = kms.Open(ctx, kms.Config{DataDir: filepath.Join(s.dir, "kms"), Sealer: sealer, ReleasePolicy: pol, RotationPolicy: rp, Logger: log})
	if err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { s.svc.Close() })
	if _, err := s.svc.Tick(ctx); err != nil {
		return nil, err
	}

	auth, err := jwtauth.New(ctx, jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: s.iss.URL(), Audiences: []string{Audience}, DiscoveryURL: s.iss.DiscoveryURL()}},
		Policy:  jwtauth.Policy{s.iss.URL(): {"idtyp": "app"}},
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}
	s.stops = append(s.stops, auth.Close)
	attCfg := attest.Config{SNP: snp.Options{Now: func() time.Time { return s.at }}, Simulated: true}
	s.chain.Trust(&attCfg)
	av, err := attest.New(attCfg)
	if err != nil {
		return nil, err
	}
	rel, err := release.New(release.Config{KMS: s.svc, Auth: auth, Attest: av, RequireNonce: opts.RequireNonce, Logger: log})
	if err != nil {
		return nil, err
	}
	api := httpapi.New(s.svc, httpapi.Options{Logger: log, Release: rel})
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (strings.HasSuffix(r.URL.Path, "/release") || r.URL.Path == "/app/unwrapKey") {
			s.mu.Lock()
			s.releases++
			s.mu.Unlock()
		}
		api.ServeHTTP(w, r)
	}))
	s.stops = append(s.stops, s.srv.Close)
	s.URL, s.LogKey = s.srv.URL, s.svc.LogVerifierKey()
	return s, nil
}

// Close stops the KMS and the issuer and removes their files. It is safe
// to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	stops := s.stops
	s.stops = nil
	s.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// Client returns an HTTP client for the server (KeysConfig.HTTPClient).
func (s *Server) Client() *http.Client { return s.srv.Client() }

// KeysConfig returns a client configuration for the server: its URL, log
// key and client, the attester and the token source. Callers may change
// the other fields.
func (s *Server) KeysConfig() client.KeysConfig {
	return client.KeysConfig{
		KMS: s.URL, HTTPClient: s.Client(), LogKey: s.LogKey,
		Attester: s.Attester(), Tokens: s.Tokens(),
	}
}

// Attester returns an attester whose simulated evidence the server trusts
// and whose HOST_DATA its release policy accepts.
func (s *Server) Attester() client.Attester { return s.NewAttester(s.hostData) }

// NewAttester returns an attester of simulated evidence with other
// HOST_DATA (32 bytes), which the release policy refuses unless it is
// Options.HostData: for tests of a refused release.
func (s *Server) NewAttester(hostData []byte) client.Attester {
	return &attester{s: s, hostData: hostData}
}

type attester struct {
	s        *Server
	hostData []byte
}

func (a *attester) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := a.s.chain.ACIBundle(simsnp.ACIBundleOptions{
		Report: simsnp.ReportOptions{ReportData: reportData[:], HostData: a.hostData}, SigningTime: a.s.at})
	if err != nil {
		return nil, fmt.Errorf("kmstest: %w", err)
	}
	return &client.Evidence{Type: client.EvidenceACI, Attestation: b, Simulated: true}, nil
}

// Tokens returns a token source of managed identity tokens the server
// accepts, for the workload "kmstest-workload".
func (s *Server) Tokens() client.TokenSource { return s.NewTokens("kmstest-workload") }

// NewTokens returns a token source for another workload identity.
func (s *Server) NewTokens(subject string) client.TokenSource {
	return client.NewCachingTokenSource(func(context.Context) (string, error) {
		return s.iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: Audience, PrincipalID: subject, TenantID: "kmstest-tenant"})
	}, client.CachingOptions{})
}

// Rotate creates a new key at once (as an operator's refresh does) and
// returns its kid. The new key is published after the rotation policy's
// delay; clients that run Keys.Run fetch it before then.
func (s *Server) Rotate(ctx context.Context) (string, error) {
	k, err := s.svc.Rotate(ctx, kms.ReasonRefresh)
	if err != nil {
		return "", err
	}
	return k.Kid, nil
}

// Releases returns how many release requests (POST /v1/.../release and
// /app/unwrapKey) the server has received, answered or refused.
func (s *Server) Releases() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases
}
