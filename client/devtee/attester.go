package devtee

import (
	"bytes"
	"context"
	"fmt"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

// AttesterOptions choose the fields of simulated reports, as the flags of
// `tkms attest simulate` do.
type AttesterOptions struct {
	// Measurement is MEASUREMENT, 48 bytes; nil means simsnp's recognisable
	// SIMULATED default (which `tkms dev`'s default release policy names).
	Measurement []byte
	// HostData is HOST_DATA, 32 bytes; nil means zeros.
	HostData []byte
	// Debug sets the guest policy's DEBUG bit, which verifiers refuse.
	Debug bool
	// Create makes a new simulated chain when the directory has none, as
	// `tkms attest simulate --data` does on first use. Without it, a
	// directory without a chain is an error: a mistyped path would
	// otherwise give evidence of a new chain that no KMS trusts.
	Create bool
}

// Attester produces ACI attestation objects signed by the SIMULATED SEV-SNP
// chain of a tkms data directory (internal/attest/simsnp).
// IT IS NOT A TEE: anyone with the directory forges such evidence, and a
// KMS accepts it only when told to trust that directory's chain (tkms dev).
type Attester struct {
	chain *simsnp.Chain
	opts  AttesterOptions
}

var _ client.Attester = (*Attester)(nil)

// NewAttester loads the simulated chain of dataDir, which `tkms dev
// --data dataDir` creates; with opts.Create it creates the chain if there
// is none (a new chain is trusted only by a KMS started on the same
// directory afterwards).
func NewAttester(dataDir string, opts AttesterOptions) (*Attester, error) {
	if opts.Measurement != nil && len(opts.Measurement) != 48 {
		return nil, fmt.Errorf("devtee: simulated measurement is %d bytes, want 48", len(opts.Measurement))
	}
	if opts.HostData != nil && len(opts.HostData) != 32 {
		return nil, fmt.Errorf("devtee: simulated host data is %d bytes, want 32", len(opts.HostData))
	}
	if err := needDevFile(dataDir, simsnp.ChainFile, opts.Create); err != nil {
		return nil, err
	}
	chain, err := simsnp.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	opts.Measurement = bytes.Clone(opts.Measurement)
	opts.HostData = bytes.Clone(opts.HostData)
	return &Attester{chain: chain, opts: opts}, nil
}

// Attest returns a simulated ACI attestation object with REPORT_DATA
// reportData, marked Simulated.
func (a *Attester) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := a.chain.ACIBundle(simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{
		ReportData:  reportData[:],
		Measurement: a.opts.Measurement,
		HostData:    a.opts.HostData,
		Debug:       a.opts.Debug,
	}})
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	return &client.Evidence{Type: client.EvidenceACI, Attestation: b, Simulated: true}, nil
}
