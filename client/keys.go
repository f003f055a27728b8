package client

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// The APIs Keys can release keys through.
const (
	APIV1  = "v1"  // POST /v1/keys/{kid}/release and /v1/release (docs/release.md)
	APIApp = "app" // POST /app/unwrapKey?fmt=jwk (docs/spec/azure-compat.md)
)

// The wrapping keys Keys can ask the KMS to wrap to (DESIGN.md "Wrapping").
const (
	WrapX25519         = "x25519"          // HPKE, DHKEM(X25519); /v1 only
	WrapMLKEM768X25519 = "mlkem768-x25519" // HPKE, MLKEM768-X25519; /v1 only
	WrapRSA4096        = "rsa-4096"        // RSA-OAEP-256 to an RSA-4096 key; the only one of /app
)

// KeysConfig configures Keys. KMS, Attester and Tokens are required; zero
// values of the others get the defaults their comments give.
type KeysConfig struct {
	// KMS is the base URL of the KMS, e.g. "https://kms.sro.example".
	KMS string
	// HTTPClient defaults to a client with a 30 s timeout. To reach a KMS
	// whose TLS certificate comes from a private CA, give a client whose
	// transport's TLSClientConfig.RootCAs holds that CA
	// (ExampleKeysConfig_privateCA).
	HTTPClient *http.Client
	// Attester produces the evidence that binds each fresh wrapping key.
	Attester Attester
	// Tokens gives the bearer token sent with every release request.
	Tokens TokenSource
	// API is APIV1 (default) or APIApp.
	API string
	// Wrapping is WrapX25519 (default for /v1), WrapMLKEM768X25519 or
	// WrapRSA4096 (default, and the only choice, for /app).
	Wrapping string
	// Nonce asks GET /v1/nonce for a freshness nonce before each /v1
	// release and puts it in REPORT_DATA[32:64] (required by KMSs that run
	// with RequireNonce).
	Nonce bool
	// LogKey is the KMS log's note verifier key (GET /v1/log/key,
	// confirmed out of band). When set, every release answer must carry a
	// receipt that verifies under it and proves a key.released entry
	// naming exactly the released kids and this release's wrapping key;
	// otherwise the answer is rejected and nothing is cached.
	LogKey string
	// Now is the clock that decides which cached keys are still valid.
	// Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default(). Keys logs kids and counts, never
	// key material or tokens.
	Logger *slog.Logger

	// RefreshInterval is the longest Run waits between two refreshes of
	// the key list (default 10 minutes); it also wakes up at every phase
	// change of a listed key.
	RefreshInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a
	// failed request and between failed refreshes of Run (defaults 500 ms
	// and 5 minutes). Each wait doubles, up to MaxBackoff, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the tries of one request on 202, 429, 5xx and
	// transport errors (default 5). Denials (other 4xx) are never retried.
	MaxAttempts int
	// FetchTimeout bounds one fetch, which callers asking for the same key
	// share (default 2 minutes).
	FetchTimeout time.Duration
}

func (c *KeysConfig) setDefaults() error {
	if c.KMS == "" || c.Attester == nil || c.Tokens == nil {
		return errors.New("client: KeysConfig.KMS, Attester and Tokens are required")
	}
	u, err := url.Parse(c.KMS)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("client: KeysConfig.KMS %q is not an http(s) URL", c.KMS)
	}
	c.KMS = strings.TrimSuffix(c.KMS, "/")
	switch c.API {
	case "":
		c.API = APIV1
	case APIV1, APIApp:
	default:
		return fmt.Errorf("client: KeysConfig.API %q, want %q or %q", c.API, APIV1, APIApp)
	}
	switch {
	case c.Wrapping == "" && c.API == APIApp:
		c.Wrapping = WrapRSA4096
	case c.Wrapping == "":
		c.Wrapping = WrapX25519
	case c.Wrapping != WrapX25519 && c.Wrapping != WrapMLKEM768X25519 && c.Wrapping != WrapRSA4096:
		return fmt.Errorf("client: KeysConfig.Wrapping %q, want %q, %q or %q", c.Wrapping, WrapX25519, WrapMLKEM768X25519, WrapRSA4096)
	case c.API == APIApp && c.Wrapping != WrapRSA4096:
		return fmt.Errorf("client: the /app API wraps to RSA only; KeysConfig.Wrapping must be %q", WrapRSA4096)
	}
	if c.Nonce && c.API == APIApp {
		return errors.New("client: the /app API takes no nonce; KeysConfig.Nonce needs the /v1 API")
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 10 * time.Minute
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 2 * time.Minute
	}
	return nil
}

// A Key is a private key released by the KMS, unwrapped and checked against
// the public key the KMS lists for its kid.
type Key struct {
	Kid        string // base64url(SHA-256(public key PEM)) + "_" + N
	ID         int    // numeric id, 10..99
	OHTTPKeyID byte   // keys.OHTTPKeyID(ID): the id's two digits read as hex
	Suite      string // "x25519", "p256" or "mlkem768-x25519"
	KEM        uint16 // HPKE algorithm ids (RFC 9180 §7)
	KDF        uint16
	AEAD       uint16
	PublicKey  []byte // RFC 9180 SerializePublicKey

	NotBefore    time.Time // advertised to clients from
	NotAfter     time.Time // retired (no longer advertised) from
	ReleaseUntil time.Time // expired from: do not use the key after this

	// PrivateKey decrypts what clients sealed to PublicKey.
	PrivateKey hpke.PrivateKey
	// FetchedAt is when this process received the key.
	FetchedAt time.Time
}

