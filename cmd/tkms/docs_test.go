package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// docBlock returns the first sh block after the heading line `heading`
// (e.g. "## Verify by hand") of the markdown file path.
func docBlock(t *testing.T, path, heading string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no heading %q", path, heading)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("%s: section %q has no sh block", path, heading)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("%s: unterminated sh block", path)
	}
	return block
}

// needTools skips the test (or fails it in CI, where .ci/run installs
// them) when a command-line tool is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; .ci/run installs it", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
}

// TestTransparencyByHand runs docs/transparency.md's "Verify by hand"
// block, as written, against a real `tkms dev`: generic tools alone verify
// the checkpoint's signature and find leaf 0 in the log's hashes.
func TestTransparencyByHand(t *testing.T) {
	needTools(t, "curl", "openssl", "base64", "od", "awk", "cmp")
	block := docBlock(t, "../../docs/transparency.md", "## Verify by hand")
	wd := t.TempDir()
	p := startDev(t, filepath.Join(wd, "tkms-dev"))
	script := strings.ReplaceAll(block, "http://127.0.0.1:8000", p.URL)
	run := func(script string) (string, error) {
		cmd := exec.Command("sh", "-e", "-c", script)
		cmd.Dir = wd
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"Signature Verified Successfully", "leaf 0 is in the log's hashes", `"type":"genesis"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("the block printed no %q:\n%s", want, out)
		}
	}
	// The same steps over a note whose size line was altered must fail:
	// the signature check is real.
	bad := strings.ReplaceAll(script, "awk '/^$/{exit} {print}' checkpoint > note.txt",
		"awk '/^$/{exit} {print}' checkpoint | sed '2s/^/1/' > note.txt")
	if bad == script {
		t.Fatal("the block no longer extracts note.txt as this test expects")
	}
	if out, err := run(bad); err == nil {
		t.Fatalf("a checkpoint with an altered size verified:\n%s", out)
	}
	p.stopClean(syscall.SIGINT)
}

// TestReadmeAudit runs the README's audit command against a real `tkms dev`
// started as the README says: it passes and remembers the checkpoint.
func TestReadmeAudit(t *testing.T) {
	needTools(t, "jq")
	block := readmeBlock(t, "Command line")
	if !strings.HasPrefix(block, "tkms audit ") {
		t.Fatalf("the README's first command-line example is no longer the audit:\n%s", block)
	}
	wd := t.TempDir()
	p := startDev(t, filepath.Join(wd, "tkms-dev"))
	script := strings.ReplaceAll(block, "http://127.0.0.1:8000", p.URL)
	script = tkmsBin + strings.TrimPrefix(script, "tkms")
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = wd
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README audit: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(wd, "audit.json")); err != nil {
		t.Fatalf("the audit saved no state: %v\n%s", err, out)
	}
	p.stopClean(syscall.SIGINT)
}

// TestReadmeGoSnippet compiles the README's Go client snippet (its
// variables declared around it), so the documented API stays the real one.
func TestReadmeGoSnippet(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "\n## The Go client package and `tkms fetch`\n")
	if !ok {
		t.Fatal("README has no section on the Go client package")
	}
	_, rest, ok = strings.Cut(rest, "```go\n")
	if !ok {
		t.Fatal("the README's client section has no go block")
	}
	snippet, _, _ := strings.Cut(rest, "```")
	src := `package main

import (
	"context"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/ohttp"
)

func main() {
	ctx := context.Background()
	var kmsURL, logKey string
	var body, response []byte
` + snippet + `	_, _, _ = plaintext, reply, err
}
`
	file := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "vet", file)
	cmd.Dir = "."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's Go snippet does not compile: %v\n%s\n%s", err, out, src)
	}
}
