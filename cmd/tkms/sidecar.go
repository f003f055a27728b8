package main

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
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/ohttp"
)

const sidecarUsage = `usage: tkms sidecar [--kms URL --log-key VKEY|@FILE] [--listen ADDR] [--attester aci|snp|simulated]
                    [--token-source imds|file|static|dev] [--api v1|app] [--variant ohttp|ba|kv] [flags]

Serves attestation and request decryption to a service in the same TEE, on
a loopback address (127.0.0.1:8080 by default). Keys come from the KMS,
released to the evidence of --attester and the token of --token-source,
each with a log receipt verified against --log-key, and stay cached:
decryption goes on while the KMS is unreachable. The defaults suit tkms dev
(--data tkms-dev); in a TEE give --attester aci (or snp) and --token-source
imds. See README.md, "tkms sidecar", for the endpoints.

`

// sidecarVariants are the framings --variant and /decrypt?variant= name.
var sidecarVariants = map[string]ohttp.Variant{
	"ohttp": ohttp.OHTTP,
	"ba":    ohttp.BiddingAuction,
	"kv":    ohttp.TrustedSignals,
}

// sidecarConfig is what the flags of `tkms sidecar` say, beyond those of
// the client package (clientFlags, shared with `tkms fetch`).
type sidecarConfig struct {
	Listen         string
	AllowRemote    bool
	Variant        string
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

// Validate checks the configuration, naming the flag at fault.
func (c *sidecarConfig) Validate() error {
	if !c.AllowRemote {
		if err := loopbackListen(c.Listen); err != nil {
			return err
		}
	}
	if _, ok := sidecarVariants[c.Variant]; !ok {
		return fmt.Errorf("%w: --variant %q: want ohttp, ba or kv", errUsage, c.Variant)
	}
	if c.HandleTTL <= 0 || c.MaxHandles <= 0 || c.MaxBody <= 0 || c.FetchWait <= 0 {
		return fmt.Errorf("%w: --handle-ttl, --max-handles, --max-body and --fetch-wait must be positive", errUsage)
	}
	return nil
}

// loopbackListen checks that addr names a loopback address: an IP literal
// in 127.0.0.0/8 or ::1, or "localhost". Anything else (an empty host
// means every interface) would serve decryption to the network.
func loopbackListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", errUsage, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: --listen %s is not a loopback address: the sidecar decrypts for whoever can reach it; listen on 127.0.0.1 or give --allow-remote", errUsage, addr)
}

