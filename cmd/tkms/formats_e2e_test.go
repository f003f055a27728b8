package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

// anyFormatPolicy is an SKR policy that releases to the simulated TEE of
// `tkms dev` in every format: SEV-SNP with its default measurement, TDX
// with its default MRTD, Azure CVM evidence of either, or an Azure
// Attestation token of the simulated instance with its default
// measurement; debug refused in all.
func anyFormatPolicy() []byte {
	b, _ := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{
		map[string]any{"authority": "snp", "allOf": []any{
			map[string]any{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
			map[string]any{"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
			map[string]any{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": hex.EncodeToString([]byte(simsnp.DefaultMeasurement))},
		}},
		map[string]any{"authority": "tdx", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "tdx"},
			map[string]any{"claim": "x-ms-attestation-type", "equals": "tdxvm"},
			map[string]any{"claim": "tdx_td_attributes_debug", "equals": false},
			map[string]any{"claim": "tdx_mrtd", "equals": hex.EncodeToString([]byte(simtdx.DefaultMRTD))},
		}},
		map[string]any{"authority": "az-snp-vtpm", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "az-snp-vtpm"},
			map[string]any{"claim": "x-ms-attestation-type", "equals": "azurevm"},
			map[string]any{"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
			map[string]any{"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
			map[string]any{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": hex.EncodeToString([]byte(simsnp.DefaultMeasurement))},
			map[string]any{"claim": "tpm_pcr7", "equals": hex.EncodeToString(simazcvm.PCR(7))},
		}},
		map[string]any{"authority": "az-tdx-vtpm", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "az-tdx-vtpm"},
			map[string]any{"claim": "x-ms-attestation-type", "equals": "azurevm"},
			map[string]any{"claim": "tdx_td_attributes_debug", "equals": false},
			map[string]any{"claim": "tdx_mrtd", "equals": hex.EncodeToString([]byte(simtdx.DefaultMRTD))},
		}},
		map[string]any{"authority": "maa", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "maa"},
			map[string]any{"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
			map[string]any{"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", "equals": false},
			map[string]any{"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement", "equals": simmaa.DefaultMeasurement},
		}},
	}})
	return b
}

