package httpapi

import (
	"net/http"

	"github.com/tkms-dev/tkms/api"
)

// handlePattern registers h for a mux pattern with wildcards (which the
// exact-path fast path of ServeHTTP cannot serve), answering 405 with the
// JSON error shape for other methods.
func (s *Server) handlePattern(pattern, method string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			s.fail(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+pattern+"; use "+method)
			return
		}
		h(w, r)
	})
}

// v1Nonce serves GET /v1/nonce: {"nonce":"<64 hex digits>","expires":"<RFC 3339>"},
// a freshness nonce for REPORT_DATA[32:64] (release.NonceResponse).
func (s *Server) v1Nonce(w http.ResponseWriter, r *http.Request) {
	if !s.releaseReady(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, s.release.Nonce())
}

// v1ReleaseKey serves POST /v1/keys/{kid}/release (release.Service.V1Release).
func (s *Server) v1ReleaseKey(w http.ResponseWriter, r *http.Request) {
	s.v1Release(w, r, r.PathValue("kid"))
}

// v1ReleaseBatch serves POST /v1/release (release.Service.V1ReleaseBatch).
func (s *Server) v1ReleaseBatch(w http.ResponseWriter, r *http.Request) {
	s.v1Release(w, r, "")
}

func (s *Server) v1Release(w http.ResponseWriter, r *http.Request, kid string) {
	if !s.releaseReady(w, r) {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var resp *api.V1ReleaseResponse
	var err error
	if kid != "" {
		resp, err = s.release.V1Release(r.Context(), r.Header.Get("Authorization"), kid, body)
	} else {
		resp, err = s.release.V1ReleaseBatch(r.Context(), r.Header.Get("Authorization"), body)
	}
	if err != nil {
		s.releaseFailed(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, resp)
}
