package maa_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

// TestAttestSNP: the SEV-SNP attest API against the simulated instance:
// the token carries the report's claims and the runtime data as
// x-ms-runtime; evidence whose REPORT_DATA does not bind the runtime data
// gets no token.
func TestAttestSNP(t *testing.T) {
	chain, v, err := simsnp.FixtureVerifier()
	if err != nil {
		t.Fatal(err)
	}
	sim := simInstance(t)
	srv := httptest.NewServer(sim.AttestHandler(v))
	defer srv.Close()

	runtime := []byte(`{"keys":[{"kty":"RSA","kid":"rk","n":"AQAB","e":"AQAB"}]}`)
	hd := bytes.Repeat([]byte{0x42}, 32)
	evidence := func(bound []byte) *maa.SNPEvidence {
		h := sha256.Sum256(bound)
		b, err := chain.ACIBundle(simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{ReportData: h[:], HostData: hd}})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := maa.SNPEvidenceFromACI(b)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ctx := context.Background()
	tok, err := maa.AttestSNP(ctx, srv.Client(), srv.URL, evidence(runtime), runtime)
	if err != nil {
		t.Fatal(err)
	}
	res, err := newVerifier(t, nil, sim.Trusted()).Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := res.Runtime["keys"].([]any)
	if len(keys) != 1 || res.Claims["x-ms-sevsnpvm-hostdata"] != hex.EncodeToString(hd) ||
		res.Claims["x-ms-attestation-type"] != "sevsnpvm" || res.Claims["x-ms-compliance-status"] != "azure-compliant-uvm" {
		t.Fatalf("claims %v, runtime %v", res.Claims, res.Runtime)
	}

	if _, err := maa.AttestSNP(ctx, srv.Client(), srv.URL, evidence([]byte("other")), runtime); err == nil || !strings.Contains(err.Error(), "REPORT_DATA") {
		t.Fatalf("unbound runtime data: %v", err)
	}
	forged := evidence(runtime)
	forged.Report[0x50] ^= 1 // in REPORT_DATA: the signature no longer holds
	if _, err := maa.AttestSNP(ctx, srv.Client(), srv.URL, forged, runtime); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("altered report: %v", err)
	}
}

// FuzzParseAttest: neither side's parser of the attest API panics.
func FuzzParseAttest(f *testing.F) {
	req, _ := maa.NewSNPAttestRequest(&maa.SNPEvidence{Report: []byte{1, 2}, VCEKChain: []byte("pem"), UVM: [][]byte{{3}}}, []byte(`{"keys":[]}`))
	f.Add(req)
	f.Add([]byte(`{"token":"a.b.c"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ev, rt, err := maa.ParseSNPAttestRequest(b); err == nil {
			again, _ := maa.NewSNPAttestRequest(ev, rt)
			ev2, rt2, err := maa.ParseSNPAttestRequest(again)
			if err != nil || !bytes.Equal(ev2.Report, ev.Report) || !bytes.Equal(rt2, rt) {
				t.Fatalf("round trip: %v", err)
			}
		}
		if _, err := maa.ParseAttestResponse(b); err != nil && maa.Code(err) != maa.CodeTokenMalformed {
			t.Fatalf("%v", err)
		}
	})
}
