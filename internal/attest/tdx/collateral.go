package tdx

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/tkms-dev/tkms/api"
)

// Collateral is Intel PCS collateral for one platform (FMSPC): TCB info,
// QE identity, the PCK CRL and the root CA CRL, with their issuer chains.
type Collateral = api.TDXCollateral

// Codes of collateral checks.
const (
	// CodeCollateralInvalid: the collateral is incomplete, malformed, not
	// signed by Intel's TCB signing key under the pinned root, expired,
	// or for another platform (FMSPC).
	CodeCollateralInvalid = "TDX_COLLATERAL_INVALID"
	// CodeTCBNotUpToDate: the platform's or the QE's TCB level is not
	// UpToDate in the collateral.
	CodeTCBNotUpToDate = "TDX_TCB_NOT_UP_TO_DATE"
	// CodePCKRevoked: the PCK certificate or its CA is revoked.
	CodePCKRevoked = "TDX_PCK_REVOKED"
	// TCBStatusUpToDate is [ClaimTCBStatus] after collateral verified.
	TCBStatusUpToDate = "UpToDate"
)

// fmspcOf returns the FMSPC a TCB info body is for.
func fmspcOf(c *Collateral) string {
	var b struct {
		TCBInfo struct {
			FMSPC string `json:"fmspc"`
		} `json:"tcbInfo"`
	}
	if json.Unmarshal(c.TCBInfo, &b) != nil {
		return ""
	}
	return strings.ToLower(b.TCBInfo.FMSPC)
}

// offlineGetter answers go-tdx-guest's four PCS requests from collateral:
// nothing is fetched.
type offlineGetter struct{ c *Collateral }

func (g offlineGetter) Get(u string) (map[string][]string, []byte, error) {
	chain := func(name, pem string) map[string][]string {
		return map[string][]string{name: {url.QueryEscape(pem)}}
	}
	switch {
	case strings.Contains(u, "/tcb?fmspc="):
		if want := strings.ToLower(u[strings.Index(u, "fmspc=")+len("fmspc="):]); want != fmspcOf(g.c) {
			return nil, nil, fmt.Errorf("the collateral's TCB info is for FMSPC %q, the quote's platform is %q", fmspcOf(g.c), want)
		}
		return chain("Tcb-Info-Issuer-Chain", g.c.TCBInfoIssuerChain), g.c.TCBInfo, nil
	case strings.Contains(u, "/qe/identity"):
		return chain("Sgx-Enclave-Identity-Issuer-Chain", g.c.QEIdentityIssuerChain), g.c.QEIdentity, nil
	case strings.Contains(u, "/pckcrl"):
		return chain("Sgx-Pck-Crl-Issuer-Chain", g.c.PCKCRLIssuerChain), g.c.PCKCRL, nil
	default: // the root CA CRL, at the URL of the root certificate
		return nil, g.c.RootCACRL, nil
	}
}

// checkCollateral verifies the quote again with the collateral: Intel's
// signatures on TCB info and QE identity under the pinned root, their
// validity, the CRLs, and the TCB levels of the TD and of the QE.
func (v *Verifier) checkCollateral(q *pb.QuoteV4, c *Collateral, now time.Time) error {
	if len(c.TCBInfo) == 0 || len(c.QEIdentity) == 0 || len(c.PCKCRL) == 0 || len(c.RootCACRL) == 0 ||
		c.TCBInfoIssuerChain == "" || c.QEIdentityIssuerChain == "" || c.PCKCRLIssuerChain == "" {
		return errorf(CodeCollateralInvalid, nil, "the collateral lacks a part (tcb_info, qe_identity, pck_crl, root_ca_crl and the three issuer chains are required)")
	}
	opts := &verify.Options{Now: now, TrustedRoots: v.intel, GetCollateral: true, CheckRevocations: true, Getter: offlineGetter{c}}
	err := verify.TdxQuote(q, opts)
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, verify.ErrTcbStatus), strings.Contains(msg, "TCB status check"):
		return errorf(CodeTCBNotUpToDate, err, "the platform's TCB is not up to date in Intel's collateral")
	case strings.Contains(msg, "was revoked"):
		return errorf(CodePCKRevoked, err, "the PCK chain is revoked")
	}
	return errorf(CodeCollateralInvalid, err, "the collateral does not verify for this quote at %s", now.UTC().Format(time.RFC3339))
}

// collateralFor returns the configured collateral of a platform, if any.
func (v *Verifier) collateralFor(ext *pcs.PckExtensions) *Collateral {
	return v.collateral[strings.ToLower(ext.FMSPC)]
}
