package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tkms-dev/tkms/api"
)

// EvidenceMAA is the evidence type of a Microsoft Azure Attestation token
// (api.MAA).
const EvidenceMAA = "maa"

// An MAATokenSource obtains an Azure Attestation token for a TEE's
// evidence whose client payload (x-ms-runtime.client-payload) holds
// {"tkms-report-data": base64 of reportData}: on an Azure confidential VM,
// the guest attestation library's attest call with that payload against
// the MAA instance the KMS trusts. The token is returned as is (the
// compact JWT).
type MAATokenSource interface {
	MAAToken(ctx context.Context, reportData [64]byte) (string, error)
}

// MAATokenFunc adapts a function to [MAATokenSource].
type MAATokenFunc func(ctx context.Context, reportData [64]byte) (string, error)

// MAAToken calls f.
func (f MAATokenFunc) MAAToken(ctx context.Context, reportData [64]byte) (string, error) {
	return f(ctx, reportData)
}

// MAAAttester produces "maa" evidence {"type":"maa","token":...} from an
// [MAATokenSource].
type MAAAttester struct {
	src MAATokenSource
}

var _ Attester = (*MAAAttester)(nil)

// NewMAAAttester returns an attester of Azure Attestation tokens from src.
func NewMAAAttester(src MAATokenSource) *MAAAttester { return &MAAAttester{src: src} }

// Attest returns a token binding reportData.
func (a *MAAAttester) Attest(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	if a.src == nil {
		return nil, errors.New("client: no MAA token source")
	}
	tok, err := a.src.MAAToken(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining an Azure Attestation token: %w", err)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 {
		return nil, errors.New("client: the Azure Attestation token is not a compact JWT")
	}
	b, err := json.Marshal(api.MAA{Type: EvidenceMAA, Token: tok})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Evidence{Type: EvidenceMAA, Attestation: b}, nil
}

// Evidence types of Azure confidential VMs (vTPM): the HCL report, a TPM2
// quote by the vTPM's attestation key and the VCEK or TD quote, in the
// JSON layout internal/attest/azcvm reads.
const (
	EvidenceAzSNP = "az-snp-vtpm"
	EvidenceAzTDX = "az-tdx-vtpm"
)
