package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/policy"
)

// Seconds is a duration that travels in JSON as a number of seconds, as the
// Azure-compatible policies do. Fractions are allowed (tests use them).
type Seconds time.Duration

// MarshalJSON writes the duration as seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(s).Seconds(), 'f', -1, 64)), nil
}

// UnmarshalJSON reads a number of seconds.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("want a number of seconds: %w", err)
	}
	if f < 0 || f > 100*365*24*3600 {
		return fmt.Errorf("seconds out of range: %v", f)
	}
	*s = Seconds(time.Duration(f * float64(time.Second)))
	return nil
}

// D returns s as a time.Duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

// RotationPolicy says how often keys rotate and how long each phase of a
// key's life lasts (docs/lifecycle.md).
type RotationPolicy struct {
	// RotationInterval is how long a key is the primary key.
	RotationInterval Seconds `json:"rotation_interval_seconds"`
	// GracePeriod is how long a retired key is still released.
	GracePeriod Seconds `json:"grace_period_seconds"`
	// PublishDelay is how long a new key is fetchable by services before
	// it is advertised to clients.
	PublishDelay Seconds `json:"publish_delay_seconds"`
	// Retention is how long an expired key's private material is kept
	// before it is destroyed.
	Retention Seconds `json:"retention_seconds"`
	// Suite names the HPKE suite of new keys.
	Suite string `json:"suite"`
}

// DefaultRotationPolicy returns DEPA's defaults: rotation every 31 days and
// 7 days of grace. The publish delay follows the DEPA KMS's "exposure delay"
// (a key is advertised once it is a grace period old); material is kept 7
// days after expiry.
func DefaultRotationPolicy() RotationPolicy {
	const day = Seconds(24 * time.Hour)
	return RotationPolicy{
		RotationInterval: 31 * day,
		GracePeriod:      7 * day,
		PublishDelay:     7 * day,
		Retention:        7 * day,
		Suite:            keys.X25519.Name,
	}
}

// MaxOverlap bounds publish delay plus grace period in rotation intervals.
const MaxOverlap = 40

// Validate checks the policy.
func (p RotationPolicy) Validate() error {
	var errs []error
	if p.RotationInterval <= 0 {
		errs = append(errs, errors.New("rotation_interval_seconds must be positive"))
	}
	if p.GracePeriod < 0 || p.PublishDelay < 0 || p.Retention < 0 {
		errs = append(errs, errors.New("grace_period_seconds, publish_delay_seconds and retention_seconds must not be negative"))
	}
	// Every key holds one of the 90 numeric ids until it expires, so the
	// keys alive at once, about (publish delay + interval + grace) /
	// interval, must leave room: forced rotations and a margin use the rest.
	if p.RotationInterval > 0 && p.PublishDelay+p.GracePeriod > MaxOverlap*p.RotationInterval {
		errs = append(errs, fmt.Errorf("publish_delay_seconds + grace_period_seconds must be at most %d rotation intervals (the 90 numeric ids must suffice)", MaxOverlap))
	}
	if _, err := keys.ParseSuite(p.Suite); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("key rotation policy: %w", err)
	}
	return nil
}

// Settings is the settings policy served at /app/settingsPolicy.
type Settings struct {
	Service ServiceSettings `json:"service"`
	// Attestation holds the floors every release's evidence must meet
	// (minimum REPORTED_TCB per product line, minimum UVM SVN); nil means
	// policy.DefaultAttestation(). See AttestationInForce.
	Attestation *policy.Attestation `json:"attestation,omitempty"`
}

// AttestationInForce returns the attestation settings in force: s's own,
// or the defaults when it sets none.
func (s Settings) AttestationInForce() policy.Attestation {
	if s.Attestation == nil {
		return policy.DefaultAttestation()
	}
	return *s.Attestation
}

// Equal reports whether two settings policies say the same.
func (s Settings) Equal(o Settings) bool {
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}

// Validate checks the attestation settings, if any.
func (s Settings) Validate() error {
	if s.Attestation == nil {
		return nil
	}
	return s.Attestation.Validate()
}

// ServiceSettings describes the service.
type ServiceSettings struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Version     string `json:"version"`
	Debug       bool   `json:"debug"`
}
