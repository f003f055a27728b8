package main

// Helpers for the black-box tests in e2e_test.go: they build the real tkms
// binary once, run it as separate processes, talk to it over loopback HTTP
// and read its data directory.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
)

// tkmsBin is the path of the binary built by TestMain.
var tkmsBin string

// Deadlines for waiting on conditions. They bound how long a broken build
// can hang the tests; they are never assertions about speed.
const (
	startDeadline = 30 * time.Second
	exitDeadline  = 30 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tkms-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: ", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tkmsBin = filepath.Join(dir, "tkms")
	args := []string{"build", "-o", tkmsBin}
	// When the tests run under the race detector, so does the server: a
	// race in the product then shows up in its stderr (see checkLogs).
	if raceEnabled() {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build:", err)
		return 1
	}
	return m.Run()
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// tkmsEnv is the environment of every tkms process: ours, minus anything
// that would change which operator token it uses. A race-enabled tkms
// would otherwise sleep a second at every exit.
func tkmsEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TKMS_") {
			env = append(env, kv)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// logBuffer collects a process's output and lets a test wait for a line.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.changed
}

// proc is a running (or finished) tkms process.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdout *logBuffer
	stderr *logBuffer
	exited chan struct{} // closed when Wait returns
	code   int           // exit code, valid after exited; -1 if killed by a signal

	URL      string    // base URL, once listening
	Token    string    // operator token (dev only)
	Member   string    // the dev member's private key file (dev only)
	Listened time.Time // when the listening line was seen
}

// startProc starts tkms with args. It does not wait for anything.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: "tkms " + strings.Join(args, " "), stdout: newLogBuffer(), stderr: newLogBuffer(), exited: make(chan struct{})}
	p.cmd = exec.Command(tkmsBin, args...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = tkmsEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = exitCode(err)
		close(p.exited)
	}()
	// Never leave a process behind, whatever happens to the test. This
	// runs before the cleanup of any TempDir made before it.
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode() // -1 when killed by a signal
	}
	return -2
}

var devListening = regexp.MustCompile(`tkms dev: listening on (http://\S+)\n`)

// startDev starts `tkms dev --listen 127.0.0.1:0 --data dataDir extra...`,
// waits until it listens and reads its dev.json.
func startDev(t testing.TB, dataDir string, extra ...string) *proc {
	t.Helper()
	p := startProc(t, append([]string{"dev", "--listen", "127.0.0.1:0", "--data", dataDir}, extra...)...)
	m := p.waitOutput(p.stdout, devListening)
	p.URL, p.Listened = m[1], time.Now()
	var info struct {
		KMSURL        string `json:"kms_url"`
		OperatorToken string `json:"operator_token"`
		DataDir       string `json:"data_dir"`
		PID           int    `json:"pid"`
		MemberKey     string `json:"member_key"`
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "dev.json"))
	if err != nil {
		t.Fatalf("dev.json: %v", err)
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("dev.json: %v\n%s", err, raw)
	}
	if info.KMSURL != p.URL || info.PID != p.cmd.Process.Pid || info.OperatorToken == "" {
		t.Fatalf("dev.json = %s; want kms_url %s, pid %d and an operator token", raw, p.URL, p.cmd.Process.Pid)
	}
	p.Token = info.OperatorToken
	if info.MemberKey != "" {
		p.Member = info.MemberKey
		pem, err := os.ReadFile(info.MemberKey)
		if err != nil {
			t.Fatalf("dev member key: %v", err)
		}
		s, err := gov.NewFileSigner(pem)
		if err != nil {
			t.Fatalf("dev member key: %v", err)
		}
		devMembers.Store(p.URL, s)
	}
	return p
}

// devMembers maps the URL of every tkms dev started by startDev to the
// signer of its member, with which refresh signs rotations.
var devMembers sync.Map // string -> *gov.Signer

// rotateProposal returns a proposal of rotate_key_now signed by the member
// of the tkms dev at base. Each is distinct (its reason is unique), so
// none is refused as the replay of another.
func rotateProposal(t testing.TB, base string) []byte {
	t.Helper()
	v, ok := devMembers.Load(base)
	if !ok {
		t.Fatalf("no dev member known for %s", base)
	}
	return signRotate(t, v.(*gov.Signer))
}

