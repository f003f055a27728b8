//go:build linux

package main

// Helpers for faults_e2e_test.go: small file systems to fill or turn
// read-only under a running tkms, and a driver of concurrent releases and
// rotations that records what was acknowledged.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/tkms-dev/tkms/internal/translog"
)

// noMount reports whether the tests must not mount file systems: when
// TKMS_TEST_NO_MOUNT=1 (to exercise the fallbacks on a machine that could
// mount) or when a first tmpfs mount fails (no CAP_SYS_ADMIN).
func noMount() bool { return os.Getenv("TKMS_TEST_NO_MOUNT") == "1" }

// mountTmpfs mounts a tmpfs of the given size (mount's size= syntax) on a
// new directory and returns it; the mount is undone (lazily, so a process
// still inside it cannot make that fail) when the test ends, pass or fail.
func mountTmpfs(t *testing.T, size string) (string, error) {
	t.Helper()
	if noMount() {
		return "", fmt.Errorf("TKMS_TEST_NO_MOUNT=1")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount -t tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir, nil
}

// resizeTmpfs changes the size of the tmpfs mounted on dir.
func resizeTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s size=%s: %v: %s", dir, size, err, out)
	}
}

// An ext4Mount is a small ext4 file system on a loop device, mounted with
// errors=remount-ro: what a production data disk does on an I/O error.
// (A tmpfs cannot be remounted read-only while a file is open for writing,
// which the ledger always is.)
type ext4Mount struct {
	dir string
	img string // the file system's image file
	dev string // e.g. loop0
}

// mountExt4 makes and mounts an ext4 file system of sizeMB on a new
// directory; it is unmounted (and the loop device freed) when the test
// ends.
func mountExt4(t *testing.T, sizeMB int) (*ext4Mount, error) {
	t.Helper()
	if noMount() {
		return nil, fmt.Errorf("TKMS_TEST_NO_MOUNT=1")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	dir := t.TempDir()
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(img, int64(sizeMB)<<20); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", img, dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mount -o loop: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", dir).Output()
	if err != nil {
		return nil, fmt.Errorf("findmnt %s: %v", dir, err)
	}
	m := &ext4Mount{dir: dir, img: img, dev: filepath.Base(strings.TrimSpace(string(out)))}
	if _, err := os.Stat(m.errorTrigger()); err != nil {
		return nil, fmt.Errorf("ext4 error trigger: %w", err)
	}
	return m, nil
}

func (m *ext4Mount) errorTrigger() string {
	return filepath.Join("/sys/fs/ext4", m.dev, "trigger_fs_error")
}

// repair does what an operator does once nothing uses the file system
// any more: unmount it, check it (e2fsck) and mount it again. (A file
// system whose journal an error aborted cannot be remounted read-write.)
func (m *ext4Mount) repair(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", m.dir, err, out)
	}
	// The kernel replays the journal at mount; e2fsck then checks a file
	// system whose committed transactions are all in place. (e2fsck -y
	// straight after the error now and then left the ledger's last
	// committed pages zeroed: 1 run in 15 under load.)
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", m.img, m.dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s to replay its journal: %v: %s", m.dir, err, out)
	}
	if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", m.dir, err, out)
	}
	// Exit code 1: errors were corrected.
	if out, err := exec.Command("e2fsck", "-f", "-y", m.img).CombinedOutput(); err != nil && exitCode(err) != 1 {
		t.Fatalf("e2fsck: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", m.img, m.dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s again: %v: %s", m.dir, err, out)
	}
}

func errorsIsROFS(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == syscall.EROFS
}

// setFileSizeLimit sets the RLIMIT_FSIZE of the running process pid to n
// bytes: a write or truncate that would make a file larger than n then
// fails with EFBIG (Go ignores SIGXFSZ), a disk full for that process
// alone, which needs no privilege.
func setFileSizeLimit(pid int, n uint64) error {
	var old syscall.Rlimit
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE, 0, uintptr(unsafe.Pointer(&old)), 0, 0); e != 0 {
		return e
	}
	lim := syscall.Rlimit{Cur: n, Max: old.Max}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// A writeResult is one release or rotation and its answer.
