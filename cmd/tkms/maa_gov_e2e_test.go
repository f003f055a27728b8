package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// TestMAAInstancesByGovernance: `tkms dev` follows set_maa_instances
// without a restart: GET /v1/attestation lists the instance governance
// adds and drops the one it removes, the simulated instance keeps
// releasing, and `tkms audit` replays the decisions. (That tokens of a
// removed instance are refused and those of an added one accepted is
// internal/release's TestMAAFollowsGovernance.)
func TestMAAInstancesByGovernance(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "tkms-dev")
	p := startDev(t, data, "--release-policy", writeTemp(t, "policy.json", anyFormatPolicy()))
	other, err := oidcissuer.New(filepath.Join(dir, "maa"), oidcissuer.Options{URL: "https://other-maa.tkms.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	maaRoots := func() string {
		t.Helper()
		resp, b := do(t, http.MethodGet, p.URL+"/v1/attestation", nil)
		wantOK(t, "/v1/attestation", resp, b)
		var tr struct {
			Release struct {
				Formats []struct {
					Type  string   `json:"type"`
					Roots []string `json:"roots"`
				} `json:"formats"`
			} `json:"release"`
		}
		if err := json.Unmarshal(b, &tr); err != nil {
			t.Fatalf("/v1/attestation: %v\n%s", err, b)
		}
		for _, f := range tr.Release.Formats {
			if f.Type == "maa" {
				return strings.Join(f.Roots, "\n")
			}
		}
		t.Fatalf("/v1/attestation lists no maa format:\n%s", b)
		return ""
	}
	propose := func(instances ...any) {
		t.Helper()
		args, _ := json.Marshal(map[string]any{"instances": append([]any{}, instances...)})
		msg, err := devSigner(t, p).SignProposal([]gov.Action{{Name: gov.ActSetMAAInstances, Args: args}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := postCOSETest(t, p.URL+"/v1/gov/proposals", msg); resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated || !bytes.Contains(body, []byte("accepted")) {
			t.Fatalf("set_maa_instances proposal: %s: %s", resp.Status, body)
		}
	}
	fetch := func(what string) {
		t.Helper()
		stdout, stderr, code := runTkms(t, "fetch", "--data", data, "--attester", "simulated-maa")
		if code != 0 || !strings.Contains(stdout, "release receipts verified against the log key: 1") {
			t.Fatalf("fetch --attester simulated-maa, %s: exit %d\n%s\n%s", what, code, stdout, stderr)
		}
	}

	if r := maaRoots(); strings.Contains(r, "other-maa") || !strings.Contains(r, "simulated-maa") {
		t.Fatalf("MAA roots before governance: %q", r)
	}
	propose(map[string]any{"issuer": "https://other-maa.tkms.invalid", "jwks": json.RawMessage(other.JWKS())})
	if r := maaRoots(); !strings.Contains(r, "MAA instance https://other-maa.tkms.invalid") || !strings.Contains(r, "simulated-maa") {
		t.Fatalf("MAA roots after set_maa_instances: %q", r)
	}
	fetch("after an instance was added")
	propose()
	if r := maaRoots(); strings.Contains(r, "other-maa") {
		t.Fatalf("MAA roots after removing every instance: %q", r)
	}
	fetch("the simulated instance is trusted besides governance's list")
	runAudit(t, 0, "--kms", p.URL, "--log-key", logKeyArg(t, p.URL), "--quiet")
}