var rotations atomic.Int64

// rotateMsg returns a proposal of rotate_key_now signed by s, with a
// reason no other has.
func rotateMsg(s *gov.Signer) ([]byte, error) {
	args, _ := json.Marshal(map[string]string{"reason": fmt.Sprintf("e2e rotation %d", rotations.Add(1))})
	return s.SignProposal([]gov.Action{{Name: "rotate_key_now", Args: args}}, time.Now())
}

func signRotate(t testing.TB, s *gov.Signer) []byte {
	t.Helper()
	msg, err := rotateMsg(s)
	if err != nil {
		t.Fatalf("signing rotate_key_now: %v", err)
	}
	return msg
}

// devSigner returns the signer of the member of the tkms dev p.
func devSigner(t testing.TB, p *proc) *gov.Signer {
	t.Helper()
	v, ok := devMembers.Load(p.URL)
	if !ok {
		t.Fatalf("no dev member known for %s", p.URL)
	}
	return v.(*gov.Signer)
}

// newTestMember returns the signer and public key (PEM) of a new member
// key.
func newTestMember(t testing.TB) (*gov.Signer, []byte) {
	t.Helper()
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := gov.NewFileSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

// postCOSETest posts a governance message to url.
func postCOSETest(t testing.TB, url string, msg []byte) (*http.Response, []byte) {
	t.Helper()
	return doBody(t, http.MethodPost, url, http.Header{"Content-Type": {"application/cose"}}, msg)
}

var serveListening = regexp.MustCompile(`"msg":"tkms listening","addr":"([^"]+)"`)

// startServe starts `tkms serve --config path` and waits until it listens.
func startServe(t testing.TB, configPath string) *proc {
	t.Helper()
	p := startProc(t, "serve", "--allow-ungoverned", "--config", configPath)
	m := p.waitOutput(p.stderr, serveListening)
	p.URL, p.Listened = "http://"+m[1], time.Now()
	return p
}

// waitOutput waits until re matches what the process wrote to buf. It
// fails the test if the process exits first.
func (p *proc) waitOutput(buf *logBuffer, re *regexp.Regexp) []string {
	p.t.Helper()
	timer := time.NewTimer(startDeadline)
	defer timer.Stop()
	for {
		s, changed := buf.snapshot()
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
		select {
		case <-changed:
		case <-p.exited:
			if m := re.FindStringSubmatch(buf.String()); m != nil {
				return m
			}
			p.t.Fatalf("%s exited with code %d before listening\nstdout:\n%s\nstderr:\n%s", p.name, p.code, p.stdout, p.stderr)
		case <-timer.C:
			p.t.Fatalf("%s: not listening after %v\nstdout:\n%s\nstderr:\n%s", p.name, startDeadline, p.stdout, p.stderr)
		}
	}
}

// stopped reports whether the process has exited.
func (p *proc) stopped() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(exitDeadline):
		p.t.Fatalf("%s: still running %v after it should have exited\nstderr:\n%s", p.name, exitDeadline, p.stderr)
		return 0
	}
}

// stop sends sig and waits for the process to exit; it returns the exit
// code (-1 if sig killed it).
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
	return p.wait()
}

// stopClean stops the process with sig and fails the test unless it exits
// with code 0 and its logs are clean.
func (p *proc) stopClean(sig syscall.Signal) {
	p.t.Helper()
	if code := p.stop(sig); code != 0 {
		p.t.Fatalf("%s: exit code %d after %v, want 0\nstderr:\n%s", p.name, code, sig, p.stderr)
	}
	p.checkLogs()
}

// checkLogs fails the test if the process reported a data race or a ledger
// entry that its own state machine rejected (which means a writer appended
// an entry that was not valid, such as a second key for one number).
func (p *proc) checkLogs() {
	p.t.Helper()
	s := p.stderr.String()
	for _, bad := range []string{"WARNING: DATA RACE", "rejected by the state machine", "ignoring unreadable snapshot", "ignoring corrupt snapshot", "panic:"} {
		if strings.Contains(s, bad) {
			p.t.Errorf("%s: stderr contains %q:\n%s", p.name, bad, s)
		}
	}
}

// runTkms runs a short tkms command to completion.
func runTkms(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runTkmsIn(t, "", nil, args...)
}

