package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/node"
)

// fixedDevice answers every report request with one captured report, as a
// host replaying it would.
type fixedDevice struct{ report []byte }

func (d fixedDevice) GetReport(context.Context, [64]byte) ([]byte, []byte, error) {
	return bytes.Clone(d.report), nil, nil
}

// The real ACI attester path for nodes, with the ACI capture of
// client/testdata/aci-report (a genuine Milan report, its THIM
// certificates and Microsoft's UVM endorsement): a host that replays the
// captured report cannot make a node identity of it (the attester checks
// REPORT_DATA), and the captured evidence, genuine for the verifier of
// releases, does not admit a node key it does not bind.
func TestCheckRealACI(t *testing.T) {
	src := filepath.Join("..", "..", "client", "testdata", "aci-report")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dir := t.TempDir()
	for name, content := range map[string][]byte{
		"host-amd-cert-base64":   []byte(base64.StdEncoding.EncodeToString(read("uvm_host_amd_certificate.json"))),
		"reference-info-base64":  []byte(base64.StdEncoding.EncodeToString(read("body.uvm_reference_info.bin"))),
		"security-policy-base64": read("uvm_security_policy.base64"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := client.NewACIAttester(client.ACIOptions{SecurityContextDir: dir, Device: fixedDevice{read("snp_report.bin")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := node.New(ctx, a); err == nil || !strings.Contains(err.Error(), "REPORT_DATA") {
		t.Fatalf("a node identity from a replayed report: %v", err)
	}
	// The captured report binds this document, not a node key.
	var rd [64]byte
	h := sha256.Sum256([]byte("{\n   \"akey\" : \"avalue\"\n}\n"))
	copy(rd[:], h[:])
	ev, err := a.Attest(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.New(attest.Config{SNP: snp.Options{Now: func() time.Time { return time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC) }}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, ev.Attestation); err != nil {
		t.Fatalf("the captured evidence does not verify: %v", err)
	}
	key := bytes.Repeat([]byte{9}, 32)
	_, err = node.Check(ctx, v, devPolicy(t), key, ev.Attestation)
	if attest.Code(err) != node.CodeKeyNotBound {
		t.Fatalf("genuine evidence of another binding: %v, want %s", err, node.CodeKeyNotBound)
	}
}
