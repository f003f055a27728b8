package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

// anyFormatPolicy is an SKR policy that releases to the simulated TEE of
// `tkms dev` in either format: SEV-SNP with its default measurement, or
// TDX with its default MRTD; debug refused in both.
func anyFormatPolicy() []byte {
	b, _ := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{
		map[string]any{"authority": "snp", "allOf": []any{
			map[string]any{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
			map[string]any{"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
			map[string]any{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": hex.EncodeToString([]byte(simsnp.DefaultMeasurement))},
		}},
		map[string]any{"authority": "tdx", "allOf": []any{
			map[string]any{"claim": "x-ms-attestation-type", "equals": "tdxvm"},
			map[string]any{"claim": "tdx_td_attributes_debug", "equals": false},
			map[string]any{"claim": "tdx_mrtd", "equals": hex.EncodeToString([]byte(simtdx.DefaultMRTD))},
		}},
	}})
	return b
}

// TestFetchTDX: `tkms dev` with a policy naming both formats releases to
// simulated TDX evidence (`tkms fetch --attester simulated-tdx`) as to
// simulated SEV-SNP, refuses a debug TD with its code, lists the tdx format
// in GET /v1/attestation, and `tkms attest inspect --data` reads both the
// simulated and a real quote.
func TestFetchTDX(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "tkms-dev")
	policy := writeTemp(t, "policy.json", anyFormatPolicy())
	p := startDev(t, data, "--release-policy", policy)

	if resp, b := do(t, "GET", p.URL+"/v1/attestation", nil); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"type":"tdx"`)) || !bytes.Contains(b, []byte("Intel SGX Root CA")) {
		t.Fatalf("/v1/attestation: %d %s", resp.StatusCode, b)
	}
	for _, attester := range []string{"simulated-tdx", "simulated"} {
		stdout, stderr, code := runTkms(t, "fetch", "--data", data, "--attester", attester)
		if code != 0 || !strings.Contains(stdout, "release receipts verified against the log key: 1") {
			t.Fatalf("fetch --attester %s: exit %d\n%s\n%s", attester, code, stdout, stderr)
		}
	}
	stdout, _, code := runTkms(t, "fetch", "--data", data, "--attester", "simulated-tdx", "--debug")
	if code == 0 || !strings.Contains(stdout, "TDX_DEBUG") {
		t.Fatalf("fetch of a debug TD: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runTkms(t, "fetch", "--data", data, "--attester", "simulated-tdx", "--measurement", strings.Repeat("ee", 48))
	if code == 0 || !strings.Contains(stdout, "POLICY_DENIED") {
		t.Fatalf("fetch with another MRTD: exit %d\n%s", code, stdout)
	}
	p.stopClean(syscall.SIGINT)

	vec := func(name string) string {
		p, err := filepath.Abs(filepath.Join("../../internal/attest/tdx/testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	stdout, stderr, code := runTkms(t, "attest", "inspect", "--now", "2025-01-01T00:00:00Z", vec("az_td_quote.bin"))
	if code != 0 || !strings.Contains(stdout, "verdict: VERIFIED") || !strings.Contains(stdout, "Intel SGX root (pinned)") || !strings.Contains(stdout, "tdx_fmspc: 00806f050000") {
		t.Fatalf("inspect a real quote: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, code = runTkms(t, "attest", "inspect", "--now", "2025-01-01T00:00:00Z", vec("tdx_quote_4.dat"))
	if code == 0 || !strings.Contains(stdout, "code: TDX_DEBUG") || !strings.Contains(stdout, "tdx_td_attributes_debug: true") {
		t.Fatalf("inspect a debug TD: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runTkms(t, "attest", "inspect", "--json", vec("tdx_quote_5.dat"))
	if code == 0 || !strings.Contains(stdout, `"code": "TDX_QUOTE_VERSION_UNSUPPORTED"`) {
		t.Fatalf("inspect a v5 quote: exit %d\n%s", code, stdout)
	}
}
