// Package ohttphttp is OHTTP (RFC 9458) the net/http way: Middleware is an
// Oblivious Gateway Resource in front of an http.Handler, decoding Binary
// HTTP (RFC 9292) requests into ordinary *http.Request values; Transport
// is the client's http.RoundTripper. The HPKE layer is package ohttp's.
//
// Binary HTTP is github.com/openpcc/bhttp, which builds on 64-bit
// platforms only; package ohttp itself has no such limit.
package ohttphttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"

	"github.com/openpcc/bhttp"

	"github.com/tkms-dev/tkms/ohttp"
)

// The media types of RFC 9458 §9.
const (
	MediaTypeRequest  = "message/ohttp-req"
	MediaTypeResponse = "message/ohttp-res"
	MediaTypeKeys     = "application/ohttp-keys"
)

// ProblemKey is the problem type of a 422 answer to a request whose key
// configuration the gateway does not have (RFC 9458 §5.3): the client
// fetches the key configurations again.
const ProblemKey = "https://iana.org/assignments/http-problem-types#ohttp-key"

// MiddlewareOptions configure Middleware. Zero values get the defaults
// their comments give.
type MiddlewareOptions struct {
	// MaxRequestBytes bounds an encapsulated request (default 1 MiB);
	// larger ones are answered 413.
	MaxRequestBytes int64
	// MaxResponseBytes bounds the wrapped handler's response body
	// (default 8 MiB); a larger one becomes an encapsulated 500.
	MaxResponseBytes int64
	// Logger receives one line per internal error (none per request);
	// nil means slog.Default().
	Logger *slog.Logger
}

// Middleware returns an Oblivious Gateway Resource (RFC 9458 §5) in front
// of a handler. It accepts POST requests of type message/ohttp-req, opens
// them with g (the ohttp.OHTTP variant: Binary HTTP, RFC 9292), decodes the
// Binary HTTP request into an *http.Request (known- and indeterminate-
// length messages, with trailers and padding), runs next with it, and
// answers 200 message/ohttp-res with next's response encoded as a
// known-length Binary HTTP response and encapsulated.
//
// The inner request has the outer request's context, no RemoteAddr (the
// outer peer is the relay, not the client) and no TLS state. Errors of the
// outer layer are answered in the clear, as RFC 9458 §5.2 and §5.3 say:
//
//	405  not a POST
//	415  not message/ohttp-req
//	413  larger than MaxRequestBytes
//	400  malformed, unsupported suite, or does not decrypt
//	422  unknown key id (application/problem+json of type ProblemKey)
//	503  the key exists or may, but cannot be had now (ohttp.ErrKeyUnavailable)
//
// An encapsulated request that opens but is not a valid Binary HTTP
// request is answered with an encapsulated 400.
//
// Bidding & Auction and trusted-signals requests are not Binary HTTP:
// their services use ohttp.Gateway.DecapsulateRequest with their variant
// directly (docs/ohttp.md).
func Middleware(g *ohttp.Gateway, opts MiddlewareOptions) func(http.Handler) http.Handler {
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 1 << 20
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 8 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return &gatewayHandler{g: g, next: next, opts: opts, log: log}
	}
}

type gatewayHandler struct {
	g    *ohttp.Gateway
	next http.Handler
	opts MiddlewareOptions
	log  *slog.Logger
}

func (h *gatewayHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "an oblivious gateway takes POST "+MediaTypeRequest, http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != MediaTypeRequest {
		http.Error(w, "the request must be of type "+MediaTypeRequest, http.StatusUnsupportedMediaType)
		return
	}
	msg, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "the encapsulated request is larger than "+strconv.FormatInt(h.opts.MaxRequestBytes, 10)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the request failed", http.StatusBadRequest)
		return
	}
	plain, gc, err := h.g.DecapsulateRequest(r.Context(), ohttp.OHTTP, msg)
	if err != nil {
		h.decapsulateFailed(w, err)
		return
	}
	inner, err := (&bhttp.RequestDecoder{}).DecodeRequest(r.Context(), bytes.NewReader(plain))
	if err == nil {
		// Read the body now: a malformed body is the client's error.
		var body []byte
		if body, err = io.ReadAll(inner.Body); err == nil {
			inner.Body = io.NopCloser(bytes.NewReader(body))
			inner.ContentLength = int64(len(body))
		}
	}
	var resp *http.Response
	if err != nil {
		resp = textResponse(http.StatusBadRequest, "the encapsulated request is not a Binary HTTP request (RFC 9292)")
	} else {
		inner.RemoteAddr, inner.TLS, inner.RequestURI = "", nil, inner.URL.RequestURI()
		rec := &bufferedResponse{header: http.Header{}, max: h.opts.MaxResponseBytes}
		h.next.ServeHTTP(rec, inner)
		resp = rec.response()
	}
	enc, err := bhttp.NewKnownLengthResponseEncoder().EncodeResponse(resp)
	var out []byte
	if err == nil {
		out, err = io.ReadAll(enc)
	}
	if err == nil {
		out, err = gc.EncapsulateResponse(out)
	}
	if err != nil {
		h.log.Error("ohttp gateway: encapsulating a response failed", "err", err)
		http.Error(w, "encapsulating the response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", MediaTypeResponse)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// decapsulateFailed answers an outer-layer error (RFC 9458 §5.2, §5.3).
func (h *gatewayHandler) decapsulateFailed(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ohttp.ErrUnknownKeyID):
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		json.NewEncoder(w).Encode(map[string]string{"type": ProblemKey, "title": "key identifier unknown"})
	case errors.Is(err, ohttp.ErrKeyUnavailable):
		http.Error(w, "the key of this request cannot be had now; try again later", http.StatusServiceUnavailable)
	case errors.Is(err, ohttp.ErrMalformed), errors.Is(err, ohttp.ErrUnsupportedSuite), errors.Is(err, ohttp.ErrDecrypt):
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		h.log.Error("ohttp gateway: decapsulation failed", "err", err)
		http.Error(w, "decapsulation failed", http.StatusInternalServerError)
	}
}