// httpClient is used by the tests for every request; its timeout only
// bounds a hung server.
var httpClient = &http.Client{Timeout: 20 * time.Second}

// do sends a request and returns the response with its body read.
func do(t testing.TB, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	return doBody(t, method, url, header, nil)
}

// doBody is do with a request body.
func doBody(t testing.TB, method, url string, header http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

// wireKey is one key of GET /v1/keys and `tkms keys list --json`, as a
// client reads it.
type wireKey struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   int       `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	KEM          uint16    `json:"kem_id"`
	KDF          uint16    `json:"kdf_id"`
	AEAD         uint16    `json:"aead_id"`
	PublicKey    []byte    `json:"public_key"` // standard base64 in JSON
	Created      time.Time `json:"created"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	DestroyAfter time.Time `json:"destroy_after"`
	Reason       string    `json:"reason"`
	State        string    `json:"state"`
}

type wireKeys struct {
	Keys []wireKey `json:"keys"`
}

// sameRecord reports whether a and b describe the same key, ignoring its
// phase (which depends on when it is asked).
func sameRecord(a, b wireKey) bool {
	return a.Kid == b.Kid && a.ID == b.ID && a.OHTTPKeyID == b.OHTTPKeyID && a.Suite == b.Suite &&
		a.KEM == b.KEM && a.KDF == b.KDF && a.AEAD == b.AEAD && bytes.Equal(a.PublicKey, b.PublicKey) &&
		a.Created.Equal(b.Created) && a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) &&
		a.ReleaseUntil.Equal(b.ReleaseUntil) && a.DestroyAfter.Equal(b.DestroyAfter) && a.Reason == b.Reason
}

// sameKeys fails the test unless two key lists hold the same records in
// the same order.
func sameKeys(t testing.TB, what string, got, want []wireKey) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d keys, want %d:\ngot  %+v\nwant %+v", what, len(got), len(want), got, want)
	}
	for i := range got {
		if !sameRecord(got[i], want[i]) {
			t.Fatalf("%s: key %d differs:\ngot  %+v\nwant %+v", what, i+1, got[i], want[i])
		}
	}
}

// allKeys returns GET /v1/keys?all=true.
func allKeys(t testing.TB, base string) []wireKey {
	t.Helper()
	resp, body := do(t, http.MethodGet, base+"/v1/keys?all=true", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/keys?all=true: %s: %s", resp.Status, body)
	}
	var list wireKeys
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("GET /v1/keys?all=true: %v\n%s", err, body)
	}
	return list.Keys
}

// keysListData runs `tkms keys list --data dir --json` on a stopped
// instance.
func keysListData(t testing.TB, dir string) []wireKey {
	t.Helper()
	out, errOut, code := runTkms(t, "keys", "list", "--data", dir, "--json")
	if code != 0 {
		t.Fatalf("tkms keys list --data %s: exit %d: %s", dir, code, errOut)
	}
	var list wireKeys
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("tkms keys list --json: %v\n%s", err, out)
	}
	return list.Keys
}

// refreshed is the answer of a successful POST /app/refresh.
type refreshed struct {
	Kid     string `json:"kid"`
	ID      int    `json:"id"`
	X       string `json:"x"`       // base64url raw public key (X25519)
	Receipt string `json:"receipt"` // log receipt of the key.created entry
}

// refresh calls POST /app/refresh and returns the new key: on a tkms dev
// (governed, one member) with a rotate_key_now proposal signed by its
// member, elsewhere with the operator token.
func refresh(t testing.TB, base, token string) refreshed {
	t.Helper()
	var resp *http.Response
	var body []byte
	if _, ok := devMembers.Load(base); ok {
		resp, body = postCOSETest(t, base+"/app/refresh", rotateProposal(t, base))
	} else {
		resp, body = do(t, http.MethodPost, base+"/app/refresh", http.Header{"Authorization": {"Bearer " + token}})
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /app/refresh: %s: %s", resp.Status, body)
	}
	var r refreshed
	if err := json.Unmarshal(body, &r); err != nil || r.Kid == "" {
		t.Fatalf("POST /app/refresh: %v: %s", err, body)
	}
	return r
}

// writeJSONFile writes v as JSON to path.
func writeJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// perm returns the permission bits of path.
func perm(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
