// Package httpapi serves the tkms HTTP API: the Azure-compatible /app
// endpoints of docs/spec/azure-compat.md and the native /v1 endpoints.
//
// Conventions shared by every endpoint live here: the x-ms-kms-request-id
// header, one JSON error shape ({"error":{"code","message"}} with the
// x-ms-kms-error-code and x-ms-kms-error-details headers), body size limits
// and server timeouts. Public-key responses are pre-serialised (views.go)
// and rebuilt only when the key set or the advertised key changes.
package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/explorer"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/release"
)

// Error codes beyond those of the Azure-compatible API.
const (
	CodeKeyNotFound         = "KEY_NOT_FOUND"
	CodeKeyExpired          = "KEY_EXPIRED"
	CodeInvalidFmtParameter = "INVALID_FMT_PARAMETER"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeForbidden           = "FORBIDDEN"
	CodeRefreshDisabled     = "REFRESH_DISABLED"
	CodeKeyLimit            = "KEY_LIMIT_REACHED"
	CodeNotFound            = "NOT_FOUND"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeBodyTooLarge        = "REQUEST_TOO_LARGE"
	CodeBadRequest          = "BAD_REQUEST"
	CodeInternal            = "INTERNAL_ERROR"
	CodeUnavailable         = "SERVICE_UNAVAILABLE"
)

// Options configure a Server.
type Options struct {
	// OperatorToken authorises POST /app/refresh. Empty disables it.
	OperatorToken string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Bodies caps request bodies by endpoint (unset caps: DefaultBodyLimits).
	Bodies BodyLimits
	// PerAddress, if set, limits the costly requests (every POST, and
	// GET /app/auth) per client address: 429 RATE_LIMITED past it.
	PerAddress *limit.Keyed
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (limits.go); without them the peer is the client.
	TrustedProxies []netip.Prefix
	// Release serves attested key release; nil answers those endpoints
	// with 503 RELEASE_NOT_CONFIGURED.
	Release *release.Service
	// Version labels tkms_build_info (default: the module's version).
	Version string
	// Collectors are metrics served at /metrics besides tkms's own, the
	// request latencies, the Go runtime's and the process's: e.g. the TLS
	// certificate's expiry, or the state of a cluster.
	Collectors []prometheus.Collector
	// MetricsElsewhere leaves /metrics out of the API: the metrics are
	// served only by MetricsHandler, on an address of their own.
	MetricsElsewhere bool
	// Ready, if set, is asked by GET /readyz after the node's own checks:
	// a non-nil error (say, not caught up with the cluster) makes the node
	// not ready, with the error's text as the reason.
	Ready func() error
	// Readers are the TLS client certificates that GET /app/auth reports
	// as readers ("user_cert"), besides members' registered certificates.
	Readers []*x509.Certificate
}

// Server is the HTTP handler of tkms.
type Server struct {
	svc      *kms.Service
	log      *slog.Logger
	opToken  [32]byte // SHA-256 of the operator token, compared in constant time
	opSet    bool
	release  *release.Service
	readers  map[string]bool // CertID of Options.Readers
	errors   codeCounter     // error responses by code, for /metrics
	bodies   BodyLimits
	mux      *http.ServeMux
	exact    map[string]http.HandlerFunc // path -> handler, for every route registered by handle
	views    viewCache
	reqIDPre string
	reqIDSeq atomic.Uint64

	// admission control (limits.go)
	perAddress     *limit.Keyed
	trustedProxies []netip.Prefix

	// metrics (prom.go) and readiness (health.go)
	latency     *prometheus.HistogramVec
	promHandler http.Handler
	ready       func() error
}

// New returns the handler for svc.
func New(svc *kms.Service, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var pre [6]byte
	rand.Read(pre[:])
	s := &Server{svc: svc, log: opts.Logger, bodies: opts.Bodies.withDefaults(), perAddress: opts.PerAddress, trustedProxies: opts.TrustedProxies, mux: http.NewServeMux(), exact: map[string]http.HandlerFunc{}, reqIDPre: hex.EncodeToString(pre[:]) + "-"}
	if opts.OperatorToken != "" {
		s.opToken, s.opSet = sha256.Sum256([]byte(opts.OperatorToken)), true
	}
	s.views.svc = svc
	s.release = opts.Release
	s.readers = map[string]bool{}
	for _, c := range opts.Readers {
		s.readers[CertID(c)] = true
	}
	s.ready = opts.Ready
	s.promHandler = promHandlerFor(s.newRegistry(opts.Version, opts.Collectors))
	s.routes(!opts.MetricsElsewhere)
	return s
}

