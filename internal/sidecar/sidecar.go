// Package sidecar is the HTTP server of `tkms sidecar`: what a service not
// written in Go needs from tkms, served on loopback to a service in the
// same TEE. Attestation has the routes and field names of the ACI SKR
// sidecar (microsoft/confidential-sidecar-containers: POST /attest/raw and
// /attest/combined, GET /status) so that its callers work unchanged;
// decryption uses the keys package client obtains and caches: POST
// /decrypt opens an encapsulated request, POST /encrypt-response seals its
// answer. Private keys never leave the process unless Config.AllowKeyExport
// says so. The API is in README.md, "tkms sidecar".
//
// cmd/tkms parses the flags, builds the key cache and serves this handler.
package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/ohttp"
)

// Variants are the framings of /decrypt (?variant=, Config.Variant).
var Variants = map[string]ohttp.Variant{
	"ohttp": ohttp.OHTTP,
	"ba":    ohttp.BiddingAuction,
	"kv":    ohttp.TrustedSignals,
}

// Config configures a [Server].
type Config struct {
	// Variant is the default framing of /decrypt: a key of Variants.
	Variant string
	// AllowKeyExport serves GET /keys/{kid}/private: private keys in clear
	// to any local caller.
	AllowKeyExport bool
	// HandleTTL and MaxHandles bound the response contexts kept between
	// /decrypt and /encrypt-response.
	HandleTTL  time.Duration
	MaxHandles int
	// MaxBody caps request bodies.
	MaxBody int64
	// FetchWait bounds how long a request waits for a key that is not
	// cached; the fetch itself goes on, for the next request.
	FetchWait time.Duration
}

// privateItem returns k as the key item of the Azure-compatible API, with
// its private key "d" (docs/spec/azure-compat.md, "Key identifiers"):
// what /app/unwrapKey releases. timestamp is the key's not_before.
func privateItem(k *client.Key) (keys.Item, error) {
	suite, err := keys.ParseSuite(k.Suite)
	if err != nil {
		return keys.Item{}, err
	}
	item, err := keys.PublicItem(suite, k.PublicKey, k.Kid, k.ID, k.NotBefore.UnixMilli(), k.NotAfter.UnixMilli())
	if err != nil {
		return keys.Item{}, err
	}
	d, err := k.PrivateKey.Bytes()
	if err != nil {
		return keys.Item{}, err
	}
	item.D = base64.RawURLEncoding.EncodeToString(d)
	clear(d) // a copy; item.D, a string, cannot be cleared
	return item, nil
}

// Error codes of the sidecar, beyond the KMS's own (which /decrypt passes
// on when the KMS refuses a key).
const (
	CodeBadRequest  = "BAD_REQUEST"
	CodeTooLarge    = "REQUEST_TOO_LARGE"
	CodeMediaType   = "UNSUPPORTED_MEDIA_TYPE"
	CodeNotFound    = "NOT_FOUND"
	CodeMethod      = "METHOD_NOT_ALLOWED"
	CodeMalformed   = "MALFORMED_MESSAGE"
	CodeSuite       = "UNSUPPORTED_SUITE"
	CodeDecrypt     = "DECRYPTION_FAILED"
	CodeKeyNotFound = "KEY_NOT_FOUND"
	CodeKeyExpired  = "KEY_EXPIRED"
	CodeKMS         = "KMS_UNAVAILABLE"
	CodeRejected    = "KMS_ANSWER_REJECTED"
	CodeHandle      = "HANDLE_NOT_FOUND"
	CodeBusy        = "TOO_MANY_HANDLES"
	CodeExport      = "KEY_EXPORT_DISABLED"
	CodeAttestation = "ATTESTATION_FAILED"
	CodeInternal    = "INTERNAL_ERROR"
)

// Server is the HTTP handler of `tkms sidecar`.
type Server struct {
	cfg      *Config
	keys     *client.Keys
	gw       *ohttp.Gateway
	attester client.Attester
	handles  *handleStore
	log      *slog.Logger
	mux      *http.ServeMux
}

// New returns the sidecar's handler: keys from cache, evidence from
// attester. Run its Sweep while it serves.
func New(c *Config, cache *client.Keys, attester client.Attester, log *slog.Logger) *Server {
	s := &Server{
		cfg: c, keys: cache, attester: attester, log: log,
		gw:      &ohttp.Gateway{Keys: cache},
		handles: newHandleStore(c.HandleTTL, c.MaxHandles, time.Now),
		mux:     http.NewServeMux(),
	}
	s.handle("/status", http.MethodGet, s.status)
	s.handle("/attest/raw", http.MethodPost, s.attestRaw)
	s.handle("/attest/combined", http.MethodPost, s.attestCombined)
	s.handle("/decrypt", http.MethodPost, s.decrypt)
	s.handle("/encrypt-response", http.MethodPost, s.encryptResponse)
	s.handle("/keys", http.MethodGet, s.listKeys)
	s.handle("/keys/{kid}/private", http.MethodGet, s.privateKey)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, CodeNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s
}

