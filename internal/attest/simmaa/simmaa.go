// Package simmaa is a SIMULATED Microsoft Azure Attestation instance for
// development and tests.
//
// IT ATTESTS NOTHING. It signs MAA-shaped tokens (the claims of an Azure
// confidential VM with SEV-SNP isolation, as the real sharedweu instance
// issues them) for whatever report data it is given, with an RSA key kept
// in a tkms data directory (an internal/oidcissuer key). A KMS trusts it
// only when told to trust the simulated TEE (tkms dev), and marks what it
// releases under it.
package simmaa

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// Issuer is the simulated instance's iss.
const Issuer = "https://simulated-maa.tkms.invalid"

// Dir is the directory, inside a data directory, of its signing key.
const Dir = "simmaa"

// DefaultMeasurement is the launch measurement of simulated tokens when
// none is given, as hex.
var DefaultMeasurement = hex.EncodeToString([]byte("SIMULATED MAA LAUNCH MEASUREMENT - NOT A TEE ...."))

// Instance is a simulated MAA instance.
type Instance struct {
	iss *oidcissuer.Issuer
	now func() time.Time
}

// LoadOrCreate returns the simulated instance of a data directory,
// creating its key on first use.
func LoadOrCreate(dataDir string) (*Instance, error) {
	iss, err := oidcissuer.New(filepath.Join(dataDir, Dir), oidcissuer.Options{URL: Issuer})
	if err != nil {
		return nil, fmt.Errorf("simmaa: %w", err)
	}
	return &Instance{iss: iss, now: time.Now}, nil
}

// Trusted returns the instance as a verifier trusts it: static keys,
// marked simulated.
func (i *Instance) Trusted() maa.Instance {
	return maa.Instance{Issuer: Issuer, JWKS: i.iss.JWKS(), Simulated: true}
}

// TokenOptions choose the claims of a simulated token.
type TokenOptions struct {
	// ReportData is the binding, 64 bytes, carried as
	// x-ms-runtime.client-payload.tkms-report-data.
	ReportData []byte
	// Measurement is the launch measurement as hex; "" means
	// DefaultMeasurement.
	Measurement string
	// Debug marks the isolated TEE debuggable, which verifiers refuse.
	Debug bool
	// IssuedAt is the token's iat and nbf; zero means now. It is valid
	// for 8 hours, as MAA's tokens are.
	IssuedAt time.Time
}

// Token returns a simulated MAA token.
func (i *Instance) Token(opts TokenOptions) (string, error) {
	if len(opts.ReportData) != 64 {
		return "", fmt.Errorf("simmaa: report data is %d bytes, want 64", len(opts.ReportData))
	}
	m := opts.Measurement
	if m == "" {
		m = DefaultMeasurement
	}
	at := opts.IssuedAt
	if at.IsZero() {
		at = i.now()
	}
	return i.iss.Mint(map[string]any{
		"iss": Issuer, "iat": at.Unix(), "nbf": at.Unix(), "exp": at.Add(8 * time.Hour).Unix(),
		"x-ms-ver": "1.0", "x-ms-attestation-type": "azurevm", "x-ms-azurevm-vmid": "SIMULATED",
		"x-ms-isolation-tee": map[string]any{
			"x-ms-attestation-type":           "sevsnpvm",
			"x-ms-compliance-status":          "azure-compliant-cvm",
			"x-ms-sevsnpvm-is-debuggable":     opts.Debug,
			"x-ms-sevsnpvm-launchmeasurement": m,
			"x-ms-sevsnpvm-vmpl":              0,
		},
		"x-ms-runtime": map[string]any{
			"client-payload": map[string]any{"tkms-report-data": base64.StdEncoding.EncodeToString(opts.ReportData)},
		},
	})
}
