package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/tlscert/tlscerttest"
)

// TestRecoveryServe recovers a governed `tkms serve` cluster node's ledger
// (made by tkms init with members holding encryption keys and a recovery
// threshold of two) with `tkms serve --recover`: two members' shares, a
// replay refused, the recovered secret in memory only, the keys and the
// log continued under a new log key that the audit with the old key
// follows.
func TestRecoveryServe(t *testing.T) {
	dir := t.TempDir()
	var members []json.RawMessage
	for _, n := range []string{"a", "b", "c"} {
		var act gov.Action
		if err := json.Unmarshal([]byte(govCLI(t, "gov", "keygen", "--out", filepath.Join(dir, n), "--name", n)), &act); err != nil {
			t.Fatal(err)
		}
		members = append(members, act.Args)
	}
	membersFile, constitutionFile := filepath.Join(dir, "members.json"), filepath.Join(dir, "constitution.json")
	writeJSONFile(t, membersFile, map[string]any{"members": members})
	writeJSONFile(t, constitutionFile, map[string]any{"rules": map[string]any{"default": map[string]any{"approvals": "majority"}}, "recovery_threshold": 2})
	data1, data3 := filepath.Join(dir, "data1"), filepath.Join(dir, "data3")
	govCLI(t, "init", "--members", membersFile, "--constitution", constitutionFile, "--data", data1, "--service-name", "recovery-test")

	ca := tlscerttest.NewCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	config := func(i int, data string) string {
		cert, key := tlscerttest.WritePair(t, dir, fmt.Sprint("node", i), ca.Issue(t, tlscerttest.Leaf{Serial: int64(10 + i), EKU: both}))
		path := filepath.Join(dir, fmt.Sprintf("tkms%d.json", i))
		writeJSONFile(t, path, map[string]any{
			"listen": "127.0.0.1:0", "data_dir": data, "insecure_simulated_tee": true,
			"cluster": map[string]any{
				"node_id": fmt.Sprint("kms-", i), "listen": freePort(t), "cert_file": cert, "key_file": key, "ca_file": caFile,
				"attester": "simulated", "node_policy": json.RawMessage(devReleasePolicy()),
			},
		})
		return path
	}
	p1 := startProc(t, "serve", "--config", config(1, data1))
	p1.URL = "http://" + p1.waitOutput(p1.stderr, serveListening)[1]
	_, lk := do(t, http.MethodGet, p1.URL+"/v1/log/key", nil)
	oldKey := strings.TrimSpace(string(lk))
	deadline := time.Now().Add(time.Minute)
	for {
		out, _, _ := runTkms(t, "audit", "--kms", p1.URL, "--log-key", oldKey, "--json", "--quiet")
		var r struct {
			Counts map[string]int `json:"counts"`
		}
		json.Unmarshal([]byte(out), &r)
		if r.Counts["recovery.shares"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery.shares entry: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := allKeys(t, p1.URL)
	p1.stop(syscall.SIGKILL)

	// The copy: the ledger and its keyring, never the master key.
	os.MkdirAll(data3, 0o700)
	for _, f := range []string{store.FileName, keyring.FileName, simsnp.ChainFile} {
		b, err := os.ReadFile(filepath.Join(data1, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(data3, f), b, 0o600)
	}
	p3 := startProc(t, "serve", "--config", config(3, data3), "--recover")
	var info struct {
		KMSURL     string `json:"kms_url"`
		RecoveryID string `json:"recovery_id"`
	}
	for deadline = time.Now().Add(time.Minute); info.KMSURL == ""; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(data3, recoveryInfoFile)); err == nil {
			json.Unmarshal(b, &info)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s: %s", recoveryInfoFile, p3.stderr)
		}
	}
	share := func(n string) []string {
		return []string{"gov", "share", "--kms", info.KMSURL, "--key", filepath.Join(dir, n+".key"), "--encryption-key", filepath.Join(dir, n+".enc")}
	}
	if out := govCLI(t, share("a")...); !strings.Contains(out, "1 of 2") {
		t.Fatalf("first share: %s", out)
	}
	govCLIRefused(t, "RECOVERY_SHARE_REPLAYED", share("a")...)
	// Another member's encryption key does not open this member's share.
	govCLIRefused(t, "RECOVERY_SHARE_WRONG_KEY", "gov", "share", "--kms", info.KMSURL, "--key", filepath.Join(dir, "b.key"), "--encryption-key", filepath.Join(dir, "c.enc"))
	if m := decodeResult(t, govCLI(t, append(share("c"), "--json")...), "recovered"); m["received"] != 2.0 {
		t.Fatalf("second share: %v", m)
	}
	p3.URL = "http://" + p3.waitOutput(p3.stderr, serveListening)[1]
	_, lk = do(t, http.MethodGet, p3.URL+"/v1/log/key", nil)
	if newKey := strings.TrimSpace(string(lk)); newKey == oldKey || newKey == "" {
		t.Fatalf("log key after the recovery %q (before %q)", newKey, oldKey)
	}
	if out := govCLI(t, "audit", "--kms", p3.URL, "--log-key", oldKey); !strings.Contains(out, "recovered at seq") {
		t.Fatalf("the audit does not report the recovery:\n%s", out)
	}
	after := allKeys(t, p3.URL)
	for _, k := range before {
		found := false
		for _, a := range after {
			found = found || sameRecord(a, k)
		}
		if !found {
			t.Errorf("key %s is not served the same after the recovery", k.Kid)
		}
	}
	mk, err := seal.ReadKeyFile(filepath.Join(data1, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	noMasterKeyIn(t, data3, mk)
	p3.stopClean(syscall.SIGTERM)
}
