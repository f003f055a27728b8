package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// refreshMargin is how long before its expiry a cached token is replaced:
// 10% of its lifetime, at most five minutes (a one-hour token is replaced
// after 55 minutes, a 5-minute one after 4.5).
func refreshMargin(lifetime time.Duration) time.Duration {
	return min(5*time.Minute, lifetime/10)
}

// cachedToken is a token with what decides whether it is still good.
type cachedToken struct {
	token     string
	expiry    time.Time // zero: unknown, never expires by itself
	refreshAt time.Time // zero: never
	version   any       // source-specific (the file's modification time)
}

// newCachedToken computes when a token fetched at now and expiring at
// expiry must be replaced.
func newCachedToken(token string, now, expiry time.Time) *cachedToken {
	t := &cachedToken{token: token, expiry: expiry}
	if !expiry.IsZero() {
		t.refreshAt = expiry.Add(-refreshMargin(expiry.Sub(now)))
	}
	return t
}

// tokenCache keeps one token and lets concurrent callers share one fetch.
type tokenCache struct {
	now func() time.Time

	mu     sync.Mutex
	cur    *cachedToken
	flight *tokenFlight
}

type tokenFlight struct {
	done chan struct{}
	tok  *cachedToken
	err  error
}

func (c *tokenCache) clock() time.Time {
	if c.now == nil {
		return time.Now()
	}
	return c.now()
}

