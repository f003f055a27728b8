// Package bench is the load generator of `tkms bench` (issue 7): it drives
// a running KMS with one scenario — public keys, the two-step /app
// release, the /v1 release, the /v1 batch release, a mix, or public keys
// under a flood of invalid releases (flood.go) — in a closed
// loop (N workers, each starting a request when its last one ends) or an
// open loop (a fixed arrival rate; latency counted from each arrival's due
// time, so a slow server cannot hide its queue: no coordinated omission).
// It records latencies in a log-linear histogram, counts failures by
// x-ms-kms-error-code, samples the server's CPU and RSS from /proc, and
// for release scenarios measures in the same run the cryptographic floor
// of one release on this machine (floor.go) so that throughput can be
// given as a ratio to it (BENCHMARKS.md).
//
// Release scenarios need a `tkms dev` data directory: its simulated TEE
// and its OIDC issuer. The wrapping key and the evidence binding it are
// made once before the run (evidence without a nonce stays valid); every
// request is then a full release, verified and durably logged by the KMS.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The scenarios.
const (
	ScenarioPubKeys      = "pubkeys"       // GET /app/listpubkeys and GET /v1/keys, alternately
	ScenarioReleaseApp   = "release-app"   // POST /app/key, then POST /app/unwrapKey?fmt=jwk (RSA-4096)
	ScenarioReleaseV1    = "release-v1"    // POST /v1/keys/{kid}/release (HPKE X25519)
	ScenarioReleaseBatch = "release-batch" // POST /v1/release {"all_valid":true}
	ScenarioMixed        = "mixed"         // 99 % pubkeys operations, 1 % release-app
)

// Scenarios lists the scenario names.
var Scenarios = []string{ScenarioPubKeys, ScenarioReleaseApp, ScenarioReleaseV1, ScenarioReleaseBatch, ScenarioMixed, ScenarioFlood}

// BatchKeys is how many valid keys release-batch makes sure the KMS has.
const BatchKeys = 4

// Config is one run.
type Config struct {
	// URL is the KMS's base URL.
	URL string
	// Scenario is one of Scenarios.
	Scenario string
	// Workers is the number of concurrent operations: the closed loop's
	// workers, or the open loop's maximum in flight.
	Workers int
	// Rate, when positive, selects the open loop: operations per second.
	Rate float64
	// Duration is the measured time; Warmup runs the same load before it,
	// unmeasured.
	Duration, Warmup time.Duration
	// DataDir is the `tkms dev` data directory of the KMS: its simulated
	// TEE and OIDC issuer (release scenarios) and its member key (to
	// rotate keys for release-batch). Issuer URL and audience come from
	// its dev.json.
	DataDir string
	// MemberKey is the dev member's private key file ("" if none).
	MemberKey string
	// LogKey, if set, is the KMS log's verifier key: the receipts of the
	// verified sample answers are checked under it.
	LogKey string
	// ServerPID, if positive, is the server's process id, sampled from
	// /proc for CPU and RSS.
	ServerPID int
	// Progress, if not nil, gets a progress line every second.
	Progress io.Writer
	// Timeout bounds one HTTP request (default 30 s).
	Timeout time.Duration
	// TLS, if set, is the client TLS configuration for an https:// URL
	// (a private CA's roots).
	TLS *tls.Config
	// FloorTime is the minimum time spent measuring each primitive of the
	// floor (default 500 ms); FloorIterations the minimum calls (200).
	FloorTime       time.Duration
	FloorIterations int
	// FloodWorkers is the flood's goroutines (ScenarioFlood; default
	// DefaultFloodWorkers).
	FloodWorkers int
	// FloodRate, if positive, paces the flood at this many requests a
	// second in all (each worker at FloodRate/FloodWorkers, never more
	// than one request in flight); 0 sends as fast as answers come.
	FloodRate float64
}

// Latency summarises a histogram, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *Histogram) Latency {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return Latency{
		Count: h.Count(), Mean: ms(h.Mean()), Min: ms(h.Min()),
		P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)), P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)),
		Max: ms(h.Max()),
	}
}

// Server is what /proc said about the server during the measured time.
type Server struct {
	PID        int     `json:"pid"`
	CPUPercent float64 `json:"cpu_percent"` // of one CPU: 200 is two CPUs busy
	RSSMB      float64 `json:"rss_mb"`      // at the end
	RSSPeakMB  float64 `json:"rss_peak_mb"` // the largest of the samples (one a second)
}

// OpenLoop is what the open loop's schedule saw.
type OpenLoop struct {
	TargetRate float64 `json:"target_rate"`
	// Due is the number of arrivals due in the measured time; Started of
	// them were started, Unsent were dropped when the run had to end
	// (the server could not keep up: their latency is unknown).
	Due     int64 `json:"due"`
	Started int64 `json:"started"`
	Unsent  int64 `json:"unsent"`
	// Late counts arrivals started more than 1 ms after their due time
	// because every worker was busy; MaxLagMS is the largest such delay
	// (it is part of those operations' latencies).
	Late     int64   `json:"late"`
	MaxLagMS float64 `json:"max_lag_ms"`
}

