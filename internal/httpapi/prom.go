package httpapi

import (
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routeOther labels requests for no route of the API.
const routeOther = "other"

// newRegistry builds the metrics registry of s: tkms's own metrics
// (metrics.go), request latency by route and status code, the Go runtime
// and process collectors, tkms_build_info, and extra (e.g. the TLS
// certificate's expiry, raft state).
func (s *Server) newRegistry(version string, extra []prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tkms_http_request_duration_seconds",
		Help:    "Time to answer HTTP requests, by route (the registered path; other for unknown paths) and status code.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "code"})
	rev, goVersion := "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" {
				rev = kv.Value
			}
		}
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tkms_build_info",
		Help:        "1, labelled with the version, VCS revision and Go version of the running binary.",
		ConstLabels: prometheus.Labels{"version": version, "revision": rev, "goversion": goVersion},
	})
	build.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.latency, build, ownCollector{s},
	)
	for _, c := range extra {
		reg.MustRegister(c)
	}
	return reg
}

// ownCollector collects tkms's own metrics when /metrics is scraped. It
// describes nothing in advance (an unchecked collector): its label values
// (error codes, issuers) are known only then.
type ownCollector struct{ s *Server }

func (ownCollector) Describe(chan<- *prometheus.Desc)      {}
func (c ownCollector) Collect(ch chan<- prometheus.Metric) { c.s.collect(ch) }

// MetricsHandler serves the metrics in the Prometheus text format: at
// GET /metrics of the API, or on a separate address of its own
// (Options.MetricsElsewhere).
func (s *Server) MetricsHandler() http.Handler { return s.promHandler }

// statusWriter remembers the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe records the latency of a request answered with sw's status.
func (s *Server) observe(r *http.Request, sw *statusWriter, start time.Time) {
	route := r.Pattern
	if route == "" || route == "/" {
		route = routeOther
		if _, ok := s.exact[r.URL.Path]; ok {
			route = r.URL.Path // refused before dispatch (rate limits)
		}
	}
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	s.latency.WithLabelValues(route, statusText(code)).Observe(time.Since(start).Seconds())
}

// statusTexts are the status codes as label values, made once: the hot
// path formats none.
var statusTexts = func() (t [600]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(code int) string {
	if code >= 100 && code < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}

// statusWriters recycles the status recorders of requests.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// promHandlerFor serves reg; a failed collection is an error response,
// never a partial page.
func promHandlerFor(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}