// handle registers h for the pattern path, answering 405 in the JSON error
// shape for other methods.
func (s *Server) handle(path, method string, h http.HandlerFunc) {
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			s.fail(w, r, CodeMethod, r.Method+" is not allowed here; use "+method)
			return
		}
		h(w, r)
	})
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Plaintexts and keys must not be kept by anything in between.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("x-ms-kms-request-id", sidecarRequestID(r))
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	}
	s.mux.ServeHTTP(w, r)
}

// sidecarRequestID returns the request id the caller sent (the headers
// tkms reads, docs/spec/azure-compat.md "Conventions"), else a new one.
func sidecarRequestID(r *http.Request) string {
	for _, h := range []string{"x-ms-kms-request-id", "x-ms-request-id", "x-request-id", "request-id", "requestid"} {
		if v := r.Header.Get(h); v != "" && len(v) <= 128 && !strings.ContainsFunc(v, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			return v
		}
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statuses are the HTTP statuses of the sidecar's error codes: the one
// place they are decided (a refusal of the KMS passes on with the KMS's
// status and code).
var statuses = map[string]int{
	CodeBadRequest:  http.StatusBadRequest,
	CodeTooLarge:    http.StatusRequestEntityTooLarge,
	CodeMediaType:   http.StatusUnsupportedMediaType,
	CodeNotFound:    http.StatusNotFound,
	CodeMethod:      http.StatusMethodNotAllowed,
	CodeMalformed:   http.StatusBadRequest,
	CodeSuite:       http.StatusBadRequest,
	CodeDecrypt:     http.StatusBadRequest,
	CodeKeyNotFound: http.StatusNotFound,
	CodeKeyExpired:  http.StatusGone,
	CodeKMS:         http.StatusServiceUnavailable,
	CodeRejected:    http.StatusBadGateway,
	CodeHandle:      http.StatusNotFound,
	CodeBusy:        http.StatusServiceUnavailable,
	CodeExport:      http.StatusForbidden,
	CodeAttestation: http.StatusInternalServerError,
	CodeInternal:    http.StatusInternalServerError,
}

// fail answers with the error code (one of the Code constants) and its
// status. message must be safe to show the caller.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code, message string) {
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.write(w, r, level, status, code, message)
}

// keyFail answers, as fail does, a request whose key the cache could not
// provide. The cause is the cache's: client.Keys logs each failure of the
// KMS once and answers the requests that follow with the remembered
// failure, so the request itself is logged at debug only (a line per
// request would let a storm of requests fill the log).
func (s *Server) keyFail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	if status == 0 {
		status = statuses[code]
	}
	s.write(w, r, slog.LevelDebug, status, code, message)
}

// write writes tkms's error answer (apierror: {"error":{"code","message"}}
// and the x-ms-kms-error-code header) and logs it at level.
func (s *Server) write(w http.ResponseWriter, r *http.Request, level slog.Level, status int, code, message string) {
	apierror.Write(w, status, code, message)
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "message", message)
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// readBody reads the request body, answering 413 or 400 itself when it
// cannot.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.fail(w, r, CodeTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
			return nil, false
		}
		s.fail(w, r, CodeBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	return b, true
}

// readJSON decodes a JSON request body into v.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.fail(w, r, CodeBadRequest, "the body is not the JSON object expected: "+err.Error())
		return false
	}
	return true
}

// decodeBase64 accepts standard and URL-safe base64, padded or not: the
// callers of the ACI sidecar send either.
func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// sidecarStatus is the answer of GET /status. Message is the ACI SKR
// sidecar's field ("Status OK" / "Status NOT OK").
type sidecarStatus struct {
	Message string `json:"message"`
	// Ready is true while at least one unexpired key is cached.
	Ready bool `json:"ready"`
	client.State
	// Handles counts the responses /decrypt handed out handles for and
	// /encrypt-response has not yet consumed.
	Handles int `json:"handles"`
}

// status serves GET /status: 200 when ready, 503 until then, with the
// same body.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.keys.State()
	out := sidecarStatus{Message: "Status NOT OK", State: st, Handles: s.handles.len()}
	out.Ready = slices.ContainsFunc(st.Keys, func(k client.KeyState) bool { return k.Phase != "expired" })
	code := http.StatusServiceUnavailable
	if out.Ready {
		out.Message, code = "Status OK", http.StatusOK
	}
	s.writeJSON(w, code, out)
}

// attestRequest is the body of POST /attest/raw and /attest/combined, as
// the ACI SKR sidecar takes it.
type attestRequest struct {
	// RuntimeData is base64; its SHA-256 is REPORT_DATA[0:32].
	RuntimeData *string `json:"runtime_data"`
}