// Report is the result of a run.
type Report struct {
	Scenario string  `json:"scenario"`
	URL      string  `json:"url"`
	Mode     string  `json:"mode"` // closed or open
	Workers  int     `json:"workers"`
	Seconds  float64 `json:"seconds"` // measured time
	Warmup   float64 `json:"warmup_seconds"`
	// Operations are successful operations: one release (one or two
	// requests) or one public-key read.
	Operations   uint64  `json:"operations"`
	Requests     uint64  `json:"requests"` // HTTP requests sent in the measured time
	Keys         uint64  `json:"keys,omitempty"`
	OpsPerSec    float64 `json:"ops_per_s"`
	ReqPerSec    float64 `json:"requests_per_s"`
	KeysPerSec   float64 `json:"keys_per_s,omitempty"`
	ReleasesPerS float64 `json:"releases_per_s,omitempty"`
	// Errors counts failed operations by x-ms-kms-error-code (or
	// "HTTP <status>", "transport", "BAD_ANSWER").
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code"`
	// Latency is of successful operations (a release-app operation is
	// both of its requests); Endpoints of each kind of request.
	Latency   Latency            `json:"latency"`
	Endpoints map[string]Latency `json:"endpoints"`
	// Verified is the number of answers fully checked: unwrapped and
	// compared with the published keys.
	Verified  int       `json:"verified"`
	KeysInKMS int       `json:"keys_in_kms"`
	Open      *OpenLoop `json:"open_loop,omitempty"`
	Server    *Server   `json:"server,omitempty"`
	// ClientCPUPercent is this process's CPU during the measured time:
	// the load generator shares the machine with the server.
	ClientCPUPercent float64 `json:"client_cpu_percent"`
	Floor            *Floor  `json:"floor,omitempty"`
	GOMAXPROCS       int     `json:"gomaxprocs"`
	NumCPU           int     `json:"num_cpu"`
	GoVersion        string  `json:"go_version"`

	// Flood is the flood of invalid releases of ScenarioFlood, beside
	// the public-key reads that the rest of the report measures.
	Flood *FloodReport `json:"flood,omitempty"`
}

// errAnswer marks an answer that is 200 but not what it must be.
var errAnswer = errors.New("bench: bad answer")

// codeError is a failed request, with the code it is counted under.
type codeError struct {
	code string
	msg  string
}

func (e *codeError) Error() string { return e.code + ": " + e.msg }

// errCode returns the code err is counted under.
func errCode(err error) string {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	if errors.Is(err, errAnswer) {
		return "BAD_ANSWER"
	}
	return "transport"
}

// worker is one worker's state and records. Only its goroutine uses it
// during the run.
type worker struct {
	ops       *Histogram
	endpoints map[string]*Histogram
	errs      map[string]uint64
	requests  uint64
	keys      uint64
	verified  int
	cache     map[string][]byte // request bodies by kid
}

func newWorker() *worker {
	return &worker{ops: NewHistogram(), endpoints: map[string]*Histogram{}, errs: map[string]uint64{}, cache: map[string][]byte{}}
}

// runner is the state of one run shared by the workers.
type runner struct {
	cfg     Config
	hc      *http.Client
	sc      *scenario
	workers []*worker
	// live counters for the progress line (measured time only)
	liveOps, liveReqs, liveErrs atomic.Uint64
	measuring                   atomic.Bool
	firstErr                    sync.Once
	firstErrText                atomic.Value // string
}

