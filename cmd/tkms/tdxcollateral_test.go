package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// TestConfigTDXCollateral: Intel collateral configured with tdx_collateral
// (in the JSON the configuration file holds) reaches the server's verifier:
// a quote of its platform (FMSPC 50806f000000, Sapphire Rapids) that
// verifies without it is judged by it, here refused because Intel's sample
// collateral expired in July 2023; a quote of another platform is not.
//
// The server verifies at the current time: the quotes' PCK certificates
// are valid until 2029-09-20 (SPR_E4) and 2032-04-08 (tdx_quote_6).
func TestConfigTDXCollateral(t *testing.T) {
	if time.Now().After(time.Date(2029, 9, 19, 0, 0, 0, 0, time.UTC)) {
		t.Skip("the Sapphire Rapids quote's PCK certificate has expired: the test needs a quote of the collateral's platform valid now")
	}
	vec := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("../../internal/attest/tdx/testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	coll := api.TDXCollateral{
		TCBInfo: vec("collateral_tcb_info.json"), TCBInfoIssuerChain: string(vec("collateral_tcb_info_issuer_chain.pem")),
		QEIdentity: vec("collateral_qe_identity.json"), QEIdentityIssuerChain: string(vec("collateral_qe_identity_issuer_chain.pem")),
		PCKCRL: vec("collateral_pck_crl.der"), PCKCRLIssuerChain: string(vec("collateral_pck_crl_issuer_chain.pem")),
		RootCACRL: vec("collateral_root_ca_crl.der"),
	}
	raw, err := json.Marshal(map[string]any{"tdx_collateral": []api.TDXCollateral{coll}})
	if err != nil {
		t.Fatal(err)
	}
	path := writeTemp(t, "config.json", raw)
	log := slog.New(slog.DiscardHandler)
	verify := func(cfg *Config, quote string) error {
		v, _, err := newVerifier(cfg, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		_, err = v.Verify(context.Background(), vec(quote))
		return err
	}
	if err := verify(&Config{}, "tdx_prod_quote_SPR_E4.dat"); err != nil {
		t.Fatalf("without collateral: %v", err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.TDXCollateral) != 1 || string(cfg.TDXCollateral[0].PCKCRL) != string(coll.PCKCRL) {
		t.Fatalf("tdx_collateral read as %+v", cfg.TDXCollateral)
	}
	if err := verify(cfg, "tdx_prod_quote_SPR_E4.dat"); attest.Code(err) != tdx.CodeCollateralInvalid {
		t.Fatalf("with expired collateral of its platform: %v, want %s", err, tdx.CodeCollateralInvalid)
	}
	if err := verify(cfg, "tdx_quote_6.dat"); err != nil {
		t.Fatalf("another platform's quote: %v", err)
	}
}
