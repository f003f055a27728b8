package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/state"
)

var heartbeatBody = []byte(`{"status":"Service is running"}`)

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	if s.storageHeartbeat(w) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(heartbeatBody)
}

// Header values the pre-serialised responses share; net/http copies a
// handler's header before writing it, so sharing is safe as long as no one
// modifies them.
var (
	contentTypeJSON  = []string{"application/json"}
	contentTypeOHTTP = []string{"application/ohttp-keys"}
)

// cacheHeaders sets date and cache-control, both required by the DEPA
// data-plane key fetcher. The values are formatted once a second
// (viewCache.stamp); the keys are canonical, as Header.Set would make them.
func (s *Server) cacheHeaders(h http.Header, v *view, now time.Time) {
	st := s.views.stamp(v, now)
	h["Date"] = st.date
	h["Cache-Control"] = st.cacheControl
}

// listPubKeys serves GET /app/listpubkeys: the primary key, pre-serialised.
func (s *Server) listPubKeys(w http.ResponseWriter, r *http.Request) {
	now := s.svc.Now()
	v := s.views.get(now)
	h := w.Header()
	s.cacheHeaders(h, v, now)
	h["Content-Type"] = contentTypeJSON
	w.Write(v.listPubKeys)
}

// fmtParam returns the fmt query parameter: "jwk" (the default) or "tink".
func (s *Server) fmtParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	f := r.URL.Query().Get("fmt")
	switch f {
	case "", "jwk":
		return "jwk", true
	case "tink":
		return "tink", true
	}
	s.fail(w, r, http.StatusBadRequest, CodeInvalidFmtParameter, `fmt must be "jwk" or "tink"`)
	return "", false
}

// pubKeyItem is the jwk answer of GET /app/pubkey and POST /app/refresh:
// the key item plus the log receipt (translog.Receipt JSON, as a string) of
// the key's key.created entry, which binds kid, id and public key to a log
// position: a client can prove that the key it encrypts to was made inside
// tkms.
type pubKeyItem struct {
	keys.Item
	Receipt string `json:"receipt"`
}

// receipt returns the JSON receipt of ledger entry seq as a string, or ""
// (logged) if it cannot be built.
func (s *Server) receipt(seq uint64) string {
	r, err := s.svc.Receipt(seq)
	if err != nil {
		s.log.Error("cannot build a log receipt", "seq", seq, "err", err)
		return ""
	}
	return string(r.Marshal())
}

// pubKey serves GET /app/pubkey?kid=&fmt=.
func (s *Server) pubKey(w http.ResponseWriter, r *http.Request) {
	now := s.svc.Now()
	kid := r.URL.Query().Get("kid")
	var k *state.Key
	s.svc.Read(func(st *state.State) {
		if kid == "" {
			k = st.Primary(now)
		} else {
			k = st.Key(kid)
		}
		if k != nil {
			c := *k
			k = &c
		}
	})
	if k == nil {
		if kid == "" {
			s.fail(w, r, http.StatusNotFound, CodeKeyNotFound, "no key is advertised yet")
		} else {
			s.fail(w, r, http.StatusNotFound, CodeKeyNotFound, "no key with kid "+truncate(kid, 100))
		}
		return
	}
	f, ok := s.fmtParam(w, r)
	if !ok {
		return
	}
	if k.Phase(now) >= state.Expired {
		s.fail(w, r, http.StatusGone, CodeKeyExpired, "key "+k.Kid+" has expired")
		return
	}
	s.cacheHeaders(w.Header(), s.views.get(now), now)
	if f == "tink" {
		s.writeJSON(w, http.StatusOK, keys.TinkPublic(k.PublicKey, k.ID))
		return
	}
	item, err := keyItem(k)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot encode key")
		return
	}
	s.writeJSON(w, http.StatusOK, pubKeyItem{Item: item, Receipt: s.receipt(k.Seq)})
}