// get returns the cached token while good(it) holds and it is not due for
// refresh; otherwise it calls fetch, once for all concurrent callers. The
// fetch runs without the callers' cancellation (a caller that gives up does
// not fail the others) and each caller waits at most until its own context
// ends. When a refresh fails while the cached token has not yet expired,
// callers get the cached token (the next call tries again).
func (c *tokenCache) get(ctx context.Context, good func(*cachedToken) bool, fetch func(context.Context) (*cachedToken, error)) (string, error) {
	c.mu.Lock()
	now := c.clock()
	prev := c.cur
	if t := prev; t != nil && (t.refreshAt.IsZero() || now.Before(t.refreshAt)) && (good == nil || good(t)) {
		c.mu.Unlock()
		return t.token, nil
	}
	f := c.flight
	if f == nil {
		f = &tokenFlight{done: make(chan struct{})}
		c.flight = f
		go func() {
			tok, err := fetch(context.WithoutCancel(ctx))
			c.mu.Lock()
			f.tok, f.err = tok, err
			if err == nil {
				c.cur = tok
			}
			c.flight = nil
			c.mu.Unlock()
			close(f.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			if prev != nil && !prev.expiry.IsZero() && c.clock().Before(prev.expiry) {
				return prev.token, nil
			}
			return "", f.err
		}
		return f.tok.token, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// unverifiedJWTExpiry returns the exp claim of a JWT (RFC 7519) read
// WITHOUT verifying anything: for deciding when to replace one's own
// token, never for trusting one. ok is false when token is not a JWT with
// a numeric exp.
func unverifiedJWTExpiry(token string) (exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"` // a NumericDate: a JSON number, never a string
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	f := *claims.Exp
	if f <= 0 || f > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// ErrTokenExpired is returned by a token source whose only token has
// expired (a file nobody refreshes).
var ErrTokenExpired = errors.New("client: token expired")

// IMDSOptions configure [NewIMDSTokenSource].
type IMDSOptions struct {
	// BaseURL is the Azure Instance Metadata Service; "" means
	// http://169.254.169.254.
	BaseURL string
	// Resource is the token's audience, e.g. "https://management.azure.com/"
	// (what DEPA services ask for). Required.
	Resource string
	// ClientID chooses a user-assigned managed identity; "" means the
	// system-assigned one (or the only user-assigned one).
	ClientID string
	// HTTPClient is used for the requests; nil means a client with a
	// 30-second timeout. IMDS must be reached directly: give a client
	// without a proxy.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// IMDSTokenSource obtains Entra ID tokens of the managed identity of an
// Azure resource (an ACI container group, a VM) from IMDS, and caches
// them.
type IMDSTokenSource struct {
	endpoint string
	client   *http.Client
	cache    tokenCache
}

var _ TokenSource = (*IMDSTokenSource)(nil)

// NewIMDSTokenSource returns a token source that asks
// GET {BaseURL}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...[&client_id=...]
// with the header "Metadata: true"
// (https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token).
func NewIMDSTokenSource(opts IMDSOptions) (*IMDSTokenSource, error) {
	if opts.Resource == "" {
		return nil, errors.New("client: IMDS token source needs a resource (the token's audience)")
	}
	base := opts.BaseURL
	if base == "" {
		base = "http://169.254.169.254"
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/metadata/identity/oauth2/token")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: IMDS base URL %q is not an http(s) URL", base)
	}
	q := url.Values{"api-version": {"2018-02-01"}, "resource": {opts.Resource}}
	if opts.ClientID != "" {
		q.Set("client_id", opts.ClientID)
	}
	u.RawQuery = q.Encode()
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &IMDSTokenSource{endpoint: u.String(), client: hc, cache: tokenCache{now: opts.Now}}, nil
}

// Token implements [TokenSource].
func (s *IMDSTokenSource) Token(ctx context.Context) (string, error) {
	return s.cache.get(ctx, nil, s.fetch)
}

// imdsToken is IMDS's answer. expires_in and expires_on are strings of
// seconds (a duration, and a Unix time).
type imdsToken struct {
	AccessToken string      `json:"access_token"`
	ExpiresIn   json.Number `json:"expires_in"`
	ExpiresOn   json.Number `json:"expires_on"`
	TokenType   string      `json:"token_type"`
}

// imdsError is IMDS's (and Entra ID's) error body.
type imdsError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (s *IMDSTokenSource) fetch(ctx context.Context) (*cachedToken, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("client: IMDS: %w", err)
	}
	req.Header.Set("Metadata", "true")
	start := s.cache.clock()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: IMDS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("client: IMDS: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e imdsError
		if json.Unmarshal(body, &e) == nil && (e.Error != "" || e.ErrorDescription != "") {
			return nil, fmt.Errorf("client: IMDS answered %s: %s: %s", resp.Status, e.Error, truncate(e.ErrorDescription, 500))
		}
		return nil, fmt.Errorf("client: IMDS answered %s", resp.Status)
	}
	var t imdsToken
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, errors.New("client: IMDS answered 200 with a body that is not a token response") // the body holds the token: not quoted
	}
	if t.AccessToken == "" {
		return nil, errors.New("client: IMDS answered 200 without an access_token")
	}
	if t.TokenType != "" && !strings.EqualFold(t.TokenType, "Bearer") {
		return nil, fmt.Errorf("client: IMDS answered a token of type %q, want Bearer", truncate(t.TokenType, 32))
	}
	return newCachedToken(t.AccessToken, start, imdsExpiry(t, start)), nil
}

// imdsExpiry is start + expires_in, else expires_on, else the JWT's exp;
// zero when none is known (the token is then fetched again on every call).
func imdsExpiry(t imdsToken, start time.Time) time.Time {
	if n, err := strconv.ParseInt(t.ExpiresIn.String(), 10, 64); err == nil && n > 0 {
		return start.Add(time.Duration(n) * time.Second)
	}
	if n, err := strconv.ParseInt(t.ExpiresOn.String(), 10, 64); err == nil && n > 0 {
		return time.Unix(n, 0)
	}
	if exp, ok := unverifiedJWTExpiry(t.AccessToken); ok {
		return exp
	}
	return start // refresh on every call
}

// FileTokenSource reads a token from a file that something else keeps
// fresh, such as an AKS workload identity's projected service account
// token ($AZURE_FEDERATED_TOKEN_FILE). It reads the file again when its
// modification time or size changes, or when the token is due for
// refresh.
type FileTokenSource struct {
	path  string
	cache tokenCache
}

var _ TokenSource = (*FileTokenSource)(nil)

// FileTokenOptions configure [NewFileTokenSource].
type FileTokenOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewFileTokenSource returns a token source reading path.
func NewFileTokenSource(path string, opts FileTokenOptions) *FileTokenSource {
	return &FileTokenSource{path: path, cache: tokenCache{now: opts.Now}}
}

type fileVersion struct {
	mod  time.Time
	size int64
}

// Token implements [TokenSource]. A token whose exp has passed is
// ErrTokenExpired.
func (s *FileTokenSource) Token(ctx context.Context) (string, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return "", fmt.Errorf("client: token file: %w", err)
	}
	v := fileVersion{fi.ModTime(), fi.Size()}
	same := func(t *cachedToken) bool {
		old, ok := t.version.(fileVersion)
		return ok && old.mod.Equal(v.mod) && old.size == v.size
	}
	return s.cache.get(ctx, same, func(context.Context) (*cachedToken, error) {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return nil, fmt.Errorf("client: token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, fmt.Errorf("client: token file %s is empty", s.path)
		}
		now := s.cache.clock()
		exp, _ := unverifiedJWTExpiry(tok)
		if !exp.IsZero() && !now.Before(exp) {
			return nil, fmt.Errorf("%w: the token in %s expired at %s", ErrTokenExpired, s.path, exp.UTC().Format(time.RFC3339))
		}
		t := newCachedToken(tok, now, exp)
		t.version = v
		return t, nil
	})
}

// StaticTokenSource returns one token, always: for tests and for tokens
// obtained elsewhere.
type StaticTokenSource string

var _ TokenSource = StaticTokenSource("")

// Token implements [TokenSource].
func (s StaticTokenSource) Token(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("client: empty static token")
	}
	return string(s), nil
}

// NewCachingTokenSource returns a TokenSource that calls fetch for a token
// and keeps it until shortly before the exp claim it reads from the token
// WITHOUT verifying it (it is the caller's own token; a token without a
// numeric exp is kept for good). Concurrent callers share one fetch; when
// a refresh fails, the token in hand is returned while it has not expired.
// For token sources outside this package, such as client/devtee's.
func NewCachingTokenSource(fetch func(context.Context) (string, error), opts CachingOptions) TokenSource {
	return &cachingTokenSource{fetch: fetch, cache: tokenCache{now: opts.Now}}
}

// CachingOptions configure [NewCachingTokenSource].
type CachingOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type cachingTokenSource struct {
	fetch func(context.Context) (string, error)
	cache tokenCache
}

func (s *cachingTokenSource) Token(ctx context.Context) (string, error) {
	return s.cache.get(ctx, nil, func(ctx context.Context) (*cachedToken, error) {
		now := s.cache.clock()
		tok, err := s.fetch(ctx)
		if err != nil {
			return nil, err
		}
		exp, _ := unverifiedJWTExpiry(tok)
		return newCachedToken(tok, now, exp), nil
	})
}
