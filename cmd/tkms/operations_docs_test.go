package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/translog"
)

const operationsDoc = "../../docs/operations.md"

// runDocScript runs a docs sh block with sh -e in dir, with env added and
// the built tkms first on the PATH.
func runDocScript(t *testing.T, dir, script string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(tkmsEnv(), env...)
	for i, kv := range cmd.Env {
		if strings.HasPrefix(kv, "PATH=") {
			cmd.Env[i] = "PATH=" + filepath.Dir(tkmsBin) + ":" + strings.TrimPrefix(kv, "PATH=")
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docs block: %v\n%s\n--- script:\n%s", err, out, script)
	}
	return string(out)
}

// TestOperationsFiles: docs/operations.md names every configuration field
// (reflection over Config and its sections: limits, cluster, cluster.raft, auto_recovery), its policy file examples
// pass the checks init and governance apply, and its systemd unit verifies.
func TestOperationsFiles(t *testing.T) {
	raw := string(readFile(t, operationsDoc))
	_, ref, _ := strings.Cut(raw, "\n## Configuration reference\n")
	ref, _, _ = strings.Cut(ref, "\n## ")
	known := map[string]bool{}
	fields := func(v any, prefix string) {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			known[prefix+tag] = true
			if !strings.Contains(ref, "`"+prefix+tag+"`") {
				t.Errorf("the configuration reference does not document %s%s", prefix, tag)
			}
		}
	}
	fields(Config{}, "")
	fields(LimitsConfig{}, "limits.")
	fields(ClusterConfig{}, "cluster.")
	fields(RaftConfig{}, "cluster.raft.")
	fields(AutoRecoveryConfig{}, "auto_recovery.")
	// And it documents no field that is not in them.
	for _, row := range regexp.MustCompile(`(?m)^\| ([^|]+) \|`).FindAllStringSubmatch(ref, -1) {
		for _, m := range regexp.MustCompile("`([a-z_.]+)`").FindAllStringSubmatch(row[1], -1) {
			if !known[m[1]] {
				t.Errorf("the configuration reference documents %s, which is no configuration field", m[1])
			}
		}
	}

	_, pol, _ := strings.Cut(raw, "\n## Policy files\n")
	pol, _, _ = strings.Cut(pol, "\n## ")
	// Each example follows a paragraph that starts with its file's name.
	var blocks [][2]string
	prev := 0
	fileName := regexp.MustCompile("`([a-zA-Z_]+\\.json)`")
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatchIndex(pol, -1) {
		if n := fileName.FindStringSubmatch(pol[prev:m[0]]); n != nil {
			blocks = append(blocks, [2]string{n[1], pol[m[2]:m[3]]})
		}
		prev = m[1]
	}
	checked := map[string]bool{}
	for _, b := range blocks {
		name, body := b[0], []byte(b[1])
		var err error
		switch name {
		case "members.json":
			var f struct{ Members []gov.Member }
			err = decodeStrictJSON(body, &f)
		case "constitution.json":
			var c *gov.Constitution
			if c, err = parseInitConstitution(body); err == nil {
				err = c.Validate(3)
			}
		case policyFileRelease, policyFileIssuers, policyFileJWTClaims, policyFileRotation, policyFileSettings:
			dir := t.TempDir()
			if err = os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
				t.Fatal(err)
			}
			if name == policyFileJWTClaims {
				// claims need their issuer: the issuers' example
				for _, o := range blocks {
					if o[0] == policyFileIssuers {
						os.WriteFile(filepath.Join(dir, policyFileIssuers), []byte(o[1]), 0o600)
					}
				}
			}
			var p initPolicies
			if p, err = readInitPolicies(dir, "tkms"); err == nil {
				err = checkInitPolicies(p)
			}
			if err == nil && name == policyFileSettings && (p.settings.Attestation == nil || len(p.settings.Attestation.MinReportedTCB) == 0 || p.settings.Attestation.MinUVMSVN == 0) {
				err = errors.New("the example does not set the attestation floors (min_reported_tcb, min_uvm_svn) explicitly")
			}
		case "ACTIONS.json":
			var actions []gov.Action
			if actions, err = parseActionsFile(body); err == nil {
				err = gov.ValidateActions(actions)
			}
		default:
			t.Errorf("policy files: an example of %s, which no test checks", name)
		}
		if err != nil {
			t.Errorf("docs/operations.md's %s: %v", name, err)
		}
		checked[name] = true
	}
	for _, name := range append([]string{"members.json", "constitution.json", "ACTIONS.json"}, initPolicyFiles...) {
		if !checked[name] {
			t.Errorf("docs/operations.md shows no example of %s", name)
		}
	}

	_, unit, ok := strings.Cut(raw, "\n## systemd\n\n```ini\n")
	unit, _, _ = strings.Cut(unit, "```")
	if !ok || !strings.Contains(unit, "ExecStart=/usr/local/bin/tkms serve --config ") {
		t.Fatalf("docs/operations.md has no systemd unit running tkms serve")
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		f := filepath.Join(t.TempDir(), "tkms.service")
		os.WriteFile(f, []byte(strings.ReplaceAll(unit, "/usr/local/bin/tkms", tkmsBin)), 0o644)
		out, err := exec.Command("systemd-analyze", "verify", f).CombinedOutput()
		// Outside a booted systemd (containers), verify cannot connect and
		// says so; anything it says about the unit itself fails the test.
		if err != nil && strings.Contains(string(out), "tkms.service") {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}

// TestOperationsTLSRecipe runs the TLS recipe of docs/operations.md as
// written, then serves with its certificate and reaches it with the CA
// (TKMS_CACERT).
func TestOperationsTLSRecipe(t *testing.T) {
	needTools(t, "openssl")
	dir := t.TempDir()
	runDocScript(t, dir, docBlock(t, operationsDoc, "## TLS with openssl"))
	if perm(t, filepath.Join(dir, "tls.key")) != 0o600 {
		t.Error("tls.key is not 0600")
	}
	g := newGovService(t)
	cfgPath := filepath.Join(g.dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": g.data,
		"tls_cert_file": filepath.Join(dir, "tls.crt"), "tls_key_file": filepath.Join(dir, "tls.key")})
	p := startServe(t, cfgPath)
	kms := "https://localhost:" + p.URL[strings.LastIndex(p.URL, ":")+1:]
	out, errOut, code := runTkmsIn(t, "", []string{"TKMS_ADDR=" + kms, "TKMS_CACERT=" + filepath.Join(dir, "ca.pem")}, "keys", "list", "--json")
	if code != 0 {
		t.Fatalf("keys list over the recipe's TLS: exit %d: %s", code, errOut)
	}
	decodeResult(t, out, "ok")
}

