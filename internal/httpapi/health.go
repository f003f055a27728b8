package httpapi

import (
	"net/http"

	"github.com/tkms-dev/tkms/internal/state"
)

// CodeNotReady answers GET /readyz while the node cannot serve keys.
const CodeNotReady = "NOT_READY"

// livez serves GET /livez: the process answers HTTP. A supervisor restarts
// a node whose livez fails; it never looks at anything else, so a node
// that is alive but not ready is left to recover.
func (s *Server) livez(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"alive"}` + "\n"))
}

// readyz serves GET /readyz: 200 once the node can serve its clients (its
// ledger is replayed and writable, a key is published, and, through
// Options.Ready, whatever else the node needs, such as being caught up
// with its cluster), else 503 NOT_READY with the reason. A load balancer
// sends traffic only to ready nodes.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.WriteErr(); err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, CodeNotReady, "the data directory failed a write: restart the node once it is fixed (docs/operations.md)")
		return
	}
	now := s.svc.Now()
	var published bool
	s.svc.Read(func(st *state.State) {
		for _, k := range st.Keys {
			if k.Phase(now).String() == "published" {
				published = true
			}
		}
	})
	if !published {
		s.fail(w, r, http.StatusServiceUnavailable, CodeNotReady, "no published key yet")
		return
	}
	if s.ready != nil {
		if err := s.ready(); err != nil {
			s.fail(w, r, http.StatusServiceUnavailable, CodeNotReady, err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ready"}` + "\n"))
}
