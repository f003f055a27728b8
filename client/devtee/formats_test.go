package devtee_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	ta, err := devtee.NewTDXAttester(dir, devtee.TDXAttesterOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	ma, err := devtee.NewMAAAttester(dir, devtee.MAAAttesterOptions{Create: true})
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
	azs, err := devtee.NewAzureCVMAttester(dir, devtee.AzureCVMAttesterOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	azt, err := devtee.NewAzureCVMAttester(dir, devtee.AzureCVMAttesterOptions{TDX: true})
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

// TestAttestersRefuseMistypedDir: every simulated attester refuses a
// directory without its simulated TEE (a mistyped --data), creating
// nothing there, unless told to create one.
func TestAttestersRefuseMistypedDir(t *testing.T) {
	for name, newAttester := range map[string]func(dir string, create bool) error{
		"snp": func(dir string, create bool) error {
			_, err := devtee.NewAttester(dir, devtee.AttesterOptions{Create: create})
			return err
		},
		"tdx": func(dir string, create bool) error {
			_, err := devtee.NewTDXAttester(dir, devtee.TDXAttesterOptions{Create: create})
			return err
		},
		"maa": func(dir string, create bool) error {
			_, err := devtee.NewMAAAttester(dir, devtee.MAAAttesterOptions{Create: create})
			return err
		},
		"az-snp-vtpm": func(dir string, create bool) error {
			_, err := devtee.NewAzureCVMAttester(dir, devtee.AzureCVMAttesterOptions{Create: create})
			return err
		},
		"az-tdx-vtpm": func(dir string, create bool) error {
			_, err := devtee.NewAzureCVMAttester(dir, devtee.AzureCVMAttesterOptions{TDX: true, Create: create})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			typo := filepath.Join(t.TempDir(), "tkms-dve")
			if err := newAttester(typo, false); err == nil || !strings.Contains(err.Error(), "start 'tkms dev --data "+typo+"' once first") {
				t.Fatalf("a directory without a simulated TEE: %v", err)
			}
			if _, err := os.Stat(typo); err == nil {
				t.Fatal("the refused directory was created")
			}
			if err := newAttester(typo, true); err != nil {
				t.Fatalf("with Create: %v", err)
			}
			if err := newAttester(typo, false); err != nil {
				t.Fatalf("once created: %v", err)
			}
		})
	}
}
