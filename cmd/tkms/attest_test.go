package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
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

// snpVector is the absolute path of a real test vector of internal/attest/snp
// (see ../../internal/attest/snp/testdata/PROVENANCE.md); runTkms runs in a
// temporary directory.
func snpVector(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("../../internal/attest/snp/testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeTemp writes b to a new file in a temporary directory and returns its
// path.
func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// virteeReport is virtee's Milan report, stored as hex text, as binary.
func virteeReport(t *testing.T) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(readFile(t, snpVector(t, "virtee_report_milan.hex")))), ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 1184 {
		t.Fatalf("virtee report: %d bytes", len(b))
	}
	return b
}

// rawSNPFile writes the attestation object {"type":"snp",...} to a file.
func rawSNPFile(t *testing.T, report, vcek, certTable []byte) string {
	t.Helper()
	obj := map[string]any{"type": "snp", "report": base64.StdEncoding.EncodeToString(report)}
	if vcek != nil {
		obj["vcek"] = base64.StdEncoding.EncodeToString(vcek)
	}
	if certTable != nil {
		obj["cert_table"] = base64.StdEncoding.EncodeToString(certTable)
	}
	p := filepath.Join(t.TempDir(), "snp.json")
	writeJSONFile(t, p, obj)
	return p
}

// checkRawSNPOutput checks the text verdict of verified raw SNP evidence:
// the evidence line, the report's hash, no UVM endorsement, and the claims
// one per line, sorted.
func checkRawSNPOutput(t *testing.T, what, out, signer string, report []byte) {
	t.Helper()
	sum := sha256.Sum256(report[:0x2A0]) // the signed part
	for _, want := range []string{
		"verdict: VERIFIED\nevidence: snp, " + signer + "-signed, Milan, AMD root (pinned)\n",
		"report_sha256: " + hex.EncodeToString(sum[:]) + "\nclaims:\n",
		"  x-ms-attestation-type: sevsnpvm\n",
		"  x-ms-sevsnpvm-is-debuggable: false\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q:\n%s", what, want, out)
		}
	}
	for _, bad := range []string{"uvm", "SIMULATED", "x-ms-compliance-status"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s: output has %q:\n%s", what, bad, out)
		}
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "  ") {
			names = append(names, strings.SplitN(strings.TrimSpace(line), ":", 2)[0])
		}
	}
	if len(names) != 21 {
		t.Errorf("%s: printed %d claims, want the report's 20 and the evidence type: %v", what, len(names), names)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("%s: claims not sorted: %q before %q", what, names[i-1], names[i])
		}
	}
}

