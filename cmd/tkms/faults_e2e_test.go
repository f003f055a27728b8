//go:build linux

package main

// Black-box tests of storage faults (docs/operations.md, "Storage
// faults") with the real binary: the disk fills or the file system turns
// read-only under a running tkms dev, tkms is started on a read-only data
// directory, and its files are damaged while it is stopped.
//
// The faults are real: a small tmpfs that fills up, an ext4 file system on
// a loop device that an error turns read-only (as errors=remount-ro does in
// production). Where mounting is not permitted (or TKMS_TEST_NO_MOUNT=1),
// disk full is a file size limit (RLIMIT_FSIZE) set on the running process,
// and a read-only directory is one whose mode forbids writing (which only
// binds a process that is not root).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
	bolt "go.etcd.io/bbolt"
)

// TestStorageDiskFull: the disk fills while releases and rotations run.
// Every write answered 200 is in the ledger; none is acknowledged after the
// failure; the server goes on serving public keys and the log and says
// what failed; after space is freed and tkms restarted, it takes writes
// again and the log passes the audit.
func TestStorageDiskFull(t *testing.T) {
	begin := time.Now()
	dir, err := mountTmpfs(t, "1m")
	mode := "tmpfs of 1 MiB"
	if err != nil {
		t.Logf("no tmpfs (%v): the disk fills by a file size limit (RLIMIT_FSIZE) on the process", err)
		dir, mode = t.TempDir(), "RLIMIT_FSIZE"
	}
	data := filepath.Join(dir, "data")
	p := startDev(t, data, "--config", noRateLimits(t))
	if mode == "RLIMIT_FSIZE" {
		fi, err := os.Stat(filepath.Join(data, store.FileName))
		if err != nil {
			t.Fatal(err)
		}
		// bbolt grows its file by doubling: four more doublings fit.
		if err := setFileSizeLimit(p.cmd.Process.Pid, uint64(16*fi.Size())); err != nil {
			t.Fatalf("setting RLIMIT_FSIZE of tkms: %v", err)
		}
	}
	d := newWriteDriver(t, p, data)
	d.run(4, 8, 10, 5000, 0, nil)
	checkStorageFault(t, "disk full ("+mode+")", p, data, d, func() {
		if mode != "RLIMIT_FSIZE" {
			resizeTmpfs(t, dir, "64m") // the limit went with the process
		}
	})
	t.Logf("disk full (%s): run time %v", mode, time.Since(begin).Round(time.Millisecond))
}

