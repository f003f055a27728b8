package snp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"
)

// signedPart is the part of a report its signature covers (SEV-SNP ABI
// table 22: bytes 0x000-0x29F).
func signedPart(report []byte) []byte {
	if len(report) < 0x2A0 {
		return report
	}
	return report[:0x2A0]
}

// FuzzVerifyExtendedReport feeds arbitrary reports and GUID certificate
// tables (the raw "snp" evidence of an SNP_GET_EXT_REPORT, whose table the
// host fills) to VerifyExtendedReport, at the clock of the EternisAI
// captures so that they verify. Nothing may panic, every failure is typed,
// and whatever verifies is signed by AMD: its signed part is that of a
// captured report, and its result is pinned. Seeds: the EternisAI AWS
// (VLEK) and GCP (VCEK) captures in testdata/ (PROVENANCE.md).
func FuzzVerifyExtendedReport(f *testing.F) {
	var signed [][]byte
	for _, cloud := range []string{"aws", "gcp"} {
		r, table := eternisai(f, cloud)
		signed = append(signed, bytes.Clone(signedPart(r)))
		f.Add(r, table)
		f.Add(r, table[:len(table)/2])
	}
	f.Add(read(f, "trustee_test-report.bin"), []byte{})
	f.Add([]byte{}, make([]byte, 24))
	v := newVerifier(f, Options{Now: fixedNow(time.Date(2026, 3, 25, 22, 20, 6, 0, time.UTC))})
	f.Fuzz(func(t *testing.T, report, table []byte) {
		res, err := v.VerifyExtendedReport(context.Background(), report, table)
		if err != nil {
			if res != nil || Code(err) == CodeInternal {
				t.Fatalf("result %v, error %v", res, err)
			}
			return
		}
		if !res.Pinned || !slices.ContainsFunc(signed, func(s []byte) bool { return bytes.Equal(s, signedPart(report)) }) {
			t.Fatalf("verified a report AMD did not sign (pinned %v)", res.Pinned)
		}
	})
}

// FuzzVerifyEndorsementKey feeds arbitrary VCEK/VLEK certificates (DER or
// PEM, the "vcek" of raw snp evidence and the first certificate of an ACI
// bundle's endorsements) with real reports. Nothing may panic, every
// failure is typed, and a report verifies only with a certificate that
// chains to the pinned AMD roots and whose key signed it. Seeds: the
// trustee, virtee and go-sev-guest VCEKs and VLEK in testdata/ (PROVENANCE.md), and
// PEM forms.
func FuzzVerifyEndorsementKey(f *testing.F) {
	reports := [][]byte{read(f, "trustee_test-report.bin"), read(f, "trustee_test-vlek-report.bin"), aciSample(f).Report}
	keys := [][]byte{read(f, "trustee_test-vcek.der"), read(f, "trustee_test-vlek.der"), aciSample(f).EndorsementKey}
	for i, k := range keys {
		f.Add(uint8(i), k)
		f.Add(uint8(i), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k}))
	}
	for _, name := range []string{"virtee_vcek_milan.der", "virtee_vcek_turin.der", "gosevguest_vcek.testcer",
		"trustee_test-vcek-invalid-legacy.der", "trustee_test-vcek-invalid-new.der", "sidecar_uvm_host_amd_certificate.pem"} {
		f.Add(uint8(0), read(f, name))
	}
	f.Add(uint8(0), []byte{})
	v := newVerifier(f, Options{MaxVMPL: 1})
	f.Fuzz(func(t *testing.T, which uint8, ek []byte) {
		i := int(which) % len(reports)
		res, err := v.VerifyReport(context.Background(), reports[i], ek)
		if err != nil {
			if res != nil || Code(err) == CodeInternal {
				t.Fatalf("result %v, error %v", res, err)
			}
			return
		}
		if !res.Pinned {
			t.Fatal("verified without a pinned root")
		}
		// The key is the one that signed: verifying again with the seed
		// certificate of that report gives the same result.
		want, err := v.VerifyReport(context.Background(), reports[i], keys[i])
		if err != nil || want.Signer != res.Signer || want.ProductLine != res.ProductLine || want.ReportSHA256 != res.ReportSHA256 {
			t.Fatalf("verified as %s/%s, the real certificate gives %v, %v", res.Signer, res.ProductLine, want, err)
		}
	})
}

// FuzzParseRoot feeds arbitrary root bundles (the PEM of --snp-root and of
// AMD KDS cert_chain documents) to ParseRoot: nothing may panic, and an
// accepted root has a self-signed ARK that signed its ASK or ASVK, for the
// product line asked.
func FuzzParseRoot(f *testing.F) {
	for _, name := range []string{"ask_ark_milan.pem", "ask_ark_milan_vlek.pem", "ask_ark_genoa.pem", "ask_ark_turin_vcek.pem"} {
		b, err := amdroots.ReadFile("amdroots/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("Milan", b)
		f.Add("Turin", b)
	}
	f.Add("Milan", read(f, "sidecar_uvm_host_amd_certificate.pem"))
	f.Add("Genoa", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, line string, b []byte) {
		r, err := ParseRoot(line, b)
		if err != nil {
			return
		}
		if r.ProductLine != line || r.ARK == nil || (r.ASK == nil && r.ASVK == nil) {
			t.Fatalf("accepted root %+v", r)
		}
		if err := r.ARK.CheckSignatureFrom(r.ARK); err != nil {
			t.Fatalf("ARK not self-signed: %v", err)
		}
		for _, c := range []*x509.Certificate{r.ASK, r.ASVK} {
			if c != nil && c.CheckSignatureFrom(r.ARK) != nil {
				t.Fatalf("intermediate %q not signed by the ARK", c.Subject.CommonName)
			}
		}
	})
}
