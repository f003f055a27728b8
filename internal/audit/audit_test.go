package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// openService opens a real service on a temporary directory with an
// injected clock and the test release policy.
func openService(t *testing.T, clk *clock) *kms.Service {
	t.Helper()
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: t.TempDir(), Sealer: sealer, ServiceName: "audit-test", RotationPolicy: testRotation(),
		Settings: state.Settings{Service: state.ServiceSettings{Name: "audit-test"}}, ReleasePolicy: []byte(testPolicyJSON),
		Now: clk.Now, Logger: slog.New(slog.DiscardHandler), LogOrigin: "audit.test/service",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// recordRelease records a release as release.Service does.
func recordRelease(t *testing.T, svc *kms.Service, kid, oid string, simulated bool, claims map[string]any) {
	t.Helper()
	var raw []byte
	var seq uint64
	svc.Read(func(st *state.State) { raw, seq = st.ReleasePolicy, st.ReleasePolicySeq })
	p, err := policy.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	h := policy.Hash(p)
	_, err = svc.RecordRelease(context.Background(), state.KeyReleased{
		Kids: []string{kid}, API: "app/unwrapKey", Format: "jwk", Issuer: "https://issuer.test", Identity: oid,
		EvidenceType: "snp-aci", Simulated: simulated, PolicySeq: seq, PolicySHA256: hex.EncodeToString(h[:]), Claims: claims,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serviceLog runs a real service through three rotations, some releases
// and a denial, and returns it.
func serviceLog(t *testing.T) *kms.Service {
	t.Helper()
	clk := &clock{t: t0}
	svc := openService(t, clk)
	ctx := context.Background()
	for h := time.Duration(0); h <= 30*time.Hour; h += time.Hour {
		clk.Set(t0.Add(h))
		if _, err := svc.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		var kid string
		svc.Read(func(st *state.State) { kid = st.Primary(clk.Now()).Kid })
		recordRelease(t, svc, kid, "oid-"+string(rune('a'+h.Hours()/10)), h == 5*time.Hour, goodClaims())
	}
	if _, err := svc.Rotate(ctx, kms.ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	if err := svc.RecordDenial(ctx, state.ReleaseDenied{Issuer: "https://issuer.test", Identity: "oid-x", API: "app/unwrapKey", Code: "POLICY_DENIED", Suppressed: 4}); err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestAuditServiceLog(t *testing.T) {
	svc := serviceLog(t)
	dir := t.TempDir()
	if err := mirrorService(dir, svc); err != nil {
		t.Fatal(err)
	}
	stateFile := filepath.Join(t.TempDir(), "audit.json")
	r, err := auditDir(dir, svc.LogVerifierKey(), stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Passed() {
		t.Fatalf("audit of a healthy service log failed:\n%s", text(r))
	}
	cp := svc.Checkpoint()
	if r.Checkpoint.Size != cp.Size || r.Checkpoint.Root != cp.Root || r.Checkpoint.Origin != "audit.test/service" {
		t.Errorf("checkpoint %+v, want %+v", r.Checkpoint, cp.Checkpoint)
	}
	var n int64
	for _, c := range r.Counts {
		n += c
	}
	if n != cp.Size {
		t.Errorf("counts add up to %d, want %d: %v", n, cp.Size, r.Counts)
	}
	var nkeys int
	svc.Read(func(st *state.State) { nkeys = len(st.Keys) })
	if len(r.Keys) != nkeys || nkeys < 4 {
		t.Errorf("%d keys in the report, the service has %d", len(r.Keys), nkeys)
	}
	if k := r.Keys[0]; k.Published == nil || k.Retired == nil || k.Expired == nil || k.Destroyed == nil || k.Phase != "destroyed" {
		t.Errorf("first key %+v: want every marker and phase destroyed", k)
	}
	if r.Releases.Total != 31 || r.Releases.Simulated != 1 || len(r.Releases.SimulatedSeqs) != 1 || len(r.Releases.ByIdentity) != 4 {
		t.Errorf("releases %+v", r.Releases)
	}
	if d := r.Denials; d.Entries != 1 || d.Suppressed != 4 || d.Total != 5 || d.ByCode["POLICY_DENIED"] != 5 {
		t.Errorf("denials %+v", d)
	}
	if len(r.Policies) != 3 {
		t.Errorf("policies %+v, want rotation, settings and release", r.Policies)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %v", r.Warnings)
	}
	if fi, err := os.Stat(stateFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", fi, err)
	}

	// More entries: the next audit checks them against the saved state.
	recordRelease(t, svc, r.Keys[len(r.Keys)-1].Kid, "oid-z", false, goodClaims())
	if err := mirrorService(dir, svc); err != nil {
		t.Fatal(err)
	}
	r2, err := auditDir(dir, svc.LogVerifierKey(), stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Passed() || r2.Previous == nil || r2.Previous.Size != cp.Size || r2.Checkpoint.Size != cp.Size+1 {
		t.Fatalf("second audit: previous %+v, checkpoint %+v\n%s", r2.Previous, r2.Checkpoint, text(r2))
	}

	// The JSON report decodes, and the text one names the result.
	var back Report
	if err := json.Unmarshal(r2.JSON(), &back); err != nil || back.Checkpoint.Root != r2.Checkpoint.Root {
		t.Errorf("JSON report: %v", err)
	}
	if s := text(r2); !strings.Contains(s, "result: PASS") || !strings.Contains(s, "not checked against governance decisions") {
		t.Errorf("text report:\n%s", s)
	}
}

// TestAuditHTTP audits over HTTP, mirrors what it fetched and audits the
// mirror offline.
func TestAuditHTTP(t *testing.T) {
	svc := serviceLog(t)
	dir := t.TempDir()
	if err := mirrorService(dir, svc); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var paths []string
	mux := http.NewServeMux()
	files := http.StripPrefix("/log/", http.FileServer(http.Dir(dir)))
	mux.Handle("/log/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	src, err := NewHTTPSource(srv.URL+"/", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	mirrorDir := filepath.Join(t.TempDir(), "mirror")
	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{Source: src, LogKey: svc.LogVerifierKey(), Mirror: mirrorDir, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Passed() {
		t.Fatalf("audit over HTTP failed:\n%s", text(r))
	}
	if len(paths) != 3 || paths[0] != "/log/checkpoint" {
		t.Errorf("fetched %v; want the checkpoint, one entry bundle and one hash tile", paths)
	}
	r2, err := auditDir(mirrorDir, svc.LogVerifierKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Passed() || r2.Checkpoint != r.Checkpoint {
		t.Fatalf("audit of the mirror: %+v\n%s", r2.Checkpoint, text(r2))
	}
}

func TestHTTPSourceErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/log/checkpoint":
			w.Write(bytes.Repeat([]byte("x"), maxCheckpoint+1))
		case "/log/tile/0/000":
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	src, err := NewHTTPSource(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		path, want string
		notExist   bool
	}{
		{"checkpoint", "response larger than 65536 bytes", false},
		{"tile/0/000", "503 Service Unavailable: down for maintenance", false},
		{"tile/entries/000", "404 Not Found", true},
	} {
		_, err := src.Fetch(ctx, tc.path)
		if err == nil || !strings.Contains(err.Error(), srv.URL+"/log/"+tc.path) || !strings.Contains(err.Error(), tc.want) || errors.Is(err, fs.ErrNotExist) != tc.notExist {
			t.Errorf("Fetch(%s) = %v; want the URL and %q (not exist: %v)", tc.path, err, tc.want, tc.notExist)
		}
	}
	if _, err := NewHTTPSource("kms.example", nil); err == nil {
		t.Error("NewHTTPSource accepted a URL without scheme")
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := src.Fetch(ctx2, "checkpoint"); !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch with a cancelled context = %v", err)
	}
}

// TestAuditPartialTileFallback: a mirror that holds only the full tile
// serves a smaller tree's partial tile from it.
func TestAuditPartialTileFallback(t *testing.T) {
	b := newBuilder(testRotation())
	for len(b.entries) < 300 {
		b.advance(time.Second)
		b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil)
	}
	dir := t.TempDir()
	b.mirror(dir, 256)
	full := filepath.Join(dir, "tile", "entries", "000")
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	b.mirror(dir, 200)
	os.RemoveAll(filepath.Join(dir, "tile", "entries", "000.p"))
	os.RemoveAll(filepath.Join(dir, "tile", "0", "000.p"))
	if err := os.WriteFile(full, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// tile/0/000 (full) was written by the first mirror.
	r, err := auditDir(dir, b.vkey, "")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Passed() || r.Checkpoint.Size != 200 {
		t.Fatalf("size %d\n%s", r.Checkpoint.Size, text(r))
	}
}

// tamper edits a copy of a mirror.
type tamper func(t *testing.T, dir string)

// editBundle rewrites entry bundle path's leaves.
func editBundle(path string, edit func(leaves [][]byte) [][]byte) tamper {
	return func(t *testing.T, dir string) {
		name := filepath.Join(dir, filepath.FromSlash(path))
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
			out, _ = translog.AppendBundleEntry(out, l)
		}
		if err := os.WriteFile(name, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAuditTamper(t *testing.T) {
	b := newBuilder(testRotation())
	for len(b.entries) < 300 {
		b.advance(time.Second)
		b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil)
	}
	clean := t.TempDir()
	b.mirror(clean, -1)
	bodyOffset := func(l []byte) int { return len(l) - 32 - 10 } // inside the body
	for _, tc := range []struct {
		name   string
		tamper tamper
		want   []string
	}{
		{"modified entry", editBundle("tile/entries/000", func(ls [][]byte) [][]byte {
			ls[17][bodyOffset(ls[17])] ^= 1
			return ls
		}), []string{
			"entry seq 18 (key.released): leaf 17 does not match the log's leaf hash in tile/0/000: modified after it was logged",
			"the log's entries hash to root",
		}},
		{"modified entry in the partial tile", editBundle("tile/entries/001.p/44", func(ls [][]byte) [][]byte {
			ls[43][bodyOffset(ls[43])] ^= 1
			return ls
		}), []string{"entry seq 300 (key.released): leaf 299 does not match the log's leaf hash in tile/0/001.p/44"}},
		{"dropped entry", editBundle("tile/entries/000", func(ls [][]byte) [][]byte {
			return append(ls[:17], ls[18:]...)
		}), []string{
			"entry bundle tile/entries/000 holds 255 entries, want 256: entries were dropped",
			"leaf 17 holds entry seq 19, want seq 18: an entry was dropped, added or reordered",
		}},
		{"swapped entries", editBundle("tile/entries/000", func(ls [][]byte) [][]byte {
			ls[17], ls[20] = ls[20], ls[17]
			return ls
		}), []string{
			"leaf 17 holds entry seq 21, want seq 18",
			"leaf 20 holds entry seq 18, want seq 21",
		}},
		{"duplicated entry", editBundle("tile/entries/000", func(ls [][]byte) [][]byte {
			ls[18] = ls[17]
			return ls
		}), []string{"leaf 18 holds entry seq 18, want seq 19"}},
		{"malformed bundle", editBundle("tile/entries/001.p/44", func(ls [][]byte) [][]byte {
			ls[43] = ls[43][:3]
			return ls
		}), []string{"leaf 299 (in tile/entries/001.p/44) does not decode"}},
		{"corrupt hash tile", func(t *testing.T, dir string) {
			name := filepath.Join(dir, "tile", "0", "000")
			data, _ := os.ReadFile(name)
			data[5*32] ^= 1
			os.WriteFile(name, data, 0o644)
		}, []string{"hash tile tile/0/000 does not match leaf 5 (entry seq 6), which the signed checkpoint covers: the log serves corrupt hash tiles"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(clean)); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, dir)
			stateFile := filepath.Join(t.TempDir(), "state.json")
			r, err := auditDir(dir, b.vkey, stateFile)
			if err != nil {
				t.Fatal(err)
			}
			if r.Passed() {
				t.Fatalf("tampered log passed:\n%s", text(r))
			}
			s := text(r)
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("report lacks %q:\n%s", w, s)
				}
			}
			if _, err := os.Stat(stateFile); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state file written after a failed audit: %v", err)
			}
		})
	}
}

func TestAuditErrors(t *testing.T) {
	b := newBuilder(testRotation())
	dir := t.TempDir()
	b.mirror(dir, -1)
	other := newBuilder(testRotation())

	if _, err := auditDir(dir, other.vkey, ""); err == nil {
		t.Error("audit with another log's key passed")
	} else if !errors.Is(err, ErrCheckpoint) {
		t.Errorf("audit with another log's key: %v, want ErrCheckpoint", err)
	}
	if _, err := auditDir(dir, "not a key", ""); err == nil {
		t.Error("audit with a malformed key passed")
	}
	os.Remove(filepath.Join(dir, "tile", "0", "000.p", "6"))
	if _, err := auditDir(dir, b.vkey, ""); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join("tile", "0", "000.p", "6")) {
		t.Errorf("audit of a mirror without a hash tile: %v", err)
	}

	// A state file of another log is refused.
	odir := t.TempDir()
	other.mirror(odir, -1)
	stateFile := filepath.Join(t.TempDir(), "state.json")
	if _, err := auditDir(odir, other.vkey, stateFile); err != nil {
		t.Fatal(err)
	}
	b.mirror(dir, -1)
	if _, err := auditDir(dir, b.vkey, stateFile); !errors.Is(err, ErrStateFile) {
		t.Errorf("audit with another log's state file: %v, want ErrStateFile", err)
	}
	os.WriteFile(stateFile, []byte("{"), 0o600)
	if _, err := auditDir(dir, b.vkey, stateFile); !errors.Is(err, ErrStateFile) {
		t.Errorf("audit with a corrupt state file: %v, want ErrStateFile", err)
	}
}

// TestAuditRollbackFork audits a log, then a shorter and a diverging
// version of it, against the saved state.
func TestAuditRollbackFork(t *testing.T) {
	b := newBuilder(testRotation())
	for range 20 {
		b.advance(time.Minute)
		b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil)
	}
	n := len(b.entries)
	// fork: the same prefix, then other entries.
	f := &builder{origin: b.origin, signer: b.signer, vkey: b.vkey, now: b.now, st: state.New()}
	for _, e := range b.entries[:n-5] {
		f.entries = append(f.entries, e)
		f.st.Apply(e)
	}
	f.now = b.entries[n-6].Time
	for len(f.entries) < n {
		f.advance(time.Second)
		f.release([]string{f.st.Keys[0].Kid}, goodClaims(), func(r *state.KeyReleased) { r.Identity = "someone else" })
	}

	saved := func(t *testing.T) string {
		dir := t.TempDir()
		b.mirror(dir, -1)
		stateFile := filepath.Join(t.TempDir(), "state.json")
		r, err := auditDir(dir, b.vkey, stateFile)
		if err != nil || !r.Passed() {
			t.Fatalf("%v\n%s", err, text(r))
		}
		return stateFile
	}
	for _, tc := range []struct {
		name  string
		build func(dir string)
		want  string
	}{
		{"rollback", func(dir string) { b.mirror(dir, n-3) },
			"the log shrank from 26 to 23 entries: rollback"},
		{"fork, same size", func(dir string) { f.mirror(dir, -1) },
			"the log forked: its 26 entries now have root"},
		{"fork, grown", func(dir string) {
			f.advance(time.Second)
			f.release([]string{f.st.Keys[0].Kid}, goodClaims(), nil)
			f.mirror(dir, -1)
		}, "the log's first 26 entries now hash to root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateFile := saved(t)
			before, _ := os.ReadFile(stateFile)
			dir := t.TempDir()
			tc.build(dir)
			r, err := auditDir(dir, b.vkey, stateFile)
			if err != nil {
				t.Fatal(err)
			}
			if s := text(r); r.Passed() || !strings.Contains(s, tc.want) {
				t.Fatalf("want a violation %q:\n%s", tc.want, s)
			}
			if after, _ := os.ReadFile(stateFile); !bytes.Equal(before, after) {
				t.Error("the state file changed after a failed audit")
			}
		})
	}
}

// TestAuditInvariants checks the replay's findings on logs that tkms
// would not write.
func TestAuditInvariants(t *testing.T) {
	type result struct{ violations, warnings, notes []string }
	for _, tc := range []struct {
		name  string
		build func(b *builder)
		want  result
	}{
		{"healthy", func(b *builder) {
			b.advance(time.Minute)
			b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil)
		}, result{}},
		{"healthy through rotations and an outage", func(b *builder) {
			for range 40 {
				b.advance(time.Hour)
				b.tick()
			}
			b.advance(30 * time.Hour) // down
			b.tick()
			b.advance(time.Minute)
			b.release([]string{b.st.Newest().Kid}, goodClaims(), nil)
		}, result{notes: []string{"the ledger holds no entries in between: the service was down"}}},
		{"outage, then entries just before the scheduler runs", func(b *builder) {
			b.advance(40 * time.Hour) // down
			b.add(ledger.TypeSettingsPolicy, state.Settings{Service: state.ServiceSettings{Name: "renamed"}})
			b.advance(5 * time.Second)
			b.tick()
		}, result{notes: []string{"no key was published from 2026-01-01 10:00:00Z to 2026-01-02 16:00:05Z (30h0m5s); the ledger holds no entries in between"}}},
		{"release of an expired key", func(b *builder) {
			kid := b.st.Keys[0].Kid
			for range 13 {
				b.advance(time.Hour)
				b.tick()
			}
			b.advance(time.Second)
			b.release([]string{kid}, goodClaims(), nil)
		}, result{violations: []string{"(key.released): released key " + "%kid1% at 2026-01-01 13:00:01Z, but it expired at 2026-01-01 13:00:00Z"}}},
		{"release of a destroyed key", func(b *builder) {
			kid := b.st.Keys[0].Kid
			b.advance(14 * time.Hour)
			b.tick()
			b.release([]string{kid}, goodClaims(), nil)
		}, result{violations: []string{"released key %kid1%, destroyed at seq"}, notes: []string{"no key was published from 2026-01-01 10:00:00Z to 2026-01-01 14:00:00Z"}}},
		{"wrong policy seq", func(b *builder) {
			b.release([]string{b.st.Keys[0].Kid}, goodClaims(), func(r *state.KeyReleased) { r.PolicySeq = 3 })
		}, result{violations: []string{"entry seq 7 (key.released): records policy_seq 3, but the key release policy in force was set by seq 5"}}},
		{"wrong policy hash", func(b *builder) {
			b.release([]string{b.st.Keys[0].Kid}, goodClaims(), func(r *state.KeyReleased) { r.PolicySHA256 = "00" })
		}, result{violations: []string{"records policy_sha256 00, but the key release policy in force (seq 5) hashes to"}}},
		{"claims the policy denies", func(b *builder) {
			b.release([]string{b.st.Keys[0].Kid}, map[string]any{"x-ms-sevsnpvm-is-debuggable": true, "x-ms-sevsnpvm-guestsvn": 4}, nil)
		}, result{violations: []string{`the key release policy in force (seq 5) does not grant the recorded claims: policy: denied: claims: claim "x-ms-sevsnpvm-is-debuggable" is true, want false`}}},
		{"raw snp evidence the policy does not admit", func(b *builder) {
			c := goodClaims()
			c["tkms-evidence-type"] = "snp"
			b.release([]string{b.st.Keys[0].Kid}, c, nil)
		}, result{violations: []string{`(key.released): the key release policy in force (seq 5) does not admit the evidence: "snp" evidence is not ACI evidence`}}},
		{"evidence below the attestation settings", func(b *builder) {
			c := goodClaims()
			c["tkms-evidence-type"], c["tkms-snp-product-line"], c["uvm_endorsements-svn"] = "snp-aci", "Milan", 0
			c["x-ms-sevsnpvm-bootloader-svn"], c["x-ms-sevsnpvm-tee-svn"], c["x-ms-sevsnpvm-snpfw-svn"], c["x-ms-sevsnpvm-microcode-svn"] = 3, 0, 8, 100
			b.release([]string{b.st.Keys[0].Kid}, c, nil)
		}, result{violations: []string{"(key.released): the evidence is below the attestation settings in force: REPORTED_TCB of this Milan report is below the minimum (bootloader 3, tee 0, snp 8, microcode 115): microcode 100 < 115\nthe UVM endorsement's svn is 0, the minimum is 22"}}},
		{"evidence at the attestation settings", func(b *builder) {
			c := goodClaims()
			c["tkms-evidence-type"], c["tkms-snp-product-line"], c["uvm_endorsements-svn"] = "snp-aci", "Milan", 22
			c["x-ms-sevsnpvm-bootloader-svn"], c["x-ms-sevsnpvm-tee-svn"], c["x-ms-sevsnpvm-snpfw-svn"], c["x-ms-sevsnpvm-microcode-svn"] = 3, 0, 8, 115
			b.release([]string{b.st.Keys[0].Kid}, c, nil)
		}, result{}},
		{"release without claims", func(b *builder) {
			b.release([]string{b.st.Keys[0].Kid}, nil, nil)
		}, result{warnings: []string{"entry seq 7 (key.released): no claims recorded"}}},
		{"release before any policy", func(b *builder) {
			// No policy.key_release entry: entry 5 sets the settings.
			b.entries[4].Type, b.entries[4].Body = ledger.TypeSettingsPolicy, b.entries[3].Body
			b.add(ledger.TypeKeyReleased, state.KeyReleased{Kids: []string{b.st.Keys[0].Kid}})
		}, result{violations: []string{"released keys while no key release policy was in force"}}},
		{"second scheduled key in one slot", func(b *builder) {
			b.advance(time.Hour)
			b.key(kms.ReasonScheduled)
		}, result{violations: []string{"entry seq 7 (key.created): scheduled key %kid2% was created while key %kid1% (created 2026-01-01 00:00:00Z) was not due for rotation until 2026-01-01 08:00:00Z: a second key for one rotation slot"}}},
		{"refresh is not scheduled", func(b *builder) {
			b.advance(time.Hour)
			b.key(kms.ReasonRefresh)
			b.advance(time.Hour)
			b.tick()
		}, result{}},
		{"rotation stopped while up", func(b *builder) {
			for range 12 {
				b.advance(time.Hour)
				b.add(ledger.TypeReleaseDenied, state.ReleaseDenied{Code: "RATE_LIMITED"})
			}
		}, result{violations: []string{"no key was published from 2026-01-01 10:00:00Z to the last entry, 2026-01-01 12:00:00Z (2h0m0s), but the service was up: it wrote entry seq 16 at 2026-01-01 10:00:00Z"}}},
		{"rotation late while up", func(b *builder) {
			b.advance(10*time.Hour + time.Minute)
			b.add(ledger.TypeReleaseDenied, state.ReleaseDenied{Code: "RATE_LIMITED"})
			b.advance(time.Hour)
			b.tick()
		}, result{violations: []string{"no key was published from 2026-01-01 10:00:00Z to 2026-01-01 11:01:00Z (1h1m0s), but the service was up: it wrote entry seq 7 at 2026-01-01 10:01:00Z"}}},
		{"gap shorter than a minute", func(b *builder) {
			b.advance(10 * time.Hour)
			b.add(ledger.TypeReleaseDenied, state.ReleaseDenied{Code: "RATE_LIMITED"})
			b.advance(30 * time.Second)
			b.tick()
		}, result{}},
		{"time goes back", func(b *builder) {
			b.advance(-time.Hour)
			b.add(ledger.TypeReleaseDenied, state.ReleaseDenied{Code: "X"})
		}, result{violations: []string{"entry seq 7 (release.denied): recorded at 2025-12-31T23:00:00Z, 1h0m0s before entry seq 6 (2026-01-01T00:00:00Z): entry times must not go back"}}},
		{"time goes back a little", func(b *builder) {
			b.advance(-time.Millisecond)
			b.add(ledger.TypeReleaseDenied, state.ReleaseDenied{Code: "X"})
		}, result{notes: []string{"1 entries (the first at seq 7) were recorded up to 1s before"}}},
		{"unknown type", func(b *builder) {
			b.add("key.teleported", map[string]string{"kid": "x"})
		}, result{violations: []string{"entry seq 7 (key.teleported): unknown entry type"}}},
		{"rejected by the state machine", func(b *builder) {
			b.add(ledger.TypeKeyPublished, state.KeyEvent{Kid: "nope_1"})
		}, result{violations: []string{"entry seq 7 (key.published): rejected by the state machine: unknown kid nope_1"}}},
		{"log key other than the pinned one", func(b *builder) {
			other := newBuilder(testRotation())
			lk := b.entries[1]
			lk.Body, _ = json.Marshal(state.LogKey{Origin: b.origin, VerifierKey: other.vkey})
			b.st = state.New()
			for _, e := range b.entries {
				b.st.Apply(e)
			}
		}, result{violations: []string{"entry seq 2 (log.key): records verifier key \"" + "audit.test/log+"}}},
		{"simulated release", func(b *builder) {
			b.release([]string{b.st.Keys[0].Kid}, goodClaims(), func(r *state.KeyReleased) { r.Simulated = true })
		}, result{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(testRotation())
			tc.build(b)
			dir := t.TempDir()
			b.mirror(dir, -1)
			r, err := auditDir(dir, b.vkey, "")
			if err != nil {
				t.Fatal(err)
			}
			expand := func(s string) string {
				for i, k := range b.st.Keys {
					s = strings.ReplaceAll(s, "%kid"+string(rune('1'+i))+"%", k.Kid)
				}
				return s
			}
			check := func(what string, got []string, want []string) {
				if len(want) == 0 && len(got) != 0 {
					t.Errorf("unexpected %s:\n  %s", what, strings.Join(got, "\n  "))
				}
				for _, w := range want {
					w = expand(w)
					found := false
					for _, g := range got {
						found = found || strings.Contains(g, w)
					}
					if !found {
						t.Errorf("no %s contains %q; got:\n  %s", what, w, strings.Join(got, "\n  "))
					}
				}
			}
			check("violation", findings(r.Violations), tc.want.violations)
			check("warning", findings(r.Warnings), tc.want.warnings)
			var notes []string
			for _, n := range r.Notes {
				if !strings.Contains(n, "governance") {
					notes = append(notes, n)
				}
			}
			check("note", notes, tc.want.notes)
			if r.Passed() != (len(tc.want.violations) == 0) {
				t.Errorf("Passed() = %v", r.Passed())
			}
		})
	}
}

func TestAuditSimulatedListed(t *testing.T) {
	b := newBuilder(testRotation())
	e := b.release([]string{b.st.Keys[0].Kid}, goodClaims(), func(r *state.KeyReleased) { r.Simulated = true })
	dir := t.TempDir()
	b.mirror(dir, -1)
	r, err := auditDir(dir, b.vkey, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Releases.Simulated != 1 || len(r.Releases.SimulatedSeqs) != 1 || r.Releases.SimulatedSeqs[0] != e.Seq {
		t.Errorf("releases %+v", r.Releases)
	}
	if s := text(r); !strings.Contains(s, "simulated: seq 7") {
		t.Errorf("text report does not list the simulated release:\n%s", s)
	}
}

func TestAuditEmptyAndTiny(t *testing.T) {
	b := newBuilder(testRotation())
	for _, n := range []int{0, 1, 2} {
		dir := t.TempDir()
		b.mirror(dir, n)
		r, err := auditDir(dir, b.vkey, "")
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !r.Passed() || r.Checkpoint.Size != int64(n) || n == 0 && r.Checkpoint.Root != must(tlog.TreeHash(0, memHashes(nil))) {
			t.Errorf("size %d:\n%s", n, text(r))
		}
	}
}

func text(r *Report) string {
	if r == nil {
		return "(no report)"
	}
	var b strings.Builder
	r.WriteText(&b)
	return b.String()
}