type writeResult struct {
	rotation   bool
	afterFault bool // sent after an answer said the storage had failed
	status     int
	code       string // x-ms-kms-error-code
	err        error  // transport error
	index      int64  // log index of an acknowledged release (receipt)
	leaf       []byte // its leaf, as the receipt says
	kid        string // key of an acknowledged rotation
}

func (r writeResult) acked() bool { return r.err == nil && r.status == http.StatusOK }

// A writeDriver sends releases and rotations to a tkms dev from several
// goroutines until its answers say the storage failed, then a few more.
type writeDriver struct {
	base    string
	release []byte // body of /app/unwrapKey
	token   string
	rotate  func() ([]byte, error)

	faulted atomic.Bool
	mu      sync.Mutex
	results []writeResult
}

// newWriteDriver prepares releases of the primary key of the tkms dev p
// (data directory data) on simulated evidence, and rotations signed by its
// member.
func newWriteDriver(t *testing.T, p *proc, data string) *writeDriver {
	t.Helper()
	pub := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	wrap := filepath.Join(t.TempDir(), "wrap.pem")
	if err := os.WriteFile(wrap, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	ev := readFile(t, attestSimulate(t, data, "--wrapping-key-pem", wrap))
	body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(ev), "wrappingKey": string(pub), "wrappedKid": allKeys(t, p.URL)[0].Kid})
	signer := devSigner(t, p)
	return &writeDriver{base: p.URL, release: body, token: readDevJSON(t, data).WorkloadToken, rotate: func() ([]byte, error) { return rotateMsg(signer) }}
}

// one sends a release, or a rotation if rotation is set, and records it.
func (d *writeDriver) one(rotation bool) writeResult {
	r := writeResult{rotation: rotation, afterFault: d.faulted.Load()}
	var req *http.Request
	if rotation {
		msg, err := d.rotate()
		if err != nil {
			r.err = err
			return d.record(r)
		}
		req, _ = http.NewRequest(http.MethodPost, d.base+"/app/refresh", bytes.NewReader(msg))
		req.Header.Set("Content-Type", "application/cose")
	} else {
		req, _ = http.NewRequest(http.MethodPost, d.base+"/app/unwrapKey?fmt=jwk", bytes.NewReader(d.release))
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		r.err = err
		return d.record(r)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.status, r.code = resp.StatusCode, resp.Header.Get("x-ms-kms-error-code")
	if err != nil {
		r.err = err
		return d.record(r)
	}
	if r.code == "STORAGE_FAILED" {
		d.faulted.Store(true)
	}
	if r.status != http.StatusOK {
		return d.record(r)
	}
	var ok struct {
		Kid     string `json:"kid"`
		Receipt string `json:"receipt"`
	}
	if err := json.Unmarshal(body, &ok); err != nil {
		r.err = fmt.Errorf("200 answer: %v: %s", err, body)
		return d.record(r)
	}
	if rotation {
		r.kid = ok.Kid
	} else {
		rc, err := translog.ParseReceipt([]byte(ok.Receipt))
		if err != nil {
			r.err = fmt.Errorf("receipt of an acknowledged release: %v", err)
			return d.record(r)
		}
		r.index, r.leaf = rc.Index, rc.Leaf
	}
	return d.record(r)
}

func (d *writeDriver) record(r writeResult) writeResult {
	d.mu.Lock()
	d.results = append(d.results, r)
	d.mu.Unlock()
	return r
}

// run sends writes from workers goroutines (every rotateEvery-th a
// rotation) until an answer says the storage failed, plus after more from
// each goroutine, or until max writes were sent. If fault is set, it is
// called before the faultAt-th write, to make the fault happen.
func (d *writeDriver) run(workers, rotateEvery, after, max, faultAt int, fault func()) {
	var n atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			left := after
			for left > 0 {
				i := n.Add(1)
				if i > int64(max) {
					return
				}
				if fault != nil && i == int64(faultAt) {
					fault()
				}
				d.one(i%int64(rotateEvery) == 0)
				if d.faulted.Load() {
					left--
				}
			}
		}()
	}
	wg.Wait()
}

// tally counts acknowledged writes before and after the fault.
func (d *writeDriver) tally() (before, after, failedAfter int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.results {
		switch {
		case r.acked() && r.afterFault:
			after++
		case r.acked():
			before++
		case r.afterFault:
			failedAfter++
		}
	}
	return before, after, failedAfter
}