// TestStorageReadOnlyWhileRunning: the data directory's file system turns
// read-only under a running tkms (an I/O error with errors=remount-ro).
// The expectations are those of a full disk.
func TestStorageReadOnlyWhileRunning(t *testing.T) {
	begin := time.Now()
	var data, mode string
	var fault, fix func()
	m, err := mountExt4(t, 16)
	switch {
	case err == nil:
		data, mode = filepath.Join(m.dir, "data"), "ext4 errors=remount-ro"
		fault = func() {
			if err := os.WriteFile(m.errorTrigger(), []byte("1"), 0); err != nil {
				t.Errorf("trigger an ext4 error: %v", err)
			}
		}
		fix = func() { m.repair(t) }
	case os.Geteuid() == 0:
		t.Skipf("cannot mount an ext4 file system on a loop device (%v), and root writes whatever a directory's mode says: no read-only fault to make here", err)
	default:
		t.Logf("no ext4 mount (%v): the data directory's mode forbids writing instead", err)
		data, mode = filepath.Join(t.TempDir(), "data"), "chmod 0500"
		fault = func() {
			if err := os.Chmod(data, 0o500); err != nil {
				t.Errorf("chmod: %v", err)
			}
		}
		fix = func() {
			if err := os.Chmod(data, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := startDev(t, data, "--config", noRateLimits(t))
	d := newWriteDriver(t, p, data)
	d.run(4, 8, 10, 2000, 40, fault)
	if m != nil {
		if err := os.WriteFile(filepath.Join(m.dir, "probe"), nil, 0o600); !errorsIsROFS(err) {
			t.Fatalf("after the ext4 error, creating a file: %v, want EROFS", err)
		}
	}
	checkStorageFault(t, "read-only ("+mode+")", p, data, d, fix)
	t.Logf("read-only while running (%s): run time %v", mode, time.Since(begin).Round(time.Millisecond))
}

// checkStorageFault checks a tkms dev after d drove it into a storage
// fault: its answers, what it still serves, its logs, its ledger on disk;
// then fixes the storage with fix, restarts it, checks that every
// acknowledged write is there and the log passes the audit, and that
// writes are taken again.
func checkStorageFault(t *testing.T, what string, p *proc, data string, d *writeDriver, fix func()) {
	t.Helper()
	before, after, refused := d.tally()
	t.Logf("%s: %d writes acknowledged before the storage failed, %d after; %d refused after it (%d sent in all)", what, before, after, refused, len(d.results))
	if refused == 0 {
		t.Fatalf("%s: no write was refused with STORAGE_FAILED after %d writes: the fault did not happen\nstderr:\n%s", what, len(d.results), p.stderr)
	}
	if before == 0 {
		t.Fatalf("%s: the storage failed before any write was acknowledged: make the disk larger", what)
	}
	if after != 0 {
		t.Errorf("%s: %d writes were acknowledged after an answer said the storage had failed", what, after)
	}
	var releases, rotations []writeResult
	for _, r := range d.results {
		switch {
		case r.err != nil:
			t.Errorf("%s: a write failed without an answer: %v", what, r.err)
		case r.acked() && r.rotation:
			rotations = append(rotations, r)
		case r.acked():
			releases = append(releases, r)
		case r.status == http.StatusServiceUnavailable && r.code == "STORAGE_FAILED":
		case r.rotation && r.status == http.StatusConflict && r.code == "KEY_LIMIT_REACHED":
		default:
			t.Errorf("%s: a write was answered %d %s, want 200 or 503 STORAGE_FAILED", what, r.status, r.code)
		}
	}

	// What it can safely serve, it serves; what it cannot, it says.
	resp, body := do(t, http.MethodGet, p.URL+"/app/heartbeat", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("x-ms-kms-error-code") != "STORAGE_FAILED" || !bytes.Contains(body, []byte(`"status":"Storage failed`)) {
		t.Errorf("%s: GET /app/heartbeat: %s %s: %s; want 503 STORAGE_FAILED", what, resp.Status, resp.Header.Get("x-ms-kms-error-code"), body)
	}
	resp, body = do(t, http.MethodGet, p.URL+"/metrics", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("\ntkms_store_write_failed 1\n")) {
		t.Errorf("%s: GET /metrics: %s, want tkms_store_write_failed 1:\n%s", what, resp.Status, body)
	}
	size := logSize(t, p.URL)
	tile := fmt.Sprintf("/log/tile/0/000.p/%d", size%256)
	if size >= 256 {
		tile = "/log/tile/0/000"
	}
	for _, path := range []string{"/app/listpubkeys", "/v1/keys", "/v1/keys/ohttp", "/app/pubkey", "/log/checkpoint", "/v1/log/key", tile} {
		if resp, body := do(t, http.MethodGet, p.URL+path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s: %s: %s", what, path, resp.Status, body)
		}
	}
	stderr := p.stderr.String()
	if n := strings.Count(stderr, "STORAGE FAILURE"); n != 1 {
		t.Errorf("%s: the log says STORAGE FAILURE %d times, want once:\n%s", what, n, stderr)
	}
	wantInOutput(t, what+": the log", stderr, "free space or make the data directory writable, then restart tkms")
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "STORAGE FAILURE") {
			t.Logf("%s: the log says: %s", what, l)
		}
	}

	// Neither crashed nor spinning: the process is alive and idle.
	if p.stopped() {
		t.Fatalf("%s: tkms exited (code %d):\n%s", what, p.code, stderr)
	}
	if cpu := cpuTime(t, p.cmd.Process.Pid, 2*time.Second); cpu > time.Second {
		t.Errorf("%s: tkms used %v of CPU in 2 s while idle after the failure: spinning", what, cpu)
	}

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("%s: exit code %d after SIGTERM, want 0\nstderr:\n%s", what, code, p.stderr)
	}
	for _, bad := range []string{"panic:", "fatal error:", "WARNING: DATA RACE"} {
		if strings.Contains(p.stderr.String(), bad) {
			t.Errorf("%s: stderr contains %q:\n%s", what, bad, p.stderr)
		}
	}

	// On disk, before anything else runs: every acknowledged release, as
	// its receipt has it.
	st, err := store.Open(data, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: opening the ledger after the fault: %v", what, err)
	}
	for _, r := range releases {
		e, err := st.Get(uint64(r.index) + 1)
		if err != nil {
			t.Errorf("%s: acknowledged release at index %d: %v", what, r.index, err)
			continue
		}
		if !bytes.Equal(ledger.LeafBytes(e), r.leaf) {
			t.Errorf("%s: acknowledged release at index %d: the ledger holds another entry (%s)", what, r.index, e.Type)
		}
	}
	last := st.Last()
	st.Close()

	fix()
	p2 := startDev(t, data)
	kids := map[string]bool{}
	for _, k := range allKeys(t, p2.URL) {
		kids[k.Kid] = true
	}
	for _, r := range rotations {
		if !kids[r.kid] {
			t.Errorf("%s: key %s, acknowledged by /app/refresh, is not in the ledger after the restart", what, r.kid)
		}
	}
	if got := logSize(t, p2.URL); got < int64(last) {
		t.Errorf("%s: the log holds %d entries after the restart, fewer than the %d on disk", what, got, last)
	}
	stdout, _ := runAudit(t, 0, "--kms", p2.URL, "--log-key", logKeyArg(t, p2.URL))
	wantInOutput(t, what+": audit after the restart", stdout, "result: PASS")
	d.base, d.token = p2.URL, readDevJSON(t, data).WorkloadToken // the token names the issuer's URL, which moved with the port
	if r := d.one(false); !r.acked() {
		t.Errorf("%s: a release after the restart: %d %s %v, want 200", what, r.status, r.code, r.err)
	}
	resp, body = do(t, http.MethodGet, p2.URL+"/app/heartbeat", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: GET /app/heartbeat after the restart: %s: %s", what, resp.Status, body)
	}
	t.Logf("%s: %d releases and %d rotations acknowledged, all in the ledger (%d entries) after the restart; audit passed", what, len(releases), len(rotations), last)
	p2.stopClean(syscall.SIGTERM)
}

// cpuTime returns the CPU time process pid uses over the interval d.
func cpuTime(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	ticks := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command name (which is in parentheses):
		// utime and stime are the 14th and 15th fields.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		return u + s
	}
	start := ticks()
	time.Sleep(d)
	return time.Duration(ticks()-start) * time.Second / 100 // USER_HZ
}