// Run sets the scenario up (keys, wrapping key, evidence, a verified
// sample release), measures the floor, runs the load and reports. It
// returns an error if the setup or the sample release fails; failures
// during the load are counted in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        cfg.Workers + 16,
		MaxIdleConnsPerHost: cfg.Workers + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     cfg.TLS,
	}
	defer tr.CloseIdleConnections()
	r := &runner{cfg: cfg, hc: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
	rep := &Report{
		Scenario: cfg.Scenario, URL: cfg.URL, Mode: "closed", Workers: cfg.Workers,
		ErrorsByCode: map[string]uint64{}, Endpoints: map[string]Latency{},
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(),
	}
	if cfg.Rate > 0 {
		rep.Mode = "open"
	}
	sc, err := setup(ctx, r, cfg)
	if err != nil {
		return nil, err
	}
	r.sc = sc
	rep.KeysInKMS = sc.keysInKMS
	rep.Verified = sc.verified
	if sc.floor != nil && sc.releases {
		r.progressf("measuring the crypto floor (%s) on %d goroutines", sc.floorPlan.describe(sc.floor.tokenAlg()), runtime.GOMAXPROCS(0))
		if rep.Floor, err = measureFloor(sc.floor, sc.floorPlan, sc.keysPerOp, cfg.FloorIterations, cfg.FloorTime); err != nil {
			return nil, err
		}
	}
	r.workers = make([]*worker, cfg.Workers)
	for i := range r.workers {
		r.workers[i] = newWorker()
	}

	start := time.Now()
	w := window{start: start, measureFrom: start.Add(cfg.Warmup)}
	w.end = w.measureFrom.Add(cfg.Duration)
	w.drainUntil = w.end.Add(max(time.Second, cfg.Duration/5))
	if cfg.Warmup == 0 {
		r.measuring.Store(true)
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	samplerDone := make(chan struct{})
	sampler := newProcSampler(cfg.ServerPID)
	go func() {
		defer close(samplerDone)
		r.watch(sampleCtx, w, sampler)
	}()

	op := func(ctx context.Context, id int, intended time.Time, measured bool) {
		wk := r.workers[id]
		nreq, nkeys := wk.requests, wk.keys
		err := sc.do(ctx, r, wk, measured)
		done := time.Now()
		if err != nil {
			wk.keys = nkeys // keys count for successful releases only
		}
		if !measured || (ctx.Err() != nil && err != nil) {
			// Warm-up, or interrupted: neither a success nor a failure.
			wk.requests, wk.keys = nreq, nkeys
			return
		}
		r.liveReqs.Add(wk.requests - nreq)
		if err != nil {
			wk.errs[errCode(err)]++
			r.liveErrs.Add(1)
			r.firstErr.Do(func() { r.firstErrText.Store(err.Error()) })
			return
		}
		wk.ops.Record(done.Sub(intended))
		r.liveOps.Add(1)
	}
	if sc.flood != nil {
		sc.flood.start(ctx, r, w)
	}
	var open *openStats
	var sched *schedule
	if cfg.Rate > 0 {
		sched = &schedule{start: start, rate: cfg.Rate}
		open = runOpen(ctx, cfg.Workers, sched, w, op, time.Millisecond)
	} else {
		runClosed(ctx, cfg.Workers, w, op)
	}
	finished := time.Now()
	stopSampling()
	<-samplerDone

	measuredEnd := w.end
	if finished.After(w.end) || ctx.Err() != nil {
		measuredEnd = finished
	}
	elapsed := measuredEnd.Sub(w.measureFrom)
	if elapsed <= 0 {
		return nil, fmt.Errorf("bench: interrupted before the measured time: %w", ctx.Err())
	}
	rep.Seconds = elapsed.Seconds()
	rep.Warmup = cfg.Warmup.Seconds()
	if sc.flood != nil {
		rep.Flood = sc.flood.stop(min(elapsed, cfg.Duration).Seconds())
	}
	all := NewHistogram()
	eps := map[string]*Histogram{}
	for _, wk := range r.workers {
		all.Merge(wk.ops)
		for name, h := range wk.endpoints {
			if eps[name] == nil {
				eps[name] = NewHistogram()
			}
			eps[name].Merge(h)
		}
		for c, n := range wk.errs {
			rep.ErrorsByCode[c] += n
			rep.Errors += n
		}
		rep.Requests += wk.requests
		rep.Keys += wk.keys
		rep.Verified += wk.verified
	}
	rep.Operations = all.Count()
	rep.Latency = summarize(all)
	for name, h := range eps {
		rep.Endpoints[name] = summarize(h)
	}
	rep.OpsPerSec = float64(rep.Operations) / rep.Seconds
	rep.ReqPerSec = float64(rep.Requests) / rep.Seconds
	if sc.releases {
		rep.ReleasesPerS = rep.OpsPerSec
		rep.KeysPerSec = float64(rep.Keys) / rep.Seconds
	}
	if sc.mixedReleases { // one key per release
		rep.KeysPerSec = float64(rep.Keys) / rep.Seconds
		rep.ReleasesPerS = rep.KeysPerSec
	}
	if rep.Floor != nil && rep.Floor.OpsPerSec > 0 && sc.releases {
		rep.Floor.Ratio = rep.OpsPerSec / rep.Floor.OpsPerSec
	}
	if open != nil {
		due := sched.due(w.measureFrom, w.end)
		rep.Open = &OpenLoop{
			TargetRate: cfg.Rate, Due: due, Started: open.started, Unsent: max(due-open.started, 0),
			Late: open.late, MaxLagMS: float64(open.maxLag) / float64(time.Millisecond),
		}
	}
	rep.Server, rep.ClientCPUPercent = sampler.report()
	if f := rep.Floor; f != nil && f.CPUMicrosPerOp > 0 && rep.Server != nil && rep.Server.CPUPercent > 0 && rep.OpsPerSec > 0 && sc.releases {
		f.ServerCPUMicrosPerOp = rep.Server.CPUPercent / 100 / rep.OpsPerSec * 1e6
		f.CPURatio = f.CPUMicrosPerOp / f.ServerCPUMicrosPerOp
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

func (c *Config) check() error {
	c.URL = strings.TrimRight(c.URL, "/")
	if c.URL == "" {
		return errors.New("bench: no KMS URL")
	}
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("bench: unknown scenario %q; want one of %s", c.Scenario, strings.Join(Scenarios, ", "))
	}
	if c.Workers <= 0 {
		return errors.New("bench: workers must be positive")
	}
	if c.Rate < 0 || c.Duration <= 0 || c.Warmup < 0 {
		return errors.New("bench: rate, duration and warm-up must not be negative (duration positive)")
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.FloorTime <= 0 {
		c.FloorTime = 500 * time.Millisecond
	}
	if c.FloorIterations <= 0 {
		c.FloorIterations = 200
	}
	if c.Scenario != ScenarioPubKeys && c.DataDir == "" {
		return fmt.Errorf("bench: scenario %s needs the data directory of the tkms dev at %s (its simulated TEE and token issuer)", c.Scenario, c.URL)
	}
	return nil
}

func (r *runner) progressf(format string, a ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "tkms bench: "+format+"\n", a...)
	}
}

// watch prints the progress line and samples the server every second
// until ctx is done.
func (r *runner) watch(ctx context.Context, w window, s *procSampler) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	measureTimer := time.NewTimer(time.Until(w.measureFrom))
	defer measureTimer.Stop()
	if r.cfg.Warmup > 0 {
		r.progressf("warming up for %v", r.cfg.Warmup)
	} else {
		s.begin()
	}
	var lastReqs uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			s.end()
			return
		case <-measureTimer.C:
			if r.cfg.Warmup > 0 {
				r.measuring.Store(true)
				s.begin()
				last = time.Now()
				r.progressf("measuring for %v", r.cfg.Duration)
			}
		case <-tick.C:
			now := time.Now()
			s.sample()
			if !r.measuring.Load() {
				continue
			}
			reqs := r.liveReqs.Load()
			rate := float64(reqs-lastReqs) / max(now.Sub(last).Seconds(), 1e-3)
			lastReqs, last = reqs, now
			line := fmt.Sprintf("%4.0fs  %d ops  %d requests  %.0f req/s  %d errors", now.Sub(w.measureFrom).Seconds(), r.liveOps.Load(), reqs, rate, r.liveErrs.Load())
			if e, ok := r.firstErrText.Load().(string); ok && r.liveErrs.Load() > 0 {
				line += " (first: " + truncate(e, 120) + ")"
			}
			if srv := s.last(); srv != "" {
				line += "  server " + srv
			}
			r.progressf("%s", line)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// procSampler samples the server (if its pid is known) and this process.
type procSampler struct {
	pid int
	mu  sync.Mutex
	// server and self samples at the start of the measured time and the
	// latest; peak RSS of the server.
	srv0, srv1, self0, self1 procSample
	started, srvOK           bool
	peakKiB                  int64
	lastLine                 string
}

func newProcSampler(pid int) *procSampler { return &procSampler{pid: pid} }

func (p *procSampler) begin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = true
	p.self0, _ = readProc(selfPID)
	p.self1 = p.self0
	if p.pid > 0 {
		s, err := readProc(p.pid)
		p.srvOK = err == nil
		p.srv0, p.srv1, p.peakKiB = s, s, s.rssKiB
	}
}

func (p *procSampler) sample() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	prevSrv := p.srv1
	p.self1, _ = readProc(selfPID)
	if p.srvOK {
		if s, err := readProc(p.pid); err == nil {
			p.srv1 = s
			p.peakKiB = max(p.peakKiB, s.rssKiB)
			p.lastLine = fmt.Sprintf("%.0f%% CPU, %.0f MB", cpuPercent(prevSrv, s), float64(s.rssKiB)/1024)
		}
	}
}

func (p *procSampler) end() {
	p.sample()
}

func (p *procSampler) last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastLine
}

func (p *procSampler) report() (*Server, float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	self := cpuPercent(p.self0, p.self1)
	if !p.srvOK {
		return nil, self
	}
	return &Server{
		PID: p.pid, CPUPercent: cpuPercent(p.srv0, p.srv1),
		RSSMB: float64(p.srv1.rssKiB) / 1024, RSSPeakMB: float64(p.peakKiB) / 1024,
	}, self
}

// sortedCodes returns the error codes of m, most frequent first.
func sortedCodes(m map[string]uint64) []string {
	codes := slices.Collect(maps.Keys(m))
	slices.SortFunc(codes, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return codes
}
