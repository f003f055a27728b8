package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
)

// TestDevVault: tkms dev vault writes a set_auto_recovery_member action
// that validates and names its vault, and a recovering node's
// configuration whose files exist; it stops cleanly on SIGTERM.
func TestDevVault(t *testing.T) {
	root := t.TempDir()
	trust, data := filepath.Join(root, "dev"), filepath.Join(root, "vault")
	os.MkdirAll(trust, 0o700)
	chain := readFile(t, "../../internal/attest/simsnp/testdata/"+simsnp.ChainFile) // a chain made once: no RSA-4096 keys made here
	os.WriteFile(filepath.Join(trust, simsnp.ChainFile), chain, 0o600)

	if _, stderr, code := runTkms(t, "dev", "vault", "--trust", filepath.Join(root, "none"), "--data", data); code != 1 || !regexp.MustCompile(`no simulated TEE`).MatchString(stderr) {
		t.Fatalf("no simulated TEE: exit %d, %s", code, stderr)
	}
	p := startProc(t, "dev", "vault", "--trust", trust, "--data", data)
	m := p.waitOutput(p.stdout, regexp.MustCompile(`vault (http://127\.0\.0\.1:\d+), key (\S+)\n(?s:.*)propose (\S+); recover with --config (\S+)\n`))
	var a gov.Action
	if err := json.Unmarshal(readFile(t, m[3]), &a); err != nil || gov.ValidateAction(a) != nil || a.Name != gov.ActSetAutoRecoveryMember {
		t.Fatalf("%s: %v", m[3], err)
	}
	member, _ := gov.DecodeAutoRecoveryMemberArgs(a.Args)
	if member.VaultURL != m[1] || member.KID() != m[2] {
		t.Fatalf("the action names %s, the vault is %s", member.KID(), m[2])
	}
	var conf struct {
		AutoRecovery struct {
			MAAURL      string `json:"maa_url"`
			VaultCAFile string `json:"vault_ca_file"`
			TokenFile   string `json:"token_file"`
		} `json:"auto_recovery"`
	}
	if err := json.Unmarshal(readFile(t, m[4]), &conf); err != nil || conf.AutoRecovery.MAAURL == "" {
		t.Fatalf("%s: %v", m[4], err)
	}
	for _, f := range []string{conf.AutoRecovery.VaultCAFile, conf.AutoRecovery.TokenFile} {
		if perm(t, f) != 0o600 {
			t.Errorf("%s: mode %v", f, perm(t, f))
		}
	}
	p.stopClean(syscall.SIGTERM)
}
