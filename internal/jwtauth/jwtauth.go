// Package jwtauth authenticates callers by bearer JWT: step 7 of DESIGN.md
// ("the KMS authenticates the token: issuer, signature, expiry, audience,
// per-issuer claims policy").
//
// A token (RFC 7519, a compact JWS of RFC 7515 carried as in RFC 6750) is
// accepted when all of these hold, checked in this order:
//
//  1. the Authorization header is "Bearer <token>" and the token is at most
//     MaxTokenSize bytes (checked before any parsing);
//  2. it parses as a compact JWS whose alg is RS256 or ES256 (never none or
//     HS*; RFC 8725 section 3.1) and allowed for its issuer;
//  3. its iss is exactly a configured issuer, and the jwt validation policy
//     has an entry for that issuer;
//  4. its kid names a key in the issuer's JWK Set (RFC 7517), refreshed once
//     if unknown; the key's type and alg match the token's alg;
//  5. the signature verifies (go-jose does all JWS processing);
//  6. exp and nbf are present and, with iat if present, hold at Config.Now
//     within Config.ClockSkew, and the token is valid for at most its
//     issuer's MaxLifetime (default 24 hours): exp minus the earlier of nbf
//     and iat;
//  7. aud contains one of the issuer's configured audiences;
//  8. every claim of the issuer's jwt validation policy
//     (docs/spec/azure-compat.md, "JWT validation policy") is present with an
//     allowed value;
//  9. the token has an oid or, failing that, a sub claim: the caller identity
//     is (iss, oid).
//
// Keys come from OpenID Connect Discovery (Entra ID:
// https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration),
// a JWKS URL, or a static JWK Set given in the configuration for air-gapped
// operation. Remote key sets are refreshed in the background and when a
// token names an unknown kid, at most once per MinRefreshInterval per issuer.
//
// Entra ID v1 tokens (iss "https://sts.windows.net/<tenant>/", aud usually
// the resource URI such as "https://management.azure.com/") and v2 tokens
// (iss "https://login.microsoftonline.com/<tenant>/v2.0", aud usually an
// application id) are both configured as issuers; they differ only in those
// strings. Audiences compare exactly, trailing slash included.
//
// Errors wrap one of the Err* sentinels; Code maps them to stable codes. No
// error message or log line contains the token.
package jwtauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxTokenSize bounds the Authorization header. Entra ID tokens are a few
// KiB; anything larger is rejected before parsing.
const MaxTokenSize = 64 << 10

// Defaults for Config fields left zero.
const (
	DefaultClockSkew          = 60 * time.Second
	MaxClockSkew              = 5 * time.Minute
	DefaultRefreshInterval    = time.Hour
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultFetchTimeout       = 10 * time.Second
	DefaultMaxBodyBytes       = 1 << 20
	// DefaultMaxLifetime is the longest validity (exp minus the earlier of
	// nbf and iat) of an issuer's tokens unless IssuerConfig.MaxLifetime
	// says otherwise: Entra ID managed identity tokens last 24 hours.
	DefaultMaxLifetime = 24 * time.Hour
	// LifetimeSlack is added to every maximum lifetime: Entra ID backdates
	// nbf and iat by 5 minutes, so its 24-hour tokens span 24 h 5 min.
	LifetimeSlack = 5 * time.Minute
)

// allowedAlgs are the only signature algorithms ever accepted.
var allowedAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256}