// cmdSidecar implements `tkms sidecar`: what a service not written in Go
// needs from tkms, served on loopback. Attestation has the routes and
// field names of the ACI SKR sidecar (microsoft/confidential-sidecar-
// containers: POST /attest/raw and /attest/combined, GET /status) so that
// its callers work unchanged; decryption uses the keys package client
// obtains and caches: POST /decrypt opens an encapsulated request,
// POST /encrypt-response seals its answer. Private keys never leave the
// process unless --allow-key-export says so. The API is in README.md,
// "tkms sidecar".
func cmdSidecar(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sidecar", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, sidecarUsage)
		fs.PrintDefaults()
	}
	var c sidecarConfig
	var cf clientFlags
	cf.register(fs)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "loopback `address` to listen on (127.0.0.1:0 picks a free port)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a --listen address that is not loopback (DANGEROUS: whoever reaches it can decrypt)")
	fs.StringVar(&c.Variant, "variant", "ohttp", "default framing of /decrypt: `ohttp`, ba (Bidding & Auction) or kv (key/value service)")
	fs.BoolVar(&c.AllowKeyExport, "allow-key-export", false, "serve GET /keys/{kid}/private: private keys in clear to any local caller")
	fs.DurationVar(&c.HandleTTL, "handle-ttl", time.Minute, "how long a /decrypt handle can be used")
	fs.IntVar(&c.MaxHandles, "max-handles", 10000, "most handles kept at once; /decrypt answers 503 beyond")
	fs.Int64Var(&c.MaxBody, "max-body", 4<<20, "largest request body in `bytes`")
	fs.DurationVar(&c.FetchWait, "fetch-wait", 10*time.Second, "how long a request waits for a key that is not cached before answering 503 (the fetch goes on)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if cf.data == "" && (cf.attester == "simulated" || cf.tokenSource == "dev") {
		return fmt.Errorf("%w: --attester simulated and --token-source dev need --data DIR, a tkms dev data directory", errUsage)
	}
	kc, err := cf.config()
	if err != nil {
		return err
	}
	// Keys are cached only with a receipt that proves their release in the
	// KMS's log: the sidecar never runs without the log's key.
	if kc.LogKey == "" {
		return fmt.Errorf("%w: --log-key is required: the KMS log's verifier key (GET KMS/v1/log/key, confirmed out of band) or @FILE", errUsage)
	}
	if _, err := translog.NewVerifier(kc.LogKey); err != nil {
		return fmt.Errorf("%w: --log-key: %v; give the key as GET KMS/v1/log/key serves it, or @FILE", errUsage, strings.TrimPrefix(err.Error(), "translog: log key: "))
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if cf.attester == "simulated" {
		fmt.Fprintf(stderr, "tkms sidecar: INSECURE: --attester simulated signs evidence with the simulated chain of %s: not a TEE\n", cf.data)
	}
	if c.AllowKeyExport {
		fmt.Fprintln(stderr, "tkms sidecar: --allow-key-export: any local caller can read private keys at /keys/{kid}/private")
	}
	kc.Logger = log
	cache, err := client.NewKeys(kc)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if tcp, ok := ln.Addr().(*net.TCPAddr); !c.AllowRemote && (!ok || !tcp.IP.IsLoopback()) {
		return fmt.Errorf("%w: --listen %s bound %s, which is not loopback; give --allow-remote to allow it", errUsage, c.Listen, ln.Addr())
	}
	addr := ln.Addr().String()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	s := newSidecar(&c, cache, kc.Attester, log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); cache.Run(runCtx) }()
	go func() { defer wg.Done(); s.handles.sweep(runCtx) }()

	limits := httpapi.DefaultLimits()
	// A request may wait FetchWait for its key before it is answered.
	limits.WriteTimeout = max(limits.WriteTimeout, c.FetchWait+10*time.Second)
	srv := httpapi.NewHTTPServer(addr, s, log, limits)
	err = serveUntil(ctx, srv, ln, log, func() {
		fmt.Fprintf(stdout, "tkms sidecar: listening on http://%s\n", addr)
		log.Info("tkms sidecar listening", "addr", addr, "kms", kc.KMS, "api", kc.API, "attester", cf.attester, "token_source", cf.tokenSource, "variant", c.Variant, "key_export", c.AllowKeyExport)
	})
	cancel()
	wg.Wait()
	return err
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
	codeSidecarBadRequest  = "BAD_REQUEST"
	codeSidecarTooLarge    = "REQUEST_TOO_LARGE"
	codeSidecarMediaType   = "UNSUPPORTED_MEDIA_TYPE"
	codeSidecarNotFound    = "NOT_FOUND"
	codeSidecarMethod      = "METHOD_NOT_ALLOWED"
	codeSidecarMalformed   = "MALFORMED_MESSAGE"
	codeSidecarSuite       = "UNSUPPORTED_SUITE"
	codeSidecarDecrypt     = "DECRYPTION_FAILED"
	codeSidecarKeyNotFound = "KEY_NOT_FOUND"
	codeSidecarKeyExpired  = "KEY_EXPIRED"
	codeSidecarKMS         = "KMS_UNAVAILABLE"
	codeSidecarRejected    = "KMS_ANSWER_REJECTED"
	codeSidecarHandle      = "HANDLE_NOT_FOUND"
	codeSidecarBusy        = "TOO_MANY_HANDLES"
	codeSidecarExport      = "KEY_EXPORT_DISABLED"
	codeSidecarAttestation = "ATTESTATION_FAILED"
	codeSidecarInternal    = "INTERNAL_ERROR"
)

// sidecar is the HTTP handler of `tkms sidecar`.
type sidecar struct {
	cfg      *sidecarConfig
	keys     *client.Keys
	gw       *ohttp.Gateway
	attester client.Attester
	handles  *handleStore
	log      *slog.Logger
	mux      *http.ServeMux
}

func newSidecar(c *sidecarConfig, cache *client.Keys, attester client.Attester, log *slog.Logger) *sidecar {
	s := &sidecar{
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
		s.fail(w, r, http.StatusNotFound, codeSidecarNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s
}

// handle registers h for the pattern path, answering 405 in the JSON error
// shape for other methods.
func (s *sidecar) handle(path, method string, h http.HandlerFunc) {
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			s.fail(w, r, http.StatusMethodNotAllowed, codeSidecarMethod, r.Method+" is not allowed here; use "+method)
			return
		}
		h(w, r)
	})
}

func (s *sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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

// fail writes tkms's error shape: {"error":{"code","message"}} and the
// x-ms-kms-error-code header. message must be safe to show the caller.
func (s *sidecar) fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b.Error.Code, b.Error.Message = code, message
	body, _ := json.Marshal(b)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-ms-kms-error-code", code)
	w.WriteHeader(status)
	w.Write(body)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "message", message)
}

func (s *sidecar) writeJSON(w http.ResponseWriter, status int, v any) {
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
func (s *sidecar) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, codeSidecarTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
			return nil, false
		}
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	return b, true
}

