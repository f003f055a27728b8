package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/akv/akvsim"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/gov"
)

// TestGovAutoRecoveryMember: the action printed for a vault key bundle
// validates and names the key; a bundle whose policy is not the one given
// is refused.
func TestGovAutoRecoveryMember(t *testing.T) {
	v, err := akvsim.New(context.Background(), akvsim.Options{KeySize: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.SetURL("https://tkms.vault.azure.net")
	pol := akvsim.Policy(simmaa.Issuer, map[string]any{"x-ms-sevsnpvm-hostdata": "ab"})
	kb, err := v.Create("tkms-recovery", pol)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle, _ := json.Marshal(kb)
	bf, pf, other := filepath.Join(dir, "key.json"), filepath.Join(dir, "policy.json"), filepath.Join(dir, "other.json")
	os.WriteFile(bf, bundle, 0o600)
	os.WriteFile(pf, pol, 0o600)
	os.WriteFile(other, akvsim.Policy(simmaa.Issuer, map[string]any{"x-ms-sevsnpvm-hostdata": "cd"}), 0o600)

	var out, errOut bytes.Buffer
	if err := cmdGov([]string{"auto-recovery-member", "--key-bundle", bf, "--maa", "https://sharedeus2.eus2.attest.azure.net/", "--policy", pf}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var a gov.Action
	if err := json.Unmarshal(out.Bytes(), &a); err != nil || gov.ValidateAction(a) != nil {
		t.Fatalf("%s: %v", out.String(), err)
	}
	m, _ := gov.DecodeAutoRecoveryMemberArgs(a.Args)
	h, _ := akv.PolicySHA256(pol)
	if a.Name != gov.ActSetAutoRecoveryMember || m.KID() != kb.Key.KID || m.ReleasePolicySHA256 != h || m.MAAInstance != "https://sharedeus2.eus2.attest.azure.net" {
		t.Fatalf("%+v", m)
	}
	if !strings.Contains(errOut.String(), "let the vault key "+kb.Key.KID) {
		t.Fatalf("stderr %q", errOut.String())
	}
	err = cmdGov([]string{"auto-recovery-member", "--key-bundle", bf, "--maa", "https://m.attest.azure.net", "--policy", other}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is not the one in") {
		t.Fatalf("another policy: %v", err)
	}
	if err := cmdGov([]string{"auto-recovery-member", "--key-bundle", bf}, &out, &errOut); err == nil {
		t.Fatal("no --maa accepted")
	}
}