// TestStorageReadOnlyStart: tkms refuses to start on a data directory it
// cannot write, naming it and saying what to do; the directory can still
// be inspected.
func TestStorageReadOnlyStart(t *testing.T) {
	begin := time.Now()
	dir, err := mountTmpfs(t, "8m")
	var data string
	var makeRO func()
	switch {
	case err == nil:
		data = filepath.Join(dir, "data")
		makeRO = func() {
			if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
				t.Fatalf("remount ro: %v: %s", err, out)
			}
		}
	case os.Geteuid() == 0:
		t.Skipf("cannot mount a tmpfs (%v), and root writes whatever a directory's mode says: no read-only directory to make here", err)
	default:
		data = filepath.Join(t.TempDir(), "data")
		makeRO = func() {
			if err := os.Chmod(data, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(data, 0o700) })
		}
	}
	p := startDev(t, data)
	refresh(t, p.URL, p.Token)
	want := allKeys(t, p.URL)
	p.stopClean(syscall.SIGTERM)
	makeRO()

	_, stderr, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", data)
	if code != 1 {
		t.Fatalf("tkms dev on a read-only data directory: exit %d, want 1\n%s", code, stderr)
	}
	wantInOutput(t, "tkms dev on a read-only data directory", stderr,
		"the data directory "+data+" is not writable", "does not start without it", "make it writable", "tkms keys list --data "+data)
	noPanic(t, "tkms dev on a read-only data directory", stderr)
	// The advice works: the keys can be listed from the read-only copy.
	sameKeys(t, "tkms keys list on the read-only data directory", keysListData(t, data), want)
	t.Logf("read-only start: run time %v", time.Since(begin).Round(time.Millisecond))
}

func noPanic(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "fatal error:", "goroutine ", "WARNING: DATA RACE"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s: output contains %q:\n%s", what, bad, out)
		}
	}
}

