package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// attestSimulate runs `tkms attest simulate --data dir args...` and writes
// the evidence to a file, whose path it returns.
func attestSimulate(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, code := runTkms(t, append([]string{"attest", "simulate", "--data", dir}, args...)...)
	if code != 0 {
		t.Fatalf("tkms attest simulate %v: exit %d: %s", args, code, errOut)
	}
	var obj map[string]string
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("tkms attest simulate: not JSON: %v\n%s", err, out)
	}
	for _, f := range []string{"evidence", "endorsements", "uvm_endorsements", "endorsed_tcb"} {
		if obj[f] == "" {
			t.Fatalf("tkms attest simulate: no %q in %s", f, out)
		}
	}
	f, err := os.CreateTemp(t.TempDir(), "evidence-*.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(out); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// inspectJSON runs `tkms attest inspect --json args...`.
func inspectJSON(t *testing.T, args ...string) (inspection, int) {
	t.Helper()
	out, errOut, code := runTkms(t, append([]string{"attest", "inspect", "--json"}, args...)...)
	var r inspection
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("tkms attest inspect --json %v: exit %d: %v\nstdout:\n%s\nstderr:\n%s", args, code, err, out, errOut)
	}
	return r, code
}

// TestAttestSimulateInspect: evidence from `tkms attest simulate --data D`
// verifies with `tkms attest inspect --data D` and is loudly SIMULATED;
// without --data it is refused, with the error code of the failed check.
func TestAttestSimulateInspect(t *testing.T) {
	dir := t.TempDir()
	measurement := strings.Repeat("ab", 48)
	hostData := strings.Repeat("cd", 32)
	reportData := "0102030405"
	ev := attestSimulate(t, dir, "--measurement", measurement, "--host-data", hostData, "--report-data", reportData)

	out, errOut, code := runTkms(t, "attest", "inspect", "--data", dir, ev)
	if code != 0 {
		t.Fatalf("inspect --data: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"SIMULATED: not a TEE",
		"verdict: VERIFIED",
		"x-ms-sevsnpvm-launchmeasurement: " + measurement + "\n",
		"x-ms-sevsnpvm-hostdata: " + hostData + "\n",
		"x-ms-sevsnpvm-reportdata: " + reportData + strings.Repeat("0", 128-len(reportData)) + "\n",
		"uvm_endorsements-feed: SIMULATED-AMD-UVM\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect --data: output lacks %q:\n%s", want, out)
		}
	}
	// Claims come one per line, sorted.
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "  ") {
			names = append(names, strings.SplitN(strings.TrimSpace(line), ":", 2)[0])
		}
	}
	if len(names) < 20 {
		t.Errorf("inspect printed %d claims: %v", len(names), names)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("claims not sorted: %q before %q", names[i-1], names[i])
		}
	}
	// The flag may also come after the file.
	r, code := inspectJSON(t, ev, "--data", dir)
	if code != 0 || !r.Verified || !r.Simulated || r.Claims["x-ms-sevsnpvm-launchmeasurement"] != measurement {
		t.Errorf("inspect --json FILE --data: exit %d, %+v", code, r)
	}

	// Without --data the simulated chain is just an unknown chain.
	out, errOut, code = runTkms(t, "attest", "inspect", ev)
	if code != 1 || !strings.Contains(out, "verdict: NOT VERIFIED\ncode: CERT_CHAIN_INVALID\n") || !strings.Contains(errOut, "CERT_CHAIN_INVALID") || strings.Contains(out, "SIMULATED") {
		t.Errorf("inspect without --data: exit %d, want 1 and CERT_CHAIN_INVALID\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if r, code := inspectJSON(t, ev); code != 1 || r.Verified || r.Code != "CERT_CHAIN_INVALID" {
		t.Errorf("inspect --json without --data: exit %d, %+v", code, r)
	}
	// Another directory's simulated chain is not this one's.
	other := t.TempDir()
	attestSimulate(t, other)
	if r, code := inspectJSON(t, "--data", other, ev); code != 1 || r.Code != "CERT_CHAIN_INVALID" {
		t.Errorf("inspect with another directory's chain: exit %d, %+v", code, r)
	}
}