func keyItem(k *state.Key) (keys.Item, error) {
	suite, err := keys.ParseSuite(k.Suite)
	if err != nil {
		return keys.Item{}, err
	}
	return keys.PublicItem(suite, k.PublicKey, k.Kid, k.ID, k.Created.UnixMilli(), k.NotAfter.UnixMilli())
}

// refresh serves POST /app/refresh: rotate now. FIX over the originals,
// which leave it open: only the operator may call it.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	if !s.operator(w, r) {
		return
	}
	// The body is ignored, as by the originals, but read within the cap.
	if _, ok := s.readBody(w, r); !ok {
		return
	}
	k, err := s.svc.Rotate(r.Context(), kms.ReasonRefresh)
	if errors.Is(err, kms.ErrKeyLimit) {
		s.fail(w, r, http.StatusConflict, CodeKeyLimit, "too many unexpired keys: the remaining numeric ids are reserved for scheduled rotation; wait for keys to expire")
		return
	}
	if err != nil {
		s.log.Error("refresh failed", "err", err)
		if s.storageFailed(w, r, err) {
			return
		}
		s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the key could not be created and recorded; see the server log")
		return
	}
	item, err := keyItem(k)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot encode key")
		return
	}
	s.writeJSON(w, http.StatusOK, pubKeyItem{Item: item, Receipt: s.receipt(k.Seq)})
}

func (s *Server) keyRotationPolicy(w http.ResponseWriter, r *http.Request) {
	var p state.RotationPolicy
	s.svc.Read(func(st *state.State) { p = st.Rotation })
	s.writeJSON(w, http.StatusOK, p)
}

func (s *Server) settingsPolicy(w http.ResponseWriter, r *http.Request) {
	var p state.Settings
	s.svc.Read(func(st *state.State) { p = st.Settings })
	s.writeJSON(w, http.StatusOK, p)
}

// v1Keys serves GET /v1/keys: the advertised keys, pre-serialised, with an
// ETag. ?all=true lists every key the ledger knows, in every phase.
func (s *Server) v1Keys(w http.ResponseWriter, r *http.Request) {
	now := s.svc.Now()
	if all := r.URL.Query().Get("all"); all == "true" || all == "1" {
		var out api.V1Keys
		s.svc.Read(func(st *state.State) { out = AllKeys(st, now) })
		w.Header().Set("Cache-Control", "no-cache")
		body, _ := json.Marshal(out)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return
	}
	v := s.views.get(now)
	h := w.Header()
	s.cacheHeaders(h, v, now)
	h["Etag"] = v.v1ETag
	if inm := r.Header["If-None-Match"]; len(inm) > 0 && inm[0] != "" && etagMatch(inm[0], v.v1ETag[0]) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = contentTypeJSON
	w.Write(v.v1Keys)
}

// v1OHTTPKeys serves GET /v1/keys/ohttp: the RFC 9458 key configurations of
// the advertised keys, primary first.
func (s *Server) v1OHTTPKeys(w http.ResponseWriter, r *http.Request) {
	now := s.svc.Now()
	v := s.views.get(now)
	h := w.Header()
	s.cacheHeaders(h, v, now)
	h["Content-Type"] = contentTypeOHTTP
	w.Write(v.ohttp)
}

// etagMatch implements the weak comparison of If-None-Match (RFC 9110
// §13.1.2) against one strong ETag.
func etagMatch(header, etag string) bool {
	for header != "" {
		var tag string
		header = trimOWS(header)
		if header == "" {
			break
		}
		if header[0] == '*' {
			return true
		}
		i := 0
		for i < len(header) && header[i] != ',' {
			i++
		}
		tag, header = trimOWS(header[:i]), header[min(i+1, len(header)):]
		if len(tag) > 2 && tag[:2] == "W/" {
			tag = tag[2:]
		}
		if tag == etag {
			return true
		}
	}
	return false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
