package devtee

import (
	"context"
	"fmt"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

// AzureCVMAttester produces SIMULATED Azure confidential VM evidence (HCL
// report, vTPM quote over the report data, and the data directory's
// simulated SEV-SNP report and VCEK or TD quote; internal/attest/simazcvm).
// IT IS NOT A TEE.
type AzureCVMAttester struct {
	opts simazcvm.Options
	typ  string
}

var _ client.Attester = (*AzureCVMAttester)(nil)

// NewAzureCVMAttester loads the simulated chain of dataDir (SEV-SNP, or
// TDX when tdx is set), creating it on first use.
func NewAzureCVMAttester(dataDir string, tdx bool) (*AzureCVMAttester, error) {
	if tdx {
		chain, err := simtdx.LoadOrCreate(dataDir)
		if err != nil {
			return nil, fmt.Errorf("devtee: %w", err)
		}
		return &AzureCVMAttester{typ: client.EvidenceAzTDX, opts: simazcvm.Options{TDX: true, Report: func(rd []byte) ([]byte, error) {
			return chain.Quote(simtdx.QuoteOptions{ReportData: rd})
		}}}, nil
	}
	chain, err := simsnp.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	return &AzureCVMAttester{typ: client.EvidenceAzSNP, opts: simazcvm.Options{VCEK: chain.VCEK().Raw, Report: func(rd []byte) ([]byte, error) {
		return chain.Report(simsnp.ReportOptions{ReportData: rd})
	}}}, nil
}

// Attest returns simulated Azure CVM evidence whose vTPM quote's qualifying
// data is reportData, marked Simulated.
func (a *AzureCVMAttester) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts := a.opts
	opts.Nonce = reportData[:]
	b, err := simazcvm.Evidence(opts)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	return &client.Evidence{Type: a.typ, Attestation: b, Simulated: true}, nil
}
