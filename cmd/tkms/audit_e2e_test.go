package main

// Black-box tests of `tkms audit` against real `tkms dev` processes: a
// healthy log passes over HTTP and from a mirror; a mirror, a data
// directory or a ledger file tampered with as an operator could is caught,
// each time naming what changed.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	bolt "go.etcd.io/bbolt"
)

// logKeyArg fetches the log's verifier key from GET /v1/log/key, writes it
// to a file and returns the --log-key argument naming it. (An auditor
// would confirm the key out of band.)
func logKeyArg(t *testing.T, base string) string {
	t.Helper()
	resp, body := do(t, http.MethodGet, base+"/v1/log/key", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/log/key: %s: %s", resp.Status, body)
	}
	name := filepath.Join(t.TempDir(), "log.vkey")
	if err := os.WriteFile(name, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return "@" + name
}

// logSize returns the size of the log's latest checkpoint.
func logSize(t *testing.T, base string) int64 {
	t.Helper()
	resp, body := do(t, http.MethodGet, base+"/log/checkpoint", nil)
	lines := strings.Split(string(body), "\n")
	if resp.StatusCode != http.StatusOK || len(lines) < 3 {
		t.Fatalf("GET /log/checkpoint: %s: %s", resp.Status, body)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint size %q: %v", lines[1], err)
	}
	return n
}

// runAudit runs `tkms audit args...` and checks its exit code.
func runAudit(t *testing.T, wantCode int, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := runTkms(t, append([]string{"audit"}, args...)...)
	if code != wantCode {
		t.Fatalf("tkms audit %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, stdout, stderr)
	}
	return stdout, stderr
}

// wantInOutput fails the test unless out contains every string of want.
func wantInOutput(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// bundleFile returns the only entry bundle of a mirror of fewer than 256
// entries, and its width.
func bundleFile(t *testing.T, mirror string) (name string, width int) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(mirror, "tile", "entries", "000.p", "*"))
	if err != nil || len(m) != 1 {
		t.Fatalf("entry bundles of %s: %v %v", mirror, m, err)
	}
	w, err := strconv.Atoi(filepath.Base(m[0]))
	if err != nil {
		t.Fatal(err)
	}
	return m[0], w
}

// editLeaves rewrites the leaves of an entry bundle file.
func editLeaves(t *testing.T, name string, edit func(leaves [][]byte) [][]byte) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := translog.SplitBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range leaves {
		leaves[i] = bytes.Clone(leaves[i])
	}
	var out []byte
	for _, l := range edit(leaves) {
		if out, err = translog.AppendBundleEntry(out, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(name, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// refreshKeyIndex returns the index of the first leaf recording a key
// created by /app/refresh (on governed tkms dev: reason governance:<id>),
// and the offset in it of the last byte of "governance".
func refreshKeyIndex(t *testing.T, leaves [][]byte) (int, int) {
	t.Helper()
	for i, lb := range leaves {
		l, err := ledger.UnmarshalLeaf(lb)
		if err != nil {
			t.Fatal(err)
		}
		if l.Type == ledger.TypeKeyCreated {
			if j := bytes.Index(lb, []byte(`"reason":"governance:`)); j >= 0 {
				return i, j + len(`"reason":"governance`) - 1
			}
		}
	}
	t.Fatal("no key.created entry with reason governance:<id>")
	return 0, 0
}

// unwrapRelease obtains a key from a running `tkms dev` with simulated
// evidence, as a workload would: the release is logged with its claims.
func unwrapRelease(t *testing.T, p *proc, data, hostData string) {
	t.Helper()
	if code, out := unwrap(t, p, data, hostData); code != http.StatusOK {
		t.Fatalf("/app/unwrapKey: %d: %s", code, out)
	}
}

// unwrap asks a running `tkms dev` for its oldest key with simulated
// evidence whose host data is hostData, and returns the status and body.
func unwrap(t *testing.T, p *proc, data, hostData string) (int, []byte) {
	t.Helper()
	pub := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	wrap := filepath.Join(t.TempDir(), "wrap.pem")
	if err := os.WriteFile(wrap, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	ev := readFile(t, attestSimulate(t, data, "--wrapping-key-pem", wrap, "--host-data", hostData))
	body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(ev), "wrappingKey": string(pub), "wrappedKid": allKeys(t, p.URL)[0].Kid})
	req, err := http.NewRequest(http.MethodPost, p.URL+"/app/unwrapKey?fmt=jwk", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+readDevJSON(t, data).WorkloadToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestAuditDev: a dev instance with rotations and a release passes the
// audit over HTTP and from a mirror; the mirror, tampered with, does not.
func TestAuditDev(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	hostData := strings.Repeat("ab", 32)
	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"key_release_policy": map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}}}})
	p := startDev(t, data, "--config", cfg)
	for range 3 {
		refresh(t, p.URL, p.Token)
	}
	unwrapRelease(t, p, data, hostData)
	key := logKeyArg(t, p.URL)

	// Usage and fetch errors exit 2, saying what to do.
	_, otherKey, err := translog.GenerateKey("another.example/log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kms", p.URL}, "tkms audit: --log-key is required"},
		{[]string{"--kms", p.URL, "--tiles", dir, "--log-key", key}, "tkms audit: give exactly one of --kms URL and --tiles DIR"},
		{[]string{"--kms", p.URL, "--log-key", "example.com+00000000+AQ=="}, "tkms audit: "},
		{[]string{"--kms", p.URL, "--log-key", otherKey}, "check --log-key"},
		{[]string{"--kms", "http://127.0.0.1:1", "--log-key", key}, "check --kms and try again"},
		{[]string{"--tiles", filepath.Join(dir, "nothing"), "--log-key", key}, "not a directory"},
	} {
		_, stderr := runAudit(t, 2, tc.args...)
		wantInOutput(t, "stderr of tkms audit "+strings.Join(tc.args, " "), stderr, tc.want)
	}

	stateFile := filepath.Join(dir, "audit-state.json")
	stdout, stderr := runAudit(t, 0, "--kms", p.URL, "--log-key", key, "--state", stateFile)
	wantInOutput(t, "audit report", stdout, "result: PASS", "releases: 1 (1 on simulated evidence)", "key.created            4")
	wantInOutput(t, "audit stderr", stderr, "saved to "+stateFile)
	if got := perm(t, stateFile); got != 0o600 {
		t.Errorf("state file mode %v, want 0600", got)
	}

	// Mirror, then audit the mirror offline.
	mirror := filepath.Join(dir, "mirror")
	stdout, _ = runAudit(t, 0, "--kms", p.URL, "--log-key", key, "--mirror", mirror, "--json", "--state", stateFile)
	var report struct {
		Checkpoint struct{ Size int64 }
		Violations []any
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil || report.Checkpoint.Size < 10 || len(report.Violations) != 0 {
		t.Fatalf("--json report: %v\n%s", err, stdout)
	}
	runAudit(t, 0, "--tiles", mirror, "--log-key", key)
	p.stopClean(syscall.SIGTERM)

	name, width := bundleFile(t, mirror)
	rel, err := filepath.Rel(mirror, name)
	if err != nil {
		t.Fatal(err)
	}
	hashTile := fmt.Sprintf("tile/0/000.p/%d", width)
	for _, tc := range []struct {
		name string
		edit func(leaves [][]byte) [][]byte
		want func(leaves [][]byte) []string
	}{
		{"modified", func(ls [][]byte) [][]byte {
			i, j := refreshKeyIndex(t, ls)
			ls[i][j] = 'i' // "governanci"
			return ls
		}, func(ls [][]byte) []string {
			i, _ := refreshKeyIndex(t, ls)
			return []string{fmt.Sprintf("entry seq %d (key.created): leaf %d does not match the log's leaf hash in %s: modified after it was logged", i+1, i, hashTile)}
		}},
		{"dropped", func(ls [][]byte) [][]byte {
			return append(ls[:3], ls[4:]...)
		}, func([][]byte) []string {
			return []string{
				fmt.Sprintf("entry bundle %s holds %d entries, want %d: entries were dropped", filepath.ToSlash(rel), width-1, width),
				"leaf 3 holds entry seq 5, want seq 4: an entry was dropped, added or reordered",
			}
		}},
		{"swapped", func(ls [][]byte) [][]byte {
			ls[3], ls[5] = ls[5], ls[3]
			return ls
		}, func([][]byte) []string {
			return []string{"leaf 3 holds entry seq 6, want seq 4", "leaf 5 holds entry seq 4, want seq 6"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := filepath.Join(t.TempDir(), "m")
			copyTree(t, mirror, m)
			orig, err := translog.SplitBundle(readFile(t, filepath.Join(m, rel)))
			if err != nil {
				t.Fatal(err)
			}
			editLeaves(t, filepath.Join(m, rel), tc.edit)
			before := readFile(t, stateFile)
			stdout, stderr := runAudit(t, 1, "--tiles", m, "--log-key", key, "--state", stateFile)
			wantInOutput(t, "audit of the tampered mirror", stdout, tc.want(orig)...)
			wantInOutput(t, "audit of the tampered mirror", stdout, "result: FAIL")
			wantInOutput(t, "stderr", stderr, "violations in the log of")
			if !bytes.Equal(before, readFile(t, stateFile)) {
				t.Error("the state file changed after a failed audit")
			}
			// --quiet prints the violations alone.
			stdout, _ = runAudit(t, 1, "--tiles", m, "--log-key", key, "--quiet")
			wantInOutput(t, "audit --quiet", stdout, tc.want(orig)...)
			if strings.Contains(stdout, "result:") || strings.Contains(stdout, "entries by type") {
				t.Errorf("audit --quiet printed more than the violations:\n%s", stdout)
			}
		})
	}
}

// copyTree copies the directory tree src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

// TestAuditRollback: an operator who restores an old copy of the data
// directory is caught by an auditor who saw the newer log.
func TestAuditRollback(t *testing.T) {
	dir := t.TempDir()
	data, old := filepath.Join(dir, "data"), filepath.Join(dir, "old")
	stateFile := filepath.Join(dir, "state.json")
	p := startDev(t, data)
	refresh(t, p.URL, p.Token)
	key := logKeyArg(t, p.URL)
	p.stopClean(syscall.SIGTERM)
	copyDir(t, data, old)

	p = startDev(t, data)
	refresh(t, p.URL, p.Token)
	refresh(t, p.URL, p.Token)
	newSize := logSize(t, p.URL)
	runAudit(t, 0, "--kms", p.URL, "--log-key", key, "--state", stateFile)
	p.stopClean(syscall.SIGTERM)

	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	copyDir(t, old, data)
	p = startDev(t, data)
	oldSize := logSize(t, p.URL)
	stdout, _ := runAudit(t, 1, "--kms", p.URL, "--log-key", key, "--state", stateFile)
	wantInOutput(t, "audit of the rolled back log", stdout, fmt.Sprintf("the log shrank from %d to %d entries: rollback", newSize, oldSize))
	p.stopClean(syscall.SIGTERM)
}

// TestAuditFork: two copies of one data directory grow apart to the same
// size; an auditor who saw one is shown the other.
func TestAuditFork(t *testing.T) {
	dir := t.TempDir()
	data, a, b := filepath.Join(dir, "data"), filepath.Join(dir, "a"), filepath.Join(dir, "b")
	p := startDev(t, data)
	key := logKeyArg(t, p.URL)
	p.stopClean(syscall.SIGTERM)
	copyDir(t, data, a)
	copyDir(t, data, b)
	pa, pb := startDev(t, a), startDev(t, b)
	refresh(t, pa.URL, pa.Token)
	refresh(t, pb.URL, pb.Token)
	for range 10 {
		na, nb := logSize(t, pa.URL), logSize(t, pb.URL)
		if na == nb {
			break
		}
		if na < nb {
			refresh(t, pa.URL, pa.Token)
		} else {
			refresh(t, pb.URL, pb.Token)
		}
	}
	size := logSize(t, pa.URL)
	if logSize(t, pb.URL) != size {
		t.Fatal("the two logs do not reach the same size")
	}
	stateFile := filepath.Join(dir, "state.json")
	runAudit(t, 0, "--kms", pa.URL, "--log-key", key, "--state", stateFile)
	stdout, _ := runAudit(t, 1, "--kms", pb.URL, "--log-key", key, "--state", stateFile)
	wantInOutput(t, "audit of the other branch", stdout, fmt.Sprintf("the log forked: its %d entries now have root", size))

	// The branch that grows on is caught too.
	refresh(t, pb.URL, pb.Token)
	stdout, _ = runAudit(t, 1, "--kms", pb.URL, "--log-key", key, "--state", stateFile)
	wantInOutput(t, "audit of the other branch, grown", stdout, fmt.Sprintf("the log's first %d entries now hash to root", size))
	pa.stopClean(syscall.SIGTERM)
	pb.stopClean(syscall.SIGTERM)
}

// TestAuditModifiedLedger: one byte of an entry changed in the stopped
// instance's ledger file, with a valid checksum, is named by the audit once
// the instance serves it again.
func TestAuditModifiedLedger(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startDev(t, data)
	refresh(t, p.URL, p.Token)
	refresh(t, p.URL, p.Token)
	key := logKeyArg(t, p.URL)
	runAudit(t, 0, "--kms", p.URL, "--log-key", key)
	p.stopClean(syscall.SIGTERM)

	var seq uint64
	updateLedger(t, filepath.Join(data, "ledger.db"), func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, err := ledger.UnmarshalRecord(v)
			if err != nil {
				return err
			}
			if e.Type != ledger.TypeKeyCreated || !bytes.Contains(e.Body, []byte(`"reason":"governance:`)) {
				continue
			}
			e.Body = bytes.Replace(e.Body, []byte(`"reason":"governance:`), []byte(`"reason":"governanci:`), 1)
			seq = binary.BigEndian.Uint64(k)
			return b.Put(bytes.Clone(k), ledger.MarshalRecord(e))
		}
		return fmt.Errorf("no key.created entry with reason governance:<id>")
	})

	p = startDev(t, data)
	size := logSize(t, p.URL)
	stdout, _ := runAudit(t, 1, "--kms", p.URL, "--log-key", key)
	wantInOutput(t, "audit of the modified ledger", stdout,
		fmt.Sprintf("entry seq %d (key.created): leaf %d does not match the log's leaf hash in tile/0/000.p/%d: modified after it was logged", seq, seq-1, size),
		"the log's entries hash to root")
	p.stopClean(syscall.SIGTERM)
}