// readJSON decodes a JSON request body into v.
func (s *sidecar) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, "the body is not the JSON object expected: "+err.Error())
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
func (s *sidecar) status(w http.ResponseWriter, r *http.Request) {
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
func (s *sidecar) evidence(w http.ResponseWriter, r *http.Request) (*client.Evidence, bool) {
	var req attestRequest
	if !s.readJSON(w, r, &req) {
		return nil, false
	}
	if req.RuntimeData == nil {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, "runtime_data is required: base64 of the data whose SHA-256 the report binds")
		return nil, false
	}
	data, err := decodeBase64(*req.RuntimeData)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, "runtime_data is not base64")
		return nil, false
	}
	var rd [64]byte
	h := sha256.Sum256(data)
	copy(rd[:], h[:])
	ev, err := s.attester.Attest(r.Context(), rd)
	if err != nil {
		s.log.Error("attestation failed", "err", err)
		s.fail(w, r, http.StatusInternalServerError, codeSidecarAttestation, "the TEE gave no evidence; see the sidecar's log")
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
func (s *sidecar) attestCombined(w http.ResponseWriter, r *http.Request) {
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
func (s *sidecar) attestRaw(w http.ResponseWriter, r *http.Request) {
	ev, ok := s.evidence(w, r)
	if !ok {
		return
	}
	u, err := attest.DecodeUnverified(ev.Attestation)
	if err != nil {
		s.log.Error("attester gave unreadable evidence", "type", ev.Type, "err", err)
		s.fail(w, r, http.StatusInternalServerError, codeSidecarAttestation, "the TEE's evidence is unreadable; see the sidecar's log")
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
func (s *sidecar) decrypt(w http.ResponseWriter, r *http.Request) {
	name := s.cfg.Variant
	if q := r.URL.Query(); q.Has("variant") {
		name = q.Get("variant")
	}
	v, ok := sidecarVariants[name]
	if !ok {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, fmt.Sprintf("variant %q: want ohttp, ba or kv", name))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		switch strings.TrimSpace(strings.ToLower(mt)) {
		case "application/ohttp-req", "application/octet-stream", "message/ohttp-req":
		default:
			s.fail(w, r, http.StatusUnsupportedMediaType, codeSidecarMediaType, "content type "+mt+": send the encapsulated request as application/ohttp-req or application/octet-stream")
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
		s.fail(w, r, http.StatusServiceUnavailable, codeSidecarBusy, err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, decrypted{Plaintext: pt, Handle: h, Expires: exp.UTC(), OHTTPKeyID: int(keyID), Variant: name})
}

// decryptFailed maps an error of DecapsulateRequest to a response.
func (s *sidecar) decryptFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ohttp.ErrUnknownKeyID):
		s.keyFailed(w, r, err)
	case errors.Is(err, ohttp.ErrMalformed):
		s.fail(w, r, http.StatusBadRequest, codeSidecarMalformed, "the encapsulated request is malformed: "+strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, ohttp.ErrUnsupportedSuite):
		s.fail(w, r, http.StatusBadRequest, codeSidecarSuite, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, ohttp.ErrDecrypt):
		s.fail(w, r, http.StatusBadRequest, codeSidecarDecrypt, "the request does not decrypt with its key")
	case r.Context().Err() != nil:
		s.fail(w, r, http.StatusServiceUnavailable, codeSidecarKMS, "the request was cancelled")
	default:
		s.log.Error("decrypt", "err", err)
		s.fail(w, r, http.StatusInternalServerError, codeSidecarInternal, "decryption failed; see the sidecar's log")
	}
}

// keyFailed answers a request for a key the cache could not provide: with
// the KMS's status and code when the KMS refused it, 503 when the KMS
// could not be reached.
func (s *sidecar) keyFailed(w http.ResponseWriter, r *http.Request, err error) {
	var kmsErr *client.KMSError
	switch {
	case errors.As(err, &kmsErr) && kmsErr.Status >= 400 && kmsErr.Status < 500 && kmsErr.Code != "":
		msg := "the KMS refused the key: " + kmsErr.Message
		if kmsErr.RequestID != "" {
			msg += " (KMS request id " + kmsErr.RequestID + ")"
		}
		s.fail(w, r, kmsErr.Status, kmsErr.Code, msg)
	case errors.Is(err, client.ErrKeyNotFound):
		s.fail(w, r, http.StatusNotFound, codeSidecarKeyNotFound, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, client.ErrKeyExpired):
		s.fail(w, r, http.StatusGone, codeSidecarKeyExpired, strings.TrimPrefix(err.Error(), "ohttp: "))
	case errors.Is(err, client.ErrRejected):
		s.log.Error("the KMS's answer failed a check", "err", err)
		s.fail(w, r, http.StatusBadGateway, codeSidecarRejected, "the KMS's answer failed a check of the sidecar; see its log")
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		w.Header().Set("Retry-After", "5")
		s.fail(w, r, http.StatusServiceUnavailable, codeSidecarKMS, fmt.Sprintf("the key is not cached and the KMS has not released it within %v; the fetch goes on: retry later", s.cfg.FetchWait))
	default:
		s.log.Warn("key unavailable", "err", err)
		w.Header().Set("Retry-After", "5")
		s.fail(w, r, http.StatusServiceUnavailable, codeSidecarKMS, "the key is not cached and the KMS did not release it: "+err.Error())
	}
}

// encryptRequest is the body of POST /encrypt-response.
type encryptRequest struct {
	Handle string  `json:"handle"`
	Body   *string `json:"body"` // base64
}

// encryptResponse serves POST /encrypt-response: the encapsulated response
// to the request a /decrypt handle names. A handle is used once.
func (s *sidecar) encryptResponse(w http.ResponseWriter, r *http.Request) {
	var req encryptRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	if req.Handle == "" || req.Body == nil {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, `want {"handle": "<from /decrypt>", "body": "<base64>"}`)
		return
	}
	body, err := decodeBase64(*req.Body)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, codeSidecarBadRequest, "body is not base64")
		return
	}
	e, ok := s.handles.take(req.Handle)
	if !ok {
		s.fail(w, r, http.StatusNotFound, codeSidecarHandle, "no such handle: unknown, expired or already used")
		return
	}
	out, err := e.rc.EncapsulateResponse(body)
	if err != nil {
		s.log.Error("encapsulate response", "err", err)
		s.fail(w, r, http.StatusInternalServerError, codeSidecarInternal, "encapsulating the response failed; see the sidecar's log")
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
func (s *sidecar) listKeys(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, struct {
		Keys []client.KeyState `json:"keys"`
	}{Keys: s.keys.State().Keys})
}