// evidence obtains evidence whose REPORT_DATA is the SHA-256 of the
// request's runtime data, zero-padded to 64 bytes (as the ACI sidecar
// does).
func (s *Server) evidence(w http.ResponseWriter, r *http.Request) (*client.Evidence, bool) {
	var req attestRequest
	if !s.readJSON(w, r, &req) {
		return nil, false
	}
	if req.RuntimeData == nil {
		s.fail(w, r, CodeBadRequest, "runtime_data is required: base64 of the data whose SHA-256 the report binds")
		return nil, false
	}
	data, err := decodeBase64(*req.RuntimeData)
	if err != nil {
		s.fail(w, r, CodeBadRequest, "runtime_data is not base64")
		return nil, false
	}
	var rd [64]byte
	h := sha256.Sum256(data)
	copy(rd[:], h[:])
	ev, err := s.attester.Attest(r.Context(), rd)
	if err != nil {
		s.log.Error("attestation failed", "err", err)
		s.fail(w, r, CodeAttestation, "the TEE gave no evidence; see the sidecar's log")
		return nil, false
	}
	if ev.Simulated {
		w.Header().Set("x-tkms-simulated", "true")
	}
	w.Header().Set("x-tkms-evidence-type", ev.Type)
	return ev, true
}

// attestCombined serves POST /attest/combined: the whole attestation
// object, as a release request carries it. For the ACI attester this is
// the ACI SKR sidecar's answer {evidence, endorsements, uvm_endorsements,
// endorsed_tcb}; for the snp attester, {"type":"snp","report",...}.
func (s *Server) attestCombined(w http.ResponseWriter, r *http.Request) {
	ev, ok := s.evidence(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(ev.Attestation)
}

// rawAttestation is the answer of POST /attest/raw: the report in hex (the
// ACI SKR sidecar's "report"), with the certificate that signed it.
type rawAttestation struct {
	Report    string `json:"report"`               // hex
	VCEK      []byte `json:"vcek,omitempty"`       // DER (or PEM, as the device gave it); base64
	CertTable []byte `json:"cert_table,omitempty"` // the extended report's certificate table; base64
}

// attestRaw serves POST /attest/raw.
func (s *Server) attestRaw(w http.ResponseWriter, r *http.Request) {
	ev, ok := s.evidence(w, r)
	if !ok {
		return
	}
	u, err := attest.DecodeUnverified(ev.Attestation)
	if err != nil {
		s.log.Error("attester gave unreadable evidence", "type", ev.Type, "err", err)
		s.fail(w, r, CodeAttestation, "the TEE's evidence is unreadable; see the sidecar's log")
		return
	}
	out := rawAttestation{Report: hex.EncodeToString(u.Report), VCEK: u.VCEK, CertTable: u.CertTable}
	s.writeJSON(w, http.StatusOK, out)
}

// decrypted is the answer of POST /decrypt.
type decrypted struct {
	Plaintext []byte `json:"plaintext"` // base64
	// Handle names the response context for one POST /encrypt-response.
	Handle     string    `json:"handle"`
	Expires    time.Time `json:"handle_expires"`
	OHTTPKeyID int       `json:"ohttp_key_id"`
	Variant    string    `json:"variant"`
}

// decrypt serves POST /decrypt: the body is an encapsulated request.
func (s *Server) decrypt(w http.ResponseWriter, r *http.Request) {
	name := s.cfg.Variant
	if q := r.URL.Query(); q.Has("variant") {
		name = q.Get("variant")
	}
	v, ok := Variants[name]
	if !ok {
		s.fail(w, r, CodeBadRequest, fmt.Sprintf("variant %q: want ohttp, ba or kv", name))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		switch strings.TrimSpace(strings.ToLower(mt)) {
		case "application/ohttp-req", "application/octet-stream", "message/ohttp-req":
		default:
			s.fail(w, r, CodeMediaType, "content type "+mt+": send the encapsulated request as application/ohttp-req or application/octet-stream")
			return
		}
	}
	msg, ok := s.readBody(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.FetchWait)
	defer cancel()
	pt, rc, err := s.gw.DecapsulateRequest(ctx, v, msg)
	if err != nil {
		s.decryptFailed(w, r, err)
		return
	}
	keyID := msg[0]
	if v.Prefix {
		keyID = msg[1]
	}
	h, exp, err := s.handles.put(rc, name)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, CodeBusy, err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, decrypted{Plaintext: pt, Handle: h, Expires: exp.UTC(), OHTTPKeyID: int(keyID), Variant: name})
}

