package simsnp

import (
	"context"
	"time"

	"testing"

	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
)

// TestTkmsVerifiersAcceptSimulated: an ACI bundle from the simulated chain
// passes tkms's own verifiers (internal/attest/snp, internal/attest/uvm)
// exactly when their trust is extended to the simulated roots and feed, as
// tkms does only when the operator asks for it; never by default.
func TestTkmsVerifiersAcceptSimulated(t *testing.T) {
	c := testChain
	reportData := []byte("wrapping-key-hash-goes-here-32-b")
	bundle, err := c.ACIBundle(ACIBundleOptions{Report: ReportOptions{ReportData: reportData}, SigningTime: verifyTime(c)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := snp.DecodeACI(bundle)
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return verifyTime(c) }

	// Default trust: the pinned AMD roots only.
	strict, err := snp.New(snp.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.VerifyACI(context.Background(), b); snp.Code(err) != "CERT_CHAIN_INVALID" {
		t.Fatalf("simulated report under default trust: %v (code %s), want CERT_CHAIN_INVALID", err, snp.Code(err))
	}
	ark, ask := c.Roots()
	lax, err := snp.New(snp.Options{Now: now, Roots: []snp.Root{{ProductLine: ProductLine, ARK: ark, ASK: ask}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := lax.VerifyACI(context.Background(), b)
	if err != nil {
		t.Fatalf("simulated report with simulated roots: %v", err)
	}
	if res.Pinned || string(res.ReportData[:len(reportData)]) != string(reportData) || string(res.Measurement) != DefaultMeasurement {
		t.Fatalf("result: pinned %v, report data %x, measurement %q", res.Pinned, res.ReportData, res.Measurement)
	}

	if _, err := uvmVerifier(t, nil).Verify(b.UVMEndorsements, res.Measurement); uvm.Code(err) != "UVM_UNTRUSTED" {
		t.Fatalf("simulated endorsement under default trust: %v", err)
	}
	did, feed := c.UVMTrust()
	ur, err := uvmVerifier(t, []uvm.Endorser{{DID: did, Feed: feed}}).Verify(b.UVMEndorsements, res.Measurement)
	if err != nil {
		t.Fatalf("simulated endorsement with simulated trust: %v", err)
	}
	if ur.Feed != UVMFeed || ur.SVN != 100 {
		t.Fatalf("endorsement result %+v", ur)
	}
}

func uvmVerifier(t *testing.T, trusted []uvm.Endorser) *uvm.Verifier {
	t.Helper()
	v, err := uvm.New(uvm.Options{Trusted: trusted})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWithVCEKTCB: a chain with its VCEK reissued for an older TCB signs
// reports that carry that TCB and verify as the original chain's do.
func TestWithVCEKTCB(t *testing.T) {
	c := testChain
	old, err := c.WithVCEKTCB(2, 0, 6, 100)
	if err != nil {
		t.Fatal(err)
	}
	if old.TCB() == c.TCB() || old.VCEK().Equal(c.VCEK()) || !c.vcekKey.PublicKey.Equal(old.VCEK().PublicKey) {
		t.Fatal("the reissued VCEK is not a new certificate of the same key for another TCB")
	}
	ark, ask := old.Roots()
	v, err := snp.New(snp.Options{Now: func() time.Time { return verifyTime(c) }, Roots: []snp.Root{{ProductLine: ProductLine, ARK: ark, ASK: ask}}})
	if err != nil {
		t.Fatal(err)
	}
	report, err := old.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.VerifyReport(context.Background(), report, old.VCEK().Raw)
	if err != nil {
		t.Fatal(err)
	}
	if r.TCB != (snp.TCB{Bootloader: 2, TEE: 0, SNP: 6, Microcode: 100}) || r.ReportedTCB != old.TCB() {
		t.Fatalf("reported TCB %+v", r.TCB)
	}
}