// TestBackupRestore runs docs/operations.md's backup and restore as
// written, under load (members' rotations, each a ledger entry and a
// keyring change, racing the backup), restores elsewhere, serves the
// restored directory, and runs the doc's checks: ready, the audit passes
// against a state saved before the backup, the keys list.
func TestBackupRestore(t *testing.T) {
	needTools(t, "curl")
	constitution := filepath.Join(t.TempDir(), "constitution.json")
	writeJSONFile(t, constitution, map[string]any{"rules": map[string]any{
		"default": map[string]any{"approvals": "majority"}, "rotate_key_now": map[string]any{"approvals": 1}}})
	g := newGovService(t, "--constitution", constitution)
	backups := filepath.Join(g.dir, "backups")
	cfgPath := filepath.Join(g.dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": g.data, "backup_dir": backups,
		"limits": map[string]any{"per_address_rate": 0}})
	p := startServe(t, cfgPath)
	_, logKey := do(t, http.MethodGet, p.URL+"/v1/log/key", nil)
	work := t.TempDir()
	govCLI(t, "audit", "--kms", p.URL, "--log-key", string(bytes.TrimSpace(logKey)), "--state", filepath.Join(work, "audit.json"))

	// A rotation the constitution accepts at once says when its key is
	// published and until when it is released.
	out := govCLI(t, "keys", "rotate", "--kms", p.URL, "--key", g.a.key)
	for _, want := range []string{"created key ", "released to attested services from now until ", "published to clients (the primary key) from "} {
		if !strings.Contains(out, want) {
			t.Errorf("keys rotate printed no %q:\n%s", want, out)
		}
	}
	key := decodeResult(t, govCLI(t, "keys", "rotate", "--kms", p.URL, "--key", g.a.key, "--reason", "second", "--json"), "created")["key"].(map[string]any)
	if key["release_until"] == nil || key["not_before"] == nil {
		t.Errorf("keys rotate --json: %v", key)
	}

	// The load: member A's rotations, accepted at once, until stopped or
	// 60 are done (forced rotations may hold at most about 80 key ids).
	const most = 60
	var rotations atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loadDone := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rotations.Load() < most {
				select {
				case <-stop:
					return
				default:
				}
				msg, err := g.a.signer.SignProposal([]gov.Action{{Name: gov.ActRotateKeyNow, Args: json.RawMessage(`{}`)}}, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := http.Post(p.URL+"/app/refresh", "application/cose", bytes.NewReader(msg))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					rotations.Add(1)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()
	// waitRotations waits until n rotations are done or the load ended.
	waitRotations := func(n int64) {
		for rotations.Load() < n {
			select {
			case <-loadDone:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitRotations(3)
	restored := filepath.Join(work, "restored")
	out = runDocScript(t, work, docBlock(t, operationsDoc, "### Back up, then restore elsewhere"),
		"TKMS_PID="+itoa(p.cmd.Process.Pid), "BACKUP_DIR="+backups, "MASTER_KEY="+filepath.Join(g.data, "master.key"), "RESTORE_DIR="+restored)
	waitRotations(rotations.Load() + 3) // the load goes on after the backup
	close(stop)
	<-loadDone
	var info struct{ Seq uint64 }
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Seq < 4 {
		t.Fatalf("the backup block printed %q, want backup.json with seq", out)
	}
	if s, _ := p.stderr.snapshot(); !strings.Contains(s, `"msg":"backup written"`) {
		t.Errorf("serve did not log the backup:\n%s", s)
	}

	rcfg := filepath.Join(work, "restored.json")
	writeJSONFile(t, rcfg, map[string]any{"listen": "127.0.0.1:0", "data_dir": restored})
	r := startServe(t, rcfg)
	out = runDocScript(t, work, docBlock(t, operationsDoc, "### Check the restored service"), "KMS="+r.URL, "LOG_KEY="+string(bytes.TrimSpace(logKey)))
	for _, want := range []string{`"status":"ready"`, "KID"} {
		if !strings.Contains(out, want) {
			t.Errorf("the check block printed no %q:\n%s", want, out)
		}
	}
	// Every key of the backup is in the restored service, with its data key.
	if keys := allKeys(t, r.URL); len(keys) < 4 {
		t.Errorf("the restored service has %d keys", len(keys))
	}
	p.stopClean(syscall.SIGTERM)
	r.stopClean(syscall.SIGTERM)
}

// TestOperationsWalkthrough walks docs/operations.md from nothing as an
// operator would, running its blocks as written in one directory: the TLS
// recipe, "The same on one machine" (three members, init, a TLS service
// started in the background, a policy change and a rotation each accepted
// by a second member's ballot, the audit), then the backup of the running
// service and, once it is stopped, a service on the restored directory,
// checked by the doc's block over TLS: ready, the audit passes against the
// auditor's state from before the backup, the keys are there.
func TestOperationsWalkthrough(t *testing.T) {
	needTools(t, "openssl", "jq", "curl")
	dir := t.TempDir()
	port := freePort(t)
	port = port[strings.LastIndex(port, ":")+1:]
	// The service the block starts in the background is its own process
	// (tkms.pid): stop it whatever happens.
	stop := func() {
		b, err := os.ReadFile(filepath.Join(dir, "tkms.pid"))
		if err != nil {
			return
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid <= 0 || syscall.Kill(pid, syscall.SIGTERM) != nil {
			return
		}
		deadline := time.Now().Add(time.Minute)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Cleanup(stop)
	runDocScript(t, dir, docBlock(t, operationsDoc, "## TLS with openssl"))
	out := runDocScript(t, dir, docBlock(t, operationsDoc, "### The same on one machine"), "PORT="+port)
	hostData := "73a9f2c5d1e8b4a06f3c2d9e8b7a6f5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a"
	for _, want := range []string{`{"status":"ready"}`, hostData, "state accepted, approvals 2/2", "result: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough printed no %q:\n%s", want, out)
		}
	}
	// tkms keys list's rows: kid, id, suite.
	keyRows := regexp.MustCompile(`(?m)^[A-Za-z0-9_-]+_[0-9]+ +[0-9]+ +x25519 `)
	if n := len(keyRows.FindAllString(out, -1)); n != 2 {
		t.Errorf("the walkthrough's keys list shows %d keys, want 2 (the first and the rotation's):\n%s", n, out)
	}
	if log := string(readFile(t, filepath.Join(dir, "serve.log"))); strings.Contains(log, `"level":"WARN"`) && !strings.Contains(log, "no trusted token issuer") {
		t.Errorf("the walkthrough's service warned of something unexpected:\n%s", log)
	}
	kms := "https://localhost:" + port
	env := []string{"TKMS_ADDR=" + kms, "TKMS_CACERT=" + filepath.Join(dir, "ca.pem")}

	// Backup and restore, as the walkthrough's last paragraph says.
	pid := strings.TrimSpace(string(readFile(t, filepath.Join(dir, "tkms.pid"))))
	runDocScript(t, dir, docBlock(t, operationsDoc, "### Back up, then restore elsewhere"), append(env,
		"TKMS_PID="+pid, "BACKUP_DIR="+filepath.Join(dir, "backups"), "MASTER_KEY="+filepath.Join(dir, "data", "master.key"),
		"RESTORE_DIR="+filepath.Join(dir, "restored"))...)
	stop()
	runDocScript(t, dir, `jq --arg d "$PWD/restored" '.data_dir = $d' tkms.json > restored.json`)
	r := startProc(t, "serve", "--config", filepath.Join(dir, "restored.json"))
	r.waitOutput(r.stderr, serveListening)
	logKey := strings.TrimSpace(string(readFile(t, filepath.Join(dir, "log.vkey"))))
	out = runDocScript(t, dir, docBlock(t, operationsDoc, "### Check the restored service"), append(env, "KMS="+kms, "LOG_KEY="+logKey)...)
	for _, want := range []string{`{"status":"ready"}`, "result: PASS", "KID"} {
		if !strings.Contains(out, want) {
			t.Errorf("the check of the restored service printed no %q:\n%s", want, out)
		}
	}
	if n := len(keyRows.FindAllString(out, -1)); n != 2 {
		t.Errorf("the restored service lists %d keys, want 2:\n%s", n, out)
	}
	r.stopClean(syscall.SIGTERM)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestAzureTemplate: the ARM template for confidential container groups is
// valid JSON that runs the image of the Dockerfile with the CCE policy of
// a parameter (the placeholders of its README's steps), probes /livez and
// /readyz, and its parameters file fills every required parameter.
func TestAzureTemplate(t *testing.T) {
	var tpl struct {
		Schema     string `json:"$schema"`
		Parameters map[string]struct {
			Type         string `json:"type"`
			DefaultValue any    `json:"defaultValue"`
		} `json:"parameters"`
		Resources []json.RawMessage `json:"resources"`
	}
	raw := readFile(t, "../../deploy/azure/tkms-aci.json")
	if err := json.Unmarshal(raw, &tpl); err != nil {
		t.Fatalf("tkms-aci.json is not valid JSON: %v", err)
	}
	if !strings.Contains(tpl.Schema, "deploymentTemplate.json") || len(tpl.Resources) != 1 {
		t.Fatalf("not an ARM deployment template with one resource: %s", tpl.Schema)
	}
	if img, _ := tpl.Parameters["image"].DefaultValue.(string); !strings.HasPrefix(img, "ghcr.io/tkms-dev/tkms") {
		t.Errorf("the image parameter's default %q does not name the tkms image", img)
	}
	if p, _ := tpl.Parameters["ccePolicy"].DefaultValue.(string); p != "<CCE_POLICY_BASE64>" {
		t.Errorf("the ccePolicy parameter's placeholder is %q", p)
	}
	res := string(tpl.Resources[0])
	for _, want := range []string{`"Microsoft.ContainerInstance/containerGroups"`, `"sku": "Confidential"`,
		`"ccePolicy": "[parameters('ccePolicy')]"`, `"image": "[parameters('image')]"`,
		`"/etc/tkms/tkms.json"`, `"path": "/livez"`, `"path": "/readyz"`, `"mountPath": "/var/lib/tkms"`,
		`"tkms.json": "[parameters('nodeConfigs')[copyIndex()]]"`, `{"port": 8001, "protocol": "TCP"}`} {
		if !strings.Contains(res, want) {
			t.Errorf("the container group lacks %s", want)
		}
	}
	// Every parameter the resource uses is declared.
	for _, m := range regexp.MustCompile(`parameters\('([A-Za-z]+)'\)`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := tpl.Parameters[m[1]]; !ok {
			t.Errorf("the template uses the undeclared parameter %s", m[1])
		}
	}
	var params struct {
		Parameters map[string]struct{ Value any } `json:"parameters"`
	}
	if err := json.Unmarshal(readFile(t, "../../deploy/azure/tkms-aci.parameters.json"), &params); err != nil {
		t.Fatalf("tkms-aci.parameters.json is not valid JSON: %v", err)
	}
	for name, p := range tpl.Parameters {
		if _, ok := params.Parameters[name]; !ok && p.DefaultValue == nil {
			t.Errorf("the parameters file gives no value for the required parameter %s", name)
		}
	}
	for name := range params.Parameters {
		if _, ok := tpl.Parameters[name]; !ok {
			t.Errorf("the parameters file sets %s, which the template does not declare", name)
		}
	}
	doc := string(readFile(t, "../../deploy/azure/README.md"))
	for _, want := range []string{"az confcom acipolicygen", "sha256sum", "host_data", "ccePolicy="} {
		if !strings.Contains(doc, want) {
			t.Errorf("deploy/azure/README.md does not say %q", want)
		}
	}
	// The README's node configurations load as tkms serve loads them: the
	// founder's, and a joining node's (with a real log key for the
	// placeholder, and TLS files where it names them); TestClusterOnInit
	// runs the procedure.
	_, logKey, err := translog.GenerateKey("kms.sro.example/depa")
	if err != nil {
		t.Fatal(err)
	}
	f := newTLSFixture(t)
	configs := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(doc, -1)
	var joins int
	for _, m := range configs {
		body := strings.NewReplacer("<LOG_KEY printed by tkms init>", logKey,
			"/etc/tkms/tls.crt", f.certFile, "/etc/tkms/tls.key", f.keyFile).Replace(m[1])
		path := filepath.Join(t.TempDir(), "tkms.json")
		os.WriteFile(path, []byte(body), 0o600)
		cfg, err := loadConfig(path)
		if err != nil {
			t.Errorf("deploy/azure/README.md's configuration does not load: %v\n%s", err, m[1])
			continue
		}
		cfg.applyDefaults("json")
		if err := cfg.Validate(); err != nil || cfg.Cluster == nil || cfg.Cluster.Attester != "aci" || cfg.TLSCertFile == "" {
			t.Errorf("deploy/azure/README.md's configuration: %v (cluster %+v)", err, cfg.Cluster)
			continue
		}
		if cfg.Cluster.Join != "" {
			joins++
		}
	}
	if len(configs) != 2 || joins != 1 {
		t.Errorf("deploy/azure/README.md shows %d node configurations, %d joining; want the founder's and a joining node's", len(configs), joins)
	}
}