// Phase returns the key's lifecycle phase at t (docs/lifecycle.md):
// "created", "published", "retired" or "expired".
func (k *Key) Phase(t time.Time) string {
	switch {
	case !t.Before(k.ReleaseUntil):
		return "expired"
	case !t.Before(k.NotAfter):
		return "retired"
	case !t.Before(k.NotBefore):
		return "published"
	}
	return "created"
}

// Errors.
var (
	// ErrKeyNotFound: the KMS lists no unexpired key of that kid or OHTTP
	// key id (a KMSError with code KEY_NOT_FOUND also matches it).
	ErrKeyNotFound = errors.New("client: key not found")
	// ErrKeyExpired: the key is past its release_until (a KMSError with
	// code KEY_EXPIRED also matches it).
	ErrKeyExpired = errors.New("client: key expired")
	// ErrRejected: the KMS's answer failed a check of this client (a key
	// that does not match its published public key, a blob that does not
	// decrypt, a receipt that does not verify). Nothing of it is cached.
	ErrRejected = errors.New("client: KMS answer rejected")
)

// A KMSError is a refusal of the KMS: an answer with a status that is not
// retried (4xx other than 202), or the last answer after MaxAttempts.
type KMSError struct {
	Status    int
	Code      string // x-ms-kms-error-code
	Message   string // the error body's message, or x-ms-kms-error-details
	RequestID string // x-ms-kms-request-id, to quote to the KMS operator
}

