package release

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/state"
)

// DenialInterval is the least time between two release.denied entries for
// one caller and error code: a caller cannot flood the ledger with
// refusals, and every refusal is still counted (Suppressed).
const DenialInterval = time.Minute

// maxDenialKeys bounds the rate limiter's memory; past it the limiter
// forgets (and so may write one more entry per caller).
const maxDenialKeys = 10000

type denialKey struct{ iss, oid, api, code string }

type denialState struct {
	last       time.Time
	suppressed uint64
}

type denials struct {
	mu sync.Mutex
	m  map[denialKey]*denialState
}

// denied records, rate-limited, that an authenticated caller was refused
// with err (nil: not refused). Unauthenticated failures are never recorded:
// anyone could cause them. A failure to record is logged, not returned: the
// caller is refused either way.
func (s *Service) denied(ctx context.Context, id *jwtauth.Identity, api string, err error) {
	if err == nil || id == nil {
		return
	}
	var re *Error
	code := CodeUnavailable
	if errors.As(err, &re) {
		code = re.Code
	}
	if code == CodeUnavailable || code == CodeServerBusy {
		return // our failure (or load), not the caller's
	}
	k := denialKey{id.Issuer, id.OID, api, code}
	now := s.cfg.KMS.Now()
	s.denials.mu.Lock()
	if s.denials.m == nil || len(s.denials.m) >= maxDenialKeys {
		s.denials.m = map[denialKey]*denialState{}
	}
	st := s.denials.m[k]
	if st == nil {
		st = &denialState{}
		s.denials.m[k] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < DenialInterval {
		st.suppressed++
		s.denials.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	s.denials.mu.Unlock()
	d := state.ReleaseDenied{Issuer: id.Issuer, Identity: id.OID, API: api, Code: code, Suppressed: suppressed}
	if err := s.cfg.KMS.RecordDenial(context.WithoutCancel(ctx), d); err != nil {
		s.log.Warn("cannot record a release denial", "code", code, "err", err)
	}
}
