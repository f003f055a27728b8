package client

import (
	"context"
	"crypto/hpke"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/tkms-dev/tkms/internal/translog"
)

// An API is a KMS API Keys can release keys through.
type API string

// The APIs Keys can release keys through.
const (
	APIV1  API = "v1"  // POST /v1/keys/{kid}/release and /v1/release (docs/release.md)
	APIApp API = "app" // POST /app/unwrapKey?fmt=jwk (docs/spec/azure-compat.md)
)

// A Wrapping is a kind of wrapping key Keys can ask the KMS to wrap to.
type Wrapping string

// The wrapping keys Keys can ask the KMS to wrap to (docs/release.md).
const (
	WrapX25519         Wrapping = "x25519"          // HPKE, DHKEM(X25519); /v1 only
	WrapMLKEM768X25519 Wrapping = "mlkem768-x25519" // HPKE, MLKEM768-X25519; /v1 only
	WrapRSA4096        Wrapping = "rsa-4096"        // RSA-OAEP-256 to an RSA-4096 key; the only one of /app
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
	API API
	// Wrapping is WrapX25519 (default for /v1), WrapMLKEM768X25519 or
	// WrapRSA4096 (default, and the only choice, for /app).
	Wrapping Wrapping
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
	// Service, when set, proves the KMS before any key is trusted: the
	// first fetch calls it with the HTTP client, KMS and LogKey, and
	// releases nothing until it returns nil (a failure is wrapped in
	// ErrRejected and remembered like any failed fetch). Package
	// client/servicecheck gives one that verifies GET /v1/service against
	// a node policy; it lives apart so that this package does not import
	// the attestation verifiers.
	Service ServiceCheck
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

	// PrefetchedOnly makes ByKID, ByOHTTPID and OHTTPKey (hence an OHTTP
	// gateway) answer from the cache alone, which All and Run fill: a
	// request then never causes I/O to the KMS. A miss is ErrKeyNotFound
	// when the KMS's last list has no such key, ErrUnavailable when it has
	// (not fetched yet, or its fetch failed).
	PrefetchedOnly bool
	// OnRefresh, when set, is called after each refresh of Run (and each
	// call of Refresh) with the state after it and the refresh's error,
	// e.g. to export metrics. It must not call Run, Refresh or Close.
	OnRefresh func(State, error)
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
	return phase(t, k.NotBefore, k.NotAfter, k.ReleaseUntil)
}

// Errors. Every error of ByKID, ByOHTTPID, OHTTPKey, All and Refresh
// matches ErrKeyNotFound or ErrKeyExpired (the caller asked for a key that
// is not to be had: a client's fault, HTTP 4xx) or else ErrUnavailable
// (the KMS is unreachable or refuses this service, or this service cannot
// attest or obtain a token: the service's fault, HTTP 503).
var (
	// ErrKeyNotFound: the KMS lists no unexpired key of that kid or OHTTP
	// key id (a KMSError with code KEY_NOT_FOUND also matches it).
	ErrKeyNotFound = errors.New("client: key not found")
	// ErrKeyExpired: the key is past its release_until (a KMSError with
	// code KEY_EXPIRED also matches it).
	ErrKeyExpired = errors.New("client: key expired")
	// ErrUnavailable: the key may exist but cannot be had now. The error
	// also wraps the cause: a *KMSError (see KMSError.Permanent), an
	// ErrRejected answer, a transport, attestation or token error, or
	// ErrClosed.
	ErrUnavailable = errors.New("client: keys unavailable")
	// ErrRejected: the KMS's answer failed a check of this client (a key
	// that does not match its published public key, a blob that does not
	// decrypt, a receipt that does not verify). Nothing of it is cached.
	ErrRejected = errors.New("client: KMS answer rejected")
	// ErrClosed: Close was called, or the Keys was not made by NewKeys.
	ErrClosed = errors.New("client: Keys closed or not made by NewKeys")
)