// decryptFailed maps an error of DecapsulateRequest to a response.
func (s *Server) decryptFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ohttp.ErrUnknownKeyID), errors.Is(err, ohttp.ErrKeyUnavailable):
		s.keyFailed(w, r, err)
	case errors.Is(err, ohttp.ErrMalformed):
		s.fail(w, r, CodeMalformed, "the encapsulated request is malformed: "+strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, ohttp.ErrUnsupportedSuite):
		s.fail(w, r, CodeSuite, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, ohttp.ErrDecrypt):
		s.fail(w, r, CodeDecrypt, "the request does not decrypt with its key")
	case r.Context().Err() != nil:
		s.fail(w, r, CodeKMS, "the request was cancelled")
	default:
		s.log.Error("decrypt", "err", err)
		s.fail(w, r, CodeInternal, "decryption failed; see the sidecar's log")
	}
}

// keyFailed answers a request for a key the cache could not provide: with
// the KMS's status and code when the KMS refused it, 503 when the KMS
// could not be reached. A failure of the KMS is in the log once, from the
// cache (keyFail); a key the caller named wrongly is the caller's fault.
func (s *Server) keyFailed(w http.ResponseWriter, r *http.Request, err error) {
	var kmsErr *client.KMSError
	switch {
	case errors.As(err, &kmsErr) && kmsErr.Status >= 400 && kmsErr.Status < 500 && kmsErr.Code != "":
		msg := "the KMS refused the key: " + kmsErr.Message
		if kmsErr.RequestID != "" {
			msg += " (KMS request id " + kmsErr.RequestID + ")"
		}
		s.keyFail(w, r, kmsErr.Status, kmsErr.Code, msg)
	case errors.Is(err, client.ErrKeyNotFound):
		s.fail(w, r, CodeKeyNotFound, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, client.ErrKeyExpired):
		s.fail(w, r, CodeKeyExpired, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, client.ErrRejected):
		s.keyFail(w, r, 0, CodeRejected, "the KMS's answer failed a check of the sidecar; see its log")
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		w.Header().Set("Retry-After", "5")
		s.keyFail(w, r, 0, CodeKMS, fmt.Sprintf("the key is not cached and the KMS has not released it within %v; the fetch goes on: retry later", s.cfg.FetchWait))
	default:
		w.Header().Set("Retry-After", "5")
		s.keyFail(w, r, 0, CodeKMS, "the key is not cached and the KMS did not release it: "+err.Error())
	}
}

// encryptRequest is the body of POST /encrypt-response.
type encryptRequest struct {
	Handle string  `json:"handle"`
	Body   *string `json:"body"` // base64
}

// encryptResponse serves POST /encrypt-response: the encapsulated response
// to the request a /decrypt handle names. A handle is used once.
func (s *Server) encryptResponse(w http.ResponseWriter, r *http.Request) {
	var req encryptRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	if req.Handle == "" || req.Body == nil {
		s.fail(w, r, CodeBadRequest, `want {"handle": "<from /decrypt>", "body": "<base64>"}`)
		return
	}
	body, err := decodeBase64(*req.Body)
	if err != nil {
		s.fail(w, r, CodeBadRequest, "body is not base64")
		return
	}
	e, ok := s.handles.take(req.Handle)
	if !ok {
		s.fail(w, r, CodeHandle, "no such handle: unknown, expired or already used")
		return
	}
	out, err := e.rc.EncapsulateResponse(body)
	if err != nil {
		s.log.Error("encapsulate response", "err", err)
		s.fail(w, r, CodeInternal, "encapsulating the response failed; see the sidecar's log")
		return
	}
	ct := "application/ohttp-res"
	if e.variant != "ohttp" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// listKeys serves GET /keys: the cached keys, without material.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, struct {
		Keys []client.KeyState `json:"keys"`
	}{Keys: s.keys.State().Keys})
}

// privateKey serves GET /keys/{kid}/private, with --allow-key-export only:
// the key item with its private key "d", as /app/unwrapKey releases it.
func (s *Server) privateKey(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.AllowKeyExport {
		s.fail(w, r, CodeExport, "key export is disabled; start the sidecar with --allow-key-export to allow it")
		return
	}
	kid := r.PathValue("kid")
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.FetchWait)
	defer cancel()
	k, err := s.keys.ByKID(ctx, kid)
	if err != nil {
		s.keyFailed(w, r, err)
		return
	}
	item, err := privateItem(k)
	if err != nil {
		s.log.Error("key item", "kid", kid, "err", err)
		s.fail(w, r, CodeInternal, "encoding the key failed; see the sidecar's log")
		return
	}
	s.log.Warn("private key exported", "kid", kid)
	s.writeJSON(w, http.StatusOK, item)
}

// Sweep drops expired /decrypt handles until ctx ends, so that response
// secrets do not outlive their use.
func (s *Server) Sweep(ctx context.Context) { s.handles.sweep(ctx) }