// bufferedResponse collects the wrapped handler's response.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
	max    int64
	tooBig bool
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 && code >= 200 { // informational responses are not relayed
		b.status = code
	}
}

var errResponseTooLarge = errors.New("ohttp: response larger than MiddlewareOptions.MaxResponseBytes")

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	if b.tooBig || int64(b.body.Len())+int64(len(p)) > b.max {
		b.tooBig = true
		return 0, errResponseTooLarge
	}
	return b.body.Write(p)
}

func (b *bufferedResponse) response() *http.Response {
	if b.tooBig {
		return textResponse(http.StatusInternalServerError, "the response is too large")
	}
	b.WriteHeader(http.StatusOK)
	h := b.header.Clone()
	if h.Get("Content-Type") == "" && b.body.Len() > 0 {
		h.Set("Content-Type", http.DetectContentType(b.body.Bytes()))
	}
	return &http.Response{
		StatusCode: b.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(b.body.Bytes())), ContentLength: int64(b.body.Len()),
	}
}

func textResponse(status int, msg string) *http.Response {
	return &http.Response{
		StatusCode: status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: io.NopCloser(bytes.NewReader([]byte(msg + "\n"))), ContentLength: int64(len(msg) + 1),
	}
}

// A Transport is an http.RoundTripper that sends each request obliviously
// (RFC 9458 §4): it encodes the request as a known-length Binary HTTP
// message, encapsulates it to KeyConfig, POSTs it as message/ohttp-req
// to RelayURL through Base, and decapsulates and decodes the answer into
// the *http.Response it returns. The request's URL names the target (its
// scheme, host and path travel encrypted); only RelayURL is visible to
// the network. It is safe for concurrent use.
type Transport struct {
	// RelayURL is where encapsulated requests go: an Oblivious Relay
	// Resource, or the gateway itself.
	RelayURL string
	// KeyConfig is the gateway's key configuration (ParseKeyConfigs of
	// GET /v1/keys/ohttp on the KMS).
	KeyConfig ohttp.KeyConfig
	// Suite is the symmetric suite to use; the zero value means the
	// first of KeyConfig.Suites.
	Suite ohttp.SymmetricSuite
	// Base makes the outer requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// MaxResponseBytes bounds an encapsulated response (default 8 MiB).
	MaxResponseBytes int64
}

var _ http.RoundTripper = (*Transport)(nil)

// A GatewayError is an outer answer other than 200 message/ohttp-res. One
// with status 422 and problem type ProblemKey also matches
// ohttp.ErrUnknownKeyID (fetch the key configurations again), one with status
// 503 ohttp.ErrKeyUnavailable.
type GatewayError struct {
	Status      int
	ProblemType string // the problem type of an application/problem+json body
}

func (e *GatewayError) Error() string {
	s := "ohttp: the gateway answered " + strconv.Itoa(e.Status)
	if e.ProblemType != "" {
		s += " (" + e.ProblemType + ")"
	}
	return s
}

// Is matches ohttp.ErrUnknownKeyID and ohttp.ErrKeyUnavailable as the type says.
func (e *GatewayError) Is(target error) bool {
	return target == ohttp.ErrUnknownKeyID && e.Status == http.StatusUnprocessableEntity && e.ProblemType == ProblemKey ||
		target == ohttp.ErrKeyUnavailable && e.Status == http.StatusServiceUnavailable
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	suite := t.Suite
	if suite == (ohttp.SymmetricSuite{}) && len(t.KeyConfig.Suites) > 0 {
		suite = t.KeyConfig.Suites[0]
	}
	enc, err := bhttp.NewKnownLengthRequestEncoder().EncodeRequest(req)
	if err != nil {
		return nil, fmt.Errorf("ohttp: encoding the request: %w", err)
	}
	plain, err := io.ReadAll(enc)
	if err != nil {
		return nil, fmt.Errorf("ohttp: encoding the request: %w", err)
	}
	msg, cc, err := ohttp.EncapsulateRequest(t.KeyConfig, suite, ohttp.OHTTP, plain)
	if err != nil {
		return nil, err
	}
	outer, err := http.NewRequestWithContext(req.Context(), http.MethodPost, t.RelayURL, bytes.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("ohttp: %w", err)
	}
	outer.Header.Set("Content-Type", MediaTypeRequest)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(outer)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := t.MaxResponseBytes
	if limit <= 0 {
		limit = 8 << 20
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("ohttp: reading the gateway's answer: %w", err)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != MediaTypeResponse {
		ge := &GatewayError{Status: resp.StatusCode}
		if mt == "application/problem+json" {
			var p struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(body, &p) == nil {
				ge.ProblemType = p.Type
			}
		}
		return nil, ge
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: encapsulated response larger than %d bytes", ohttp.ErrMalformed, limit)
	}
	inner, err := cc.DecapsulateResponse(body)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	hr, err := (&bhttp.ResponseDecoder{}).DecodeResponse(ctx, bytes.NewReader(inner))
	if err != nil {
		return nil, fmt.Errorf("%w: the response is not a Binary HTTP response: %v", ohttp.ErrMalformed, err)
	}
	hr.Request = req
	return hr, nil
}
