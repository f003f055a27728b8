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

// AzureCVMAttesterOptions choose the simulated Azure confidential VM.
type AzureCVMAttesterOptions struct {
	// TDX makes a TDX CVM (a TD quote of the directory's simulated TDX
	// chain); otherwise an SEV-SNP CVM (a report of its SEV-SNP chain).
	TDX bool
	// Create makes the simulated chain when the directory has none.
	// Without it, a directory without one is an error (see
	// AttesterOptions.Create).
	Create bool
}

// NewAzureCVMAttester loads the simulated chain of dataDir (SEV-SNP, or
// TDX with opts.TDX), which `tkms dev --data dataDir` creates.
func NewAzureCVMAttester(dataDir string, opts AzureCVMAttesterOptions) (*AzureCVMAttester, error) {
	file := simsnp.ChainFile
	if opts.TDX {
		file = simtdx.ChainFile
	}
	if err := needDevFile(dataDir, file, opts.Create); err != nil {
		return nil, err
	}
	if opts.TDX {
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
