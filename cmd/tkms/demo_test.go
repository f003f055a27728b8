package main

import (
	"bytes"
	"crypto/hpke"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

// TestDemo runs `tkms demo` as the README tells a newcomer to: it starts
// its own KMS, narrates the 11 steps and the denial, and exits 0 only if
// each behaved as expected.
func TestDemo(t *testing.T) {
	stdout, stderr, code := runTkms(t, "demo")
	if code != 0 {
		t.Fatalf("tkms demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"1.    the KMS generates HPKE key pairs",
		"its log receipt verifies: key.created",
		"2.    the service generates a fresh wrapping key pair",
		"3.    its TEE signs an attestation report",
		"4-5.  it obtains a token",
		"6.    it sends the evidence and the token to the KMS",
		"7.    the KMS authenticated the token",
		"8.    the KMS verified the evidence and evaluated the key release policy",
		"claim x-ms-sevsnpvm-launchmeasurement",
		"9-10. the KMS wrapped the private key to WK+",
		"= REPORT_DATA[0:32] of step 3",
		"the answer's log receipt verified",
		"11.   the service unwraps the key and decrypts client requests",
		`service decrypted: {"interest_group":"cycling"`,
		"the client decrypted:",
		"POLICY_DENIED",
		"a simulated TDX quote (TD_ATTRIBUTES.DEBUG clear) obtained",
		"key.released, evidence tdx",
		"claim tdx_mrtd = " + hex.EncodeToString([]byte(simtdx.DefaultMRTD)),
		"a simulated TDX quote with TD_ATTRIBUTES.DEBUG set",
		"TDX_DEBUG",
		"every step behaved as expected",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the demo's narration lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s", stdout)
	}
}

// TestFetch runs `tkms fetch` against `tkms dev`, as a service would: the
// key it writes (only because --out asks) is the private key of the
// published public key; a service with another measurement is refused with
// the KMS's code; and nothing secret is printed.
func TestFetch(t *testing.T) {
	data := filepath.Join(t.TempDir(), "tkms-dev")
	p := startDev(t, data)
	out := filepath.Join(t.TempDir(), "keys.json")
	stdout, stderr, code := runTkms(t, "fetch", "--data", data, "--out", out)
	if code != 0 {
		t.Fatalf("tkms fetch: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"SHA-256(WK+)", "REPORT_DATA[0:32]", "oid tkms-dev-workload", "release receipts verified against the log key: 1", "written to"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("tkms fetch printed no %q:\n%s", want, stdout)
		}
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--out file: %v, mode %v", err, fi.Mode())
	}
	raw, _ := os.ReadFile(out)
	var got []fetchedKey
	if err := json.Unmarshal(raw, &got); err != nil || len(got) == 0 {
		t.Fatalf("--out file: %v\n%s", err, raw)
	}
	pub := allKeys(t, p.URL)[0]
	kem, err := hpke.NewKEM(got[0].KEM)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := kem.NewPrivateKey(got[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Kid != pub.Kid || !bytes.Equal(sk.PublicKey().Bytes(), pub.PublicKey) {
		t.Fatalf("fetched %s does not hold the private key of the published %s", got[0].Kid, pub.Kid)
	}
	if strings.Contains(stdout+stderr, string(got[0].PrivateKey)) {
		t.Fatal("tkms fetch printed key material")
	}

	stdout, _, code = runTkms(t, "fetch", "--data", data, "--measurement", strings.Repeat("ee", 48))
	if code == 0 || !strings.Contains(stdout, "POLICY_DENIED") || !strings.Contains(stdout, strings.Repeat("ee", 48)) {
		t.Fatalf("fetch with another measurement: exit %d\n%s", code, stdout)
	}
	if stdout, stderr, code := runTkms(t, "fetch", "--data", data, "--kid", pub.Kid[:8]); code != 0 || !strings.Contains(stdout, pub.Kid) {
		t.Errorf("fetch --kid with a unique prefix: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// --json: the keys obtained, no key material; the steps on stderr.
	if stdout, stderr, code := runTkms(t, "fetch", "--data", data, "--kid", pub.Kid, "--json"); code != 0 {
		t.Errorf("fetch --json: exit %d\n%s", code, stderr)
	} else if m := decodeResult(t, stdout, "ok"); len(m["keys"].([]any)) != 1 || m["keys"].([]any)[0].(map[string]any)["kid"] != pub.Kid || !strings.Contains(stderr, "11.") || strings.Contains(stdout, `"d"`) {
		t.Errorf("fetch --json: %s\nstderr:\n%s", stdout, stderr)
	}
	_, stderr, code = runTkms(t, "fetch", "--data", data, "--kid", "no-such-kid_99")
	if code == 0 || !strings.Contains(stderr, "KEY_NOT_FOUND") && !strings.Contains(stderr, "not") {
		t.Fatalf("fetch of an unknown kid: exit %d\n%s", code, stderr)
	}
	p.stopClean(syscall.SIGINT)
}
