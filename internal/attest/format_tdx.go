package attest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// isTDX reports whether raw is a TDX attestation object: a JSON object
// whose "type" is "tdx", or a bare quote as a quote file holds it (what
// configfs-tsm's outblob returns), told by its header: version 4 or 5,
// ECDSA-256 attestation key (2), TEE type TDX (0x81).
func isTDX(raw []byte) bool { return isBareQuote(raw) || typeField(raw) == TypeTDX }

func isBareQuote(raw []byte) bool {
	return len(raw) >= 8 && (raw[0] == 4 || raw[0] == 5) && raw[1] == 0 &&
		binary.LittleEndian.Uint16(raw[2:]) == 2 && binary.LittleEndian.Uint32(raw[4:]) == 0x81
}

func tdxError(err error) *Error { return &Error{Code: tdx.Code(err), Err: err} }

func decodeTDXObject(raw []byte) (*api.TDX, error) {
	if isBareQuote(raw) {
		return &api.TDX{Type: TypeTDX, Quote: raw}, nil
	}
	var obj api.TDX
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, &Error{Code: tdx.CodeQuoteMalformed, Err: err}
	}
	if len(obj.Quote) == 0 {
		return nil, &Error{Code: tdx.CodeQuoteMalformed, Err: errors.New("tdx: the attestation object has no quote")}
	}
	return &obj, nil
}

func decodeTDX(raw []byte) (*Unverified, error) {
	obj, err := decodeTDXObject(raw)
	if err != nil {
		return nil, err
	}
	return &Unverified{Type: TypeTDX, Report: obj.Quote}, nil
}

// verifyTDX verifies a TDX object: the quote, its QE report and PCK chain
// to the trusted roots; a debug TD is refused (its evidence is kept for
// InspectUnpinned).
func verifyTDX(_ context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error {
	obj, err := decodeTDXObject(raw)
	if err != nil {
		return err
	}
	return v.verifyQuote(obj.Quote, obj.Collateral, ev, inspect)
}

// verifyQuote verifies a TD quote, with Intel collateral c if not nil,
// into ev (its claims, report data, MRTD).
func (v *Verifier) verifyQuote(quote []byte, c *api.TDXCollateral, ev *Evidence, inspect bool) error {
	res, err := v.tdx.VerifyCollateral(quote, c)
	if res == nil {
		return tdxError(err)
	}
	if perr := v.checkPinned(res.Pinned, inspect); perr != nil {
		return perr
	}
	ev.Simulated = !res.Pinned
	ev.Claims = make(map[string]any, len(res.Claims))
	for k, c := range res.Claims {
		ev.Claims[k] = c
	}
	ev.ReportData, ev.Measurement = res.ReportData, res.MRTD
	ev.ReportSHA256, ev.Signer, ev.ProductLine = res.QuoteSHA256, "PCK", "TDX"
	if err != nil {
		return tdxError(err)
	}
	return nil
}
