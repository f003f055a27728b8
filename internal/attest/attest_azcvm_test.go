package attest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/azcvm"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// TestAzureCVMVectors: every real Azure CVM evidence file verifies through
// the door inside its certificates' windows, with hardware, vTPM and VM
// claims.
func TestAzureCVMVectors(t *testing.T) {
	cfg := attest.Config{}
	cfg.SNP.Now = func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) }
	v := newVerifier(t, cfg)
	for _, tc := range []struct{ file, typ, isolation, nonce string }{
		{"snp_evidence-v0.json", attest.TypeAzSNP, "sevsnpvm", "challenge"},
		{"snp_evidence-v1.json", attest.TypeAzSNP, "sevsnpvm", "challenge"},
		{"snp_evidence-v2.json", attest.TypeAzSNP, "sevsnpvm", ""},
		{"snp_evidence-genoa.json", attest.TypeAzSNP, "sevsnpvm", ""},
		{"tdx_evidence-v0.json", attest.TypeAzTDX, "tdxvm", "challenge"},
		{"tdx_evidence-v1.json", attest.TypeAzTDX, "tdxvm", "challenge"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw := read(t, "azcvm/testdata/"+tc.file)
			if got := attest.Type(raw); got != tc.typ {
				t.Fatalf("type %q, want %q", got, tc.typ)
			}
			ev, err := v.Verify(context.Background(), raw)
			if err != nil {
				t.Fatal(err)
			}
			c := ev.Claims
			if ev.Type != tc.typ || ev.Simulated || c["x-ms-attestation-type"] != "azurevm" || c["x-ms-isolation-tee.x-ms-attestation-type"] != tc.isolation {
				t.Fatalf("%s %v", ev.Type, c)
			}
			if s, _ := c["tpm_pcr0"].(string); len(s) != 64 {
				t.Fatalf("tpm_pcr0 %v", c["tpm_pcr0"])
			}
			if s, _ := c["x-ms-azurevm-vmUniqueId"].(string); s == "" {
				t.Fatalf("no VM id: %v", c)
			}
			if tc.nonce != "" && string(ev.ReportData) != tc.nonce {
				t.Fatalf("nonce %q", ev.ReportData)
			}
			if len(ev.Measurement) != 48 {
				t.Fatalf("measurement %x", ev.Measurement)
			}
			if u, err := attest.DecodeUnverified(raw); err != nil || u.Type != tc.typ {
				t.Fatalf("decode: %v", err)
			}
		})
	}
	// Before the VCEK's window, the hardware report's chain fails.
	cfg.SNP.Now = func() time.Time { return time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := newVerifier(t, cfg).Verify(context.Background(), read(t, "azcvm/testdata/snp_evidence-v1.json")); attest.Code(err) != "CERT_CHAIN_INVALID" {
		t.Fatalf("before the VCEK's window: %v", err)
	}

	// Simulated evidence: refused unless the simulated TEE is trusted.
	chain, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{3}, 64)
	sim, err := simazcvm.Evidence(simazcvm.Options{TDX: true, Nonce: nonce, Report: func(rd []byte) ([]byte, error) {
		return chain.Quote(simtdx.QuoteOptions{ReportData: rd})
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg = attest.Config{TDX: tdx.Options{Roots: []*x509.Certificate{chain.Root()}}}
	if _, err := newVerifier(t, cfg).Verify(context.Background(), sim); attest.Code(err) != attest.CodeSimulatedNotTrusted {
		t.Fatalf("simulated, not trusted: %v", err)
	}
	cfg.Simulated = true
	ev, err := newVerifier(t, cfg).Verify(context.Background(), sim)
	if err != nil || !ev.Simulated || !bytes.Equal(ev.ReportData, nonce) || ev.Type != attest.TypeAzTDX {
		t.Fatalf("simulated: %+v %v", ev, err)
	}
	if _, err := newVerifier(t, cfg).Verify(context.Background(), []byte(`{"hcl_report":"!!","tpm_quote":{}}`)); attest.Code(err) != azcvm.CodeMalformed {
		t.Fatalf("malformed: %v", err)
	}
}
