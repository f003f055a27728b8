package client

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
)

// KeyState describes a key, without its material.
type KeyState struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   byte      `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	Phase        string    `json:"phase"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	FetchedAt    time.Time `json:"fetched_at,omitzero"`
}

// State is what a health check reports: the cached keys, the listed keys
// not cached, the last error and the counters. It holds no key material.
type State struct {
	Keys []KeyState `json:"keys"`
	// Missing lists the keys of the KMS's last list that this process
	// should hold (releasable, unexpired) but has not fetched.
	Missing []KeyState `json:"missing,omitempty"`
	// LastError is the last failure of a request to the KMS; errors.Is
	// and errors.As see its cause (a *KMSError, with Permanent, for a
	// refusal of the KMS). In JSON it is its message.
	LastError   error     `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastFetchAt time.Time `json:"last_fetch_at,omitzero"` // last successful release
	ListedAt    time.Time `json:"listed_at,omitzero"`     // last successful read of the key list
	// Fetches counts release requests made, Failures failed fetches and
	// list reads, Retries retried HTTP requests, ReceiptsVerified release
	// receipts checked against KeysConfig.LogKey, Remembered requests
	// answered with a remembered failure instead of a new request.
	Fetches          uint64 `json:"fetches"`
	Failures         uint64 `json:"failures"`
	Retries          uint64 `json:"retries"`
	ReceiptsVerified uint64 `json:"receipts_verified"`
	Remembered       uint64 `json:"remembered"`
}

// A stateError is State.LastError: the error, marshalled to JSON as its
// message.
type stateError struct{ err error }

func (e stateError) Error() string                { return e.err.Error() }
func (e stateError) Unwrap() error                { return e.err }
func (e stateError) MarshalJSON() ([]byte, error) { return json.Marshal(e.err.Error()) }

// Ready reports whether a service may take requests at now: it holds a
// key that is published at now (the one clients encrypt to), and every
// key the KMS listed as published at now is cached. For readiness probes.
func (s State) Ready(now time.Time) bool {
	ok := false
	for _, k := range s.Keys {
		if phase(now, k.NotBefore, k.NotAfter, k.ReleaseUntil) == "published" {
			ok = true
		}
	}
	for _, k := range s.Missing {
		if phase(now, k.NotBefore, k.NotAfter, k.ReleaseUntil) == "published" {
			return false
		}
	}
	return ok
}

// phase is the lifecycle phase at t of a key with these times
// (docs/lifecycle.md).
func phase(t, notBefore, notAfter, releaseUntil time.Time) string {
	switch {
	case !t.Before(releaseUntil):
		return "expired"
	case !t.Before(notAfter):
		return "retired"
	case !t.Before(notBefore):
		return "published"
	}
	return "created"
}

// State returns the cache's state for health checks. A zero Keys has the
// zero State.
func (k *Keys) State() State {
	if !k.life.made() {
		return State{Keys: []KeyState{}}
	}
	now := k.cfg.Now()
	k.mu.Lock()
	s := State{LastErrorAt: k.lastErrAt, LastFetchAt: k.lastOKAt, ListedAt: k.listedAt, Keys: []KeyState{}}
	if k.lastErr != nil {
		s.LastError = stateError{k.lastErr}
	}
	ks := make([]*Key, 0, len(k.cache))
	for _, key := range k.cache {
		ks = append(ks, key)
	}
	var missing []api.V1Key
	for kid, l := range k.listed {
		if _, ok := k.cache[kid]; !ok && releasable(l.State) && now.Before(l.ReleaseUntil) {
			missing = append(missing, l)
		}
	}
	k.mu.Unlock()
	sortKeys(ks)
	for _, key := range ks {
		s.Keys = append(s.Keys, KeyState{
			Kid: key.Kid, ID: key.ID, OHTTPKeyID: key.OHTTPKeyID, Suite: key.Suite, Phase: key.Phase(now),
			NotBefore: key.NotBefore, NotAfter: key.NotAfter, ReleaseUntil: key.ReleaseUntil, FetchedAt: key.FetchedAt,
		})
	}
	for _, l := range missing {
		s.Missing = append(s.Missing, KeyState{
			Kid: l.Kid, ID: l.ID, OHTTPKeyID: byte(l.OHTTPKeyID), Suite: l.Suite, Phase: phase(now, l.NotBefore, l.NotAfter, l.ReleaseUntil),
			NotBefore: l.NotBefore, NotAfter: l.NotAfter, ReleaseUntil: l.ReleaseUntil,
		})
	}
	slices.SortFunc(s.Missing, func(a, b KeyState) int { return strings.Compare(a.Kid, b.Kid) })
	s.Fetches, s.Failures, s.Retries, s.ReceiptsVerified = k.fetches.Load(), k.failures.Load(), k.retries.Load(), k.receipts.Load()
	s.Remembered = k.remembered.Load()
	return s
}
