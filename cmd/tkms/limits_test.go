package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLimitsConfig: the "limits" object's defaults, turning each limit off,
// and the errors Validate reports for values that cannot work.
func TestLimitsConfig(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		name    string
		json    string
		wantErr []string // substrings; none: valid
		check   func(t *testing.T, a *admission)
	}{
		{name: "defaults", json: `{}`, check: func(t *testing.T, a *admission) {
			if r, b := a.perAddress.Rate(); r != defaultPerAddressRate || b != defaultPerAddressBurst {
				t.Errorf("per address %v/%d", r, b)
			}
			if r, b := a.perIdentity.Rate(); r != defaultPerIdentityRate || b != defaultPerIdentityBurst {
				t.Errorf("per identity %v/%d", r, b)
			}
			if c := a.verify.Config(); c.Concurrency != procs || c.Queue != 4*procs || c.Wait != time.Second {
				t.Errorf("pool %+v", c)
			}
		}},
		{name: "no limits object", json: ``, check: func(t *testing.T, a *admission) {
			if a.perAddress == nil || a.perIdentity == nil || a.verify == nil {
				t.Error("a default limit is off")
			}
		}},
		{name: "off", json: `{"per_address_rate":0,"per_identity_rate":0,"verify_concurrency":0}`, check: func(t *testing.T, a *admission) {
			if a.perAddress != nil || a.perIdentity != nil || a.verify != nil {
				t.Error("a limit turned off is on")
			}
		}},
		{name: "set", json: `{"per_address_rate":2.5,"per_address_burst":5,"per_identity_rate":1,"verify_concurrency":3,"verify_queue":0,"verify_wait_seconds":0.25,
			"trusted_proxies":["10.0.0.0/8","::1"],"release_body_bytes":50000,"governance_body_bytes":1000,"other_body_bytes":100}`, check: func(t *testing.T, a *admission) {
			if r, b := a.perAddress.Rate(); r != 2.5 || b != 5 {
				t.Errorf("per address %v/%d", r, b)
			}
			if r, b := a.perIdentity.Rate(); r != 1 || b != defaultPerIdentityBurst {
				t.Errorf("per identity %v/%d", r, b)
			}
			if c := a.verify.Config(); c.Concurrency != 3 || c.Queue != 0 || c.Wait != 250*time.Millisecond {
				t.Errorf("pool %+v", c)
			}
			if len(a.trustedProxies) != 2 || a.bodies.Release != 50000 || a.bodies.Governance != 1000 || a.bodies.Other != 100 {
				t.Errorf("%+v %+v", a.trustedProxies, a.bodies)
			}
		}},
		{name: "bad", json: `{"per_address_rate":-1,"per_identity_burst":-2,"verify_concurrency":-1,"verify_wait_seconds":0,
			"trusted_proxies":["10.0.0.0/40"],"release_body_bytes":-5,"governance_body_bytes":100000}`,
			wantErr: []string{"limits.per_address_rate -1", "limits.per_identity_burst -2", "limits.verify_concurrency -1", "limits.verify_wait_seconds 0",
				"limits.trusted_proxies", "limits.release_body_bytes -5", "limits.governance_body_bytes 100000"}},
		{name: "negative queue", json: `{"verify_queue":-1}`, wantErr: []string{"limits.verify_queue -1"}},
		{name: "unknown field", json: `{"per_address_rte":1}`, wantErr: []string{"unknown field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tkms.json")
			raw := `{"data_dir":"/tmp/x"}`
			if tc.json != "" {
				raw = `{"data_dir":"/tmp/x","limits":` + tc.json + `}`
			}
			if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path)
			if err == nil {
				c.applyDefaults("json")
				err = c.Validate()
			}
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("accepted")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, err := c.Limits.admission()
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, a)
		})
	}
}

// TestReadmeLimits: the README's "limits" example is a valid configuration.
func TestReadmeLimits(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "### Limits\n")
	if !ok {
		t.Fatal("README has no Limits section")
	}
	_, block, ok := strings.Cut(rest, "```json\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the Limits section has no json block")
	}
	path := filepath.Join(t.TempDir(), "tkms.json")
	cfg := strings.Replace(block, "{", `{"data_dir":"/tmp/x",`, 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c.applyDefaults("json")
	if err := c.Validate(); err != nil {
		t.Fatalf("README limits: %v", err)
	}
	if c.Limits == nil || len(c.Limits.TrustedProxies) != 1 {
		t.Fatalf("README limits not read: %+v", c.Limits)
	}
}
