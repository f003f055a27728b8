package main

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runTkmsIn runs a short tkms command with stdin and extra environment
// variables (TKMS_* of the test's own environment are never passed).
func runTkmsIn(t testing.TB, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, tkmsBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(tkmsEnv(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tkms %s: still running after %v", strings.Join(args, " "), exitDeadline)
	}
	code = exitCode(err)
	if code == -2 {
		t.Fatalf("tkms %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// govService is a service created by tkms init for three members under
// the default constitution (2 of 3).
type govService struct {
	dir, data, membersFile string
	a, b, c                govMember
}

// newGovService writes three members' keys and the members file in a new
// directory, and runs tkms init with extra arguments.
func newGovService(t *testing.T, extra ...string) *govService {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "members")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &govService{dir: dir, data: filepath.Join(dir, "data"), membersFile: filepath.Join(dir, "members.json")}
	g.a, g.b, g.c = newGovMember(t, keys, "sro-a"), newGovMember(t, keys, "sro-b"), newGovMember(t, keys, "sro-c")
	var members []map[string]string
	for _, m := range []govMember{g.a, g.b, g.c} {
		members = append(members, map[string]string{"name": m.name, "signing_key": string(readFile(t, m.pub))})
	}
	writeJSONFile(t, g.membersFile, map[string]any{"members": members})
	govCLI(t, append([]string{"init", "--members", g.membersFile, "--data", g.data}, extra...)...)
	return g
}

// TestServeRefusesUngoverned: serve does not silently create an
// ungoverned ledger on an empty data directory; it points to tkms init,
// and --allow-ungoverned lets it.
func TestServeRefusesUngoverned(t *testing.T) {
	data := newServeData(t)
	cfgPath := filepath.Join(t.TempDir(), "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": data})
	_, errOut, code := runTkms(t, "serve", "--config", cfgPath)
	for _, want := range []string{"refusing to create an ungoverned ledger", "tkms init --members", "--allow-ungoverned"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr %q; want a refusal containing %q", code, errOut, want)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "ledger.db")); err == nil {
		t.Error("the refused serve created a ledger")
	}
	// The missing-key error points to tkms init too.
	empty := filepath.Join(t.TempDir(), "nokey")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": empty})
	if _, errOut, _ := runTkms(t, "serve", "--config", cfgPath); !strings.Contains(errOut, "tkms init") {
		t.Errorf("the missing master key error does not point to tkms init: %q", errOut)
	}
}

// TestInitChecksBeforeWriting: init refuses what serve could not load or
// governance could not satisfy, before writing anything, so a rerun with
// the inputs corrected succeeds in the same directory; a constitution of
// rules alone takes the documented defaults; and a governed serve does not
// warn that refresh is disabled, nor of a policy its configuration does not
// name.
func TestInitChecksBeforeWriting(t *testing.T) {
	g := newGovService(t) // three members, for the members file
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	leftovers := func(t *testing.T) {
		t.Helper()
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() != "policies" && e.Name() != "constitution.json" {
				t.Errorf("a refused init left %s behind", e.Name())
			}
		}
	}
	t.Run("jwks not JSON", func(t *testing.T) {
		pol := filepath.Join(dir, "policies")
		os.Mkdir(pol, 0o700)
		writeJSONFile(t, filepath.Join(pol, "jwt_issuers.json"), []map[string]any{{"issuer": "https://issuer.example", "audiences": []string{"api://kms"}, "jwks": "notjson"}})
		errOut := govCLIRefused(t, "jwks", "init", "--members", g.membersFile, "--policies", pol, "--data", data)
		if !strings.Contains(errOut, "jwt_issuers.json") {
			t.Errorf("the refusal does not name the file: %q", errOut)
		}
		leftovers(t)
		os.RemoveAll(pol)
	})
	t.Run("unsatisfiable constitution", func(t *testing.T) {
		c := filepath.Join(dir, "constitution.json")
		writeJSONFile(t, c, map[string]any{"rules": map[string]any{"default": map[string]any{"approvals": 5}}})
		govCLIRefused(t, "constitution", "init", "--members", g.membersFile, "--constitution", c, "--data", data)
		leftovers(t)
	})
	t.Run("rules alone take the defaults", func(t *testing.T) {
		c := filepath.Join(dir, "constitution.json")
		writeJSONFile(t, c, map[string]any{"rules": map[string]any{"default": map[string]any{"approvals": "majority"}}})
		out := govCLI(t, "init", "--members", g.membersFile, "--constitution", c, "--data", data)
		for _, want := range []string{"proposals stay open 7 days", "an open proposal may be withdrawn by its proposer"} {
			if !strings.Contains(out, want) {
				t.Errorf("init printed no %q:\n%s", want, out)
			}
		}
		if perm(t, filepath.Join(data, "master.key")) != 0o600 {
			t.Error("master.key is not 0600")
		}
	})
	t.Run("into an existing empty directory", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		out := govCLI(t, "init", "--members", g.membersFile, "--data", d, "--json")
		if m := decodeResult(t, out, "created"); m["new_master_key"] != true || len(m["members"].([]any)) != 3 {
			t.Errorf("init --json: %s", out)
		}
		for _, name := range []string{"master.key", "ledger.db"} {
			if _, err := os.Stat(filepath.Join(d, name)); err != nil {
				t.Error(err)
			}
		}
		if ents, _ := os.ReadDir(d); len(ents) != 2 {
			t.Errorf("init left %v in the data directory", ents)
		}
	})
	t.Run("governed serve", func(t *testing.T) {
		cfgPath := filepath.Join(dir, "tkms.json")
		writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": data})
		p := startProc(t, "serve", "--config", cfgPath)
		p.waitOutput(p.stderr, serveListening)
		if s, _ := p.stderr.snapshot(); strings.Contains(s, "operator token") || strings.Contains(s, "not governed") {
			t.Errorf("a governed serve warns about the operator token:\n%s", s)
		}
		// A configuration that names no policy differs from nothing; one
		// that names another is told it is ignored.
		if s, _ := p.stderr.snapshot(); strings.Contains(s, "differs from the ledger's") {
			t.Errorf("a governed serve whose configuration names no policy warns of a difference:\n%s", s)
		}
		p.stopClean(syscall.SIGTERM)
		writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": data,
			"settings_policy": map[string]any{"service": map[string]any{"name": "other"}}})
		p = startProc(t, "serve", "--config", cfgPath)
		p.waitOutput(p.stderr, serveListening)
		if s, _ := p.stderr.snapshot(); !strings.Contains(s, "the configuration's settings policy differs from the ledger's and is ignored") {
			t.Errorf("a governed serve ignores another settings policy without a word:\n%s", s)
		}
	})
}