// IssuerConfig is one trusted token issuer. Exactly one of DiscoveryURL,
// JWKSURL and JWKS must be set.
type IssuerConfig struct {
	// Issuer is the exact iss claim of its tokens.
	Issuer string
	// Audiences lists the accepted aud values; a token must name at least
	// one.
	Audiences []string
	// DiscoveryURL is the OpenID Connect discovery document
	// (".../.well-known/openid-configuration"); its jwks_uri is fetched on
	// each refresh. A URL without that suffix gets it appended. The
	// document's issuer field is not compared with Issuer (Entra ID's
	// multi-tenant documents hold a template).
	DiscoveryURL string
	// JWKSURL is the JWK Set, fetched directly.
	JWKSURL string
	// JWKS is a static JWK Set (JSON), for air-gapped operation: never
	// refreshed, no network.
	JWKS []byte
	// Algorithms restricts the accepted algorithms to a subset of RS256 and
	// ES256 (Entra ID: RS256 only). Empty means both.
	Algorithms []string
	// MaxLifetime is the longest validity accepted of the issuer's tokens,
	// exp minus the earlier of nbf and iat (plus LifetimeSlack); longer
	// ones fail with ErrLifetime, however far their exp. Zero means
	// DefaultMaxLifetime.
	MaxLifetime time.Duration
}

// Config configures an Authenticator. Zero durations and sizes mean the
// defaults above.
type Config struct {
	Issuers []IssuerConfig
	// Policy is the jwt validation policy. An issuer with no entry is not
	// trusted (ErrIssuer); an empty entry adds no claim checks.
	Policy Policy
	// ClockSkew is the tolerance for exp, nbf and iat, at most MaxClockSkew.
	ClockSkew time.Duration
	// RefreshInterval is the period of background key set refreshes.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between two refreshes caused by
	// unknown kids, per issuer.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds each refresh (discovery and JWK Set).
	FetchTimeout time.Duration
	// MaxBodyBytes bounds discovery and JWK Set bodies.
	MaxBodyBytes int64
	// HTTPClient fetches keys; nil means a client with FetchTimeout.
	HTTPClient *http.Client
	// Logger receives refresh failures; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for token times and rate limits; nil means time.Now.
	Now func() time.Time
}

