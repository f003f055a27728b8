package devtee

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// MAAAttesterOptions choose the claims of simulated Azure Attestation
// tokens.
type MAAAttesterOptions struct {
	// Measurement is the isolated TEE's launch measurement as hex; ""
	// means simmaa's recognisable SIMULATED default.
	Measurement string
	// Debug marks the TEE debuggable, which verifiers refuse.
	Debug bool
	// Create makes the simulated instance's signing key when the directory
	// has none. Without it, a directory without one is an error (see
	// AttesterOptions.Create).
	Create bool
}

// NewMAAAttester returns an attester of Azure Attestation tokens signed by
// the SIMULATED MAA instance of a tkms data directory
// (internal/attest/simmaa), which `tkms dev --data dataDir` creates (with
// opts.Create, created here if there is none). IT ATTESTS NOTHING.
func NewMAAAttester(dataDir string, opts MAAAttesterOptions) (client.Attester, error) {
	if err := needDevFile(dataDir, filepath.Join(simmaa.Dir, oidcissuer.KeyFile), opts.Create); err != nil {
		return nil, err
	}
	sim, err := simmaa.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("devtee: %w", err)
	}
	return simulatedMAA{client.NewMAAAttester(client.MAATokenFunc(func(ctx context.Context, rd [64]byte) (string, error) {
		return sim.Token(simmaa.TokenOptions{ReportData: rd[:], Measurement: opts.Measurement, Debug: opts.Debug})
	}))}, nil
}

// simulatedMAA marks the evidence of the simulated instance.
type simulatedMAA struct{ *client.MAAAttester }

func (s simulatedMAA) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	ev, err := s.MAAAttester.Attest(ctx, reportData)
	if ev != nil {
		ev.Simulated = true
	}
	return ev, err
}