func (s *Server) routes(metrics bool) {
	s.handle("/app/heartbeat", http.MethodGet, s.heartbeat)
	s.handle("/app/listpubkeys", http.MethodGet, s.listPubKeys)
	s.handle("/app/pubkey", http.MethodGet, s.pubKey)
	s.handle("/app/refresh", http.MethodPost, s.appRefresh) // s.refresh unless governed (gov.go)
	s.handle("/app/keyRotationPolicy", http.MethodGet, s.keyRotationPolicy)
	s.handle("/app/settingsPolicy", http.MethodGet, s.settingsPolicy)
	s.handle("/app/key", http.MethodPost, s.appKey)
	s.handle("/app/unwrapKey", http.MethodPost, s.appUnwrapKey)
	s.handle("/app/keyReleasePolicy", http.MethodGet, s.keyReleasePolicy)
	s.handle("/app/jwtValidationPolicy", http.MethodGet, s.jwtValidationPolicy)
	s.handle("/app/auth", http.MethodGet, s.appAuth)
	if metrics {
		s.handle("/metrics", http.MethodGet, s.promHandler.ServeHTTP)
	}
	s.handle("/livez", http.MethodGet, s.livez)
	s.handle("/readyz", http.MethodGet, s.readyz)
	s.handle("/v1/attestation", http.MethodGet, s.attestation)
	s.handle("/v1/keys", http.MethodGet, s.v1Keys)
	s.handle("/v1/keys/ohttp", http.MethodGet, s.v1OHTTPKeys)
	s.handle("/v1/nonce", http.MethodGet, s.v1Nonce)
	s.handle("/v1/release", http.MethodPost, s.v1ReleaseBatch)
	s.handlePattern("/v1/keys/{kid}/release", http.MethodPost, s.v1ReleaseKey)
	s.logRoutes()
	s.govRoutes()
	// The transparency explorer (docs/explorer.md).
	s.mux.Handle(explorer.Prefix, explorer.Handler(func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		code := CodeNotFound
		if status == http.StatusMethodNotAllowed {
			code = CodeMethodNotAllowed
		}
		s.fail(w, r, status, code, msg)
	}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, CodeNotFound, "no such endpoint: "+r.URL.Path)
	})
}

// handle registers h for path, answering 405 with the JSON error shape for
// other methods. GET handlers also answer HEAD.
func (s *Server) handle(path, method string, h http.HandlerFunc) {
	f := func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			s.fail(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+path+"; use "+method)
			return
		}
		h(w, r)
	}
	s.mux.HandleFunc(path, f)
	s.exact[path] = f
}