// Validate checks the configuration without network access.
func (c *Config) Validate() error {
	if len(c.Issuers) == 0 {
		return errors.New("jwtauth: no issuers configured")
	}
	seen := map[string]bool{}
	for _, ic := range c.Issuers {
		if ic.Issuer == "" {
			return errors.New("jwtauth: issuer with empty iss")
		}
		if seen[ic.Issuer] {
			return fmt.Errorf("jwtauth: issuer %q configured twice", ic.Issuer)
		}
		seen[ic.Issuer] = true
		if len(ic.Audiences) == 0 || slices.Contains(ic.Audiences, "") {
			return fmt.Errorf("jwtauth: issuer %q: audiences must be non-empty strings", ic.Issuer)
		}
		n := 0
		for _, set := range []bool{ic.DiscoveryURL != "", ic.JWKSURL != "", len(ic.JWKS) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("jwtauth: issuer %q: set exactly one of discovery url, jwks url and static jwks", ic.Issuer)
		}
		for _, u := range []string{ic.DiscoveryURL, ic.JWKSURL} {
			if u == "" {
				continue
			}
			if err := CheckFetchURL(u); err != nil {
				return fmt.Errorf("jwtauth: issuer %q: %w", ic.Issuer, err)
			}
		}
		for _, a := range ic.Algorithms {
			if !slices.Contains(allowedAlgs, jose.SignatureAlgorithm(a)) {
				return fmt.Errorf("jwtauth: issuer %q: algorithm %q not supported (use RS256 or ES256)", ic.Issuer, a)
			}
		}
		if ic.MaxLifetime < 0 {
			return fmt.Errorf("jwtauth: issuer %q: negative maximum token lifetime", ic.Issuer)
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
		return fmt.Errorf("jwtauth: clock skew %v outside [0, %v]", c.ClockSkew, MaxClockSkew)
	}
	if c.RefreshInterval < 0 || c.MinRefreshInterval < 0 || c.FetchTimeout < 0 || c.MaxBodyBytes < 0 {
		return errors.New("jwtauth: negative interval, timeout or size")
	}
	return c.Policy.Validate()
}

// An Authenticator validates bearer tokens. It is safe for concurrent use.
type Authenticator struct {
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	client  *http.Client
	issuers map[string]*trustedIssuer
	order   []*trustedIssuer // configuration order, for Stats
	policy  atomic.Pointer[policyState]

	accepted atomic.Uint64
	rejected sync.Map // code -> *atomic.Uint64

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.RWMutex
	closed  bool
}

type policyState struct {
	src      Policy
	compiled compiledPolicy
}

var errClosed = errors.New("jwtauth: authenticator closed")

// New validates cfg, loads static key sets and fetches remote ones, and
// starts their background refresh. A remote key set that cannot be fetched
// now is logged and retried (in the background and on the first token that
// needs it): an identity provider outage does not stop the service from
// starting. A static key set that does not parse is an error. ctx bounds the
// initial fetches only; Close stops the background work.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	a := &Authenticator{
		cfg:     cfg,
		now:     cfg.Now,
		log:     cfg.Logger,
		client:  cfg.HTTPClient,
		issuers: map[string]*trustedIssuer{},
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.client == nil {
		a.client = &http.Client{Timeout: cfg.FetchTimeout}
	}
	if err := a.SetPolicy(cfg.Policy); err != nil {
		return nil, err
	}
	a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))

	for _, ic := range cfg.Issuers {
		ic.Audiences = slices.Clone(ic.Audiences)
		if ic.DiscoveryURL != "" && !strings.HasSuffix(ic.DiscoveryURL, "/.well-known/openid-configuration") {
			ic.DiscoveryURL = strings.TrimSuffix(ic.DiscoveryURL, "/") + "/.well-known/openid-configuration"
		}
		if ic.MaxLifetime == 0 {
			ic.MaxLifetime = DefaultMaxLifetime
		}
		ti := &trustedIssuer{cfg: ic, algs: allowedAlgs}
		if len(ic.Algorithms) > 0 {
			ti.algs = nil
			for _, alg := range ic.Algorithms {
				ti.algs = append(ti.algs, jose.SignatureAlgorithm(alg))
			}
		}
		if !ti.remote() {
			set, skipped, err := parseJWKS(ic.JWKS)
			if err != nil {
				a.cancel()
				return nil, fmt.Errorf("jwtauth: issuer %q: static %w", ic.Issuer, err)
			}
			a.install(ctx, ti, set, skipped)
		}
		a.issuers[ic.Issuer] = ti
		a.order = append(a.order, ti)
	}
	for _, ti := range a.order {
		if ti.remote() {
			// Failures are logged and counted; see the doc comment.
			_ = a.refresh(ctx, ti, "startup")
			a.wg.Add(1)
			go a.backgroundRefresh(ti)
		}
	}
	return a, nil
}

// goTracked registers a goroutine with Close, unless Close has begun.
func (a *Authenticator) goTracked() bool {
	a.closeMu.RLock()
	defer a.closeMu.RUnlock()
	if a.closed {
		return false
	}
	a.wg.Add(1)
	return true
}

// Close stops background refreshes and waits for running fetches to end.
// Authenticate keeps working with the keys already loaded.
func (a *Authenticator) Close() {
	a.closeMu.Lock()
	a.closed = true
	a.closeMu.Unlock()
	a.cancel()
	a.wg.Wait()
}

// SetPolicy replaces the jwt validation policy (after a governance change).
func (a *Authenticator) SetPolicy(p Policy) error {
	c, err := compilePolicy(p)
	if err != nil {
		return err
	}
	a.policy.Store(&policyState{src: p.clone(), compiled: c})
	return nil
}

// Policy returns a copy of the jwt validation policy in force.
func (a *Authenticator) Policy() Policy {
	return a.policy.Load().src.clone()
}

// An Identity is an authenticated caller. It never holds the token.
type Identity struct {
	Issuer   string
	OID      string // the oid claim, or sub when the token has no oid
	Subject  string
	TenantID string
	// Claims are all the token's claims, verified; numbers are json.Number.
	Claims map[string]any
	// Header is the token's JOSE header (alg, kid, typ, ...), covered by
	// its verified signature; numbers are json.Number.
	Header map[string]any
}

