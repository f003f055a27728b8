package main

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/limit"
)

// LimitsConfig is the "limits" object of the configuration: admission
// control (internal/limit; README "Limits"). Unset fields take the
// defaults below. A rate of 0 turns that rate limit off; a
// verify_concurrency of 0 turns the verification pool off.
type LimitsConfig struct {
	// PerAddressRate and PerAddressBurst limit the costly requests (every
	// POST, and GET /app/auth) per client address, in requests a second.
	PerAddressRate  *float64 `json:"per_address_rate"`
	PerAddressBurst int      `json:"per_address_burst"`
	// PerIdentityRate and PerIdentityBurst limit authenticated requests
	// per caller identity (token issuer and oid, or sub).
	PerIdentityRate  *float64 `json:"per_identity_rate"`
	PerIdentityBurst int      `json:"per_identity_burst"`
	// VerifyConcurrency evidence verifications run at once (default
	// GOMAXPROCS), VerifyQueue more wait (default 4 x concurrency), for
	// at most VerifyWaitSeconds (default 1); past that, 503 SERVER_BUSY.
	VerifyConcurrency *int     `json:"verify_concurrency"`
	VerifyQueue       *int     `json:"verify_queue"`
	VerifyWaitSeconds *float64 `json:"verify_wait_seconds"`
	// TrustedProxies are CIDR prefixes of reverse proxies whose
	// X-Forwarded-For names the client address.
	TrustedProxies []string `json:"trusted_proxies"`
	// Body caps in bytes: release requests, governance messages (at most
	// 64 KiB), anything else.
	ReleaseBodyBytes    int64 `json:"release_body_bytes"`
	GovernanceBodyBytes int64 `json:"governance_body_bytes"`
	OtherBodyBytes      int64 `json:"other_body_bytes"`
}

// The default limits (README "Limits" says why).
const (
	defaultPerAddressRate   = 100
	defaultPerAddressBurst  = 200
	defaultPerIdentityRate  = 200
	defaultPerIdentityBurst = 1000
	defaultVerifyQueueRatio = 4
	defaultVerifyWait       = time.Second
)

// admission is the admission control a LimitsConfig asks for.
type admission struct {
	perAddress, perIdentity *limit.Keyed
	verify                  *limit.Pool
	trustedProxies          []netip.Prefix
	bodies                  httpapi.BodyLimits
}

// Validate checks the limits (nil: every default).
func (l *LimitsConfig) Validate() error {
	_, err := l.admission()
	return err
}

// admission builds the limiters, reporting every problem at once.
func (l *LimitsConfig) admission() (*admission, error) {
	if l == nil {
		l = &LimitsConfig{}
	}
	var errs []error
	a := &admission{}
	rate := func(name string, p *float64, def float64, burst, defBurst int) *limit.Keyed {
		r := def
		if p != nil {
			r = *p
		}
		if burst == 0 {
			burst = defBurst
		}
		if math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
			errs = append(errs, fmt.Errorf("limits.%s_rate %v: want 0 (off) or requests per second", name, r))
			return nil
		}
		if burst < 1 {
			errs = append(errs, fmt.Errorf("limits.%s_burst %d: want at least 1", name, burst))
			return nil
		}
		k, err := limit.NewKeyed(limit.KeyedConfig{Rate: r, Burst: burst})
		if err != nil {
			errs = append(errs, fmt.Errorf("limits.%s: %w", name, err))
		}
		return k
	}
	a.perAddress = rate("per_address", l.PerAddressRate, defaultPerAddressRate, l.PerAddressBurst, defaultPerAddressBurst)
	a.perIdentity = rate("per_identity", l.PerIdentityRate, defaultPerIdentityRate, l.PerIdentityBurst, defaultPerIdentityBurst)

	pc := limit.PoolConfig{Concurrency: runtime.GOMAXPROCS(0), Wait: defaultVerifyWait}
	if l.VerifyConcurrency != nil {
		pc.Concurrency = *l.VerifyConcurrency
	}
	pc.Queue = defaultVerifyQueueRatio * pc.Concurrency
	if l.VerifyQueue != nil {
		pc.Queue = *l.VerifyQueue
	}
	if w := l.VerifyWaitSeconds; w != nil {
		if math.IsNaN(*w) || *w <= 0 || *w > 60 {
			errs = append(errs, fmt.Errorf("limits.verify_wait_seconds %v: want more than 0, at most 60", *w))
		}
		pc.Wait = time.Duration(*w * float64(time.Second))
	}
	switch {
	case pc.Concurrency < 0:
		errs = append(errs, fmt.Errorf("limits.verify_concurrency %d: want 0 (no pool) or more", pc.Concurrency))
	case pc.Queue < 0:
		errs = append(errs, fmt.Errorf("limits.verify_queue %d: want 0 or more", pc.Queue))
	default:
		var err error
		if a.verify, err = limit.NewPool(pc); err != nil {
			errs = append(errs, fmt.Errorf("limits: %w", err))
		}
	}

	var err error
	if a.trustedProxies, err = httpapi.ParseTrustedProxies(l.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("limits.trusted_proxies: %w", err))
	}
	a.bodies = httpapi.BodyLimits{Release: l.ReleaseBodyBytes, Governance: l.GovernanceBodyBytes, Other: l.OtherBodyBytes}
	for _, b := range []struct {
		name string
		v    int64
	}{{"release_body_bytes", l.ReleaseBodyBytes}, {"governance_body_bytes", l.GovernanceBodyBytes}, {"other_body_bytes", l.OtherBodyBytes}} {
		if b.v < 0 {
			errs = append(errs, fmt.Errorf("limits.%s %d: want a positive number of bytes (0: the default)", b.name, b.v))
		}
	}
	if l.GovernanceBodyBytes > gov.MaxMessageSize {
		errs = append(errs, fmt.Errorf("limits.governance_body_bytes %d: governance messages are at most %d bytes", l.GovernanceBodyBytes, gov.MaxMessageSize))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}
