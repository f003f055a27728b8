package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestDevGoverned: a new dev data directory is governed by one dev member
// whose key is kept in it and named in dev.json. After a restart on another
// port the dev member has moved the trust to the issuer's new URL (a
// proposal, accepted at once under the dev constitution), so the new
// workload token authenticates without the configuration changing the
// ledger; --release-policy on the governed directory is refused.
func TestDevGoverned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := startDev(t, dir)
	p.waitOutput(p.stdout, regexp.MustCompile(`tkms dev: governed by the dev member [0-9a-f]{64}`))
	var info struct {
		MemberKey string `json:"member_key"`
		MemberID  string `json:"member_id"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &info)
	if info.MemberKey != filepath.Join(dir, "member.key") || len(info.MemberID) != 64 {
		t.Fatalf("dev.json: member_key %q member_id %q", info.MemberKey, info.MemberID)
	}
	if m := perm(t, info.MemberKey); m != 0o600 {
		t.Fatalf("member.key mode %v", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "member.pub")); err != nil {
		t.Fatal(err)
	}
	auth := func(what, base string) {
		t.Helper()
		d := readDevJSON(t, dir)
		resp, body := do(t, http.MethodGet, base+"/app/auth", http.Header{"Authorization": {"Bearer " + d.WorkloadToken}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: GET /app/auth: %s: %s", what, resp.Status, body)
		}
	}
	auth("first start", p.URL)
	p.stopClean(syscall.SIGTERM)

	p2 := startDev(t, dir)
	d := readDevJSON(t, dir)
	resp, body := do(t, http.MethodGet, p2.URL+"/app/jwtValidationPolicy", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), d.IssuerURL) || strings.Contains(string(body), p.URL+"/dev/oidc") {
		t.Fatalf("jwt validation policy after restart (issuer %s): %s: %s", d.IssuerURL, resp.Status, body)
	}
	auth("after a restart on another port", p2.URL)
	if !strings.Contains(p2.stderr.String(), "was accepted") {
		t.Errorf("no accepted proposal of the dev member in the log:\n%s", p2.stderr)
	}
	p2.stopClean(syscall.SIGTERM)
	p2.checkLogs()

	policy := writeTemp(t, "policy.json", []byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`))
	_, errOut, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", dir, "--release-policy", policy)
	if code == 0 || !strings.Contains(errOut, "propose it") {
		t.Fatalf("--release-policy on a governed directory: exit %d, stderr:\n%s", code, errOut)
	}
}
