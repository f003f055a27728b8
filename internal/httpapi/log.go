package httpapi

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// The transparency log's read API (docs/transparency.md, "Read API"): the
// C2SP tlog-tiles endpoints below /log/ (https://c2sp.org/tlog-tiles),
// which generic log tooling and the auditor read, and JSON views of
// entries and proofs below /v1/log/.
//
// Every answer is computed against one checkpoint, taken once per request:
// nothing beyond its tree is served, so a tile, an entry or a proof is
// always one the latest checkpoint commits to.

// Error codes of the log endpoints.
const (
	CodeInvalidTilePath = "INVALID_TILE_PATH"
	CodeInvalidIndex    = "INVALID_INDEX"
	CodeInvalidSize     = "INVALID_SIZE"
)

// Header values of the log endpoints, shared as the pre-serialised
// responses' are (handlers.go).
var (
	contentTypeText   = []string{"text/plain; charset=utf-8"}
	contentTypeOctets = []string{"application/octet-stream"}
	// Tiles, entries and proofs at a fixed tree size never change: the
	// tree is append-only, and a partial tile's bytes at width W are
	// fixed too.
	cacheImmutable = []string{"public, max-age=31536000, immutable"}
	cacheNoCache   = []string{"no-cache"}
	cacheKey       = []string{"public, max-age=86400"}
)

func (s *Server) logRoutes() {
	s.handle("/log/checkpoint", http.MethodGet, s.logCheckpoint)
	s.handleGetPattern("/log/tile/", s.logTile)
	s.handle("/v1/log/key", http.MethodGet, s.logKey)
	s.handleGetPattern("/v1/log/entries/{i}", s.logEntry)
	s.handle("/v1/log/proof/inclusion", http.MethodGet, s.logInclusionProof)
	s.handle("/v1/log/proof/consistency", http.MethodGet, s.logConsistencyProof)
}

// handleGetPattern registers h for a mux pattern (a prefix, or one with
// wildcards, which the exact-path fast path of ServeHTTP does not serve)
// answering GET and HEAD, and 405 with the JSON error shape otherwise.
func (s *Server) handleGetPattern(pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			s.fail(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+pattern+"; use GET")
			return
		}
		h(w, r)
	})
}

// checkpoint returns the latest checkpoint, or answers 503 if the log has
// none yet (a service that has not written its log key).
func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) (translog.Signed, bool) {
	cp := s.svc.Checkpoint()
	if len(cp.Note) == 0 {
		s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the transparency log has no signed checkpoint yet")
		return cp, false
	}
	return cp, true
}

// logCheckpoint serves GET /log/checkpoint: the latest signed checkpoint
// (C2SP tlog-checkpoint), which changes with every write.
func (s *Server) logCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, ok := s.checkpoint(w, r)
	if !ok {
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeText
	h["Cache-Control"] = cacheNoCache
	w.Write(cp.Note)
}

// logTile serves GET /log/tile/<L>/<N>[.p/<W>] and
// /log/tile/entries/<N>[.p/<W>]: a hash tile or an entry bundle of the
// latest checkpoint's tree.
func (s *Server) logTile(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/log/")
	// One tile, one URL (and one cache entry): a path spelt with escapes
	// is refused, as ParseTilePath refuses non-canonical numbers.
	if r.URL.RawPath != "" {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidTilePath, "tile paths have no escapes: want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>] (C2SP tlog-tiles)")
		return
	}
	t, err := translog.ParseTilePath(path)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidTilePath, "malformed tile path "+strconv.Quote(truncate(path, 100))+": want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>] (C2SP tlog-tiles)")
		return
	}
	cp := s.svc.Checkpoint()
	data, err := translog.ReadTile(t, cp.Size, s.svc.LogHashes(), s.svc)
	if errors.Is(err, translog.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, CodeNotFound, path+" is beyond the tree of size "+strconv.FormatInt(cp.Size, 10))
		return
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: cannot read tile", "tile", path, "size", cp.Size, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot read the tile; see the server log")
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeOctets
	h["Cache-Control"] = cacheImmutable
	w.Write(data)
}