func (e *KMSError) Error() string {
	s := "client: KMS answered " + strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes KEY_NOT_FOUND and KEY_EXPIRED refusals match ErrKeyNotFound
// and ErrKeyExpired.
func (e *KMSError) Is(target error) bool {
	return target == ErrKeyNotFound && e.Code == "KEY_NOT_FOUND" ||
		target == ErrKeyExpired && e.Code == "KEY_EXPIRED"
}

// Keys fetches private keys from a KMS the way a service in a TEE must
// (DESIGN.md §1, steps 2-10) and caches them: for each fetch a fresh
// wrapping key, evidence binding it, a token, the release request, the
// unwrapping, and checks of the key against the KMS's published public key
// and, with KeysConfig.LogKey, of the release's log receipt. Run keeps the
// cache ahead of rotations. Keys is safe for concurrent use.
type Keys struct {
	cfg      KeysConfig
	log      *slog.Logger
	verifier note.Verifier // nil without LogKey

	mu      sync.Mutex
	cache   map[string]*Key // by kid
	listed  map[string]api.V1Key
	lastErr error
	lastErrAt, lastOKAt,
	listedAt time.Time

	flights flightGroup

	fetches, failures, retries, receipts atomic.Uint64
}

// NewKeys returns a Keys for cfg. It does no I/O.
func NewKeys(cfg KeysConfig) (*Keys, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	k := &Keys{cfg: cfg, log: cfg.Logger, cache: map[string]*Key{}, listed: map[string]api.V1Key{}}
	if cfg.LogKey != "" {
		v, err := translog.NewVerifier(cfg.LogKey)
		if err != nil {
			return nil, fmt.Errorf("client: KeysConfig.LogKey: %w", err)
		}
		k.verifier = v
	}
	return k, nil
}

// ByKID returns the key kid, from the cache or else fetched from the KMS.
// Concurrent calls for one kid share one fetch.
func (k *Keys) ByKID(ctx context.Context, kid string) (*Key, error) {
	if key := k.cached(kid); key != nil {
		return key, nil
	}
	return k.fetchKID(ctx, kid)
}

// ByOHTTPID returns the unexpired key whose OHTTP key id is id: from the
// cache, or else the KMS's list is read again and the key fetched.
func (k *Keys) ByOHTTPID(ctx context.Context, id byte) (*Key, error) {
	if key := k.cachedOHTTP(id); key != nil {
		return key, nil
	}
	listed, err := k.list(ctx)
	if err != nil {
		return nil, err
	}
	var best *api.V1Key
	for _, l := range listed {
		if l.OHTTPKeyID == int(id) && releasable(l.State) && (best == nil || l.NotBefore.After(best.NotBefore)) {
			best = &l
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no unexpired key has OHTTP key id 0x%02x", ErrKeyNotFound, id)
	}
	return k.ByKID(ctx, best.Kid)
}

// All fetches every key the KMS releases now (upcoming, published and
// retired keys in their grace period), caches them and returns them,
// oldest first. Over /v1 it is one release with all_valid; over /app one
// release per key not yet cached.
func (k *Keys) All(ctx context.Context) ([]*Key, error) {
	v, err := k.flights.do(ctx, "all", k.detached(ctx), func(ctx context.Context) (any, error) {
		if k.cfg.API == APIV1 {
			return k.fetch(ctx, nil, true)
		}
		if _, err := k.refreshList(ctx); err != nil {
			return nil, err
		}
		return nil, k.fetchMissing(ctx)
	})
	if err != nil {
		return nil, err
	}
	if ks, ok := v.([]*Key); ok {
		return ks, nil
	}
	return k.Cached(), nil
}

// Cached returns the cached unexpired keys, oldest first. It does no I/O.
func (k *Keys) Cached() []*Key {
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*Key, 0, len(k.cache))
	for _, key := range k.cache {
		if now.Before(key.ReleaseUntil) {
			out = append(out, key)
		}
	}
	sortKeys(out)
	return out
}

// Run keeps the cache ahead of the KMS's rotations until ctx is done: it
// reads the key list, drops expired keys, fetches every releasable key not
// yet cached (so keys created but not yet published are cached before
// clients use them), and sleeps until the next phase change of a listed key
// or RefreshInterval, whichever comes first. After a failure it waits
// MinBackoff, doubling up to MaxBackoff, with jitter; the cache keeps
// serving meanwhile. It returns ctx's error.
func (k *Keys) Run(ctx context.Context) error {
	failures := 0
	for {
		next, err := k.Refresh(ctx)
		wait := next
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait = backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, failures)
			failures++
			k.log.Warn("key refresh failed; serving from cache", "err", err, "failures", failures, "retry_in", wait)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Refresh does one round of Run and returns how long to wait before the
// next one.
func (k *Keys) Refresh(ctx context.Context) (time.Duration, error) {
	listed, err := k.refreshList(ctx)
	if err != nil {
		return 0, err
	}
	k.evict()
	if err := k.fetchMissing(ctx); err != nil {
		return 0, err
	}
	now := k.cfg.Now()
	wait := k.cfg.RefreshInterval
	for _, l := range listed {
		for _, t := range []time.Time{l.NotBefore, l.NotAfter, l.ReleaseUntil} {
			if d := t.Sub(now); d > 0 && d < wait {
				wait = d
			}
		}
	}
	// Spread replicas apart: up to 10% earlier, and never a busy loop.
	wait -= time.Duration(mrand.Int64N(int64(wait)/10 + 1))
	return max(wait, k.cfg.MinBackoff), nil
}

// fetchMissing fetches every listed releasable key that is not cached.
func (k *Keys) fetchMissing(ctx context.Context) error {
	now := k.cfg.Now()
	k.mu.Lock()
	var missing []string
	for kid, l := range k.listed {
		if _, ok := k.cache[kid]; !ok && releasable(l.State) && now.Before(l.ReleaseUntil) {
			missing = append(missing, kid)
		}
	}
	k.mu.Unlock()
	slices.Sort(missing)
	if len(missing) == 0 {
		return nil
	}
	if k.cfg.API == APIV1 && len(missing) > 1 {
		var errs []error
		for batch := range slices.Chunk(missing, maxBatch) {
			key := "batch:" + strings.Join(batch, ",")
			_, err := k.flights.do(ctx, key, k.detached(ctx), func(ctx context.Context) (any, error) {
				return k.fetch(ctx, batch, false)
			})
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	var errs []error
	for _, kid := range missing {
		_, err := k.fetchKID(ctx, kid)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maxBatch is release.MaxV1Kids: the kids of one /v1/release.
const maxBatch = 100

// KeyState describes a cached key, without its material.
type KeyState struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   byte      `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	Phase        string    `json:"phase"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	FetchedAt    time.Time `json:"fetched_at"`
}

// State is what a health check reports: the cached keys, the last error
// and the counters. It holds no key material.
type State struct {
	Keys        []KeyState `json:"keys"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt time.Time  `json:"last_error_at,omitzero"`
	LastFetchAt time.Time  `json:"last_fetch_at,omitzero"` // last successful release
	ListedAt    time.Time  `json:"listed_at,omitzero"`     // last successful read of the key list
	// Fetches counts release requests made, Failures failed fetches and
	// list reads, Retries retried HTTP requests, ReceiptsVerified release
	// receipts checked against KeysConfig.LogKey.
	Fetches          uint64 `json:"fetches"`
	Failures         uint64 `json:"failures"`
	Retries          uint64 `json:"retries"`
	ReceiptsVerified uint64 `json:"receipts_verified"`
}

// State returns the cache's state for health checks.
func (k *Keys) State() State {
	now := k.cfg.Now()
	k.mu.Lock()
	s := State{LastErrorAt: k.lastErrAt, LastFetchAt: k.lastOKAt, ListedAt: k.listedAt, Keys: []KeyState{}}
	if k.lastErr != nil {
		s.LastError = k.lastErr.Error()
	}
	ks := make([]*Key, 0, len(k.cache))
	for _, key := range k.cache {
		ks = append(ks, key)
	}
	k.mu.Unlock()
	sortKeys(ks)
	for _, key := range ks {
		s.Keys = append(s.Keys, KeyState{
			Kid: key.Kid, ID: key.ID, OHTTPKeyID: key.OHTTPKeyID, Suite: key.Suite, Phase: key.Phase(now),
			NotBefore: key.NotBefore, NotAfter: key.NotAfter, ReleaseUntil: key.ReleaseUntil, FetchedAt: key.FetchedAt,
		})
	}
	s.Fetches, s.Failures, s.Retries, s.ReceiptsVerified = k.fetches.Load(), k.failures.Load(), k.retries.Load(), k.receipts.Load()
	return s
}

func sortKeys(ks []*Key) {
	slices.SortFunc(ks, func(a, b *Key) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return strings.Compare(a.Kid, b.Kid)
	})
}

func (k *Keys) cached(kid string) *Key {
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if key := k.cache[kid]; key != nil && now.Before(key.ReleaseUntil) {
		return key
	}
	return nil
}

func (k *Keys) cachedOHTTP(id byte) *Key {
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	var best *Key
	for _, key := range k.cache {
		if key.OHTTPKeyID == id && now.Before(key.ReleaseUntil) && (best == nil || key.NotBefore.After(best.NotBefore)) {
			best = key
		}
	}
	return best
}

// evict drops expired keys from the cache.
func (k *Keys) evict() {
	now := k.cfg.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	for kid, key := range k.cache {
		if !now.Before(key.ReleaseUntil) {
			delete(k.cache, kid)
			k.log.Info("expired key dropped from cache", "kid", kid)
		}
	}
}

func (k *Keys) failed(err error) {
	k.failures.Add(1)
	k.mu.Lock()
	k.lastErr, k.lastErrAt = err, k.cfg.Now()
	k.mu.Unlock()
}

// detached returns a context for a shared fetch: it outlives the caller
// that started it (others may be waiting) but not FetchTimeout.
func (k *Keys) detached(ctx context.Context) func() (context.Context, context.CancelFunc) {
	return func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), k.cfg.FetchTimeout)
	}
}

func (k *Keys) fetchKID(ctx context.Context, kid string) (*Key, error) {
	v, err := k.flights.do(ctx, "kid:"+kid, k.detached(ctx), func(ctx context.Context) (any, error) {
		if key := k.cached(kid); key != nil { // fetched while this call waited
			return key, nil
		}
		ks, err := k.fetch(ctx, []string{kid}, false)
		if err != nil {
			return nil, err
		}
		return ks[0], nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Key), nil
}

// releasable reports whether the KMS releases a key in this listed state.
func releasable(state string) bool {
	switch state {
	case "created", "published", "primary", "retired":
		return true
	}
	return false
}

// checkListed checks that a listed key is self-consistent: a known suite with
// its algorithm ids, a public key of that suite, a kid that names that
// public key (kid = base64url(SHA-256(PEM)) + "_" + N) and a numeric id of
// 10..99 with its OHTTP key id.
func checkListed(l *api.V1Key) error {
	s, err := keys.ParseSuite(l.Suite)
	if err != nil {
		return err
	}
	if s.KEM != l.KEM || s.KDF != l.KDF || s.AEAD != l.AEAD {
		return fmt.Errorf("key %s: algorithm ids 0x%04x/0x%04x/0x%04x do not match suite %s", l.Kid, l.KEM, l.KDF, l.AEAD, l.Suite)
	}
	pemText, err := keys.PublicPEM(s, l.PublicKey)
	if err != nil {
		return fmt.Errorf("key %s: %w", l.Kid, err)
	}
	n, ok := keys.ParseKIDNumber(l.Kid)
	if !ok || keys.KID(pemText, n) != l.Kid {
		return fmt.Errorf("key %s: the kid does not name its public key", l.Kid)
	}
	if l.ID < keys.MinID || l.ID > keys.MaxID || l.OHTTPKeyID != int(keys.OHTTPKeyID(l.ID)) {
		return fmt.Errorf("key %s: id %d with OHTTP key id %d", l.Kid, l.ID, l.OHTTPKeyID)
	}
	return nil
}

// list returns the KMS's key list, read again if kid-less or older than
// a second (so a burst of unknown ids reads it once).
func (k *Keys) list(ctx context.Context) (map[string]api.V1Key, error) {
	k.mu.Lock()
	fresh := !k.listedAt.IsZero() && k.cfg.Now().Sub(k.listedAt) < time.Second
	l := k.listed
	k.mu.Unlock()
	if fresh {
		return l, nil
	}
	return k.refreshList(ctx)
}

// refreshList reads GET /v1/keys?all=true.
func (k *Keys) refreshList(ctx context.Context) (map[string]api.V1Key, error) {
	v, err := k.flights.do(ctx, "list", k.detached(ctx), func(ctx context.Context) (any, error) {
		b, err := k.do(ctx, http.MethodGet, "/v1/keys?all=true", nil, "")
		if err != nil {
			return nil, fmt.Errorf("client: list keys: %w", err)
		}
		var body api.V1Keys
		if err := json.Unmarshal(b, &body); err != nil {
			return nil, fmt.Errorf("client: list keys: %w", err)
		}
		m := make(map[string]api.V1Key, len(body.Keys))
		for _, l := range body.Keys {
			if !releasable(l.State) {
				continue // expired or destroyed: of no use, and not checked
			}
			if err := checkListed(&l); err != nil {
				return nil, fmt.Errorf("%w: GET /v1/keys: %w", ErrRejected, err)
			}
			m[l.Kid] = l
		}
		k.mu.Lock()
		k.listed, k.listedAt = m, k.cfg.Now()
		k.mu.Unlock()
		return m, nil
	})
	if err != nil {
		k.failed(err)
		return nil, err
	}
	return v.(map[string]api.V1Key), nil
}

// fetch releases kids (or, with all, every valid key), checks the answer
// and caches the keys. On any failed check nothing is cached.
func (k *Keys) fetch(ctx context.Context, kids []string, all bool) (ks []*Key, err error) {
	defer func() {
		if err != nil {
			k.failed(err)
			k.log.Warn("key fetch failed", "kids", kids, "all", all, "err", err)
		}
	}()
	listed, err := k.list(ctx)
	if err != nil {
		return nil, err
	}
	for _, kid := range kids {
		if _, ok := listed[kid]; !ok {
			if listed, err = k.refreshList(ctx); err != nil {
				return nil, err
			}
			if _, ok := listed[kid]; !ok {
				return nil, fmt.Errorf("%w: the KMS lists no releasable key %s", ErrKeyNotFound, kid)
			}
		}
	}
	k.fetches.Add(1)
	var released []released
	if k.cfg.API == APIApp {
		released, err = k.releaseApp(ctx, kids[0])
	} else {
		released, err = k.releaseV1(ctx, kids, all)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, r := range released {
			clear(r.priv)
		}
	}()
	if all {
		for _, r := range released {
			if _, ok := listed[r.kid]; !ok {
				if listed, err = k.refreshList(ctx); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	now := k.cfg.Now()
	for _, r := range released {
		l, ok := listed[r.kid]
		if !ok {
			return nil, fmt.Errorf("%w: released key %s is not in the KMS's list", ErrRejected, r.kid)
		}
		key, err := newKey(l, r, now)
		if err != nil {
			return nil, err
		}
		if !now.Before(key.ReleaseUntil) {
			// The KMS's clock is behind ours: the key is of no use here.
			if all {
				continue
			}
			return nil, fmt.Errorf("%w: %s expired at %s", ErrKeyExpired, key.Kid, key.ReleaseUntil.Format(time.RFC3339))
		}
		ks = append(ks, key)
	}
	k.mu.Lock()
	for _, key := range ks {
		k.cache[key.Kid] = key
	}
	k.lastOKAt = now
	k.mu.Unlock()
	gotKids := make([]string, len(ks))
	for i, key := range ks {
		gotKids[i] = key.Kid
	}
	k.log.Info("keys fetched", "kids", gotKids, "api", k.cfg.API, "wrapping", k.cfg.Wrapping)
	sortKeys(ks)
	return ks, nil
}

// released is one unwrapped key of a release answer, not yet checked.
type released struct {
	kid  string
	pub  []byte // the public key the release answer names (nil for /app: from the item)
	priv []byte // RFC 9180 SerializePrivateKey
}

// newKey checks a released private key against the listed public key and
// returns the cached form.
func newKey(l api.V1Key, r released, now time.Time) (*Key, error) {
	if r.pub != nil && !bytes.Equal(r.pub, l.PublicKey) {
		return nil, fmt.Errorf("%w: the release answer gives key %s another public key than the KMS lists", ErrRejected, l.Kid)
	}
	s, err := keys.ParseSuite(l.Suite)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrRejected, l.Kid, err)
	}
	sk, err := s.PrivateKey(r.priv)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: the released private key is not a %s key", ErrRejected, l.Kid, l.Suite)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), l.PublicKey) {
		return nil, fmt.Errorf("%w: the released private key of %s does not match its published public key", ErrRejected, l.Kid)
	}
	return &Key{
		Kid: l.Kid, ID: l.ID, OHTTPKeyID: keys.OHTTPKeyID(l.ID), Suite: l.Suite, KEM: l.KEM, KDF: l.KDF, AEAD: l.AEAD,
		PublicKey: slices.Clone(l.PublicKey), NotBefore: l.NotBefore, NotAfter: l.NotAfter, ReleaseUntil: l.ReleaseUntil,
		PrivateKey: sk, FetchedAt: now,
	}, nil
}

// A wrappingKey is a fresh key pair that one release is wrapped to.
type wrappingKey struct {
	kem  uint16          // HPKE, or
	sk   hpke.PrivateKey //
	rsa  *rsa.PrivateKey // RSA
	pub  []byte          // HPKE: SerializePublicKey; RSA: DER SubjectPublicKeyInfo
	text string          // RSA for /app: the PEM text
}

func newWrappingKey(kind string) (*wrappingKey, error) {
	switch kind {
	case WrapX25519, WrapMLKEM768X25519:
		id := keys.KEMX25519HKDFSHA256
		if kind == WrapMLKEM768X25519 {
			id = keys.KEMMLKEM768X25519
		}
		kem, err := hpke.NewKEM(id)
		if err != nil {
			return nil, err
		}
		sk, err := kem.GenerateKey()
		if err != nil {
			return nil, err
		}
		return &wrappingKey{kem: id, sk: sk, pub: sk.PublicKey().Bytes()}, nil
	case WrapRSA4096:
		sk, err := rsa.GenerateKey(rand.Reader, 4096)
		if err != nil {
			return nil, err
		}
		der := wrap.CanonicalRSA(&sk.PublicKey)
		return &wrappingKey{rsa: sk, pub: der, text: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}, nil
	}
	return nil, fmt.Errorf("client: unknown wrapping %q", kind)
}

// v1Binding is REPORT_DATA[0:32] of a /v1 release: SHA-256 of the
// wrapping key's canonical encoding (wrap.CanonicalHPKE: the 2-byte KEM id
// and the public key; wrap.CanonicalRSA: the DER SubjectPublicKeyInfo).
func (w *wrappingKey) v1Binding() [32]byte {
	if w.rsa != nil {
		return wrap.V1BindingHash(w.pub)
	}
	return wrap.V1BindingHash(wrap.CanonicalHPKE(w.kem, w.pub))
}

// v1JSON is the wrapping_key of a /v1 release request.
func (w *wrappingKey) v1JSON() *api.V1WrappingKey {
	if w.rsa != nil {
		return &api.V1WrappingKey{Type: "rsa", SPKI: base64.StdEncoding.EncodeToString(w.pub)}
	}
	return &api.V1WrappingKey{Type: "hpke", KEMID: w.kem, PublicKey: base64.StdEncoding.EncodeToString(w.pub)}
}

// open unwraps a /v1 blob of key kid: HPKE base mode with info
// wrap.ReleaseInfo(kid), HKDF-SHA256 and AES-256-GCM, or RSA-OAEP-256.
func (w *wrappingKey) open(kid string, blob []byte) ([]byte, error) {
	if w.rsa != nil {
		return rsa.DecryptOAEP(sha256.New(), nil, w.rsa, blob, nil)
	}
	return hpke.Open(w.sk, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(kid), blob)
}

// destroy erases what Go lets us erase of the private half: the RSA
// private exponent and primes. (crypto/hpke keys and the RSA key's
// precomputed internal form are opaque; they are dropped.)
func (w *wrappingKey) destroy() {
	if w.rsa != nil {
		zeroInt(w.rsa.D)
		for _, p := range w.rsa.Primes {
			zeroInt(p)
		}
		zeroInt(w.rsa.Precomputed.Dp)
		zeroInt(w.rsa.Precomputed.Dq)
		zeroInt(w.rsa.Precomputed.Qinv)
	}
	w.rsa, w.sk = nil, nil
}

func zeroInt(n *big.Int) {
	if n != nil {
		clear(n.Bits())
		n.SetInt64(0)
	}
}

// attest returns evidence whose REPORT_DATA is bind || nonce.
func (k *Keys) attest(ctx context.Context, bind [32]byte, nonce []byte) (*Evidence, string, error) {
	var rd [64]byte
	copy(rd[:32], bind[:])
	copy(rd[32:], nonce)
	ev, err := k.cfg.Attester.Attest(ctx, rd)
	if err != nil {
		return nil, "", fmt.Errorf("client: attest: %w", err)
	}
	if ev == nil || len(ev.Attestation) == 0 {
		return nil, "", errors.New("client: attest: the attester returned no evidence")
	}
	tok, err := k.cfg.Tokens.Token(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("client: token: %w", err)
	}
	return ev, tok, nil
}

func (k *Keys) nonce(ctx context.Context) ([]byte, error) {
	b, err := k.do(ctx, http.MethodGet, "/v1/nonce", nil, "")
	if err != nil {
		return nil, fmt.Errorf("client: nonce: %w", err)
	}
	var body api.NonceResponse
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("client: nonce: %w", err)
	}
	n, err := hex.DecodeString(body.Nonce)
	if err != nil || len(n) != 32 {
		return nil, fmt.Errorf("client: nonce: %q is not 64 hex digits", body.Nonce)
	}
	return n, nil
}

func (k *Keys) releaseV1(ctx context.Context, kids []string, all bool) ([]released, error) {
	wk, err := newWrappingKey(k.cfg.Wrapping)
	if err != nil {
		return nil, fmt.Errorf("client: wrapping key: %w", err)
	}
	defer wk.destroy()
	var nonce []byte
	if k.cfg.Nonce {
		if nonce, err = k.nonce(ctx); err != nil {
			return nil, err
		}
	}
	bind := wk.v1Binding()
	ev, tok, err := k.attest(ctx, bind, nonce)
	if err != nil {
		return nil, err
	}
	req := api.V1Request{Attestation: ev.Attestation, WrappingKey: wk.v1JSON(), Nonce: hex.EncodeToString(nonce)}
	path := "/v1/release"
	switch {
	case all:
		req.AllValid = true
	case len(kids) == 1:
		path = "/v1/keys/" + url.PathEscape(kids[0]) + "/release"
	default:
		req.Kids = kids
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b, err := k.do(ctx, http.MethodPost, path, body, tok)
	if err != nil {
		return nil, fmt.Errorf("client: release: %w", err)
	}
	var resp api.V1ReleaseResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: release answer: %w", ErrRejected, err)
	}
	got := make([]string, len(resp.Keys))
	for i, rk := range resp.Keys {
		got[i] = rk.Kid
	}
	if len(got) == 0 || (!all && !sameSet(got, kids)) || !distinct(got) {
		return nil, fmt.Errorf("%w: asked for %v, the answer holds %v", ErrRejected, kids, got)
	}
	if err := k.checkReceipt(resp.Receipt, got, bind); err != nil {
		return nil, err
	}
	out := make([]released, 0, len(resp.Keys))
	for _, rk := range resp.Keys {
		priv, err := wk.open(rk.Kid, rk.Wrapped)
		if err != nil {
			for _, r := range out {
				clear(r.priv)
			}
			return nil, fmt.Errorf("%w: the wrapped key %s does not decrypt", ErrRejected, rk.Kid)
		}
		out = append(out, released{kid: rk.Kid, pub: rk.PublicKey, priv: priv})
	}
	return out, nil
}

// itemPublicKey returns the public key of a key item (the fmt=jwk payload
// of /app/unwrapKey) in SerializePublicKey form.
func itemPublicKey(it *keys.Item) ([]byte, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch {
	case it.Kty == "OKP" && it.Crv == "X25519":
		return dec(it.X)
	case it.Kty == "EC" && it.Crv == "P-256":
		x, err := dec(it.X)
		if err != nil {
			return nil, err
		}
		y, err := dec(it.Y)
		if err != nil {
			return nil, err
		}
		return append(append([]byte{4}, x...), y...), nil
	case it.Kty == "AKP" && it.Alg == "MLKEM768-X25519":
		return dec(it.Pub)
	}
	return nil, fmt.Errorf("unknown key type %q/%q/%q", it.Kty, it.Crv, it.Alg)
}

func (k *Keys) releaseApp(ctx context.Context, kid string) ([]released, error) {
	wk, err := newWrappingKey(WrapRSA4096)
	if err != nil {
		return nil, fmt.Errorf("client: wrapping key: %w", err)
	}
	defer wk.destroy()
	// The /app binding is SHA-256 of the exact PEM text sent, trailing
	// newline included (wrap.AppBindingHash).
	bind := wrap.AppBindingHash(wk.text)
	ev, tok, err := k.attest(ctx, bind, nil)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.AppRequest{Attestation: ev.Attestation, WrappingKey: wk.text, WrappedKid: kid})
	if err != nil {
		return nil, err
	}
	b, err := k.do(ctx, http.MethodPost, "/app/unwrapKey?fmt=jwk", body, tok)
	if err != nil {
		return nil, fmt.Errorf("client: release: %w", err)
	}
	var resp api.AppUnwrapResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: release answer: %w", ErrRejected, err)
	}
	if err := k.checkReceipt([]byte(resp.Receipt), []string{kid}, bind); err != nil {
		return nil, err
	}
	wrapped, err := base64.StdEncoding.DecodeString(resp.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: release answer: wrapped is not standard base64", ErrRejected)
	}
	payload, err := wk.open(kid, wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key %s does not decrypt", ErrRejected, kid)
	}
	defer clear(payload)
	var it keys.Item
	if err := json.Unmarshal(payload, &it); err != nil {
		return nil, fmt.Errorf("%w: the unwrapped key %s is not a JSON key item", ErrRejected, kid)
	}
	if it.Kid != kid {
		return nil, fmt.Errorf("%w: asked for %s, the key item is %s", ErrRejected, kid, it.Kid)
	}
	pub, err := itemPublicKey(&it)
	if err != nil {
		return nil, fmt.Errorf("%w: key item %s: %w", ErrRejected, kid, err)
	}
	priv, err := base64.RawURLEncoding.DecodeString(it.D)
	if err != nil || len(priv) == 0 {
		return nil, fmt.Errorf("%w: key item %s has no private key", ErrRejected, kid)
	}
	return []released{{kid: kid, pub: pub, priv: priv}}, nil
}

// checkReceipt verifies a release's receipt when KeysConfig.LogKey is set: the
// checkpoint's signature, the inclusion proof, and that the entry is a
// key.released of exactly these kids to this wrapping key (so a receipt
// of another release does not pass).
func (k *Keys) checkReceipt(raw json.RawMessage, kids []string, bind [32]byte) error {
	if k.verifier == nil {
		return nil
	}
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		return fmt.Errorf("%w: the release answer has no log receipt", ErrRejected)
	}
	r, err := translog.ParseReceipt(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	leaf, _, err := r.Verify(k.verifier)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if leaf.Type != ledger.TypeKeyReleased {
		return fmt.Errorf("%w: the receipt proves a %s entry, not %s", ErrRejected, leaf.Type, ledger.TypeKeyReleased)
	}
	var body api.KeyReleased
	if err := json.Unmarshal(leaf.Body, &body); err != nil {
		return fmt.Errorf("%w: the receipt's entry: %w", ErrRejected, err)
	}
	if !sameSet(body.Kids, kids) || body.WrappingKeySHA256 != hex.EncodeToString(bind[:]) {
		return fmt.Errorf("%w: the receipt records another release (entry %d)", ErrRejected, leaf.Seq)
	}
	k.receipts.Add(1)
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

func distinct(a []string) bool {
	s := slices.Sorted(slices.Values(a))
	return len(slices.Compact(s)) == len(a)
}

// maxAnswer bounds the KMS's answers (a batch of 100 hybrid keys is about
// 400 KiB).
const maxAnswer = 8 << 20

// do sends a request to the KMS and returns the body of a 200 answer. It
// retries transport errors and 5xx answers with backoff, 202 answers after
// their retry-after, and 429 and 503 answers after their retry-after or
// the backoff, whichever is longer (waits capped at MaxBackoff),
// MaxAttempts tries in all; other answers are a *KMSError at once.
func (k *Keys) do(ctx context.Context, method, path string, body []byte, token string) ([]byte, error) {
	var last error
	for attempt := 0; ; attempt++ {
		b, wait, err := k.try(ctx, method, path, body, token, attempt)
		if err == nil {
			return b, nil
		}
		last = err
		var ke *KMSError
		if wait < 0 || ctx.Err() != nil || attempt+1 >= k.cfg.MaxAttempts {
			if errors.As(err, &ke) || wait < 0 {
				return nil, err
			}
			return nil, fmt.Errorf("after %d attempts: %w", attempt+1, last)
		}
		k.retries.Add(1)
		k.log.Debug("retrying KMS request", "path", path, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// try makes one request. A negative wait means: do not retry.
func (k *Keys) try(ctx context.Context, method, path string, body []byte, token string, attempt int) ([]byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.cfg.KMS+path, rd)
	if err != nil {
		return nil, -1, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := k.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err == nil && len(b) > maxAnswer {
		err = fmt.Errorf("answer of more than %d bytes", maxAnswer)
	}
	switch {
	case resp.StatusCode == http.StatusOK && err == nil:
		return b, 0, nil
	case resp.StatusCode == http.StatusOK:
		return nil, backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt), fmt.Errorf("%s %s: %w", method, path, err)
	case resp.StatusCode == http.StatusAccepted:
		wait := k.cfg.MinBackoff
		if s, ok := retryAfter(resp); ok {
			wait = s
		}
		return nil, min(wait, k.cfg.MaxBackoff), kmsError(resp, b)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		// A rate limit (429 RATE_LIMITED) or a busy server (503
		// SERVER_BUSY) says when to come back. The replicas of a fleet
		// refused together would come back together, so the wait is
		// spread over up to half as long again.
		wait := backoff(k.cfg.MinBackoff, k.cfg.MaxBackoff, attempt)
		if s, ok := retryAfter(resp); ok && s > 0 {
			wait = max(wait, s+time.Duration(mrand.Int64N(int64(s)/2+1)))
		} else if resp.StatusCode == http.StatusTooManyRequests {
			wait = max(wait, time.Second)
		}
		return nil, min(wait, k.cfg.MaxBackoff), kmsError(resp, b)
	}
	return nil, -1, kmsError(resp, b)
}

// retryAfter reads the Retry-After header in seconds (tkms never sends the
// HTTP-date form).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || s < 0 {
		return 0, false
	}
	return time.Duration(s) * time.Second, true
}

func kmsError(resp *http.Response, body []byte) *KMSError {
	e := &KMSError{
		Status: resp.StatusCode, Code: resp.Header.Get("x-ms-kms-error-code"),
		Message: resp.Header.Get("x-ms-kms-error-details"), RequestID: resp.Header.Get("x-ms-kms-request-id"),
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil {
		if e.Code == "" {
			e.Code = eb.Error.Code
		}
		if eb.Error.Message != "" {
			e.Message = eb.Error.Message
		}
	}
	if len(e.Message) > 500 {
		e.Message = e.Message[:500] + "..."
	}
	return e
}

// backoff returns the wait before retry n (from 0): lo doubled n times, at
// most hi, less up to half of it at random (jitter, so that replicas that
// failed together do not retry together).
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for range min(n, 62) {
		if d >= hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d - time.Duration(mrand.Int64N(int64(d)/2+1))
}

// flightGroup collapses concurrent calls with one key into one execution
// (what golang.org/x/sync/singleflight does, without the dependency). The
// call runs on a context of its own (made by mk) so that a caller that
// gives up does not fail the others; each caller waits on its own context.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

func (g *flightGroup) do(ctx context.Context, key string, mk func() (context.Context, context.CancelFunc), fn func(context.Context) (any, error)) (any, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	f, ok := g.m[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		g.m[key] = f
		fctx, cancel := mk()
		go func() {
			defer cancel()
			f.val, f.err = fn(fctx)
			g.mu.Lock()
			delete(g.m, key)
			g.mu.Unlock()
			close(f.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
