package tdx_test

import (
	"encoding/json"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// collateral is Intel's sample collateral for FMSPC 50806f000000
// (testdata/PROVENANCE.md), issued 2023-06-18T08:42:58Z; its QE identity
// expires 2023-07-08T07:24:59Z.
func collateral(t testing.TB) *tdx.Collateral {
	return &tdx.Collateral{
		TCBInfo:               read(t, "collateral_tcb_info.json"),
		TCBInfoIssuerChain:    string(read(t, "collateral_tcb_info_issuer_chain.pem")),
		QEIdentity:            read(t, "collateral_qe_identity.json"),
		QEIdentityIssuerChain: string(read(t, "collateral_qe_identity_issuer_chain.pem")),
		PCKCRL:                read(t, "collateral_pck_crl.der"),
		PCKCRLIssuerChain:     string(read(t, "collateral_pck_crl_issuer_chain.pem")),
		RootCACRL:             read(t, "collateral_root_ca_crl.der"),
	}
}

// TestCollateral: with Intel's collateral the TCB status is evaluated
// offline. The one quote of the collateral's platform whose TCB level it
// lists (tdx_quote_4, a debug TD) is UpToDate inside the collateral's
// validity, and refused as a debug TD with that status for inspection.
func TestCollateral(t *testing.T) {
	in := tdx.New(tdx.Options{Now: at("2023-06-20T00:00:00Z")})
	res, err := in.VerifyCollateral(read(t, "tdx_quote_4.dat"), collateral(t))
	if tdx.Code(err) != tdx.CodeDebug || res == nil || res.Claims[tdx.ClaimTCBStatus] != tdx.TCBStatusUpToDate {
		t.Fatalf("quote 4 with collateral: %v %+v", err, res)
	}
	// Configured collateral applies to quotes of its platform.
	conf := tdx.New(tdx.Options{Now: at("2023-06-20T00:00:00Z"), Collateral: []tdx.Collateral{*collateral(t)}})
	if res, err := conf.Verify(read(t, "tdx_quote_4.dat")); tdx.Code(err) != tdx.CodeDebug || res.Claims[tdx.ClaimTCBStatus] != tdx.TCBStatusUpToDate {
		t.Fatalf("configured collateral: %v", err)
	}
	// ... and to no other platform's.
	other := tdx.New(tdx.Options{Now: at("2026-01-01T00:00:00Z"), Collateral: []tdx.Collateral{*collateral(t)}})
	if res, err := other.Verify(read(t, "tdx_quote_6.dat")); err != nil || res.Claims[tdx.ClaimTCBStatus] != tdx.TCBStatusNotEvaluated {
		t.Fatalf("another platform: %v", err)
	}

	sim, err := simtdx.New(at("2023-06-19T00:00:00Z")())
	if err != nil {
		t.Fatal(err)
	}
	simQ, err := sim.Quote(simtdx.QuoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(c *tdx.Collateral)) *tdx.Collateral { c := collateral(t); f(c); return c }
	for _, tc := range []struct {
		name  string
		now   string
		quote []byte
		c     *tdx.Collateral
		roots bool
		code  string
	}{
		{"expired QE identity", "2023-07-09T00:00:00Z", read(t, "tdx_quote_4.dat"), collateral(t), false, tdx.CodeCollateralInvalid},
		{"no matching TCB level", "2023-06-20T00:00:00Z", read(t, "tdx_prod_quote_SPR_E4.dat"), collateral(t), false, tdx.CodeTCBNotUpToDate},
		{"collateral of another platform", "2026-01-01T00:00:00Z", read(t, "tdx_quote_6.dat"), collateral(t), false, tdx.CodeCollateralInvalid},
		{"missing part", "2023-06-20T00:00:00Z", read(t, "tdx_quote_4.dat"), mut(func(c *tdx.Collateral) { c.RootCACRL = nil }), false, tdx.CodeCollateralInvalid},
		{"TCB info signature", "2023-06-20T00:00:00Z", read(t, "tdx_quote_4.dat"), mut(func(c *tdx.Collateral) {
			var m map[string]json.RawMessage
			json.Unmarshal(c.TCBInfo, &m)
			m["signature"] = json.RawMessage(`"` + "00" + string(m["signature"][3:]))
			c.TCBInfo, _ = json.Marshal(m)
		}), false, tdx.CodeCollateralInvalid},
		{"QE identity swapped for TCB info", "2023-06-20T00:00:00Z", read(t, "tdx_quote_4.dat"), mut(func(c *tdx.Collateral) { c.QEIdentity = c.TCBInfo }), false, tdx.CodeCollateralInvalid},
		{"issuer chain swapped", "2023-06-20T00:00:00Z", read(t, "tdx_quote_4.dat"), mut(func(c *tdx.Collateral) { c.TCBInfoIssuerChain = c.PCKCRLIssuerChain }), false, tdx.CodeCollateralInvalid},
		{"CRL not DER", "2023-06-20T00:00:00Z", read(t, "tdx_quote_4.dat"), mut(func(c *tdx.Collateral) { c.PCKCRL = []byte("crl") }), false, tdx.CodeCollateralInvalid},
		{"simulated quote", "2023-06-20T00:00:00Z", simQ, collateral(t), true, tdx.CodeCollateralInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tdx.Options{Now: at(tc.now)}
			if tc.roots {
				opts.Roots = append(opts.Roots, sim.Root())
			}
			res, err := tdx.New(opts).VerifyCollateral(tc.quote, tc.c)
			if got := tdx.Code(err); got != tc.code || res != nil {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}