// unavailable marks err as ErrUnavailable unless it is a key the caller
// may not have (ErrKeyNotFound, ErrKeyExpired). Its message is err's: no
// prefix is repeated.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrKeyExpired) || errors.Is(err, ErrUnavailable) {
		return err
	}
	return unavailableError{err}
}

type unavailableError struct{ err error }

func (e unavailableError) Error() string        { return e.err.Error() }
func (e unavailableError) Unwrap() error        { return e.err }
func (e unavailableError) Is(target error) bool { return target == ErrUnavailable }

// A KMSError is a refusal of the KMS: an answer with a status that is not
// retried (4xx other than 202), or the last answer after MaxAttempts.
type KMSError struct {
	Status    int
	Code      string // x-ms-kms-error-code
	Message   string // the error body's message, or x-ms-kms-error-details
	RequestID string // x-ms-kms-request-id, to quote to the KMS operator
}

func (e *KMSError) Error() string {
	s := "KMS answered " + strconv.Itoa(e.Status)
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

// Permanent reports whether asking again unchanged will be refused again:
// a 4xx denial other than 408 and 429 (an invalid token, evidence the
// release policy refuses, a missing key). An outage (5xx), a rate limit or
// a pending answer (202) is not permanent. Keys retries a permanent
// failure of a key only after MaxBackoff.
func (e *KMSError) Permanent() bool {
	s := e.Status
	return s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests
}

// Keys fetches private keys from a KMS the way a service in a TEE must
// (docs/release.md) and caches them: for each fetch a fresh
// wrapping key, evidence binding it, a token, the release request, the
// unwrapping, and checks of the key against the KMS's published public key
// and, with KeysConfig.LogKey, of the release's log receipt. Run keeps the
// cache ahead of rotations.
//
// A failed fetch of a key (or read of the key list) is remembered for a
// backoff period (MinBackoff doubling to MaxBackoff; MaxBackoff at once
// for a permanent denial): until it ends, callers asking for that key get
// the remembered error without a new release, and Run waits for it too.
// So requests can never cause more releases than the backoff allows.
//
// Keys is safe for concurrent use. Close stops Run and every fetch; a
// zero Keys is closed.
type Keys struct {
	cfg      KeysConfig
	log      *slog.Logger
	verifier note.Verifier // nil without LogKey

	mu      sync.Mutex
	cache   map[string]*Key // by kid
	listed  map[string]api.V1Key
	fails   map[string]*failure // remembered failures, by flight key
	lastErr error
	lastErrAt, lastOKAt,
	listedAt time.Time

	flights flightGroup
	life    lifecycle

	fetches, failures, retries, receipts, remembered atomic.Uint64
	serviceOK                                        atomic.Bool // KeysConfig.Service passed
}

// ServiceCheck checks the KMS at kms (its base URL) with hc before any
// of its keys is trusted; logKey is KeysConfig.LogKey. See
// KeysConfig.Service.
type ServiceCheck func(ctx context.Context, hc *http.Client, kms, logKey string) error

// NewKeys returns a Keys for cfg. It does no I/O.
func NewKeys(cfg KeysConfig) (*Keys, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	k := &Keys{cfg: cfg, log: cfg.Logger, cache: map[string]*Key{}, listed: map[string]api.V1Key{}, fails: map[string]*failure{}}
	if cfg.LogKey != "" {
		v, err := translog.NewVerifier(cfg.LogKey)
		if err != nil {
			return nil, fmt.Errorf("client: KeysConfig.LogKey: %w", err)
		}
		k.verifier = v
	}
	k.life.start()
	k.flights.spawn = k.life.spawn
	return k, nil
}

// ByKID returns the key kid, from the cache or else fetched from the KMS.
// Concurrent calls for one kid share one fetch.
func (k *Keys) ByKID(ctx context.Context, kid string) (*Key, error) {
	if !k.life.open() {
		return nil, unavailable(ErrClosed)
	}
	if key := k.cached(kid); key != nil {
		return key, nil
	}
	if k.cfg.PrefetchedOnly {
		return nil, k.notPrefetched(func(l api.V1Key) bool { return l.Kid == kid }, "kid "+kid)
	}
	key, err := k.fetchKID(ctx, kid)
	return key, unavailable(err)
}

// ByOHTTPID returns the unexpired key whose OHTTP key id is id: from the
// cache, or else the KMS's list is read again (at most once a second) and
// the key fetched.
func (k *Keys) ByOHTTPID(ctx context.Context, id byte) (*Key, error) {
	if !k.life.open() {
		return nil, unavailable(ErrClosed)
	}
	if key := k.cachedOHTTP(id); key != nil {
		return key, nil
	}
	what := fmt.Sprintf("OHTTP key id 0x%02x", id)
	if k.cfg.PrefetchedOnly {
		return nil, k.notPrefetched(func(l api.V1Key) bool { return l.OHTTPKeyID == int(id) }, what)
	}
	listed, err := k.list(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	var best *api.V1Key
	for _, l := range listed {
		if l.OHTTPKeyID == int(id) && releasable(l.State) && (best == nil || l.NotBefore.After(best.NotBefore)) {
			best = &l
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no unexpired key has %s", ErrKeyNotFound, what)
	}
	key, err := k.fetchKID(ctx, best.Kid)
	return key, unavailable(err)
}

// notPrefetched is the error of a cache miss with PrefetchedOnly: whether
// the last list has a releasable unexpired key that match accepts decides
// whose fault it is.
func (k *Keys) notPrefetched(match func(api.V1Key) bool, what string) error {
	now := k.cfg.Now()
	k.mu.Lock()
	listedAt := k.listedAt
	found := false
	for _, l := range k.listed {
		if match(l) && releasable(l.State) && now.Before(l.ReleaseUntil) {
			found = true
		}
	}
	k.mu.Unlock()
	switch {
	case found:
		return unavailable(fmt.Errorf("client: the KMS lists %s but it is not prefetched yet", what))
	case listedAt.IsZero():
		return unavailable(fmt.Errorf("client: no key list read yet (%s)", what))
	}
	return fmt.Errorf("%w: no unexpired key has %s", ErrKeyNotFound, what)
}

// All fetches every key the KMS releases now (upcoming, published and
// retired keys in their grace period), caches them and returns them,
// oldest first. Over /v1 it is one release with all_valid; over /app one
// release per key not yet cached.
func (k *Keys) All(ctx context.Context) ([]*Key, error) {
	if !k.life.open() {
		return nil, unavailable(ErrClosed)
	}
	v, err := k.remembering(ctx, "all", func(ctx context.Context) (any, error) {
		if k.cfg.API == APIV1 {
			return k.fetch(ctx, nil, true)
		}
		if _, err := k.refreshList(ctx); err != nil {
			return nil, err
		}
		return nil, k.fetchMissing(ctx)
	})
	if err != nil {
		return nil, unavailable(err)
	}
	if ks, ok := v.([]*Key); ok {
		return ks, nil
	}
	return k.Cached(), nil
}

// Cached returns the cached unexpired keys, oldest first. It does no I/O.
func (k *Keys) Cached() []*Key {
	if !k.life.made() {
		return nil
	}
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

// Run keeps the cache ahead of the KMS's rotations until ctx is done or
// Close is called: it reads the key list, drops expired keys, fetches
// every releasable key not yet cached (so keys created but not yet
// published are cached before clients use them), and sleeps until the next
// phase change of a listed key or RefreshInterval, whichever comes first.
// After a failure it waits until the remembered failures allow a new try
// (MinBackoff, doubling up to MaxBackoff, with jitter; MaxBackoff after a
// permanent denial); the cache keeps serving meanwhile. It returns ctx's
// error, or ErrClosed.
func (k *Keys) Run(ctx context.Context) error {
	if !k.life.add() {
		return ErrClosed
	}
	defer k.life.done()
	ctx, stop := k.life.bind(ctx)
	defer stop()
	failures := 0
	for {
		next, err := k.Refresh(ctx)
		wait := next
		if err != nil {
			if !k.life.open() {
				return ErrClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait = k.retryIn(failures)
			failures++
			k.log.Debug("key refresh failed; serving from cache", "err", err, "failures", failures, "retry_in", wait)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if !k.life.open() {
				return ErrClosed
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Refresh does one round of Run and returns how long to wait before the
// next one.
func (k *Keys) Refresh(ctx context.Context) (wait time.Duration, err error) {
	if !k.life.open() {
		return 0, unavailable(ErrClosed)
	}
	if k.cfg.OnRefresh != nil {
		defer func() { k.cfg.OnRefresh(k.State(), err) }()
	}
	listed, err := k.refreshList(ctx)
	if err != nil {
		return 0, unavailable(err)
	}
	k.evict()
	if err := k.fetchMissing(ctx); err != nil {
		return 0, unavailable(err)
	}
	now := k.cfg.Now()
	wait = k.cfg.RefreshInterval
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

// Close stops Run and every fetch in flight, waits until their goroutines
// have ended, and closes the idle connections of KeysConfig.HTTPClient.
// After it, every method fails with ErrClosed (Cached and State still
// answer). It is safe to call more than once, and on a zero Keys.
func (k *Keys) Close() error {
	if !k.life.made() {
		return nil
	}
	k.life.close()
	k.cfg.HTTPClient.CloseIdleConnections()
	return nil
}

// fetchMissing fetches every listed releasable key that is not cached,
// except those whose last failure is still remembered.
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
	var errs []error
	ready := missing[:0]
	for _, kid := range missing {
		if err := k.recentFailure(kidFlight(kid)); err != nil {
			errs = append(errs, err)
		} else {
			ready = append(ready, kid)
		}
	}
	if k.cfg.API == APIV1 && len(ready) > 1 {
		for batch := range slices.Chunk(ready, maxBatch) {
			key := "batch:" + strings.Join(batch, ",")
			_, err := k.flights.do(ctx, key, k.detached(ctx), func(ctx context.Context) (any, error) {
				_, err := k.fetch(ctx, batch, false)
				for _, kid := range batch {
					k.remember(kidFlight(kid), err)
				}
				return nil, err
			})
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	for _, kid := range ready {
		_, err := k.fetchKID(ctx, kid)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maxBatch is release.MaxV1Kids: the kids of one /v1/release.
const maxBatch = 100

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
	k.forgetOld(now)
	for kid, key := range k.cache {
		if !now.Before(key.ReleaseUntil) {
			delete(k.cache, kid)
			k.log.Info("expired key dropped from cache", "kid", kid)
		}
	}
}

// failed counts a failed request to the KMS and logs it: one line per
// failure, none for the requests that get a remembered failure.
func (k *Keys) failed(what string, err error) {
	k.failures.Add(1)
	k.mu.Lock()
	k.lastErr, k.lastErrAt = err, k.cfg.Now()
	k.mu.Unlock()
	k.log.Warn("KMS request failed; serving from cache", "what", what, "err", err)
}

// detached returns a context for a shared fetch: it outlives the caller
// that started it (others may be waiting) but not FetchTimeout or Close.
func (k *Keys) detached(ctx context.Context) func() (context.Context, context.CancelFunc) {
	return func() (context.Context, context.CancelFunc) {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.FetchTimeout)
		c, stop := k.life.bind(c)
		return c, func() { stop(); cancel() }
	}
}

func kidFlight(kid string) string { return "kid:" + kid }

func (k *Keys) fetchKID(ctx context.Context, kid string) (*Key, error) {
	v, err := k.remembering(ctx, kidFlight(kid), func(ctx context.Context) (any, error) {
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
