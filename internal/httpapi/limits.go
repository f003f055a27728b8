package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/release"
)

// Error codes of admission control.
const (
	CodeRateLimited = release.CodeRateLimited // 429, with Retry-After
	CodeServerBusy  = release.CodeServerBusy  // 503, with Retry-After
)

// BodyLimits cap request bodies by endpoint: a body past its cap is
// answered 413 REQUEST_TOO_LARGE, naming the cap.
type BodyLimits struct {
	// Release caps POST /app/key, /app/unwrapKey, /v1/release and
	// /v1/keys/{kid}/release.
	Release int64
	// Governance caps governance messages: /v1/gov/..., /app/proposals
	// and /app/refresh. It cannot exceed gov.MaxMessageSize.
	Governance int64
	// Other caps every other request (none of which has a body to read).
	Other int64
}

// Default body caps. The largest real release body is an /app/unwrapKey of
// the ACI evidence (24.8 KB, docs/spec/attestation.md; the sample of
// microsoft/azure-privacy-sandbox-kms, internal/attest/snp/testdata) with a 4096-bit PEM wrapping
// key: about 26 KB. 96 KiB leaves 3.7 times that, for larger UVM
// endorsements and a batch of 100 kids. Governance messages are at most
// gov.MaxMessageSize (64 KiB) by their protocol.
const (
	DefaultReleaseBodyBytes    = 96 << 10
	DefaultGovernanceBodyBytes = gov.MaxMessageSize
	DefaultOtherBodyBytes      = 4 << 10
)

// DefaultBodyLimits are the default caps.
func DefaultBodyLimits() BodyLimits {
	return BodyLimits{Release: DefaultReleaseBodyBytes, Governance: DefaultGovernanceBodyBytes, Other: DefaultOtherBodyBytes}
}

// withDefaults fills unset caps.
func (b BodyLimits) withDefaults() BodyLimits {
	d := DefaultBodyLimits()
	if b.Release <= 0 {
		b.Release = d.Release
	}
	if b.Governance <= 0 || b.Governance > d.Governance {
		b.Governance = d.Governance
	}
	if b.Other <= 0 {
		b.Other = d.Other
	}
	return b
}

// bodyCap returns the cap of r's body and the name of its class.
func (s *Server) bodyCap(r *http.Request) (int64, string) {
	p := r.URL.Path
	switch {
	case p == "/app/key" || p == "/app/unwrapKey" || p == "/v1/release" ||
		(strings.HasPrefix(p, "/v1/keys/") && strings.HasSuffix(p, "/release")):
		return s.bodies.Release, "release"
	case strings.HasPrefix(p, "/v1/gov/") || p == "/app/proposals" || p == "/app/refresh":
		return s.bodies.Governance, "governance"
	}
	return s.bodies.Other, "other"
}

// costly reports whether r is subject to the per-address limit: every POST
// (releases, governance, refresh) and GET /app/auth (a token
// verification). The public-key, log and heartbeat GETs never are.
func costly(r *http.Request) bool {
	return r.Method == http.MethodPost || r.URL.Path == "/app/auth"
}

// admitAddress applies the per-address limit to a costly request,
// answering 429 RATE_LIMITED with Retry-After when the client's address is
// over its rate.
func (s *Server) admitAddress(w http.ResponseWriter, r *http.Request) bool {
	if s.perAddress == nil {
		return true
	}
	d := s.perAddress.Allow(s.clientKey(r))
	if d.Allowed {
		return true
	}
	secs := limit.RetryAfterSeconds(d.RetryAfter)
	rate, burst := s.perAddress.Rate()
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	s.fail(w, r, http.StatusTooManyRequests, CodeRateLimited,
		fmt.Sprintf("too many requests from this address: at most %g a second (bursts of %d) to release, governance and auth endpoints; retry after %d s", rate, burst, secs))
	return false
}

// clientKey is the key of r's client in the per-address limit: its
// address (an IPv6 address by its /64, which one host may hold whole).
func (s *Server) clientKey(r *http.Request) string {
	a := s.clientAddr(r)
	if !a.IsValid() {
		return r.RemoteAddr
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// clientAddr is the address of r's client: the peer's, unless the peer is
// a trusted proxy; then the rightmost X-Forwarded-For hop that is not a
// trusted proxy (hops left of it are the client's to write). A malformed
// hop ends the walk at the last good one.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	addr := parseHop(r.RemoteAddr)
	if !addr.IsValid() || !s.trustedProxy(addr) {
		return addr
	}
	hops := r.Header["X-Forwarded-For"]
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		for h != "" {
			var hop string
			if j := strings.LastIndexByte(h, ','); j >= 0 {
				h, hop = h[:j], h[j+1:]
			} else {
				h, hop = "", h
			}
			a := parseHop(strings.TrimSpace(hop))
			if !a.IsValid() {
				return addr
			}
			addr = a
			if !s.trustedProxy(a) {
				return a
			}
		}
	}
	return addr
}

// parseHop parses an address, with or without a port.
func parseHop(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies parses CIDR prefixes (or single addresses) of
// trusted reverse proxies.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return nil, fmt.Errorf("trusted proxy %q: want a CIDR prefix (10.0.0.0/8) or an address", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// limitMetrics sends the admission counters to /metrics.
func (s *Server) limitMetrics(e emitter) {
	var identity *limit.Keyed
	var pool *limit.Pool
	if s.release != nil {
		identity, pool = s.release.Admission()
	}
	keyed := []struct {
		name string
		k    *limit.Keyed
	}{{"address", s.perAddress}, {"identity", identity}}
	for _, l := range keyed {
		r, _ := l.k.Rate()
		st := l.k.Stats()
		e.gauge("tkms_limit_rate", "Sustained requests per second allowed per key (0: the limit is off).", r, "limit", l.name)
		const reqHelp = "Requests seen by a rate limit, by limit and result (allowed or limited)."
		e.counter("tkms_limit_requests_total", reqHelp, float64(st.Allowed), "limit", l.name, "result", "allowed")
		e.counter("tkms_limit_requests_total", reqHelp, float64(st.Limited), "limit", l.name, "result", "limited")
		e.gauge("tkms_limit_keys", "Keys (addresses, identities) a rate limit holds a bucket for.", float64(st.Keys), "limit", l.name)
		e.counter("tkms_limit_evictions_total", "Buckets forgotten before they were full because a rate limit held its most keys.", float64(st.Evicted), "limit", l.name)
	}
	st, cfg := pool.Stats(), pool.Config()
	e.gauge("tkms_verify_concurrency", "Most evidence verifications run at once (0: no pool).", float64(cfg.Concurrency))
	e.gauge("tkms_verify_queue_capacity", "Most requests waiting for a verification slot.", float64(cfg.Queue))
	e.gauge("tkms_verify_in_flight", "Evidence verifications in progress.", float64(st.InFlight))
	e.gauge("tkms_verify_queue", "Requests waiting for a verification slot.", float64(min(st.Waiting, cfg.Queue)))
	for _, kv := range []kv{{"admitted", st.Admitted}, {"busy", st.Busy}, {"canceled", st.Canceled}} {
		e.counter("tkms_verify_requests_total", "Requests for a verification slot, by result: admitted, busy (refused: 503 SERVER_BUSY), canceled (the client went away while waiting).", float64(kv.v), "result", kv.k)
	}
	e.counter("tkms_verify_queued_total", "Requests that waited for a verification slot (whatever came of it).", float64(st.Queued))
}
