package httpapi

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/tkms-dev/tkms/internal/state"
)

// codeCounter counts error responses by code.
type codeCounter struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *codeCounter) add(code string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[code]++
	c.mu.Unlock()
}

func (c *codeCounter) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// metrics serves GET /metrics in the Prometheus text exposition format:
// the ledger, keys by phase, releases and refusals, error responses by code
// (unauthenticated failures included: they are counted here and logged,
// never put in the ledger), and the token issuers' key set refreshes. No
// label carries a secret: codes, phases and issuer URLs only.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	metric := func(name, typ, help string) { fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ) }
	now := s.svc.Now()
	phases := map[string]int{}
	var seq, releases, denials uint64
	s.svc.Read(func(st *state.State) {
		seq, releases, denials = st.Seq, st.Releases, st.Denials
		for _, k := range st.Keys {
			phases[k.Phase(now).String()]++
		}
	})
	metric("tkms_store_write_failed", "gauge", "1 once a write to the data directory has failed: every write is refused until restart (docs/operations.md).")
	fmt.Fprintf(&b, "tkms_store_write_failed %d\n", boolGauge(s.svc.WriteErr() != nil))
	metric("tkms_ledger_entries", "gauge", "Entries in the ledger.")
	fmt.Fprintf(&b, "tkms_ledger_entries %d\n", seq)
	metric("tkms_log_checkpoint_size", "gauge", "Tree size of the latest signed checkpoint of the transparency log.")
	fmt.Fprintf(&b, "tkms_log_checkpoint_size %d\n", s.svc.Checkpoint().Size)
	metric("tkms_keys", "gauge", "Keys by lifecycle phase.")
	for _, p := range []string{"created", "published", "retired", "expired", "destroyed"} {
		fmt.Fprintf(&b, "tkms_keys{phase=%q} %d\n", p, phases[p])
	}
	metric("tkms_releases_total", "counter", "Key releases recorded in the ledger.")
	fmt.Fprintf(&b, "tkms_releases_total %d\n", releases)
	metric("tkms_release_denials_total", "counter", "Refusals of authenticated callers recorded in the ledger.")
	fmt.Fprintf(&b, "tkms_release_denials_total %d\n", denials)
	metric("tkms_http_errors_total", "counter", "Error responses since start, by error code.")
	for _, kv := range sorted(s.errors.snapshot()) {
		fmt.Fprintf(&b, "tkms_http_errors_total{code=%q} %d\n", kv.k, kv.v)
	}
	if s.release != nil {
		st := s.release.AuthStats()
		metric("tkms_jwt_accepted_total", "counter", "Bearer tokens accepted.")
		fmt.Fprintf(&b, "tkms_jwt_accepted_total %d\n", st.Accepted)
		metric("tkms_jwt_rejected_total", "counter", "Bearer tokens rejected, by error code.")
		for _, kv := range sorted(st.Rejected) {
			fmt.Fprintf(&b, "tkms_jwt_rejected_total{code=%q} %d\n", kv.k, kv.v)
		}
		metric("tkms_jwks_fetches_total", "counter", "Key set fetches per token issuer.")
		for _, is := range st.Issuers {
			fmt.Fprintf(&b, "tkms_jwks_fetches_total{issuer=%q} %d\n", is.Issuer, is.Fetches)
		}
		metric("tkms_jwks_fetch_failures_total", "counter", "Failed key set fetches per token issuer.")
		for _, is := range st.Issuers {
			fmt.Fprintf(&b, "tkms_jwks_fetch_failures_total{issuer=%q} %d\n", is.Issuer, is.FetchFailures)
		}
	}
	s.limitMetrics(&b, metric)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	w.Write([]byte(b.String()))
}

func boolGauge(b bool) int {
	if b {
		return 1
	}
	return 0
}

type kv struct {
	k string
	v uint64
}

func sorted(m map[string]uint64) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].k < out[j].k })
	return out
}
