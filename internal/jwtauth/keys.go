package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is an immutable snapshot of an issuer's usable verification keys.
type keySet struct {
	byKID map[string]jose.JSONWebKey
}

// trustedIssuer is the runtime state of one IssuerConfig.
type trustedIssuer struct {
	cfg  IssuerConfig
	algs []jose.SignatureAlgorithm
	keys atomic.Pointer[keySet]

	mu          sync.Mutex
	inflight    *fetchCall
	lastMissRef time.Time // when the last unknown-kid refresh started (Config.Now)

	fetches        atomic.Uint64
	fetchFailures  atomic.Uint64
	missRefreshes  atomic.Uint64
	rateLimited    atomic.Uint64
	skippedKeys    atomic.Uint64
	lastRefreshed  atomic.Int64 // Unix seconds of the last successful load, by Config.Now
	lastFetchError atomic.Pointer[string]
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// remote reports whether the issuer's keys come from the network.
func (ti *trustedIssuer) remote() bool { return len(ti.cfg.JWKS) == 0 }

// parseJWKS parses a JWK Set, keeping the keys usable for RS256 or ES256
// signature verification: RSA keys of at least 2048 bits, P-256 EC keys, with
// a kid, use "sig" or none, and alg RS256, ES256 or none. Other keys are
// skipped, as RFC 7517 section 5 asks; skipped counts them. Private keys are
// reduced to their public part.
func parseJWKS(data []byte) (set *keySet, skipped int, err error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, 0, fmt.Errorf("parsing jwk set: %w", err)
	}
	set = &keySet{byKID: make(map[string]jose.JSONWebKey, len(raw.Keys))}
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil || k.KeyID == "" || !k.Valid() {
			skipped++
			continue
		}
		if _, dup := set.byKID[k.KeyID]; dup {
			skipped++
			continue
		}
		if !k.IsPublic() {
			k = k.Public()
		}
		if k.Use != "" && k.Use != "sig" {
			skipped++
			continue
		}
		usable := false
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			usable = pub.N.BitLen() >= 2048 && (k.Algorithm == "" || k.Algorithm == string(jose.RS256))
		case *ecdsa.PublicKey:
			usable = pub.Curve == elliptic.P256() && (k.Algorithm == "" || k.Algorithm == string(jose.ES256))
		}
		if !usable {
			skipped++
			continue
		}
		// Keep only what verification needs.
		set.byKID[k.KeyID] = jose.JSONWebKey{Key: k.Key, KeyID: k.KeyID, Algorithm: k.Algorithm}
	}
	if len(set.byKID) == 0 {
		return nil, skipped, fmt.Errorf("jwk set has no usable RS256 or ES256 key (%d skipped)", skipped)
	}
	return set, skipped, nil
}

// keyFor returns the key for kid, if the current set has it.
func (ti *trustedIssuer) keyFor(kid string) (jose.JSONWebKey, bool) {
	ks := ti.keys.Load()
	if ks == nil {
		return jose.JSONWebKey{}, false
	}
	k, ok := ks.byKID[kid]
	return k, ok
}

// refresh fetches the key set once, sharing the fetch with concurrent
// callers. The fetch runs under the Authenticator's context (so Close stops
// it) with the fetch timeout, not under ctx: one caller giving up does not
// fail the others. ctx only bounds how long this caller waits.
func (a *Authenticator) refresh(ctx context.Context, ti *trustedIssuer, reason string) error {
	ti.mu.Lock()
	c, err := a.joinOrStartLocked(ti, reason)
	ti.mu.Unlock()
	if err != nil {
		return err
	}
	return c.wait(ctx)
}