// TestFetchEveryFormat: `tkms dev` with a policy naming every format
// releases to simulated TDX evidence (`tkms fetch --attester
// simulated-tdx`), simulated Azure Attestation tokens (`--attester
// simulated-maa`) and simulated Azure CVM evidence (`--attester
// simulated-az-snp`, `simulated-az-tdx`) as to simulated SEV-SNP, refuses a debug TD
// or TEE with its code, lists the formats in GET /v1/attestation, and
// `tkms attest inspect` reads real quotes and a real MAA token.
func TestFetchEveryFormat(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "tkms-dev")
	policy := writeTemp(t, "policy.json", anyFormatPolicy())
	p := startDev(t, data, "--release-policy", policy)

	resp, b := do(t, "GET", p.URL+"/v1/attestation", nil)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("Intel SGX Root CA")) {
		t.Fatalf("/v1/attestation: %d %s", resp.StatusCode, b)
	}
	var trust struct {
		Release struct {
			Formats []struct {
				Type      string   `json:"type"`
				Roots     []string `json:"roots"`
				Simulated bool     `json:"simulated_tee_trusted"`
				Refused   []string `json:"refused"`
			} `json:"formats"`
		} `json:"release"`
	}
	if err := json.Unmarshal(b, &trust); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, f := range trust.Release.Formats {
		// tkms dev trusts its simulated TEE (and simulated MAA instance) in every format.
		if len(f.Roots) == 0 || !f.Simulated || len(f.Refused) == 0 {
			t.Errorf("/v1/attestation: format %+v", f)
		}
		listed[f.Type] = true
	}
	for _, typ := range []string{"snp-aci", "snp", "tdx", "maa", "az-snp-vtpm", "az-tdx-vtpm"} {
		if !listed[typ] {
			t.Errorf("/v1/attestation lists no format %s:\n%s", typ, b)
		}
	}
	for _, attester := range []string{"simulated-tdx", "simulated", "simulated-maa", "simulated-az-snp", "simulated-az-tdx"} {
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
	stdout, _, code = runTkms(t, "fetch", "--data", data, "--attester", "simulated-maa", "--debug")
	if code == 0 || !strings.Contains(stdout, "MAA_DEBUG") {
		t.Fatalf("fetch with a debuggable MAA token: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runTkms(t, "fetch", "--data", data, "--attester", "simulated-maa", "--measurement", strings.Repeat("ee", 48))
	if code == 0 || !strings.Contains(stdout, "POLICY_DENIED") {
		t.Fatalf("fetch with another MAA measurement: exit %d\n%s", code, stdout)
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
	maaVec := func(name string) string {
		p, err := filepath.Abs(filepath.Join("../../internal/attest/maa/testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	stdout, stderr, code = runTkms(t, "attest", "inspect", "--now", "2023-03-30T12:00:00Z", "--maa-jwks", maaVec("maa-shared-rsa-keys.scrtlabs.jwks.json"), maaVec("sharedweu_L138.jwt"))
	if code != 0 || !strings.Contains(stdout, "verdict: VERIFIED") || !strings.Contains(stdout, "x-ms-isolation-tee.x-ms-compliance-status: azure-compliant-cvm") {
		t.Fatalf("inspect a real MAA token: exit %d\n%s\n%s", code, stdout, stderr)
	}
	az, err := filepath.Abs("../../internal/attest/azcvm/testdata/snp_evidence-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = runTkms(t, "attest", "inspect", "--now", "2025-06-01T00:00:00Z", az)
	if code != 0 || !strings.Contains(stdout, "verdict: VERIFIED") || !strings.Contains(stdout, "x-ms-azurevm-vmUniqueId: 26F8BC30-774E-4290-8E7A-535F3B672AEE") || !strings.Contains(stdout, "tpm_nonce: "+hex.EncodeToString([]byte("challenge"))) {
		t.Fatalf("inspect real Azure CVM evidence: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, code = runTkms(t, "attest", "inspect", "--json", vec("tdx_quote_5.dat"))
	if code == 0 || !strings.Contains(stdout, `"code": "TDX_QUOTE_VERSION_UNSUPPORTED"`) {
		t.Fatalf("inspect a v5 quote: exit %d\n%s", code, stdout)
	}
}

// TestAttestInspectEveryVector: `tkms attest inspect` reads every real
// vector of the formats beyond ACI as its file holds it (a bare TDX quote,
// Azure CVM evidence JSON of either layout, an MAA JWT with --maa-jwks),
// at a time inside its certificates' or token's validity, and prints its
// claims; the debug TD, the v5 quote, the MAA token past its exp and the
// 60 s clock skew, or without --maa-jwks, and the MAA token whose key is
// not in the set are refused with their codes.
func TestAttestInspectEveryVector(t *testing.T) {
	abs := func(dir, name string) string {
		p, err := filepath.Abs(filepath.Join("../../internal/attest", dir, "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	jwks := abs("maa", "maa-shared-rsa-keys.scrtlabs.jwks.json")
	for _, tc := range []struct {
		args             []string
		typ, code        string
		claim, claimWant string
	}{
		{[]string{"--now", "2026-01-01T00:00:00Z", abs("tdx", "tdx_quote_6.dat")}, "tdx", "", "tdx_fmspc", "00a06d080000"},
		{[]string{"--now", "2023-09-13T21:00:51Z", abs("tdx", "az_td_quote.bin")}, "tdx", "", "tdx_fmspc", "00806f050000"},
		{[]string{"--now", "2024-01-01T00:00:00Z", abs("tdx", "tdx_prod_quote_SPR_E4.dat")}, "tdx", "", "tdx_fmspc", "50806f000000"},
		{[]string{"--now", "2025-01-01T00:00:00Z", abs("tdx", "tdx_quote_4.dat")}, "tdx", "TDX_DEBUG", "tdx_td_attributes_debug", "true"},
		{[]string{abs("tdx", "tdx_quote_5.dat")}, "tdx", "TDX_QUOTE_VERSION_UNSUPPORTED", "", ""},
		{[]string{"--now", "2025-06-01T00:00:00Z", abs("azcvm", "snp_evidence-v0.json")}, "az-snp-vtpm", "", "tpm_nonce", hex.EncodeToString([]byte("challenge"))},
		{[]string{"--now", "2025-06-01T00:00:00Z", abs("azcvm", "snp_evidence-v1.json")}, "az-snp-vtpm", "", "x-ms-isolation-tee.x-ms-attestation-type", "sevsnpvm"},
		{[]string{"--now", "2025-06-01T00:00:00Z", abs("azcvm", "snp_evidence-v2.json")}, "az-snp-vtpm", "", "x-ms-attestation-type", "azurevm"},
		{[]string{"--now", "2025-06-01T00:00:00Z", abs("azcvm", "snp_evidence-genoa.json")}, "az-snp-vtpm", "", "tkms-snp-product-line", "Genoa"},
		{[]string{"--now", "2025-01-01T00:00:00Z", abs("azcvm", "tdx_evidence-v0.json")}, "az-tdx-vtpm", "", "x-ms-isolation-tee.x-ms-attestation-type", "tdxvm"},
		{[]string{"--now", "2025-01-01T00:00:00Z", abs("azcvm", "tdx_evidence-v1.json")}, "az-tdx-vtpm", "", "tdx_fmspc", "00806f050000"},
		{[]string{"--now", "2025-01-01T00:00:00Z", abs("azcvm", "tdx_evidence-v1.json")}, "az-tdx-vtpm", "", "tpm_nonce", hex.EncodeToString([]byte("challenge"))},
		{[]string{"--now", "2023-03-30T10:49:34Z", "--maa-jwks", jwks, abs("maa", "sharedweu_L138.jwt")}, "maa", "", "x-ms-isolation-tee.x-ms-compliance-status", "azure-compliant-cvm"},
		{[]string{"--now", "2023-03-30T18:50:34Z", "--maa-jwks", jwks, abs("maa", "sharedweu_L138.jwt")}, "maa", "MAA_TOKEN_EXPIRED", "", ""},
		{[]string{"--now", "2023-03-30T12:00:00Z", abs("maa", "sharedweu_L138.jwt")}, "maa", "MAA_NOT_CONFIGURED", "", ""},
		{[]string{"--maa-jwks", jwks, abs("maa", "sharedeus2_L643.jwt")}, "maa", "MAA_UNKNOWN_KID", "", ""},
	} {
		r, code := inspectJSON(t, tc.args...)
		name := filepath.Base(tc.args[len(tc.args)-1])
		if r.Evidence != tc.typ || r.Code != tc.code || (code == 0) != (tc.code == "") || r.Simulated {
			t.Errorf("inspect %s: exit %d, %+v; want %s %q", name, code, r, tc.typ, tc.code)
			continue
		}
		if tc.claim != "" && fmt.Sprint(r.Claims[tc.claim]) != tc.claimWant {
			t.Errorf("inspect %s: %s = %v, want %s", name, tc.claim, r.Claims[tc.claim], tc.claimWant)
		}
	}
}
