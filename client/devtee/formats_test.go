package devtee_test

import (
	"context"
	"testing"

	"crypto/x509"
	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// TestTDXAndMAAAttesters: the simulated TDX and MAA attesters' evidence
// verifies through the server's door once it trusts the data directory's
// simulated TEE, bound to the report data asked for, and marked simulated.
func TestTDXAndMAAAttesters(t *testing.T) {
	dir := t.TempDir()
	ta, err := devtee.NewTDXAttester(dir, devtee.TDXAttesterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ma, err := devtee.NewMAAAttester(dir, devtee.MAAAttesterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := simtdx.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := simmaa.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.New(attest.Config{Simulated: true,
		TDX: tdx.Options{Roots: []*x509.Certificate{chain.Root()}},
		MAA: maa.Options{Instances: []maa.Instance{sim.Trusted()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rd := [64]byte{1, 2, 3, 4}
	for name, a := range map[string]client.Attester{"tdx": ta, "maa": ma} {
		ev, err := a.Attest(context.Background(), rd)
		if err != nil || !ev.Simulated || ev.Type != name {
			t.Fatalf("%s: %+v %v", name, ev, err)
		}
		got, err := v.Verify(context.Background(), ev.Attestation)
		if err != nil || !got.Simulated || [64]byte(got.ReportData) != rd {
			t.Fatalf("%s: %+v %v", name, got, err)
		}
	}
	if _, err := devtee.NewTDXAttester(dir, devtee.TDXAttesterOptions{MRTD: make([]byte, 3)}); err == nil {
		t.Fatal("a 3-byte MRTD accepted")
	}
}