// TestAttestSimulateDebugRejected: --debug evidence is signed correctly and
// still refused for its guest policy.
func TestAttestSimulateDebugRejected(t *testing.T) {
	dir := t.TempDir()
	ev := attestSimulate(t, dir, "--debug")
	r, code := inspectJSON(t, "--data", dir, ev)
	if code != 1 || r.Verified || r.Code != "POLICY_DEBUG" {
		t.Errorf("inspect of --debug evidence: exit %d, %+v; want 1 and POLICY_DEBUG", code, r)
	}
}

// TestAttestSimulateWrappingKey: --wrapping-key-pem binds the exact bytes of
// the file, as /app/key and /app/unwrapKey check it.
func TestAttestSimulateWrappingKey(t *testing.T) {
	dir := t.TempDir()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pemFile := filepath.Join(t.TempDir(), "wrap.pem")
	if err := os.WriteFile(pemFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	ev := attestSimulate(t, dir, "--wrapping-key-pem", pemFile)
	r, code := inspectJSON(t, "--data", dir, ev)
	if code != 0 || !r.Verified {
		t.Fatalf("inspect: exit %d, %+v", code, r)
	}
	sum := sha256.Sum256(pemBytes)
	rd, _ := r.Claims["x-ms-sevsnpvm-reportdata"].(string)
	if !strings.HasPrefix(rd, hex.EncodeToString(sum[:])) {
		t.Errorf("reportdata %s does not begin with SHA-256 of the PEM file %x", rd, sum)
	}
	// The PEM without its final newline is another key as far as the
	// binding goes.
	trimmed := sha256.Sum256(pemBytes[:len(pemBytes)-1])
	if strings.HasPrefix(rd, hex.EncodeToString(trimmed[:])) {
		t.Errorf("reportdata matches the PEM without its trailing newline")
	}

	for _, args := range [][]string{
		{"--wrapping-key-pem", pemFile, "--report-data", "00"},
		{"--measurement", "abcd"},
		{"--host-data", "zz"},
		{"--report-data", strings.Repeat("00", 65)},
	} {
		_, errOut, code := runTkms(t, append([]string{"attest", "simulate", "--data", dir}, args...)...)
		if code != 2 {
			t.Errorf("attest simulate %v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
	}
}

// TestAttestInspectRealACI: the real ACI sample verifies against the pinned
// AMD roots and Microsoft's UVM endorser, and is not called simulated.
func TestAttestInspectRealACI(t *testing.T) {
	sample, err := filepath.Abs("testdata/aci_snp.json")
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runTkms(t, "attest", "inspect", sample)
	if code != 0 {
		t.Fatalf("inspect %s: exit %d\nstdout:\n%s\nstderr:\n%s", sample, code, out, errOut)
	}
	for _, want := range []string{
		"verdict: VERIFIED",
		"x-ms-sevsnpvm-hostdata: 73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20\n",
		"uvm_endorsements-feed: ContainerPlat-AMD-UVM\n",
		"x-ms-compliance-status: azure-compliant-uvm\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect real sample: output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "SIMULATED") {
		t.Errorf("real evidence reported as simulated:\n%s", out)
	}
	// Trusting a simulated chain as well changes nothing for it.
	dir := t.TempDir()
	attestSimulate(t, dir)
	if r, code := inspectJSON(t, "--data", dir, sample); code != 0 || !r.Verified || r.Simulated {
		t.Errorf("real sample with --data: exit %d, %+v", code, r)
	}
	// --now sets the time certificates are checked at: before the VCEK was
	// issued, the chain is invalid.
	if r, code := inspectJSON(t, "--now", "2020-01-01T00:00:00Z", sample); code != 1 || r.Code != "CERT_CHAIN_INVALID" {
		t.Errorf("real sample at 2020: exit %d, %+v", code, r)
	}
	// A flipped MEASUREMENT byte breaks the report signature.
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	report, err := base64.StdEncoding.DecodeString(obj["evidence"].(string))
	if err != nil {
		t.Fatal(err)
	}
	report[0x90] ^= 1
	obj["evidence"] = base64.StdEncoding.EncodeToString(report)
	flipped := filepath.Join(t.TempDir(), "flipped.json")
	writeJSONFile(t, flipped, obj)
	if r, code := inspectJSON(t, flipped); code != 1 || r.Code != "REPORT_SIGNATURE_INVALID" {
		t.Errorf("flipped measurement: exit %d, %+v", code, r)
	}
	if _, errOut, code := runTkms(t, "attest", "inspect", filepath.Join(t.TempDir(), "missing.json")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
}
