package httpapi

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPrometheusMetrics: /metrics is the Prometheus registry's page: the
// request latency histogram by route and status code, the Go and process
// collectors, tkms_build_info, open proposals, extra collectors, and the
// metrics of before (names the docs and alerts rely on) unchanged.
func TestPrometheusMetrics(t *testing.T) {
	e := newGovEnv(t, 3, 2)
	resp, body := e.postCOSE("/v1/gov/proposals", e.propose(0, e.clock.Now(), releaseChange(strings.Repeat("ab", 32))))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("proposal: %s %s", resp.Status, body)
	}
	e.get("/app/listpubkeys")
	e.get("/no/such/path")
	extra := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tkms_test_extra", Help: "An extra collector."})
	extra.Set(42)
	srv := httptest.NewServer(New(e.svc, Options{Logger: slog.New(slog.DiscardHandler), Version: "v9.9.9", Collectors: []prometheus.Collector{extra}}))
	defer srv.Close()
	for _, p := range []string{"/app/listpubkeys", "/nope", "/app/listpubkeys"} {
		r, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	r, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	m := string(b)
	for _, want := range []string{
		`tkms_http_request_duration_seconds_count{code="200",route="/app/listpubkeys"} 2` + "\n",
		`tkms_http_request_duration_seconds_count{code="404",route="other"} 1` + "\n",
		`tkms_http_request_duration_seconds_bucket{code="200",route="/app/listpubkeys",le="+Inf"} 2` + "\n",
		`tkms_build_info{goversion="go`, `version="v9.9.9"} 1` + "\n",
		"\ngo_goroutines ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
		"\ntkms_proposals_open 1\n", "\ntkms_governed 1\n", "\ntkms_test_extra 42\n",
		"# TYPE tkms_store_write_failed gauge\ntkms_store_write_failed 0\n",
		`tkms_keys{phase="published"} 1` + "\n",
		`tkms_http_errors_total{code="NOT_FOUND"} 1` + "\n",
		"# TYPE tkms_releases_total counter\n",
		`tkms_limit_rate{limit="address"} 0` + "\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(m)
	}
}

// TestHealthEndpoints: /livez answers while the process runs; /readyz only
// once a key is published and the Ready hook agrees.
func TestHealthEndpoints(t *testing.T) {
	e := newEnv(t, nil, true) // no key yet
	if resp, _ := e.get("/livez"); resp.StatusCode != http.StatusOK {
		t.Errorf("/livez: %s", resp.Status)
	}
	resp, body := e.get("/readyz")
	wantError(t, resp, body, http.StatusServiceUnavailable, CodeNotReady)
	e.tick()
	if resp, body := e.get("/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz with a key: %s %s", resp.Status, body)
	}
	behind := httptest.NewServer(New(e.svc, Options{Logger: slog.New(slog.DiscardHandler), MetricsElsewhere: true,
		Ready: func() error { return errBehind }}))
	defer behind.Close()
	for path, want := range map[string]int{"/readyz": http.StatusServiceUnavailable, "/metrics": http.StatusNotFound, "/livez": http.StatusOK} {
		r, err := behind.Client().Get(behind.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != want || (path == "/readyz" && !strings.Contains(string(b), errBehind.Error())) {
			t.Errorf("%s: %s %s, want %d", path, r.Status, b, want)
		}
	}
}

var errBehind = errors.New("3 entries behind the cluster's leader")