// privateKey serves GET /keys/{kid}/private, with --allow-key-export only:
// the key item with its private key "d", as /app/unwrapKey releases it.
func (s *sidecar) privateKey(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.AllowKeyExport {
		s.fail(w, r, http.StatusForbidden, codeSidecarExport, "key export is disabled; start the sidecar with --allow-key-export to allow it")
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
		s.fail(w, r, http.StatusInternalServerError, codeSidecarInternal, "encoding the key failed; see the sidecar's log")
		return
	}
	s.log.Warn("private key exported", "kid", kid)
	s.writeJSON(w, http.StatusOK, item)
}

// handleEntry is a response context waiting for its response.
type handleEntry struct {
	rc      *ohttp.GatewayContext
	variant string
	expires time.Time
}

// handleStore keeps the response contexts of decrypted requests, each for
// one use, at most max at once, each for at most ttl.
type handleStore struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]handleEntry
}

func newHandleStore(ttl time.Duration, max int, now func() time.Time) *handleStore {
	return &handleStore{ttl: ttl, max: max, now: now, m: map[string]handleEntry{}}
}

// errHandlesExhausted means max handles are waiting for their responses.
var errHandlesExhausted = errors.New("too many requests are waiting for their responses; answer them or retry later")

// put stores rc and returns its handle and expiry.
func (hs *handleStore) put(rc *ohttp.GatewayContext, variant string) (string, time.Time, error) {
	var b [16]byte
	rand.Read(b[:])
	h := base64.RawURLEncoding.EncodeToString(b[:])
	now := hs.now()
	exp := now.Add(hs.ttl)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.m) >= hs.max {
		hs.dropExpiredLocked(now)
		if len(hs.m) >= hs.max {
			return "", time.Time{}, errHandlesExhausted
		}
	}
	hs.m[h] = handleEntry{rc: rc, variant: variant, expires: exp}
	return h, exp, nil
}

// take removes and returns the live entry of h.
func (hs *handleStore) take(h string) (handleEntry, bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	e, ok := hs.m[h]
	if !ok {
		return handleEntry{}, false
	}
	delete(hs.m, h)
	if !hs.now().Before(e.expires) {
		return handleEntry{}, false
	}
	return e, true
}

func (hs *handleStore) len() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.m)
}

func (hs *handleStore) dropExpiredLocked(now time.Time) {
	for h, e := range hs.m {
		if !now.Before(e.expires) {
			delete(hs.m, h)
		}
	}
}

// sweep drops expired handles every ttl until ctx ends, so that response
// secrets do not outlive their use.
func (hs *handleStore) sweep(ctx context.Context) {
	t := time.NewTicker(hs.ttl)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hs.mu.Lock()
			hs.dropExpiredLocked(hs.now())
			hs.mu.Unlock()
		}
	}
}