// Authenticate validates the bearer token in an Authorization header value
// and returns the caller's identity. Every error wraps one of the Err*
// sentinels.
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (*Identity, error) {
	id, err := a.authenticate(ctx, authorization)
	if err != nil {
		a.countRejection(Code(err))
		return nil, err
	}
	a.accepted.Add(1)
	return id, nil
}

func (a *Authenticator) authenticate(ctx context.Context, authorization string) (*Identity, error) {
	if len(authorization) > MaxTokenSize {
		return nil, fmt.Errorf("%w: authorization header larger than %d bytes", ErrInvalid, MaxTokenSize)
	}
	token, err := bearer(authorization)
	if err != nil {
		return nil, err
	}
	ti, rules, claims, err := a.verify(ctx, token, true)
	if err != nil {
		return nil, err
	}
	if err := checkAudience(claims, ti.cfg.Audiences); err != nil {
		return nil, err
	}
	if err := rules.check(ti.cfg.Issuer, claims); err != nil {
		return nil, err
	}
	id, err := identity(ti.cfg.Issuer, claims)
	if err != nil {
		return nil, err
	}
	id.Header = protectedHeader(token)
	return id, nil
}

// protectedHeader returns the JOSE header of a compact token that verify
// has accepted (so it is one base64url JSON object), or nil.
func protectedHeader(token string) map[string]any {
	seg, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return nil
	}
	h, err := decodeClaims(b)
	if err != nil {
		return nil
	}
	return h
}

// VerifyToken verifies a token of a configured issuer as Authenticate
// does up to its times (algorithm, issuer, key, signature, exp, nbf, iat)
// and returns its claims (numbers are json.Number). It checks no audience,
// no jwt validation policy and no identity: it is for tokens that are
// evidence (Azure Attestation's), not credentials. Errors wrap the Err*
// sentinels.
func (a *Authenticator) VerifyToken(ctx context.Context, token string) (map[string]any, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: token larger than %d bytes", ErrInvalid, MaxTokenSize)
	}
	_, _, claims, err := a.verify(ctx, token, false)
	return claims, err
}