// logKey serves GET /v1/log/key: the note verifier key of the log's
// checkpoints, fixed at genesis.
func (s *Server) logKey(w http.ResponseWriter, r *http.Request) {
	vkey := s.svc.LogVerifierKey()
	if vkey == "" {
		s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the transparency log has no key yet")
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeText
	h["Cache-Control"] = cacheKey
	io.WriteString(w, vkey+"\n")
}

// LogEntry is the answer of GET /v1/log/entries/{i}: leaf i of the log
// decoded. Only the leaf's public part is served; a sealed part is known
// by its SHA-256 alone.
type LogEntry struct {
	Index        int64           `json:"index"` // the leaf index: Seq-1
	Seq          uint64          `json:"seq"`
	Time         time.Time       `json:"time"`
	Type         ledger.Type     `json:"type"`
	Body         json.RawMessage `json:"body"`
	SealedSHA256 string          `json:"sealed_sha256,omitempty"` // hex; absent when the entry has no sealed part
	LeafHash     tlog.Hash       `json:"leaf_hash"`               // RFC 6962 hash of Leaf
	Leaf         []byte          `json:"leaf"`                    // ledger.LeafBytes
}

// logEntry serves GET /v1/log/entries/{i}.
func (s *Server) logEntry(w http.ResponseWriter, r *http.Request) {
	i, ok := parseCount(r.PathValue("i"))
	if !ok {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidIndex, "the leaf index must be a decimal number without sign or leading zeros, from 0")
		return
	}
	cp := s.svc.Checkpoint()
	if i >= cp.Size {
		s.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("leaf %d is beyond the tree of size %d", i, cp.Size))
		return
	}
	e, err := s.svc.Entry(uint64(i) + 1)
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: cannot read entry", "seq", i+1, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot read the entry; see the server log")
		return
	}
	// Decode the leaf rather than copy the entry, so that nothing but
	// the public part can ever be served.
	lb := ledger.LeafBytes(e)
	l, err := ledger.UnmarshalLeaf(lb)
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: cannot decode leaf", "seq", i+1, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot decode the entry; see the server log")
		return
	}
	out := LogEntry{Index: i, Seq: l.Seq, Time: l.Time, Type: l.Type, Body: l.Body, LeafHash: tlog.RecordHash(lb), Leaf: lb}
	if len(out.Body) == 0 {
		out.Body = json.RawMessage("null")
	}
	if l.HasSealed() {
		out.SealedSHA256 = hex.EncodeToString(l.SealedSHA256[:])
	}
	body, err := json.Marshal(out)
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: entry body is not JSON", "seq", i+1, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot encode the entry; see the server log")
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = cacheImmutable
	w.Write(body)
}

// LogInclusionProof is the answer of GET /v1/log/proof/inclusion: the RFC
// 6962 inclusion proof of leaf Index in the tree of size Size, whose hash
// is Root. Checkpoint is the signed checkpoint of that tree when Size is
// the latest checkpoint's size.
type LogInclusionProof struct {
	Index      int64       `json:"index"`
	Size       int64       `json:"size"`
	LeafHash   tlog.Hash   `json:"leaf_hash"`
	Root       tlog.Hash   `json:"root"`
	Proof      []tlog.Hash `json:"proof"`
	Checkpoint string      `json:"checkpoint,omitempty"`
}

