package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/akv/akvsim"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

// logEntries returns the entries of the log at base, decoded, from leaf
// from on.
func logEntries(t *testing.T, base string, from int) []struct {
	Seq  uint64          `json:"seq"`
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
} {
	t.Helper()
	resp, body := do(t, "GET", base+"/log/checkpoint", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("checkpoint: %d %s", resp.StatusCode, body)
	}
	size, err := strconv.Atoi(strings.Split(string(body), "\n")[1])
	if err != nil {
		t.Fatalf("checkpoint %q", body)
	}
	var out []struct {
		Seq  uint64          `json:"seq"`
		Type string          `json:"type"`
		Body json.RawMessage `json:"body"`
	}
	for i := from; i < size; i++ {
		resp, body := do(t, "GET", fmt.Sprintf("%s/v1/log/entries/%d", base, i), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("entry %d: %d %s", i, resp.StatusCode, body)
		}
		var e struct {
			Seq  uint64          `json:"seq"`
			Type string          `json:"type"`
			Body json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestAutoRecoveryE2E (issue 21 item 6): a dev cluster's members approve
// an automatic recovery member held by the simulated Key Vault; the whole
// cluster is killed; a node recovering a copy of its ledger gets the
// recovery key from the vault, no member submitting a share, records
// service.recovered naming the vault key, and releases a key released
// before the disaster again, with the same public key.
func TestAutoRecoveryE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tkms processes")
	}
	ctx := context.Background()
	root := t.TempDir()
	n1 := filepath.Join(root, "n1")
	p := startDev(t, n1, "--cluster")

	// The simulated Azure side, trusting the dev cluster's simulated TEE.
	chain, err := simsnp.LoadOrCreate(n1)
	if err != nil {
		t.Fatal(err)
	}
	acfg := attest.Config{Simulated: true}
	chain.Trust(&acfg)
	v, err := attest.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	bed, err := akvsim.Start(ctx, filepath.Join(root, "azure"), v)
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	m, err := bed.CreateMember(ctx, "tkms-recovery", akvsim.SimulatedTEEPolicy())
	if err != nil {
		t.Fatal(err)
	}

	// The dev member gets an encryption key, the constitution a recovery
	// threshold of 1, and the vault key is the automatic member.
	var info struct {
		MemberID string `json:"member_id"`
	}
	raw, _ := os.ReadFile(filepath.Join(n1, "dev.json"))
	json.Unmarshal(raw, &info)
	encAction, stderr, code := runTkms(t, "gov", "encryption-key", "--out", filepath.Join(root, "dev.enc"), "--member-id", info.MemberID)
	if code != 0 {
		t.Fatalf("gov encryption-key: %s", stderr)
	}
	memberArgs, _ := json.Marshal(m)
	proposal := fmt.Sprintf(`{"actions":[%s,
		{"name":"set_constitution","args":{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":604800,"created_at_window_seconds":600,"withdraw":"proposer","recovery_threshold":1}},
		{"name":"set_auto_recovery_member","args":%s}]}`, encAction, memberArgs)
	pf := filepath.Join(root, "proposal.json")
	os.WriteFile(pf, []byte(proposal), 0o600)
	out, stderr, code := runTkms(t, "gov", "propose", "--data", n1, pf)
	if code != 0 || !strings.Contains(out+stderr, "accepted") {
		t.Fatalf("propose: %d\n%s\n%s", code, out, stderr)
	}
	before := filepath.Join(root, "before.json")
	if _, stderr, code := runTkms(t, "fetch", "--data", n1, "--out", before); code != 0 {
		t.Fatalf("release before the disaster: %s", stderr)
	}
	var keys []struct {
		KID       string `json:"kid"`
		PublicKey string `json:"public_key"`
	}
	raw, _ = os.ReadFile(before)
	if err := json.Unmarshal(raw, &keys); err != nil || len(keys) == 0 {
		t.Fatalf("before.json: %s", raw)
	}

	// Wait for recovery shares that hold the recovery key for the vault key.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		held := false
		for _, e := range logEntries(t, p.URL, 0) {
			if e.Type == "recovery.shares" && strings.Contains(string(e.Body), `"holder":"`+m.KID()+`"`) {
				held = true
			}
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery.shares entry holds the key for %s\n%s", m.KID(), p.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The disaster.
	p.stop(syscall.SIGKILL)
	cp := filepath.Join(root, "copy")
	os.MkdirAll(cp, 0o700)
	for _, f := range []string{"ledger.db", "keyring", "oidc-signing-key.pem", "simsnp-chain.pem", "member.key", "member.pub"} {
		b, err := os.ReadFile(filepath.Join(n1, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(cp, f), b, 0o600)
	}

	// The recovering node's configuration: where the simulated Azure is.
	token, _ := bed.Token(ctx)
	tf, caf := filepath.Join(root, "vault.token"), filepath.Join(root, "vault-ca.pem")
	os.WriteFile(tf, []byte(token), 0o600)
	os.WriteFile(caf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bed.Vault.Root().Raw}), 0o600)
	cfgFile := filepath.Join(root, "recover.json")
	writeJSONFile(t, cfgFile, map[string]any{"auto_recovery": map[string]any{"maa_url": bed.MAAURL, "vault_ca_file": caf, "token_file": tf}})

	// A vault that refuses (here: a token it does not accept) leaves the
	// node waiting for members' shares.
	bad, badCfg := filepath.Join(root, "bad.token"), filepath.Join(root, "bad.json")
	os.WriteFile(bad, []byte("not-a-token"), 0o600)
	writeJSONFile(t, badCfg, map[string]any{"auto_recovery": map[string]any{"maa_url": bed.MAAURL, "vault_ca_file": caf, "token_file": bad}})
	waiting := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", filepath.Join(root, "waiting"), "--recover", cp, "--config", badCfg)
	waiting.waitOutput(waiting.stderr, regexp.MustCompile(`waiting for members' recovery shares`))
	if s := waiting.stderr.String(); !strings.Contains(s, "AKV_VAULT_ERROR") || !strings.Contains(s, "401") {
		t.Fatalf("the refusal is not reported with its code:\n%s", s)
	}
	waiting.stop(syscall.SIGKILL)

	rec := startDev(t, filepath.Join(root, "recovered"), "--recover", cp, "--config", cfgFile)
	var recovered *struct {
		Holder string        `json:"holder"`
		Auto   *akv.Recovery `json:"auto"`
	}
	for _, e := range logEntries(t, rec.URL, 0) {
		if e.Type == "service.recovered" {
			json.Unmarshal(e.Body, &recovered)
		}
	}
	if recovered == nil || recovered.Holder != m.KID() || recovered.Auto == nil || recovered.Auto.KID != m.KID() ||
		recovered.Auto.ReleasePolicySHA256 != m.ReleasePolicySHA256 || len(recovered.Auto.ReleaseSHA256) != 64 {
		t.Fatalf("service.recovered %+v\n%s", recovered, rec.stderr)
	}
	after := filepath.Join(root, "after.json")
	if _, stderr, code := runTkms(t, "fetch", "--data", filepath.Join(root, "recovered"), "--kid", keys[0].KID, "--out", after); code != 0 {
		t.Fatalf("release after the recovery: %s", stderr)
	}
	raw, _ = os.ReadFile(after)
	var again []struct {
		KID       string `json:"kid"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &again); err != nil || len(again) != 1 || again[0].KID != keys[0].KID || again[0].PublicKey != keys[0].PublicKey {
		t.Fatalf("after.json %s, want kid %s with its public key", raw, keys[0].KID)
	}
	rec.stopClean(syscall.SIGTERM)
}
