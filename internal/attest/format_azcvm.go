package attest

import (
	"context"

	"github.com/tkms-dev/tkms/internal/attest/azcvm"
)

// azFlavour returns the flavour of Azure CVM evidence, "" if raw is not
// such evidence. Evidence that looks like it but does not parse is
// reported as SEV-SNP, so that its refusal carries azcvm's code.
func azFlavour(raw []byte) string {
	if !azcvm.Looks(raw) {
		return ""
	}
	if e, err := azcvm.Parse(raw); err == nil {
		return e.Flavour
	}
	return azcvm.FlavourSNP
}

func isAzSNP(raw []byte) bool { return azFlavour(raw) == azcvm.FlavourSNP }
func isAzTDX(raw []byte) bool { return azFlavour(raw) == azcvm.FlavourTDX }

func azError(err error) *Error { return &Error{Code: azcvm.Code(err), Err: err} }

func decodeAzCVM(raw []byte) (*Unverified, error) {
	e, err := azcvm.Parse(raw)
	if err != nil {
		return nil, azError(err)
	}
	return &Unverified{Type: e.Flavour, Report: e.HardwareReport, VCEK: e.VCEK}, nil
}

// verifyAzCVM verifies Azure CVM evidence: the hardware report (the HCL
// report's SNP report with its VCEK, or the TD quote) as the snp and tdx
// formats do, then what binds the vTPM to it (azcvm). Its claims are the
// hardware report's, x-ms-attestation-type "azurevm" (the hardware's type
// moves to x-ms-isolation-tee.x-ms-attestation-type) and the vTPM's; the
// binding is the TPM quote's qualifying data.
func verifyAzCVM(ctx context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error {
	e, err := azcvm.Parse(raw)
	if err != nil {
		return azError(err)
	}
	switch e.Flavour {
	case azcvm.FlavourSNP:
		res, err := v.snp.VerifyRaw(ctx, e.HardwareReport, e.VCEK, nil)
		if err != nil {
			return snpError(err)
		}
		if err := v.checkSimulated(res, inspect); err != nil {
			return err
		}
		setReport(ev, res)
	default:
		if err := v.verifyQuote(e.HardwareReport, nil, ev, inspect); err != nil {
			return err
		}
	}
	b, err := e.CheckBinding(ev.ReportData)
	if err != nil {
		return azError(err)
	}
	ev.Claims["x-ms-isolation-tee.x-ms-attestation-type"] = ev.Claims["x-ms-attestation-type"]
	ev.Claims["x-ms-attestation-type"] = "azurevm"
	for k, c := range b.Claims() {
		ev.Claims[k] = c
	}
	ev.ReportData = b.Nonce
	return nil
}
