package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/state"
)

// CodeReleaseNotConfigured answers release endpoints of a server started
// without key release (no trusted token issuer).
const CodeReleaseNotConfigured = "RELEASE_NOT_CONFIGURED"

// releaseReady answers 503 when key release is not configured.
func (s *Server) releaseReady(w http.ResponseWriter, r *http.Request) bool {
	if s.release == nil {
		s.fail(w, r, http.StatusServiceUnavailable, CodeReleaseNotConfigured, "key release is not configured on this server: no trusted token issuer")
		return false
	}
	return true
}

// releaseStatus is the HTTP status of each kind of release failure.
var releaseStatus = map[release.Kind]int{
	release.KindRefused:         http.StatusBadRequest,
	release.KindUnauthenticated: http.StatusUnauthorized,
	release.KindNotFound:        http.StatusNotFound,
	release.KindGone:            http.StatusGone,
	release.KindRateLimited:     http.StatusTooManyRequests,
	release.KindUnavailable:     http.StatusServiceUnavailable,
	release.KindInternal:        http.StatusInternalServerError,
}

// releaseFailed maps a release error to its response: the status of its
// kind, its code and its message. Causes go to the log only; the caller
// sees the safe message.
func (s *Server) releaseFailed(w http.ResponseWriter, r *http.Request, err error) {
	if s.storageFailed(w, r, err) {
		return
	}
	var re *release.Error
	if !errors.As(err, &re) {
		s.log.Error("release failed", "err", err)
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "internal error; see the server log")
		return
	}
	status, ok := releaseStatus[re.Kind]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 && re.Err != nil && re.Code != release.CodeServerBusy {
		s.log.Error("release failed", "code", re.Code, "err", re.Err)
	}
	if re.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(limit.RetryAfterSeconds(re.RetryAfter)))
	}
	s.fail(w, r, status, re.Code, re.Message)
}

// appUnwrapKey serves POST /app/unwrapKey?fmt=.
func (s *Server) appUnwrapKey(w http.ResponseWriter, r *http.Request) {
	if !s.releaseReady(w, r) {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	resp, err := s.release.AppUnwrap(r.Context(), r.Header.Get("Authorization"), body, r.URL.Query().Get("fmt"))
	if err != nil {
		s.releaseFailed(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, resp)
}

// appKey serves POST /app/key?kid=&fmt=&all=.
func (s *Server) appKey(w http.ResponseWriter, r *http.Request) {
	if !s.releaseReady(w, r) {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	resp, err := s.release.AppKey(r.Context(), r.Header.Get("Authorization"), body, q.Get("kid"), q.Get("fmt"), q.Get("all") == "true")
	if err != nil {
		s.releaseFailed(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, resp)
}

// keyReleasePolicy serves GET /app/keyReleasePolicy: the policy in force,
// in the originals' shape ("type":"add" first) for the claims grammar.
func (s *Server) keyReleasePolicy(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	s.svc.Read(func(st *state.State) { raw = st.ReleasePolicy })
	if raw = appReleasePolicy(raw); raw == nil {
		s.fail(w, r, http.StatusNotFound, "POLICY_UNSET", "no key release policy is set: every release is denied")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

// jwtValidationPolicy serves GET /app/jwtValidationPolicy:
// {"<issuer>":{"<claim>": value or [values]}}.
func (s *Server) jwtValidationPolicy(w http.ResponseWriter, r *http.Request) {
	out := map[string]map[string]any{}
	s.svc.Read(func(st *state.State) {
		if st.JWT == nil {
			return
		}
		for _, is := range st.JWT.Issuers {
			out[is.Issuer] = map[string]any{}
		}
		for iss, c := range st.JWT.Claims {
			out[iss] = c
		}
	})
	s.writeJSON(w, http.StatusOK, out)
}

// attestation serves GET /v1/attestation: what this KMS accepts as
// evidence, and whether it trusts a simulated TEE. (The KMS's own
// attestation joins it when tkms runs in a TEE.)
func (s *Server) attestation(w http.ResponseWriter, r *http.Request) {
	if !s.releaseReady(w, r) {
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"release": s.release.Trust()})
}