// joinOrStartLocked returns the fetch in flight for ti, or starts one.
// ti.mu is held.
func (a *Authenticator) joinOrStartLocked(ti *trustedIssuer, reason string) (*fetchCall, error) {
	if c := ti.inflight; c != nil {
		return c, nil
	}
	if !a.goTracked() {
		return nil, errClosed
	}
	c := &fetchCall{done: make(chan struct{})}
	ti.inflight = c
	go func() {
		defer a.wg.Done()
		c.err = a.fetch(ti, reason)
		ti.mu.Lock()
		ti.inflight = nil
		ti.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

func (c *fetchCall) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshOnMiss refreshes the key set after a token named an unknown kid, at
// most once per Config.MinRefreshInterval per issuer. Callers that arrive
// while a refresh is running wait for it instead of starting another. The
// rate check and the start of the refresh are one step under ti.mu: a
// caller arriving between them would otherwise find the refresh neither
// allowed nor running, and report a kid the refresh was about to bring.
func (a *Authenticator) refreshOnMiss(ctx context.Context, ti *trustedIssuer) {
	if !ti.remote() {
		return
	}
	ti.mu.Lock()
	if ti.inflight == nil {
		now := a.now()
		// A clock that steps back counts like one that stands still.
		if d := now.Sub(ti.lastMissRef); !ti.lastMissRef.IsZero() && d < a.cfg.MinRefreshInterval && d > -a.cfg.MinRefreshInterval {
			ti.mu.Unlock()
			ti.rateLimited.Add(1)
			return
		}
		ti.lastMissRef = now
		ti.missRefreshes.Add(1)
	}
	c, err := a.joinOrStartLocked(ti, "unknown kid")
	ti.mu.Unlock()
	if err != nil {
		return
	}
	// Errors are logged and counted by fetch; the caller reports the
	// unknown kid either way.
	_ = c.wait(ctx)
}

// fetch loads the issuer's key set from the network and installs it. On
// failure the previous keys stay in place.
func (a *Authenticator) fetch(ti *trustedIssuer, reason string) error {
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FetchTimeout)
	defer cancel()
	ti.fetches.Add(1)
	err := a.fetchKeys(ctx, ti)
	if err != nil {
		ti.fetchFailures.Add(1)
		msg := err.Error()
		ti.lastFetchError.Store(&msg)
		a.log.WarnContext(ctx, "jwtauth: jwk set refresh failed",
			slog.String("issuer", ti.cfg.Issuer), slog.String("reason", reason), slog.Any("error", err))
		return err
	}
	ti.lastFetchError.Store(nil)
	return nil
}

func (a *Authenticator) fetchKeys(ctx context.Context, ti *trustedIssuer) error {
	jwksURL := ti.cfg.JWKSURL
	if ti.cfg.DiscoveryURL != "" {
		body, err := a.get(ctx, ti.cfg.DiscoveryURL)
		if err != nil {
			return fmt.Errorf("openid configuration: %w", err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			return fmt.Errorf("openid configuration %s: %w", ti.cfg.DiscoveryURL, err)
		}
		if err := CheckFetchURL(doc.JWKSURI); err != nil {
			return fmt.Errorf("openid configuration %s: jwks_uri: %w", ti.cfg.DiscoveryURL, err)
		}
		jwksURL = doc.JWKSURI
	}
	body, err := a.get(ctx, jwksURL)
	if err != nil {
		return fmt.Errorf("jwk set: %w", err)
	}
	set, skipped, err := parseJWKS(body)
	if err != nil {
		return fmt.Errorf("jwk set %s: %w", jwksURL, err)
	}
	a.install(ctx, ti, set, skipped)
	return nil
}

func (a *Authenticator) install(ctx context.Context, ti *trustedIssuer, set *keySet, skipped int) {
	ti.skippedKeys.Add(uint64(skipped))
	ti.keys.Store(set)
	ti.lastRefreshed.Store(a.now().Unix())
	kids := make([]string, 0, len(set.byKID))
	for kid := range set.byKID {
		kids = append(kids, kid)
	}
	a.log.DebugContext(ctx, "jwtauth: jwk set loaded",
		slog.String("issuer", ti.cfg.Issuer), slog.Any("kids", kids), slog.Int("skipped", skipped))
}

// get fetches u, insisting on 200 and a body of at most MaxBodyBytes.
func (a *Authenticator) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, a.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(body)) > a.cfg.MaxBodyBytes {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", u, a.cfg.MaxBodyBytes)
	}
	return body, nil
}

// CheckFetchURL accepts https URLs, and http ones only to loopback hosts
// (tests and `tkms dev`): the issuer and key set URLs an Authenticator
// fetches. Governance checks proposed issuers with it.
func CheckFetchURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return err
	}
	if p.Host == "" {
		return fmt.Errorf("%q is not an absolute url", u)
	}
	switch p.Scheme {
	case "https":
		return nil
	case "http":
		h := p.Hostname()
		if h == "localhost" {
			return nil
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q: plain http is allowed only to loopback", u)
	}
	return fmt.Errorf("%q: scheme must be https", u)
}

// backgroundRefresh refreshes ti's keys every RefreshInterval until Close.
func (a *Authenticator) backgroundRefresh(ti *trustedIssuer) {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			if err := a.refresh(a.ctx, ti, "scheduled"); err != nil && errors.Is(err, context.Canceled) {
				return
			}
		}
	}
}
