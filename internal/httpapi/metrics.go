package httpapi

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

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

// collect sends tkms's own metrics to ch (the registry of prom.go serves
// them at GET /metrics in the Prometheus text format): the ledger, keys by
// phase, releases and refusals, error responses by code (unauthenticated
// failures included: they are counted here and logged, never put in the
// ledger), open proposals, and the token issuers' key set refreshes. No
// label carries a secret: codes, phases and issuer URLs only.
func (s *Server) collect(ch chan<- prometheus.Metric) {
	e := emitter{ch}
	now := s.svc.Now()
	phases := map[string]int{}
	var seq, releases, denials uint64
	var open int
	s.svc.Read(func(st *state.State) {
		seq, releases, denials = st.Seq, st.Releases, st.Denials
		for _, k := range st.Keys {
			phases[k.Phase(now).String()]++
		}
		for _, p := range st.Proposals {
			if p.State(now) == state.ProposalOpen {
				open++
			}
		}
	})
	e.gauge("tkms_store_write_failed", "1 once a write to the data directory has failed: every write is refused until restart (docs/operations.md).", float64(boolGauge(s.svc.WriteErr() != nil)))
	e.gauge("tkms_ledger_entries", "Entries in the ledger.", float64(seq))
	e.gauge("tkms_log_checkpoint_size", "Tree size of the latest signed checkpoint of the transparency log.", float64(s.svc.Checkpoint().Size))
	for _, p := range []string{"created", "published", "retired", "expired", "destroyed"} {
		e.gauge("tkms_keys", "Keys by lifecycle phase.", float64(phases[p]), "phase", p)
	}
	e.gauge("tkms_governed", "1 if the ledger is governed (members and a constitution), else 0.", float64(boolGauge(s.svc.Governed())))
	e.gauge("tkms_proposals_open", "Governance proposals open for ballots.", float64(open))
	e.counter("tkms_releases_total", "Key releases recorded in the ledger.", float64(releases))
	e.counter("tkms_release_denials_total", "Refusals of authenticated callers recorded in the ledger.", float64(denials))
	for _, kv := range sorted(s.errors.snapshot()) {
		e.counter("tkms_http_errors_total", "Error responses since start, by error code.", float64(kv.v), "code", kv.k)
	}
	if s.release != nil {
		st := s.release.AuthStats()
		e.counter("tkms_jwt_accepted_total", "Bearer tokens accepted.", float64(st.Accepted))
		for _, kv := range sorted(st.Rejected) {
			e.counter("tkms_jwt_rejected_total", "Bearer tokens rejected, by error code.", float64(kv.v), "code", kv.k)
		}
		for _, is := range st.Issuers {
			e.counter("tkms_jwks_fetches_total", "Key set fetches per token issuer.", float64(is.Fetches), "issuer", is.Issuer)
			e.counter("tkms_jwks_fetch_failures_total", "Failed key set fetches per token issuer.", float64(is.FetchFailures), "issuer", is.Issuer)
		}
	}
	s.limitMetrics(e)
}

// emitter sends constant metrics, built when /metrics is scraped.
type emitter struct{ ch chan<- prometheus.Metric }

// gauge sends a gauge; labels are name, value pairs.
func (e emitter) gauge(name, help string, v float64, labels ...string) {
	e.send(prometheus.GaugeValue, name, help, v, labels)
}

// counter sends a counter; labels are name, value pairs.
func (e emitter) counter(name, help string, v float64, labels ...string) {
	e.send(prometheus.CounterValue, name, help, v, labels)
}

func (e emitter) send(typ prometheus.ValueType, name, help string, v float64, labels []string) {
	var names, values []string
	for i := 0; i+1 < len(labels); i += 2 {
		names, values = append(names, labels[i]), append(values, labels[i+1])
	}
	e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, names, nil), typ, v, values...)
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
