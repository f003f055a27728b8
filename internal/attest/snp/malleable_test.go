package snp

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"math/big"
	"slices"
	"testing"
)

// negateS returns report with its signature (r, s) replaced by (r, n-s), which
// verifies under the same key: ECDSA signatures are malleable.
func negateS(t *testing.T, report []byte) []byte {
	t.Helper()
	const sOff, sLen = 0x2A0 + 0x48, 0x48 // S: 72 bytes, little-endian
	le := slices.Clone(report[sOff : sOff+sLen])
	slices.Reverse(le)
	s := new(big.Int).SetBytes(le)
	ns := new(big.Int).Sub(elliptic.P384().Params().N, s)
	be := ns.FillBytes(make([]byte, sLen))
	slices.Reverse(be)
	out := bytes.Clone(report)
	copy(out[sOff:], be)
	return out
}

// TestReportSHA256IgnoresSignatureEncoding: the real ACI report and the same
// report with its signature's s replaced by n-s both verify, and both have one
// ReportSHA256 (of the signed part), so the ledger's report_sha256 identifies
// the report, not the encoding of its signature.
func TestReportSHA256IgnoresSignatureEncoding(t *testing.T) {
	v := newVerifier(t, Options{})
	b := aciSample(t)
	mall := negateS(t, b.Report)
	if bytes.Equal(mall, b.Report) {
		t.Fatal("negateS changed nothing")
	}
	orig, err := v.VerifyACI(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.VerifyACI(context.Background(), withReport(b, mall))
	if err != nil {
		t.Fatalf("the report with (r, n-s): %v (ECDSA verification accepts it; this test relies on that)", err)
	}
	if orig.ReportSHA256 != again.ReportSHA256 {
		t.Fatalf("one report, two report hashes: %x and %x", orig.ReportSHA256, again.ReportSHA256)
	}
}
