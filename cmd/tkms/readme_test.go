package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/keys"
)

// readmeCurlLines returns the commands of README.md's section "The API,
// with curl": the curl lines, and the tkms lines (go run ./cmd/tkms ...).
func readmeCurlLines(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			inSection = line == "## The API, with curl"
		case inSection && strings.HasPrefix(line, "```"):
			inBlock = !inBlock
		case inSection && inBlock && (strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "go run ./cmd/tkms ")):
			lines = append(lines, line)
		}
	}
	if len(lines) < 5 {
		t.Fatalf("found %d curl lines in README.md; the section moved?", len(lines))
	}
	return lines
}

// TestReadmeCurl runs every curl line of the README against a real `tkms dev`
// started as the README says (data in ./tkms-dev), so the examples stay true.
func TestReadmeCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed; .ci/run installs it")
		}
		t.Skip("curl is not installed")
	}
	lines := readmeCurlLines(t)
	wd := t.TempDir()
	p := startDev(t, filepath.Join(wd, "tkms-dev"))
	for _, line := range lines {
		cmdline := strings.ReplaceAll(line, "http://127.0.0.1:8000", p.URL) + " --fail --show-error"
		if tkms, ok := strings.CutPrefix(line, "go run ./cmd/tkms "); ok {
			cmdline = tkmsBin + " " + tkms
		}
		cmd := exec.Command("sh", "-c", cmdline)
		cmd.Dir = wd
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README: %s\n%v\n%s", line, err, out)
			continue
		}
		if len(out) == 0 && !strings.Contains(line, " -o ") {
			t.Errorf("README: %s printed nothing", line)
		}
	}
	if fi, err := os.Stat(filepath.Join(wd, "ohttp-keys.bin")); err != nil || fi.Size() < 43 {
		t.Errorf("README's ohttp-keys.bin: %v", err)
	}
	p.stopClean(syscall.SIGINT)
}

// readmeBlock returns the first sh block of the README section titled title.
func readmeBlock(t *testing.T, title string) string {
	t.Helper()
	return docBlock(t, "../../README.md", "## "+title)
}

// TestReadmeReleaseSession runs the README's release session, as written,
// against a real `tkms dev`: it must print the released key item, whose
// private key belongs to the key the server published.
func TestReadmeReleaseSession(t *testing.T) {
	needTools(t, "curl", "jq", "openssl", "base64")
	block := readmeBlock(t, "Release a key, as a service in a TEE would (dev)")
	wd := t.TempDir()
	p := startDev(t, filepath.Join(wd, "tkms-dev"))
	if resp, b := do(t, "GET", p.URL+"/v1/attestation", nil); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"simulated_tee_trusted":true`)) {
		t.Fatalf("/v1/attestation of dev: %d %s", resp.StatusCode, b)
	}
	script := strings.ReplaceAll(block, "http://127.0.0.1:8000", p.URL)
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = wd
	cmd.Env = append(tkmsEnv(), "PATH="+filepath.Dir(tkmsBin)+":"+os.Getenv("PATH")) // tkms as go install puts it
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("README session: %v\n%s\n%s", err, out, stderr.String())
	}
	// The session works in a temporary directory: no key lands in the clone.
	if ents, _ := os.ReadDir(wd); len(ents) != 1 {
		t.Errorf("the README session wrote into the working directory: %v", ents)
	}
	var item keys.Item
	if err := json.Unmarshal(out, &item); err != nil || item.D == "" {
		t.Fatalf("README session printed %q, want a key item with d", out)
	}
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	pub := allKeys(t, p.URL)[0].PublicKey
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		t.Fatal("the README session's key does not match the published public key")
	}
	p.stopClean(syscall.SIGINT)
}
