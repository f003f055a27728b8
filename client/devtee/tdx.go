package devtee

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

// TDXAttesterOptions choose the fields of simulated TDX quotes.
type TDXAttesterOptions struct {
	// MRTD is 48 bytes; nil means simtdx's recognisable SIMULATED default
	// (which `tkms dev`'s default release policy names).
	MRTD []byte
	// Debug sets TD_ATTRIBUTES bit 0, which verifiers refuse.
	Debug bool
	// Create makes a new simulated TDX chain when the directory has none.
	// Without it, a directory without one is an error (see
	// AttesterOptions.Create).
	Create bool
}

// TDXAttester produces TDX evidence signed by the SIMULATED TDX chain of a
// tkms data directory (internal/attest/simtdx). IT IS NOT A TEE.
type TDXAttester struct {
	chain *simtdx.Chain
	opts  TDXAttesterOptions
}

var _ client.Attester = (*TDXAttester)(nil)

// NewTDXAttester loads the simulated TDX chain of dataDir, which `tkms dev
// --data dataDir` creates; with opts.Create it creates the chain if there
// is none (a new chain is trusted only by a KMS started on the same
// directory afterwards).
func NewTDXAttester(dataDir string, opts TDXAttesterOptions) (*TDXAttester, error) {
	if opts.MRTD != nil && len(opts.MRTD) != 48 {
		return nil, fmt.Errorf("devtee: simulated MRTD is %d bytes, want 48", len(opts.MRTD))
	}
	if err := needDevFile(dataDir, simtdx.ChainFile, opts.Create); err != nil {
		return nil, err
	}
	chain, err := simtdx.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	opts.MRTD = bytes.Clone(opts.MRTD)
	return &TDXAttester{chain: chain, opts: opts}, nil
}

// Attest returns a simulated TDX quote with REPORT_DATA reportData, marked
// Simulated.
func (a *TDXAttester) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := a.chain.Quote(simtdx.QuoteOptions{ReportData: reportData[:], MRTD: a.opts.MRTD, Debug: a.opts.Debug})
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	b, err := json.Marshal(api.TDX{Type: client.EvidenceTDX, Quote: q})
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	return &client.Evidence{Type: client.EvidenceTDX, Attestation: b, Simulated: true}, nil
}
