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
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// TestFormatAttesters: the simulated TDX, MAA and Azure CVM attesters' evidence
// verifies through the server's door once it trusts the data directory's
// simulated TEE, bound to the report data asked for, and marked simulated.
func TestFormatAttesters(t *testing.T) {
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
	var v *attest.Verifier
	azs, err := devtee.NewAzureCVMAttester(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	azt, err := devtee.NewAzureCVMAttester(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	snpChain, err := simsnp.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	ark, ask := snpChain.Roots()
	v, err = attest.New(attest.Config{Simulated: true,
		SNP: snp.Options{Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}},
		TDX: tdx.Options{Roots: []*x509.Certificate{chain.Root()}},
		MAA: maa.Options{Instances: []maa.Instance{sim.Trusted()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rd := [64]byte{1, 2, 3, 4}
	for name, a := range map[string]client.Attester{"tdx": ta, "maa": ma, "az-snp-vtpm": azs, "az-tdx-vtpm": azt} {
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
