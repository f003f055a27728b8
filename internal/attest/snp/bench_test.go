package snp

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/google/go-sev-guest/verify"
)

// BenchmarkVerifyACI measures the ACI sample end to end (decode, then verify) with a warm chain
// cache: one ECDSA P-384 verification plus parsing and validation.
func BenchmarkVerifyACI(b *testing.B) {
	benchVerifyACI(b, Options{})
}

// BenchmarkVerifyACIUncached is the same without the chain cache (RSA-PSS chain verification and
// go-sev-guest's full verification every time), to show what the cache saves.
func BenchmarkVerifyACIUncached(b *testing.B) {
	benchVerifyACI(b, Options{CacheSize: -1})
}

func benchVerifyACI(b *testing.B, opts Options) {
	js := read(b, "aci_snp.json")
	v := newVerifier(b, opts)
	ctx := context.Background()
	bundle, err := DecodeACI(js)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.VerifyACI(ctx, bundle); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		bundle, err := DecodeACI(js)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.VerifyACI(ctx, bundle); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReportSignature is the floor: go-sev-guest's bare report signature check (one ECDSA
// P-384 verification over SHA-384), to compare BenchmarkVerifyACI with in the same run.
func BenchmarkReportSignature(b *testing.B) {
	bundle := aciSample(b)
	cert, err := x509.ParseCertificate(bundle.EndorsementKey)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := verify.SnpReportSignature(bundle.Report, cert); err != nil {
			b.Fatal(err)
		}
	}
}