// decodeResult decodes a command's --json output and checks its top-level
// result field.
func decodeResult(t *testing.T, out, want string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("--json output is not a JSON object: %v\n%q", err, out)
	}
	if m["result"] != want {
		t.Fatalf("--json result %v, want %q:\n%s", m["result"], want, out)
	}
	return m
}

// TestOperatorCLI drives a 2-of-3 governed service over TLS as an
// operator does: --kms everywhere (--url still accepted), TKMS_ADDR,
// TKMS_CACERT and TKMS_MEMBER_KEY as defaults, an unknown authority
// answered with the hint to --kms-ca, complete vote hints, a vote that
// shows the proposal and asks, id prefixes, propose --dry-run, and --json
// with a result field.
func TestOperatorCLI(t *testing.T) {
	g := newGovService(t)
	f := newTLSFixture(t)
	cfgPath := filepath.Join(g.dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": g.data, "tls_cert_file": f.certFile, "tls_key_file": f.keyFile, "metrics_listen": "127.0.0.1:0"})
	p := startServe(t, cfgPath)
	kms := "https://" + strings.TrimPrefix(p.URL, "http://")
	metricsURL := "http://" + p.waitOutput(p.stderr, regexp.MustCompile(`"msg":"metrics listening","addr":"([^"]+)"`))[1] + "/metrics"
	env := []string{"TKMS_ADDR=" + kms, "TKMS_CACERT=" + f.caFile}

	t.Run("unknown authority suggests --kms-ca", func(t *testing.T) {
		_, errOut, code := runTkms(t, "gov", "list", "--kms", kms)
		if code != 1 || !strings.Contains(errOut, "--kms-ca CA.pem") || !strings.Contains(errOut, "TKMS_CACERT") {
			t.Errorf("exit %d, stderr %q; want the hint to --kms-ca", code, errOut)
		}
	})
	t.Run("--url is an alias of --kms", func(t *testing.T) {
		out := govCLI(t, "keys", "list", "--url", kms, "--kms-ca", f.caFile, "--json")
		if keys := decodeResult(t, out, "ok")["keys"].([]any); len(keys) != 1 {
			t.Errorf("keys list: %d keys, want 1", len(keys))
		}
	})

	// A rotation proposed by A waits for a second approval; its hint is
	// complete and says when the key would be published.
	out := govCLI(t, "keys", "rotate", "--kms", kms, "--kms-ca", f.caFile, "--key", g.a.key, "--reason", "drill")
	for _, want := range []string{"approvals 1/2", "tkms gov vote --kms " + kms + " --kms-ca " + f.caFile + " --key MEMBER.pem", "published to clients"} {
		if !strings.Contains(out, want) {
			t.Errorf("keys rotate printed no %q:\n%s", want, out)
		}
	}
	id := proposalID(t, out)

	t.Run("metrics_listen", func(t *testing.T) {
		resp, body := do(t, http.MethodGet, metricsURL, nil)
		for _, want := range []string{"\ntkms_proposals_open 1\n", "\ntkms_tls_cert_not_after_seconds ", "\ntkms_build_info{", "\ngo_goroutines ", `tkms_keys{phase="published"} 1`} {
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
				t.Errorf("GET %s: %s, no %q", metricsURL, resp.Status, want)
			}
		}
		hc, err := kmsHTTPClient(kms, f.caFile, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		r, err := hc.Get(kms + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("GET /metrics on the API's address with metrics_listen: %s, want 404", r.Status)
		}
	})

	t.Run("dry run submits nothing", func(t *testing.T) {
		actions := filepath.Join(g.dir, "rotate.json")
		writeJSONFile(t, actions, map[string]any{"name": "rotate_key_now", "args": map[string]any{}})
		out, errOut, code := runTkmsIn(t, "", append(env, "TKMS_MEMBER_KEY="+g.c.key), "gov", "propose", "--dry-run", "--json", actions)
		if code != 0 {
			t.Fatalf("propose --dry-run: exit %d: %s", code, errOut)
		}
		decodeResult(t, out, "dry_run")
		out, _, _ = runTkmsIn(t, "", env, "gov", "list", "--json")
		if n := len(decodeResult(t, out, "ok")["proposals"].([]any)); n != 1 {
			t.Errorf("%d proposals after a dry run, want 1", n)
		}
	})

	// B votes with the environment's defaults and a prefix of the id: the
	// vote shows the proposal and asks first.
	bEnv := append(env, "TKMS_MEMBER_KEY="+g.b.key)
	out, errOut, code := runTkmsIn(t, "n\n", bEnv, "gov", "vote", id[:10], "approve")
	if code != 1 || !strings.Contains(errOut, "not confirmed") || !strings.Contains(out, "rotate_key_now") || !strings.Contains(out, "approve proposal "+id+"?") {
		t.Fatalf("a declined vote: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	out, errOut, code = runTkmsIn(t, "y\n", bEnv, "gov", "vote", "--json", id[:10], "approve")
	if code != 0 {
		t.Fatalf("a confirmed vote: exit %d: %s", code, errOut)
	}
	decodeResult(t, out, "accepted")
	out = govCLI(t, "keys", "list", "--kms", kms, "--kms-ca", f.caFile)
	if strings.Count(out, "\n") != 3 {
		t.Errorf("after the accepted rotation, keys list shows:\n%s\nwant 2 keys", out)
	}
	t.Run("show by prefix", func(t *testing.T) {
		out, errOut, code := runTkmsIn(t, "", env, "gov", "show", id[:6])
		if code != 0 || !strings.Contains(out, "state accepted") {
			t.Errorf("gov show by prefix: exit %d\n%s%s", code, out, errOut)
		}
		if _, errOut, code := runTkmsIn(t, "", env, "gov", "show", "zz"); code != 2 || !strings.Contains(errOut, "unique prefix") {
			t.Errorf("gov show zz: exit %d, %q", code, errOut)
		}
	})
	t.Run("hints from the environment", func(t *testing.T) {
		// The KMS and its CA from TKMS_ADDR and TKMS_CACERT: the vote hint
		// names both.
		out, errOut, code := runTkmsIn(t, "", append(env, "TKMS_MEMBER_KEY="+g.c.key), "keys", "rotate", "--reason", "env")
		if want := "tkms gov vote --kms " + kms + " --kms-ca " + f.caFile + " --key MEMBER.pem "; code != 0 || !strings.Contains(out, want) {
			t.Errorf("keys rotate with the environment's defaults: exit %d, no %q in:\n%s%s", code, want, out, errOut)
		}
	})
}

// TestHelpEveryCommand: every command's -h has its usage, a description,
// an example and its exit codes, and exits 0.
func TestHelpEveryCommand(t *testing.T) {
	for _, name := range helpNames() {
		args := append(strings.Fields(name), "-h")
		_, errOut, code := runTkms(t, args...)
		errOut = strings.ToLower(errOut)
		for _, want := range []string{"usage", "example:\n  tkms", "exit codes: 0"} {
			if code != 0 || !strings.Contains(errOut, want) {
				t.Errorf("tkms %s -h: exit %d, no %q in:\n%s", name, code, want, errOut)
			}
		}
	}
}

// TestHelpCoversEveryCommand: every command and subcommand the dispatch
// functions know (read from their source) has its help: usage, a
// description, an example and exit codes (TestHelpEveryCommand runs them).
func TestHelpCoversEveryCommand(t *testing.T) {
	groups := map[string]bool{"gov": true, "keys": true, "attest": true}
	for file, fn := range map[string]string{"main.go": "run", "gov.go": "cmdGov", "keys.go": "cmdKeys", "attest.go": "cmdAttest"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		prefix := map[string]string{"cmdGov": "gov ", "cmdKeys": "keys ", "cmdAttest": "attest "}[fn]
		var found int
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Name.Name != fn {
				continue
			}
			for _, st := range fd.Body.List {
				sw, ok := st.(*ast.SwitchStmt)
				if !ok {
					continue
				}
				for _, c := range sw.Body.List {
					for _, e := range c.(*ast.CaseClause).List {
						lit, ok := e.(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							continue
						}
						name, _ := strconv.Unquote(lit.Value)
						if strings.HasPrefix(name, "-") || name == "help" || groups[name] && prefix == "" {
							continue
						}
						found++
						if h, ok := helps[prefix+name]; !ok || h.usage == "" || h.description == "" || h.example == "" || h.exits == "" {
							t.Errorf("tkms %s%s has no complete help (help.go)", prefix, name)
						}
					}
				}
			}
		}
		if found < 2 {
			t.Errorf("%s: found %d commands in %s's switch; is the test reading the dispatch?", file, found, fn)
		}
	}
}

// TestGroupHelp: the commands with subcommands list them on -h.
func TestGroupHelp(t *testing.T) {
	for group, subs := range map[string][]string{"keys": {"tkms keys list", "tkms keys rotate"}, "attest": {"tkms attest simulate", "tkms attest inspect"}, "gov": {"tkms gov propose", "tkms gov vote"}} {
		out, _, code := runTkms(t, group, "-h")
		for _, want := range subs {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("tkms %s -h: exit %d, no %q in:\n%s", group, code, want, out)
			}
		}
	}
}

// TestVersion: tkms version reports the Go version of the build, and
// --json a result field.
func TestVersion(t *testing.T) {
	out := govCLI(t, "version", "--json")
	if m := decodeResult(t, out, "ok"); !strings.HasPrefix(m["go"].(string), "go1.") || m["version"] == "" {
		t.Errorf("tkms version --json: %s", out)
	}
}

// TestReadmeInstallsFirst: the README installs the command (go install
// ./cmd/tkms) before its first bare tkms command line.
func TestReadmeInstallsFirst(t *testing.T) {
	install, bare := -1, -1
	inBlock := false
	for i, line := range strings.Split(string(readFile(t, "../../README.md")), "\n") {
		switch {
		case strings.HasPrefix(line, "```"):
			inBlock = !inBlock
		case inBlock && install < 0 && strings.HasPrefix(line, "go install ./cmd/tkms"):
			install = i
		case inBlock && bare < 0 && (strings.HasPrefix(line, "tkms ") || strings.Contains(line, "$(tkms ")):
			bare = i
		}
	}
	if install < 0 || bare < 0 || install > bare {
		t.Errorf("README: go install ./cmd/tkms on line %d, the first bare tkms command on line %d", install+1, bare+1)
	}
}

// TestLicenseAndChangelog: the repository carries the Apache-2.0 licence
// and a changelog whose unreleased section tells users what changed.
func TestLicenseAndChangelog(t *testing.T) {
	lic := string(readFile(t, "../../LICENSE"))
	for _, want := range []string{"Apache License", "Version 2.0, January 2004", "END OF TERMS AND CONDITIONS"} {
		if !strings.Contains(lic, want) {
			t.Errorf("LICENSE lacks %q", want)
		}
	}
	cl := string(readFile(t, "../../CHANGELOG.md"))
	for _, want := range []string{"## Unreleased", "--allow-ungoverned", "tkms gov vote", "TKMS_ADDR", "/readyz", "backup_dir"} {
		if !strings.Contains(cl, want) {
			t.Errorf("CHANGELOG.md does not mention %q", want)
		}
	}
}

// TestNoReferencesOutsideTheRepo: no document, comment or provenance note
// of the repository sends its reader to the development machine's shared
// tree (the project's rule: docs stand on their own).
func TestNoReferencesOutsideTheRepo(t *testing.T) {
	outside := ".." + "/shared"
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" && strings.Contains(path, "fuzz")) {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); d.IsDir() || ext != ".md" && ext != ".go" && ext != ".sh" && ext != ".json" {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(outside)) {
			t.Errorf("%s refers to %s, outside the repository", path, outside)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