// TestAttestInspectRawSNP: real bare-metal reports with their VCEK/VLEK
// verify against the pinned AMD roots, given as --report/--vcek files or as
// the {"type":"snp"} attestation object the release service accepts, and
// print their claims; the go-sev-guest DEBUG sample is refused.
func TestAttestInspectRawSNP(t *testing.T) {
	virtee := writeTemp(t, "virtee_report_milan.bin", virteeReport(t))
	vlekNow := []string{"--now", "2025-06-01T00:00:00Z", "--max-vmpl", "1"} // the VLEK is valid 2024-12-10..2025-12-10
	for _, tc := range []struct {
		name, report, vcek, signer string
		extra                      []string
		vmpl                       float64
	}{
		{"trustee VCEK", snpVector(t, "trustee_test-report.bin"), snpVector(t, "trustee_test-vcek.der"), "VCEK", nil, 0},
		{"virtee VCEK", virtee, snpVector(t, "virtee_vcek_milan.der"), "VCEK", nil, 0},
		{"trustee VLEK", snpVector(t, "trustee_test-vlek-report.bin"), snpVector(t, "trustee_test-vlek.der"), "VLEK", vlekNow, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := readFile(t, tc.report)
			args := append([]string{"attest", "inspect", "--report", tc.report, "--vcek", tc.vcek}, tc.extra...)
			out, errOut, code := runTkms(t, args...)
			if code != 0 {
				t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
			}
			checkRawSNPOutput(t, "--report/--vcek", out, tc.signer, report)
			if want := fmt.Sprintf("  x-ms-sevsnpvm-vmpl: %d\n", int(tc.vmpl)); !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}

			// The same evidence as an attestation object, VCEK/VLEK in DER
			// and in PEM: the same verdict.
			der := readFile(t, tc.vcek)
			pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
			for _, cert := range [][]byte{der, pemCert} {
				obj := rawSNPFile(t, report, cert, nil)
				jout, errOut, code := runTkms(t, append([]string{"attest", "inspect", obj}, tc.extra...)...)
				if code != 0 || jout != out {
					t.Errorf("inspect {\"type\":\"snp\"}: exit %d, output differs from --report/--vcek:\n%s\nstderr:\n%s", code, jout, errOut)
				}
			}

			r, code := inspectJSON(t, append([]string{"--report", tc.report, "--vcek", tc.vcek}, tc.extra...)...)
			sum := sha256.Sum256(report[:0x2A0]) // the signed part
			if code != 0 || !r.Verified || r.Simulated || r.Evidence != "snp" || r.Signer != tc.signer || r.ProductLine != "Milan" ||
				r.ReportSHA256 != hex.EncodeToString(sum[:]) || r.UVMSigned != nil || r.Claims["x-ms-sevsnpvm-vmpl"] != tc.vmpl {
				t.Errorf("inspect --json: exit %d, %+v", code, r)
			}
		})
	}

	// The VLEK report is VMPL1: refused by default, and its VLEK does not
	// chain outside its validity.
	vlekReport, vlek := snpVector(t, "trustee_test-vlek-report.bin"), snpVector(t, "trustee_test-vlek.der")
	for _, tc := range []struct {
		args []string
		code string
	}{
		{[]string{"--now", "2025-06-01T00:00:00Z"}, "VMPL_TOO_HIGH"},
		{[]string{"--now", "2025-12-11T00:00:00Z", "--max-vmpl", "1"}, "CERT_CHAIN_INVALID"},
		{[]string{"--now", "2024-12-01T00:00:00Z", "--max-vmpl", "1"}, "CERT_CHAIN_INVALID"},
	} {
		if r, code := inspectJSON(t, append([]string{"--report", vlekReport, "--vcek", vlek}, tc.args...)...); code != 1 || r.Verified || r.Code != tc.code {
			t.Errorf("VLEK report %v: exit %d, %+v; want 1 and %s", tc.args, code, r, tc.code)
		}
	}

	// go-sev-guest's sample is signed correctly but its guest policy allows
	// debugging.
	debugReport := writeTemp(t, "gosevguest_report.bin", readFile(t, snpVector(t, "gosevguest_attestation.bin"))[:1184])
	debugVCEK := snpVector(t, "gosevguest_vcek.testcer")
	out, errOut, code := runTkms(t, "attest", "inspect", "--report", debugReport, "--vcek", debugVCEK)
	if code != 1 || !strings.Contains(out, "verdict: NOT VERIFIED\ncode: POLICY_DEBUG\n") || !strings.Contains(errOut, "POLICY_DEBUG") || strings.Contains(out, "claims") {
		t.Errorf("go-sev-guest DEBUG sample: exit %d, want 1 and POLICY_DEBUG\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	debugObj := rawSNPFile(t, readFile(t, debugReport), readFile(t, debugVCEK), nil)
	if r, code := inspectJSON(t, debugObj); code != 1 || r.Verified || r.Evidence != "snp" || r.Code != "POLICY_DEBUG" {
		t.Errorf("go-sev-guest DEBUG sample as {\"type\":\"snp\"}: exit %d, %+v", code, r)
	}

	trustee, trusteeVCEK := readFile(t, snpVector(t, "trustee_test-report.bin")), readFile(t, snpVector(t, "trustee_test-vcek.der"))
	// A flipped MEASUREMENT byte breaks the signature; another chip's VCEK
	// does not sign this report.
	flipped := bytes.Clone(trustee)
	flipped[0x90] ^= 1
	for _, tc := range []struct {
		name, file, code string
	}{
		{"flipped measurement", rawSNPFile(t, flipped, trusteeVCEK, nil), "REPORT_SIGNATURE_INVALID"},
		{"another chip's VCEK", rawSNPFile(t, trustee, readFile(t, snpVector(t, "virtee_vcek_milan.der")), nil), ""},
		{"vcek and cert_table", rawSNPFile(t, trustee, trusteeVCEK, []byte("table")), "REPORT_MALFORMED"},
		{"neither vcek nor cert_table", rawSNPFile(t, trustee, nil, nil), "REPORT_MALFORMED"},
		{"report not base64", writeTemp(t, "bad.json", []byte(`{"type":"snp","report":"!!","vcek":"AA=="}`)), "REPORT_MALFORMED"},
		{"report one byte short", rawSNPFile(t, trustee[:1183], trusteeVCEK, nil), "REPORT_MALFORMED"},
	} {
		if r, code := inspectJSON(t, tc.file); code != 1 || r.Verified || r.Evidence != "snp" || r.Code == "" || (tc.code != "" && r.Code != tc.code) {
			t.Errorf("%s: exit %d, %+v; want 1 and %s", tc.name, code, r, tc.code)
		}
	}

	// An extended report's certificate table (GCP, VCEK in the table).
	var gcp struct {
		Evidence []struct {
			Blob string `json:"blob"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal(readFile(t, snpVector(t, "eternisai_sevsnp_attestation_gcp.json")), &gcp); err != nil {
		t.Fatal(err)
	}
	blob, err := base64.StdEncoding.DecodeString(gcp.Evidence[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	r, code := inspectJSON(t, "--now", "2026-03-25T22:20:06Z", rawSNPFile(t, blob[:1184], nil, blob[1184:]))
	if code != 0 || !r.Verified || r.Evidence != "snp" || r.Signer != "VCEK" || r.Simulated {
		t.Errorf("cert_table: exit %d, %+v", code, r)
	}

	// Usage: FILE or --report with --vcek.
	report := snpVector(t, "trustee_test-report.bin")
	vcek := snpVector(t, "trustee_test-vcek.der")
	for _, args := range [][]string{
		{"--report", report, "--vcek", vcek, rawSNPFile(t, trustee, trusteeVCEK, nil)},
		{"--report", report},
		{"--vcek", vcek},
		{},
	} {
		if _, errOut, code := runTkms(t, append([]string{"attest", "inspect"}, args...)...); code != 2 {
			t.Errorf("attest inspect %v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
	}
	if _, errOut, code := runTkms(t, "attest", "inspect", "--report", filepath.Join(t.TempDir(), "missing.bin"), "--vcek", vcek); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing --report file: exit %d, stderr %q", code, errOut)
	}
}

// TestAttestInspectRawSNPSimulated: a simulated report with its VCEK as a
// {"type":"snp"} object verifies only with --data, and is loudly SIMULATED.
func TestAttestInspectRawSNPSimulated(t *testing.T) {
	dir := t.TempDir()
	measurement := strings.Repeat("ab", 48)
	ev := attestSimulate(t, dir, "--measurement", measurement)
	var bundle map[string]string
	if err := json.Unmarshal(readFile(t, ev), &bundle); err != nil {
		t.Fatal(err)
	}
	report, err := base64.StdEncoding.DecodeString(bundle["evidence"])
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := base64.StdEncoding.DecodeString(bundle["endorsements"])
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(chainPEM) // the VCEK comes first
	if block == nil {
		t.Fatal("endorsements: no PEM")
	}
	obj := rawSNPFile(t, report, chainPEM, nil)
	out, errOut, code := runTkms(t, "attest", "inspect", "--data", dir, obj)
	if code != 0 || !strings.HasPrefix(out, "SIMULATED: not a TEE") || !strings.Contains(out, "evidence: snp, VCEK-signed, Milan, SIMULATED root\n") ||
		!strings.Contains(out, "  x-ms-sevsnpvm-launchmeasurement: "+measurement+"\n") || strings.Contains(out, "uvm") {
		t.Errorf("inspect --data {\"type\":\"snp\"}: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	vcek := writeTemp(t, "vcek.der", block.Bytes)
	rep := writeTemp(t, "report.bin", report)
	if r, code := inspectJSON(t, "--report", rep, "--vcek", vcek, "--data", dir); code != 0 || !r.Verified || !r.Simulated || r.Evidence != "snp" {
		t.Errorf("inspect --report --vcek --data: exit %d, %+v", code, r)
	}
	if r, code := inspectJSON(t, obj); code != 1 || r.Verified || r.Code != "CERT_CHAIN_INVALID" {
		t.Errorf("inspect without --data: exit %d, %+v", code, r)
	}
}