// ServeHTTP implements http.Handler: it sets the request id and the body
// limit of the endpoint, applies the per-address limit to costly requests
// (limits.go), then dispatches.
//
// The public-key endpoints are the hot path (BENCHMARKS.md), so headers
// are set by their canonical keys, which spares the per-request
// canonicalisation that Header.Get and Header.Set do, and a request
// without a body (net/http gives it http.NoBody) is not wrapped.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()[hdrRequestID] = []string{s.requestID(r)}
	if r.Body != nil && r.Body != http.NoBody {
		n, _ := s.bodyCap(r)
		r.Body = http.MaxBytesReader(w, r.Body, n)
	}
	sw := statusWriters.Get().(*statusWriter)
	*sw = statusWriter{ResponseWriter: w}
	defer func(start time.Time) {
		s.observe(r, sw, start)
		*sw = statusWriter{}
		statusWriters.Put(sw)
	}(time.Now())
	w = sw
	if costly(r) && !s.admitAddress(w, r) {
		return
	}
	// Every route is an exact path without wildcards. A request for one,
	// spelt as registered (no escapes, nothing to clean), is one the mux
	// would hand to that route's handler, setting r.Pattern to the path;
	// it goes there directly. Everything else (unknown, unclean or escaped
	// paths, CONNECT) goes through the mux.
	if h, ok := s.exact[r.URL.Path]; ok && r.URL.RawPath == "" && r.Method != http.MethodConnect {
		r.Pattern = r.URL.Path
		h(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// hdrRequestID is x-ms-kms-request-id in canonical form.
var hdrRequestID = http.CanonicalHeaderKey("x-ms-kms-request-id")

// requestIDHeaders are the headers a caller may send its request id in,
// in order of preference and in canonical form (net/http canonicalises
// the keys of incoming headers).
var requestIDHeaders = canonicalKeys("x-ms-kms-request-id", "x-ms-request-id", "x-request-id", "request-id", "requestid")

func canonicalKeys(keys ...string) []string {
	for i, k := range keys {
		keys[i] = http.CanonicalHeaderKey(k)
	}
	return keys
}

// requestID returns the first request id header the caller sent (within
// reason: printable and at most 128 bytes), else a generated id.
func (s *Server) requestID(r *http.Request) string {
	for _, h := range requestIDHeaders {
		if vs := r.Header[h]; len(vs) > 0 {
			if v := vs[0]; v != "" && len(v) <= 128 && printable(v) {
				return v
			}
		}
	}
	var buf [48]byte
	return string(strconv.AppendUint(append(buf[:0], s.reqIDPre...), s.reqIDSeq.Add(1), 10))
}

func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// writeError writes an error response: body (the JSON error shape, or a
// superset of it) with the error headers.
func writeError(w http.ResponseWriter, status int, code, message string, body any) {
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-ms-kms-error-code", code)
	h.Set("x-ms-kms-error-details", headerSafe(message))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// fail writes an error response. message must be safe to show the caller:
// no secrets, no internal paths.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	s.errors.add(code)
	writeError(w, status, code, message, api.ErrorResponse{Error: api.Error{Code: code, Message: message}})
	level := slog.LevelInfo
	switch {
	case code == CodeRateLimited || code == CodeServerBusy:
		// Counted in /metrics; a line each would let a flood fill the log.
		level = slog.LevelDebug
	case status >= 500:
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", code,
		"request_id", w.Header().Get("x-ms-kms-request-id"), "message", message)
}

// headerSafe shortens a message for a header value.
func headerSafe(m string) string {
	m = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, m)
	if len(m) > 200 {
		m = m[:200]
	}
	return m
}

// writeJSON writes v as a JSON response.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// readBody reads the request body within the size cap. An oversized body
// is answered with 413 and false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	// One buffer of the announced size (net/http never reads past
	// Content-Length), rather than io.ReadAll's doubling from 512 bytes:
	// a release body is ~25 KB. A larger announcement than the cap still
	// reads to the cap and fails as before.
	var buf bytes.Buffer
	if limit, _ := s.bodyCap(r); r.ContentLength > 0 && r.ContentLength <= limit {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(r.Body)
	b := buf.Bytes()
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		_, class := s.bodyCap(r)
		s.fail(w, r, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body exceeds "+strconv.FormatInt(tooBig.Limit, 10)+" bytes, the cap of "+class+" requests")
		return nil, false
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, CodeBadRequest, "cannot read request body")
		return nil, false
	}
	return b, true
}

// operator checks the operator bearer token in constant time.
func (s *Server) operator(w http.ResponseWriter, r *http.Request) bool {
	if !s.opSet {
		s.fail(w, r, http.StatusForbidden, CodeRefreshDisabled, rotationHint+"; to rotate now, set operator_token_file and run tkms keys rotate --token-file FILE (it posts here with that bearer token)")
		return false
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tkms"`)
		s.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "an operator bearer token is required (tkms keys rotate --token-file FILE posts with it); "+rotationHint)
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], s.opToken[:]) != 1 {
		s.fail(w, r, http.StatusForbidden, CodeForbidden, "the bearer token is not the operator token")
		return false
	}
	return true
}

// Limits bound what one client can hold of the server: slow or idle
// connections and oversized headers. Bodies are capped per endpoint by
// Options.Bodies.
type Limits struct {
	ReadHeaderTimeout time.Duration // a client that trickles its headers is cut off
	ReadTimeout       time.Duration // whole request, body included
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration // keep-alive connections
	MaxHeaderBytes    int
}

// DefaultLimits are the limits of tkms serve and tkms dev.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// NewHTTPServer returns an http.Server for h with the given limits.
func NewHTTPServer(addr string, h http.Handler, errLog *slog.Logger, l Limits) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(serverErrors{errLog.Handler()}, slog.LevelWarn),
	}
}

// serverErrors passes net/http's own error log on at warning level, but
// for failed TLS handshakes: every port scanner and load balancer health
// check that opens a TCP connection makes one, so they go at debug level
// instead of filling the log.
type serverErrors struct{ slog.Handler }

func (h serverErrors) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "http: TLS handshake error") {
		if !h.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}
