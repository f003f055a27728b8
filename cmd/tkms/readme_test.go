package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// readmeCurlLines returns the curl commands of README.md's section "The API,
// with curl".
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
		case inSection && inBlock && strings.HasPrefix(line, "curl "):
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
