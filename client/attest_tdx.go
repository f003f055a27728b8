package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/tkms-dev/tkms/api"
)

// EvidenceTDX is the evidence type of an Intel TDX quote (api.TDX).
const EvidenceTDX = "tdx"

// Offsets in a TDX quote v4: the header's version, and REPORT_DATA in the
// TD quote body.
const (
	tdxQuoteVersion    = 4
	tdxReportDataStart = 0x30 + 0x208
	tdxReportDataEnd   = tdxReportDataStart + 64
)

// TDXAttester produces Intel TDX evidence {"type":"tdx","quote":...} from
// a TD's quote device: by default the Linux configfs-tsm report interface
// with the "tdx_guest" provider, whose outblob is the quote v4 with the
// PCK certificate chain inside (the host's quote generation service
// fills it).
type TDXAttester struct {
	device ReportDevice
}

var _ Attester = (*TDXAttester)(nil)

// TDXOptions configure [NewTDXAttester].
type TDXOptions struct {
	// Device produces the quotes (its report is the quote; any
	// certificate table is ignored). nil means configfs-tsm at
	// /sys/kernel/config/tsm with the "tdx_guest" provider.
	Device ReportDevice
}

// NewTDXAttester returns an attester of TDX quotes from opts.Device.
func NewTDXAttester(opts TDXOptions) *TDXAttester {
	device := opts.Device
	if device == nil {
		device = &ConfigFSDevice{Provider: tsmProviderTDX}
	}
	return &TDXAttester{device: device}
}

// Attest returns a quote whose REPORT_DATA is reportData.
func (a *TDXAttester) Attest(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	quote, _, err := a.device.GetReport(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining a TDX quote: %w", err)
	}
	if len(quote) < tdxReportDataEnd {
		return nil, fmt.Errorf("client: the TDX quote is %d bytes, too short", len(quote))
	}
	if v := binary.LittleEndian.Uint16(quote); v != tdxQuoteVersion {
		return nil, fmt.Errorf("client: the TDX quote is version %d; the KMS accepts version %d", v, tdxQuoteVersion)
	}
	if !bytes.Equal(quote[tdxReportDataStart:tdxReportDataEnd], reportData[:]) {
		return nil, fmt.Errorf("client: the TDX quote's REPORT_DATA is not the one requested")
	}
	b, err := json.Marshal(api.TDX{Type: EvidenceTDX, Quote: quote})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Evidence{Type: EvidenceTDX, Attestation: b}, nil
}