// verify checks a token's algorithm, issuer (and, withPolicy, that the
// issuer has a jwt validation policy, whose rules it returns), key,
// signature and times.
func (a *Authenticator) verify(ctx context.Context, token string, withPolicy bool) (*trustedIssuer, compiledRules, map[string]any, error) {
	tok, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil {
		// Fixed text: go-jose's messages may quote parts of the token.
		return nil, nil, nil, fmt.Errorf("%w: malformed token or algorithm not allowed (RS256, ES256)", ErrInvalid)
	}
	if len(tok.Headers) != 1 {
		return nil, nil, nil, fmt.Errorf("%w: want exactly one signature", ErrInvalid)
	}
	hdr := tok.Headers[0]
	alg := jose.SignatureAlgorithm(hdr.Algorithm)

	// Pick the issuer from the unverified iss; after verification the
	// verified iss must be the same.
	var unverified struct {
		Iss any `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: claims are not a json object", ErrInvalid)
	}
	issStr, ok := unverified.Iss.(string)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: no iss claim", ErrIssuer)
	}
	ti := a.issuers[issStr]
	if ti == nil {
		return nil, nil, nil, fmt.Errorf("%w: %q", ErrIssuer, truncate(issStr))
	}
	var rules compiledRules
	if withPolicy {
		pol := a.policy.Load()
		if rules, ok = pol.compiled[issStr]; !ok {
			return nil, nil, nil, fmt.Errorf("%w: no jwt validation policy for %q", ErrIssuer, truncate(issStr))
		}
	}
	if !slices.Contains(ti.algs, alg) {
		return nil, nil, nil, fmt.Errorf("%w: algorithm %s not allowed for issuer %q", ErrInvalid, alg, ti.cfg.Issuer)
	}
	if hdr.KeyID == "" {
		return nil, nil, nil, fmt.Errorf("%w: token has no kid", ErrInvalid)
	}
	key, ok := ti.keyFor(hdr.KeyID)
	if !ok {
		a.refreshOnMiss(ctx, ti)
		if key, ok = ti.keyFor(hdr.KeyID); !ok {
			return nil, nil, nil, fmt.Errorf("%w: kid %q of issuer %q", ErrUnknownKID, truncate(hdr.KeyID), ti.cfg.Issuer)
		}
	}
	if !keyMatches(key, alg) {
		return nil, nil, nil, fmt.Errorf("%w: algorithm %s does not match key %q", ErrInvalid, alg, key.KeyID)
	}
	var payload json.RawMessage
	if err := tok.Claims(key.Key, &payload); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: signature verification failed", ErrInvalid)
	}

	claims, err := decodeClaims(payload)
	if err != nil {
		return nil, nil, nil, err
	}
	if iss, _ := claims["iss"].(string); iss != ti.cfg.Issuer {
		return nil, nil, nil, fmt.Errorf("%w: iss changed between parses", ErrInvalid)
	}
	if err := a.checkTimes(claims, ti.cfg.MaxLifetime); err != nil {
		return nil, nil, nil, err
	}
	return ti, rules, claims, nil
}

// bearer extracts the token of an RFC 6750 "Bearer" credential. The scheme
// is case-insensitive (RFC 9110 section 11.1).
func bearer(h string) (string, error) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: authorization is not a bearer credential", ErrMissing)
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return "", ErrMissing
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("%w: malformed bearer credential", ErrInvalid)
	}
	return token, nil
}

// keyMatches reports whether key may verify alg: an RSA key for RS256, a
// P-256 key for ES256, and the key's own alg (if any) equal to alg.
func keyMatches(key jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if key.Algorithm != "" && key.Algorithm != string(alg) {
		return false
	}
	switch k := key.Key.(type) {
	case *rsa.PublicKey:
		return alg == jose.RS256
	case *ecdsa.PublicKey:
		return alg == jose.ES256 && k.Curve == elliptic.P256()
	}
	return false
}

// decodeClaims decodes the verified payload, keeping numbers exact.
func decodeClaims(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil || dec.More() {
		return nil, fmt.Errorf("%w: claims are not a json object", ErrInvalid)
	}
	return claims, nil
}

// numericDate reads a NumericDate claim (RFC 7519 section 2): seconds since
// the epoch, possibly fractional.
func numericDate(claims map[string]any, name string) (t time.Time, present bool, err error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, true, fmt.Errorf("%w: %s is not a number", ErrInvalid, name)
	}
	f, err := n.Float64()
	// Bound to years 0..9999 or so; anything else is nonsense.
	if err != nil || math.IsNaN(f) || f < -62e9 || f > 253e9 {
		return time.Time{}, true, fmt.Errorf("%w: %s is out of range", ErrInvalid, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// checkTimes applies exp (required), nbf (required, as
// docs/spec/azure-compat.md asks) and iat (optional) with the clock skew:
// valid when nbf - skew <= now < exp + skew and iat <= now + skew. The
// token's lifetime, exp minus the earlier of nbf and iat, must be at most
// maxLifetime + LifetimeSlack: a stolen token of ten years' validity is not
// honoured for ten years.
func (a *Authenticator) checkTimes(claims map[string]any, maxLifetime time.Duration) error {
	now, skew := a.now(), a.cfg.ClockSkew
	exp, ok, err := numericDate(claims, "exp")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: token has no exp claim", ErrInvalid)
	}
	nbf, ok, err := numericDate(claims, "nbf")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: token has no nbf claim", ErrInvalid)
	}
	iat, hasIat, err := numericDate(claims, "iat")
	if err != nil {
		return err
	}
	if !now.Before(exp.Add(skew)) {
		return fmt.Errorf("%w: expired at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if now.Add(skew).Before(nbf) {
		return fmt.Errorf("%w: valid from %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	}
	if hasIat && now.Add(skew).Before(iat) {
		return fmt.Errorf("%w: issued in the future, at %s", ErrNotYetValid, iat.UTC().Format(time.RFC3339))
	}
	start := nbf
	if hasIat && iat.Before(start) {
		start = iat
	}
	// Compare in seconds: the dates are bounded, durations overflow.
	if life := exp.Sub(start); exp.Unix()-start.Unix() > int64((maxLifetime+LifetimeSlack)/time.Second) {
		return fmt.Errorf("%w: valid from %s to %s (%s), longer than the issuer's maximum of %s", ErrLifetime,
			start.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339), life.Round(time.Second), maxLifetime)
	}
	return nil
}

// checkAudience requires aud (a string or an array of strings) to contain
// one of the accepted audiences.
func checkAudience(claims map[string]any, accepted []string) error {
	var auds []string
	switch v := claims["aud"].(type) {
	case string:
		auds = []string{v}
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%w: aud is not a string or array of strings", ErrInvalid)
			}
			auds = append(auds, s)
		}
	case nil:
		return fmt.Errorf("%w: token has no aud claim", ErrAudience)
	default:
		return fmt.Errorf("%w: aud is not a string or array of strings", ErrInvalid)
	}
	for _, aud := range auds {
		if slices.Contains(accepted, aud) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrAudience, shortJSON(auds))
}

func identity(iss string, claims map[string]any) (*Identity, error) {
	str := func(name string) (string, error) {
		switch v := claims[name].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		default:
			return "", fmt.Errorf("%w: %s is not a string", ErrInvalid, name)
		}
	}
	id := &Identity{Issuer: iss, Claims: claims}
	var err error
	if id.OID, err = str("oid"); err != nil {
		return nil, err
	}
	if id.Subject, err = str("sub"); err != nil {
		return nil, err
	}
	if id.TenantID, err = str("tid"); err != nil {
		return nil, err
	}
	if id.OID == "" {
		id.OID = id.Subject
	}
	if id.OID == "" {
		return nil, ErrNoIdentity
	}
	return id, nil
}

func (a *Authenticator) countRejection(code string) {
	c, ok := a.rejected.Load(code)
	if !ok {
		c, _ = a.rejected.LoadOrStore(code, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
}

// Stats are counters for logs and, later, metrics.
type Stats struct {
	Accepted uint64
	Rejected map[string]uint64 // by error code
	Issuers  []IssuerStats     // in configuration order
}

// IssuerStats are the key set counters of one issuer.
type IssuerStats struct {
	Issuer string
	Keys   int // usable keys loaded now
	// Fetches and FetchFailures count network refreshes (startup,
	// scheduled, unknown kid).
	Fetches       uint64
	FetchFailures uint64
	// UnknownKIDRefreshes counts refreshes started by unknown kids;
	// RateLimited counts unknown kids that found a refresh too recent.
	UnknownKIDRefreshes uint64
	RateLimited         uint64
	SkippedKeys         uint64    // keys ignored as unusable, over all loads
	LastRefreshed       time.Time // last successful load; zero if none
	LastFetchError      string    // of the last fetch, "" if it succeeded
}

// Stats returns a snapshot of the counters.
func (a *Authenticator) Stats() Stats {
	s := Stats{Accepted: a.accepted.Load(), Rejected: map[string]uint64{}}
	a.rejected.Range(func(k, v any) bool {
		s.Rejected[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	for _, ti := range a.order {
		is := IssuerStats{
			Issuer:              ti.cfg.Issuer,
			Fetches:             ti.fetches.Load(),
			FetchFailures:       ti.fetchFailures.Load(),
			UnknownKIDRefreshes: ti.missRefreshes.Load(),
			RateLimited:         ti.rateLimited.Load(),
			SkippedKeys:         ti.skippedKeys.Load(),
		}
		if ks := ti.keys.Load(); ks != nil {
			is.Keys = len(ks.byKID)
		}
		if t := ti.lastRefreshed.Load(); t != 0 {
			is.LastRefreshed = time.Unix(t, 0)
		}
		if e := ti.lastFetchError.Load(); e != nil {
			is.LastFetchError = *e
		}
		s.Issuers = append(s.Issuers, is)
	}
	return s
}