// logInclusionProof serves GET /v1/log/proof/inclusion?index=&size=; size
// defaults to the latest checkpoint's.
func (s *Server) logInclusionProof(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	index, ok := parseCount(q.Get("index"))
	if !ok {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidIndex, "index must be a leaf index: a decimal number without sign or leading zeros, from 0")
		return
	}
	cp := s.svc.Checkpoint()
	size, explicit, ok := s.treeSizeParam(w, r, q, "size", cp.Size)
	if !ok {
		return
	}
	switch {
	case size > cp.Size:
		s.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("tree size %d is beyond the log's size %d", size, cp.Size))
		return
	case index >= size && !explicit:
		s.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("leaf %d is beyond the tree of size %d", index, size))
		return
	case index >= size:
		s.fail(w, r, http.StatusBadRequest, CodeInvalidIndex, fmt.Sprintf("leaf %d is not in a tree of size %d", index, size))
		return
	}
	hashes := s.svc.LogHashes()
	out := LogInclusionProof{Index: index, Size: size}
	leaf, err := hashes.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
	if err == nil {
		out.LeafHash = leaf[0]
		out.Root, err = tlog.TreeHash(size, hashes)
	}
	if err == nil {
		out.Proof, err = tlog.ProveRecord(size, index, hashes)
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: cannot prove inclusion", "index", index, "size", size, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot compute the proof; see the server log")
		return
	}
	// With the checkpoint, the answer changes once the log grows;
	// without, it never does.
	cache := cacheImmutable
	if size == cp.Size {
		out.Checkpoint = string(cp.Note)
		cache = cacheNoCache
	}
	if out.Proof == nil {
		out.Proof = []tlog.Hash{} // [] rather than null: a leaf alone in its tree
	}
	w.Header()["Cache-Control"] = cache
	s.writeJSON(w, http.StatusOK, out)
}

// LogConsistencyProof is the answer of GET /v1/log/proof/consistency: the
// RFC 6962 consistency proof that the tree of size From, whose hash is
// RootFrom, is a prefix of the tree of size To, whose hash is RootTo.
type LogConsistencyProof struct {
	From     int64       `json:"from"`
	To       int64       `json:"to"`
	RootFrom tlog.Hash   `json:"root_from"`
	RootTo   tlog.Hash   `json:"root_to"`
	Proof    []tlog.Hash `json:"proof"`
}

// treeSizeParam reads the optional tree size parameter name, which
// defaults to size (the latest checkpoint's); explicit says it was given.
// It answers 400 itself for a malformed one.
func (s *Server) treeSizeParam(w http.ResponseWriter, r *http.Request, q url.Values, name string, size int64) (_ int64, explicit, ok bool) {
	if !q.Has(name) {
		return size, false, true
	}
	n, ok := parseCount(q.Get(name))
	if !ok || n < 1 {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidSize, name+" must be a tree size: a decimal number without sign or leading zeros, from 1")
		return 0, true, false
	}
	return n, true, true
}

// logConsistencyProof serves GET /v1/log/proof/consistency?from=&to=; to
// defaults to the latest checkpoint's size.
func (s *Server) logConsistencyProof(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, ok := parseCount(q.Get("from"))
	if !ok || from < 1 {
		s.fail(w, r, http.StatusBadRequest, CodeInvalidSize, "from must be a tree size: a decimal number without sign or leading zeros, from 1")
		return
	}
	cp := s.svc.Checkpoint()
	to, explicit, ok := s.treeSizeParam(w, r, q, "to", cp.Size)
	if !ok {
		return
	}
	switch {
	case to > cp.Size:
		s.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("tree size %d is beyond the log's size %d", to, cp.Size))
		return
	case from > to && !explicit:
		s.fail(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("tree size %d is beyond the log's size %d", from, to))
		return
	case from > to:
		s.fail(w, r, http.StatusBadRequest, CodeInvalidSize, fmt.Sprintf("from %d is above to %d", from, to))
		return
	}
	hashes := s.svc.LogHashes()
	out := LogConsistencyProof{From: from, To: to}
	var err error
	out.RootFrom, err = tlog.TreeHash(from, hashes)
	if err == nil {
		out.RootTo, err = tlog.TreeHash(to, hashes)
	}
	if err == nil {
		out.Proof, err = tlog.ProveTree(to, from, hashes)
	}
	if err != nil {
		s.log.ErrorContext(r.Context(), "log: cannot prove consistency", "from", from, "to", to, "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot compute the proof; see the server log")
		return
	}
	cache := cacheImmutable
	if !explicit {
		cache = cacheNoCache
	}
	if out.Proof == nil {
		out.Proof = []tlog.Hash{} // [] rather than null: equal sizes
	}
	w.Header()["Cache-Control"] = cache
	s.writeJSON(w, http.StatusOK, out)
}

// parseCount parses a leaf index or tree size in its one canonical
// spelling: decimal digits, no sign, no leading zeros.
func parseCount(v string) (int64, bool) {
	if v == "" || len(v) > 19 || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}
