package state

import (
	"encoding/json"
	"testing"
	"time"
)

// TestRotationPolicyDefaults: the deployed DEPA KMS's rotation policy has
// no publish delay and no suite; the publish delay is then the grace
// period (its "exposure delay") and the suite the one decoded into.
func TestRotationPolicyDefaults(t *testing.T) {
	for _, tc := range []struct {
		in           string
		base         RotationPolicy
		publishDelay time.Duration
		suite        string
	}{
		{`{"rotation_interval_seconds":3600,"grace_period_seconds":5}`, RotationPolicy{}, 5 * time.Second, "x25519"},
		{`{"rotation_interval_seconds":3600,"grace_period_seconds":5}`, RotationPolicy{Suite: "p256"}, 5 * time.Second, "p256"},
		{`{"rotation_interval_seconds":3600,"grace_period_seconds":5,"publish_delay_seconds":0}`, RotationPolicy{}, 0, "x25519"},
		{`{"rotation_interval_seconds":3600,"publish_delay_seconds":7,"suite":"mlkem768-x25519"}`, RotationPolicy{Suite: "p256"}, 7 * time.Second, "mlkem768-x25519"},
	} {
		p := tc.base
		if err := json.Unmarshal([]byte(tc.in), &p); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if p.PublishDelay.D() != tc.publishDelay || p.Suite != tc.suite || p.RotationInterval.D() != time.Hour {
			t.Errorf("%s onto %+v: %+v; want publish delay %v, suite %s", tc.in, tc.base, p, tc.publishDelay, tc.suite)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", tc.in, err)
		}
	}
	var p RotationPolicy
	if err := json.Unmarshal([]byte(`{"rotation_interval_seconds":1,"grace":5}`), &p); err == nil {
		t.Error("an unknown member was accepted")
	}
	d := DefaultRotationPolicy()
	b, _ := json.Marshal(d)
	var back RotationPolicy
	if err := json.Unmarshal(b, &back); err != nil || back != d {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
