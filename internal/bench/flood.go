package bench

import (
	"bytes"
	"context"
	"crypto/hpke"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// ScenarioFlood measures public-key serving under a flood of invalid
// releases (issue 8): the scenario's own operations are public-key reads
// (as pubkeys, best at a fixed --rate), while Config.FloodWorkers
// goroutines send, each as fast as it is answered, releases with a valid
// token and evidence that fails at the most expensive step: a real
// simulated report, signature and UVM endorsement valid and the policy
// satisfied, whose REPORT_DATA binds another wrapping key than the one
// sent (400 WRAPPING_KEY_HASH_MISMATCH after the full verification).
const ScenarioFlood = "flood"

// DefaultFloodWorkers is the flood's goroutines when Config.FloodWorkers
// is 0.
const DefaultFloodWorkers = 32

// maxFloodAddrs bounds the loopback source addresses of the flood.
const maxFloodAddrs = 8

// FloodReport is what the flood saw in the measured time.
type FloodReport struct {
	Workers int `json:"workers"`
	// PacedPerSec is the flood rate asked for (Config.FloodRate); 0 if
	// each worker sent as soon as its last request was answered.
	PacedPerSec float64 `json:"paced_per_s,omitempty"`
	Request     string  `json:"request"`
	// SourceAddrs are the local addresses the flood came from (empty:
	// the system's choice, one address).
	SourceAddrs []string `json:"source_addrs"`
	// Offered requests were sent in the measured time; Answered of them
	// got an HTTP answer (the rest were in flight at its end, or got
	// Transport errors). Each worker sends its next request as soon as
	// the last is answered.
	Offered        uint64  `json:"offered"`
	Answered       uint64  `json:"answered"`
	OfferedPerSec  float64 `json:"offered_per_s"`
	AnsweredPerSec float64 `json:"answered_per_s"`
	// ByStatus counts answers by HTTP status; ByCode by
	// x-ms-kms-error-code.
	ByStatus map[string]uint64 `json:"by_status"`
	ByCode   map[string]uint64 `json:"by_code"`
	// OK counts 200 answers (there must be none); BadShape answers that
	// are not a 4xx or 503 with the JSON error shape (none either);
	// Transport requests without an answer.
	OK        uint64 `json:"ok"`
	BadShape  uint64 `json:"bad_shape"`
	Transport uint64 `json:"transport_errors"`
	// FirstBad describes the first answer counted in BadShape or OK.
	FirstBad string  `json:"first_bad,omitempty"`
	Latency  Latency `json:"latency"` // of answers
}

// flood is the flood's state during a run.
type flood struct {
	workers int
	every   time.Duration // each worker's interval between sends; 0: none
	path    string
	name    string
	body    []byte
	token   string
	addrs   []string
	clients []*http.Client

	mu       sync.Mutex
	rep      FloodReport
	hist     *Histogram
	measured func(time.Time) bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// setupFlood prepares the flood's request: the primary key's release, an
// X25519 wrapping key, and simulated evidence binding another one.
func setupFlood(ctx context.Context, r *runner, cfg Config, sc *scenario) error {
	att, err := devtee.NewAttester(cfg.DataDir, devtee.AttesterOptions{})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	ts, err := devtee.NewTokenSource(cfg.DataDir, devtee.TokenOptions{})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	tok, err := ts.Token(ctx)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	kem, err := hpke.NewKEM(keys.KEMX25519HKDFSHA256)
	if err != nil {
		return err
	}
	sent, err := kem.GenerateKey()
	if err != nil {
		return err
	}
	other, err := kem.GenerateKey()
	if err != nil {
		return err
	}
	bind := wrap.V1BindingHash(wrap.CanonicalHPKE(keys.KEMX25519HKDFSHA256, other.PublicKey().Bytes()))
	ev, err := att.Attest(ctx, reportData(bind))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	body, err := json.Marshal(map[string]any{
		"attestation":  ev.Attestation,
		"wrapping_key": map[string]any{"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(sent.PublicKey().Bytes())},
	})
	if err != nil {
		return err
	}
	f := &flood{
		workers: cfg.FloodWorkers, body: body, token: "Bearer " + tok,
		path: "/v1/keys/" + url.PathEscape(sc.primary()) + "/release", name: "POST /v1/keys/{kid}/release",
		hist: NewHistogram(),
		rep:  FloodReport{ByStatus: map[string]uint64{}, ByCode: map[string]uint64{}},
	}
	if f.workers <= 0 {
		f.workers = DefaultFloodWorkers
	}
	if cfg.FloodRate > 0 {
		f.every = time.Duration(float64(f.workers) / cfg.FloodRate * float64(time.Second))
	}
	f.addrs = floodAddrs(cfg.URL, f.workers)
	if len(f.addrs) == 0 {
		f.clients = []*http.Client{r.floodClient(cfg, "")}
	}
	for _, a := range f.addrs {
		f.clients = append(f.clients, r.floodClient(cfg, a))
	}
	if len(f.addrs) > 0 {
		r.progressf("the flood comes from %d loopback addresses, %s to %s", len(f.addrs), f.addrs[0], f.addrs[len(f.addrs)-1])
	}
	// One sample: the evidence must pass verification and fail on the
	// binding, the last and most expensive check.
	status, code, _, err := f.send(ctx, r, f.clients[0])
	if err != nil {
		return fmt.Errorf("bench: sample flood request: %w", err)
	}
	if status != http.StatusBadRequest || code != "WRAPPING_KEY_HASH_MISMATCH" {
		return fmt.Errorf("bench: the sample flood request was answered %d %s, want 400 WRAPPING_KEY_HASH_MISMATCH (evidence verified, binding wrong)", status, code)
	}
	sc.flood = f
	return nil
}

// floodAddrs returns the loopback source addresses of the flood: on
// Linux, against a 127.0.0.0/8 server, 127.0.0.2 and up (all of 127/8 is
// the loopback interface's), as many as workers, at most maxFloodAddrs;
// each is tried once. Otherwise none.
func floodAddrs(base string, workers int) []string {
	u, err := url.Parse(base)
	if err != nil || runtime.GOOS != "linux" {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || ip[0] != 127 {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	var out []string
	for i := 2; i < 2+min(workers, maxFloodAddrs); i++ {
		a := fmt.Sprintf("127.0.0.%d", i)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(a)}, Timeout: time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort(host, port))
		if err != nil {
			return out
		}
		c.Close()
		out = append(out, a)
	}
	return out
}

// floodClient returns an HTTP client whose connections come from local
// address from ("": any).
func (r *runner) floodClient(cfg Config, from string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	tr := r.hc.Transport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	return &http.Client{Transport: tr, Timeout: cfg.Timeout}
}

// send sends one flood request and classifies its answer. It returns the
// status and error code, and a description if the answer is not a
// refusal of the expected shape.
func (f *flood) send(ctx context.Context, r *runner, c *http.Client) (status int, code, bad string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL+f.path, bytes.NewReader(f.body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", f.token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return 0, "", "", err
	}
	status, code = resp.StatusCode, resp.Header.Get("x-ms-kms-error-code")
	var eb api.ErrorResponse
	switch {
	case status == http.StatusOK:
		bad = "200 OK: the flood's invalid release was granted"
	case !(status >= 400 && status < 500) && status != http.StatusServiceUnavailable:
		bad = fmt.Sprintf("status %d", status)
	case json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" || eb.Error.Code != code || eb.Error.Message == "":
		bad = fmt.Sprintf("status %d without the JSON error shape: %s", status, truncate(string(b), 200))
	case (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && resp.Header.Get("Retry-After") == "":
		bad = fmt.Sprintf("status %d %s without Retry-After", status, code)
	}
	return status, code, bad, nil
}

// start runs the flood's workers until ctx ends or w.end.
func (f *flood) start(ctx context.Context, r *runner, w window) {
	ctx, f.cancel = context.WithDeadline(ctx, w.end)
	f.measured = func(t time.Time) bool { return !t.Before(w.measureFrom) && t.Before(w.end) }
	f.rep.Workers, f.rep.SourceAddrs, f.rep.Request = f.workers, f.addrs, f.name
	if f.every > 0 {
		f.rep.PacedPerSec = float64(f.workers) / f.every.Seconds()
	}
	for i := range f.workers {
		c := f.clients[i%len(f.clients)]
		f.wg.Go(func() {
			hist := NewHistogram()
			var rep FloodReport
			rep.ByStatus, rep.ByCode = map[string]uint64{}, map[string]uint64{}
			// A paced worker sends at its due times, spread over the
			// interval by its index; one that fell behind (its answers
			// took longer than the interval) sends at once.
			due := time.Now().Add(f.every * time.Duration(i) / time.Duration(f.workers))
			for ctx.Err() == nil {
				if f.every > 0 {
					if d := time.Until(due); d > 0 {
						select {
						case <-ctx.Done():
							continue
						case <-time.After(d):
						}
					}
					due = due.Add(f.every)
				}
				start := time.Now()
				status, code, bad, err := f.send(ctx, r, c)
				if !f.measured(start) {
					continue
				}
				rep.Offered++
				if ctx.Err() != nil {
					continue // in flight at the end: sent, not answered
				}
				if err != nil {
					rep.Transport++
					continue
				}
				hist.Record(time.Since(start))
				rep.Answered++
				rep.ByStatus[strconv.Itoa(status)]++
				if code != "" {
					rep.ByCode[code]++
				}
				if status == http.StatusOK {
					rep.OK++
				}
				if bad != "" {
					rep.BadShape++
					if rep.FirstBad == "" {
						rep.FirstBad = bad
					}
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			f.hist.Merge(hist)
			f.rep.Offered += rep.Offered
			f.rep.Answered += rep.Answered
			f.rep.Transport += rep.Transport
			f.rep.OK += rep.OK
			f.rep.BadShape += rep.BadShape
			if f.rep.FirstBad == "" {
				f.rep.FirstBad = rep.FirstBad
			}
			for k, v := range rep.ByStatus {
				f.rep.ByStatus[k] += v
			}
			for k, v := range rep.ByCode {
				f.rep.ByCode[k] += v
			}
		})
	}
}

// stop ends the flood and reports it over the measured seconds.
func (f *flood) stop(seconds float64) *FloodReport {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.clients {
		c.CloseIdleConnections()
	}
	rep := f.rep
	if seconds > 0 {
		rep.OfferedPerSec = float64(rep.Offered) / seconds
		rep.AnsweredPerSec = float64(rep.Answered) / seconds
	}
	rep.Latency = summarize(f.hist)
	return &rep
}