// TestStorageCorruptFiles: each file of a stopped tkms dev damaged in turn.
// tkms refuses to start with an error naming the file and what to do, or,
// where a safe fallback exists, takes it and says so; it never panics and
// never starts afresh over lost keys (the keyring is never rewritten by a
// refused start).
func TestStorageCorruptFiles(t *testing.T) {
	begin := time.Now()
	dir := t.TempDir()
	golden := filepath.Join(dir, "golden")
	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"snapshot_every": 4})
	p := startDev(t, golden, "--config", cfg)
	for range 3 {
		refresh(t, p.URL, p.Token)
	}
	unwrapRelease(t, p, golden, strings.Repeat("ab", 32))
	keys := allKeys(t, p.URL)
	p.stopClean(syscall.SIGTERM)
	ledgerFile := store.FileName

	flipAt := func(name string, off int64) func(t *testing.T, data string) {
		return func(t *testing.T, data string) { flipByte(t, filepath.Join(data, name), off) }
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, data string)
		starts bool     // a safe fallback exists: tkms starts and warns
		want   []string // in stderr
	}{
		{"ledger.db: a byte of a record", func(t *testing.T, data string) {
			flipByte(t, filepath.Join(data, ledgerFile), valueOffset(t, data, "entries", 3)+10)
		}, false, []string{"ledger.db", "entry 3", "checksum mismatch", "restore the data directory from a backup", "tkms audit"}},
		{"ledger.db: the type of a data page", func(t *testing.T, data string) {
			off := valueOffset(t, data, "entries", 3)
			flipByte(t, filepath.Join(data, ledgerFile), off/4096*4096+8)
		}, false, []string{"ledger.db", "restore the data directory from a backup"}},
		{"ledger.db: the newest meta page", func(t *testing.T, data string) {
			newest, _ := metaPages(t, data)
			flipByte(t, filepath.Join(data, ledgerFile), int64(newest)*4096+40)
		}, true, []string{"ledger file damaged", "which recorded the last transaction", "tkms audit --state"}},
		{"ledger.db: the older meta page", func(t *testing.T, data string) {
			_, older := metaPages(t, data)
			flipByte(t, filepath.Join(data, ledgerFile), int64(older)*4096+40)
		}, true, []string{"ledger file damaged", "nothing is lost"}},
		{"ledger.db: both meta pages", func(t *testing.T, data string) {
			flipByte(t, filepath.Join(data, ledgerFile), 40)
			flipByte(t, filepath.Join(data, ledgerFile), 4096+40)
		}, false, []string{"ledger.db", "both of its meta pages are damaged", "restore the data directory from a backup"}},
		{"ledger.db: cut short", func(t *testing.T, data string) {
			// at the page that holds entry 3
			if err := os.Truncate(filepath.Join(data, ledgerFile), valueOffset(t, data, "entries", 3)/4096*4096); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"ledger.db", "the file is cut short", "restore the data directory from a backup"}},
		{"ledger.db: emptied", func(t *testing.T, data string) {
			if err := os.Truncate(filepath.Join(data, ledgerFile), 0); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"ledger.db is empty but the keyring", "restore the data directory from a backup"}},
		{"ledger.db: deleted", func(t *testing.T, data string) {
			if err := os.Remove(filepath.Join(data, ledgerFile)); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"ledger.db is missing but the keyring", "restore the data directory from a backup"}},
		{"the snapshot: a byte", func(t *testing.T, data string) {
			flipByte(t, filepath.Join(data, ledgerFile), snapshotOffset(t, data)+20)
		}, true, []string{"ignoring corrupt snapshot; replaying the whole ledger"}},
		{"keyring: a byte", flipAt("keyring", 30), false, []string{"keyring", "cannot be opened", "restore the keyring that goes with this ledger from a backup"}},
		{"keyring: cut in half", func(t *testing.T, data string) { truncateHalf(t, filepath.Join(data, "keyring")) }, false,
			[]string{"keyring", "restore the keyring that goes with this ledger from a backup"}},
		{"keyring: deleted", func(t *testing.T, data string) {
			if err := os.Remove(filepath.Join(data, "keyring")); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"lacks the data keys of 4 live keys", "restore the keyring that goes with this ledger from a backup"}},
		{"master.key: a hex digit", func(t *testing.T, data string) {
			path := filepath.Join(data, "master.key")
			b := readFile(t, path)
			if b[5] == '0' {
				b[5] = '1'
			} else {
				b[5] = '0'
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"the master key does not open the ledger's sealed entries", "restore it from a backup"}},
		{"master.key: cut in half", func(t *testing.T, data string) { truncateHalf(t, filepath.Join(data, "master.key")) }, false,
			[]string{"master key", "master.key", "want 64 hex characters"}},
		{"dev.json: garbage", func(t *testing.T, data string) {
			if err := os.WriteFile(filepath.Join(data, "dev.json"), []byte("{\x00garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, nil}, // dev.json is written at start, never read: it is rewritten
		{"config: a byte", func(t *testing.T, data string) { flipByte(t, filepath.Join(data, "tkms.json"), 0) }, false,
			[]string{"config ", "tkms.json", "invalid character"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			copyDir(t, golden, data)
			conf := filepath.Join(data, "tkms.json")
			if err := os.WriteFile(conf, readFile(t, cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, data)
			krBefore, _ := os.ReadFile(filepath.Join(data, "keyring"))
			if tc.starts {
				p := startDev(t, data, "--config", conf)
				sameKeys(t, "keys after "+tc.name, allKeys(t, p.URL), keys)
				if code := p.stop(syscall.SIGTERM); code != 0 {
					t.Errorf("exit code %d after SIGTERM", code)
				}
				wantInOutput(t, "stderr", p.stderr.String(), tc.want...)
				noPanic(t, "stderr", p.stderr.String())
				for _, l := range strings.Split(p.stderr.String(), "\n") {
					if strings.Contains(l, "level=WARN") && (strings.Contains(l, "damaged") || strings.Contains(l, "snapshot")) {
						t.Logf("started: %s", l)
					}
				}
				return
			}
			_, stderr, code := runTkms(t, "dev", "--listen", "127.0.0.1:0", "--data", data, "--config", conf)
			if code != 1 {
				t.Fatalf("exit code %d, want 1\nstderr:\n%s", code, stderr)
			}
			wantInOutput(t, "stderr", stderr, tc.want...)
			noPanic(t, "stderr", stderr)
			t.Logf("refused: %s", lastLine(stderr))
			if krAfter, _ := os.ReadFile(filepath.Join(data, "keyring")); !bytes.Equal(krBefore, krAfter) {
				t.Error("the refused start changed the keyring")
			}
		})
	}
	t.Logf("corrupt files: run time %v", time.Since(begin).Round(time.Millisecond))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// flipByte inverts the bits of the byte at off in the file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatalf("%s at %d: %v", path, off, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// valueOffset returns the offset in the ledger file of the record of entry
// seq (in bucket), as bbolt maps it.
func valueOffset(t *testing.T, data, bucket string, seq uint64) int64 {
	t.Helper()
	return boltOffset(t, data, func(tx *bolt.Tx) []byte {
		return tx.Bucket([]byte(bucket)).Get(binary.BigEndian.AppendUint64(nil, seq))
	})
}

// snapshotOffset returns the offset of the snapshot's bytes.
func snapshotOffset(t *testing.T, data string) int64 {
	t.Helper()
	return boltOffset(t, data, func(tx *bolt.Tx) []byte { return tx.Bucket([]byte("snapshot")).Get([]byte("latest")) })
}

func boltOffset(t *testing.T, data string, get func(*bolt.Tx) []byte) int64 {
	t.Helper()
	db, err := bolt.Open(filepath.Join(data, store.FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var off int64 = -1
	db.View(func(tx *bolt.Tx) error {
		if v := get(tx); len(v) > 0 {
			off = int64(uintptr(unsafe.Pointer(&v[0])) - db.Info().Data)
		}
		return nil
	})
	if off < 0 {
		t.Fatal("value not found in the ledger file")
	}
	return off
}

// metaPages returns which of the ledger file's two meta pages records the
// newest transaction, and which the older.
func metaPages(t *testing.T, data string) (newest, older int) {
	t.Helper()
	b := readFile(t, filepath.Join(data, store.FileName))
	tx0, tx1 := binary.LittleEndian.Uint64(b[64:]), binary.LittleEndian.Uint64(b[4096+64:])
	if tx1 > tx0 {
		return 1, 0
	}
	return 0, 1
}

// noRateLimits writes a tkms dev configuration without rate limits: the
// storage tests write as fast as one address and one identity can, which
// the default limits would refuse (429) before the disk fills.
func noRateLimits(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tkms.json")
	writeJSONFile(t, path, map[string]any{"limits": map[string]any{"per_address_rate": 0, "per_identity_rate": 0}})
	return path
}
