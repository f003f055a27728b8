package attest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

func tdxObject(t testing.TB, quote []byte) []byte {
	b, err := json.Marshal(api.TDX{Type: attest.TypeTDX, Quote: quote})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// intelCollateral is Intel's sample collateral for FMSPC 50806f000000
// (tdx/testdata/PROVENANCE.md), valid 2023-06-18T08:42:58Z to
// 2023-07-08T07:24:59Z.
func intelCollateral(t testing.TB) *api.TDXCollateral {
	return &api.TDXCollateral{
		TCBInfo: read(t, "tdx/testdata/collateral_tcb_info.json"), TCBInfoIssuerChain: string(read(t, "tdx/testdata/collateral_tcb_info_issuer_chain.pem")),
		QEIdentity: read(t, "tdx/testdata/collateral_qe_identity.json"), QEIdentityIssuerChain: string(read(t, "tdx/testdata/collateral_qe_identity_issuer_chain.pem")),
		PCKCRL: read(t, "tdx/testdata/collateral_pck_crl.der"), PCKCRLIssuerChain: string(read(t, "tdx/testdata/collateral_pck_crl_issuer_chain.pem")),
		RootCACRL: read(t, "tdx/testdata/collateral_root_ca_crl.der"),
	}
}

func TestTDXThroughTheDoor(t *testing.T) {
	ctx := context.Background()
	at := func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
	sim, err := simtdx.New(at())
	if err != nil {
		t.Fatal(err)
	}
	cfg := attest.Config{TDX: tdx.Options{Roots: []*x509.Certificate{sim.Root()}}}
	cfg.SNP.Now = at
	v := newVerifier(t, cfg)

	real := tdxObject(t, read(t, "tdx/testdata/az_td_quote.bin"))
	if attest.Type(real) != attest.TypeTDX {
		t.Fatalf("type %q", attest.Type(real))
	}
	ev, err := v.Verify(ctx, real)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != attest.TypeTDX || ev.Simulated || len(ev.ReportData) != 64 || len(ev.Measurement) != 48 || ev.Signer != "PCK" || ev.Claims[tdx.ClaimFMSPC] != "00806f050000" {
		t.Fatalf("%+v", ev)
	}

	q, err := sim.Quote(simtdx.QuoteOptions{ReportData: []byte("rd")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tdxObject(t, q)); attest.Code(err) != attest.CodeSimulatedNotTrusted {
		t.Fatalf("simulated without Config.Simulated: %v", err)
	}
	if ev, err := v.InspectUnpinned(ctx, tdxObject(t, q)); err != nil || !ev.Simulated {
		t.Fatalf("inspect simulated: %v", err)
	}
	cfg.Simulated = true
	vs := newVerifier(t, cfg)
	if ev, err := vs.Verify(ctx, tdxObject(t, q)); err != nil || !ev.Simulated || !bytes.HasPrefix(ev.ReportData, []byte("rd")) {
		t.Fatalf("simulated: %+v %v", ev, err)
	}
	if tr := vs.Trust(); !tr.Formats[2].Simulated {
		t.Fatalf("trust %+v", tr)
	}

	debug := tdxObject(t, read(t, "tdx/testdata/tdx_quote_4.dat"))
	if ev, err := v.Verify(ctx, debug); attest.Code(err) != tdx.CodeDebug || ev != nil {
		t.Fatalf("debug TD: %v", err)
	}
	if ev, err := v.InspectUnpinned(ctx, debug); attest.Code(err) != tdx.CodeDebug || ev == nil || ev.Claims[tdx.ClaimTDAttributesDebug] != true {
		t.Fatalf("inspect debug TD: %v", err)
	}
	if _, err := v.Verify(ctx, tdxObject(t, read(t, "tdx/testdata/tdx_quote_5.dat"))); attest.Code(err) != tdx.CodeVersionUnsupported {
		t.Fatalf("v5: %v", err)
	}
	for _, raw := range []string{`{"type":"tdx"}`, `{"type":"tdx","quote":1}`, `{"type":"tdx","quote":""}`} {
		if _, err := v.Verify(ctx, []byte(raw)); attest.Code(err) != tdx.CodeQuoteMalformed {
			t.Fatalf("%s: %v", raw, err)
		}
		if _, err := attest.DecodeUnverified([]byte(raw)); attest.Code(err) != tdx.CodeQuoteMalformed {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
	// Intel collateral carried in the request: the TCB status is evaluated.
	coll := intelCollateral(t)
	withColl, _ := json.Marshal(api.TDX{Type: attest.TypeTDX, Quote: read(t, "tdx/testdata/tdx_quote_4.dat"), Collateral: coll})
	c2023 := attest.Config{}
	c2023.SNP.Now = func() time.Time { return time.Date(2023, 6, 20, 0, 0, 0, 0, time.UTC) }
	if ev, err := newVerifier(t, c2023).InspectUnpinned(ctx, withColl); attest.Code(err) != tdx.CodeDebug || ev.Claims[tdx.ClaimTCBStatus] != tdx.TCBStatusUpToDate {
		t.Fatalf("collateral in the request: %v", err)
	}
	if _, err := v.Verify(ctx, withColl); attest.Code(err) != tdx.CodeCollateralInvalid {
		t.Fatalf("expired collateral in the request: %v", err)
	}

	bare := read(t, "tdx/testdata/az_td_quote.bin")
	if ev, err := v.Verify(ctx, bare); attest.Type(bare) != attest.TypeTDX || err != nil || ev.Claims[tdx.ClaimFMSPC] != "00806f050000" {
		t.Fatalf("a bare quote: %v", err)
	}
	if _, err := v.Verify(ctx, read(t, "tdx/testdata/tdx_quote_5.dat")); attest.Code(err) != tdx.CodeVersionUnsupported {
		t.Fatalf("a bare v5 quote: %v", err)
	}
	if u, err := attest.DecodeUnverified(real); err != nil || u.Type != attest.TypeTDX || len(u.Report) != 5006 {
		t.Fatalf("decode: %+v %v", u, err)
	}
}
