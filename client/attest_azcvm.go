package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// VTPM is an Azure confidential VM's vTPM, as [AzureCVMAttester] uses it.
// [OpenVTPM] opens the real one (/dev/tpmrm0).
type VTPM interface {
	// HCLReport returns the HCL report the paravisor keeps in NV index
	// 0x01400001 (2,600 bytes: the hardware report, then the runtime data
	// with the vTPM's attestation key).
	HCLReport(ctx context.Context) ([]byte, error)
	// Quote returns a TPM2 quote of PCRs 0-23 (SHA-256 bank) by the
	// attestation key (persistent handle 0x81000003) with nonce as
	// qualifying data: the TPMS_ATTEST, its RSASSA signature, and the 24
	// PCR values.
	Quote(ctx context.Context, nonce []byte) (attest, signature []byte, pcrs [][]byte, err error)
}

// AzureCVMOptions configure an [AzureCVMAttester].
type AzureCVMOptions struct {
	// VTPM is the vTPM; nil means OpenVTPM("") for each attestation.
	VTPM VTPM
	// IMDSURL is the base URL of Azure's instance metadata service, where
	// the VCEK (THIM) and the TD quote come from; "" means
	// http://169.254.169.254.
	IMDSURL string
	// HTTPClient talks to IMDS; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
}

// AzureCVMAttester produces Azure confidential VM evidence (types
// az-snp-vtpm and az-tdx-vtpm, docs/release.md): the vTPM's HCL report
// and a TPM2 quote over the report data, with the SEV-SNP report's VCEK
// from IMDS (THIM) or the TD quote IMDS makes of the TDREPORT.
type AzureCVMAttester struct {
	opts AzureCVMOptions
}

var _ Attester = (*AzureCVMAttester)(nil)

// NewAzureCVMAttester returns an attester for an Azure confidential VM.
func NewAzureCVMAttester(opts AzureCVMOptions) *AzureCVMAttester {
	if opts.IMDSURL == "" {
		opts.IMDSURL = "http://169.254.169.254"
	}
	opts.IMDSURL = strings.TrimSuffix(opts.IMDSURL, "/")
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &AzureCVMAttester{opts: opts}
}

// HCL report layout.
const (
	hclReportSize     = 2600
	hclTDReportOffset = 32
	hclTDReportSize   = 1024
	hclReportTypeAt   = 1216 + 8
	hclReportTypeSNP  = 2
	hclReportTypeTDX  = 4
)

// Attest returns evidence whose TPM quote's qualifying data is reportData.
func (a *AzureCVMAttester) Attest(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	tpm := a.opts.VTPM
	if tpm == nil {
		t, err := OpenVTPM("")
		if err != nil {
			return nil, err
		}
		defer t.Close()
		tpm = t
	}
	hcl, err := tpm.HCLReport(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: reading the HCL report: %w", err)
	}
	if len(hcl) != hclReportSize || string(hcl[:4]) != "HCLA" {
		return nil, fmt.Errorf("client: the HCL report is %d bytes, not a %d-byte HCLA report", len(hcl), hclReportSize)
	}
	msg, sig, pcrs, err := tpm.Quote(ctx, reportData[:])
	if err != nil {
		return nil, fmt.Errorf("client: quoting with the vTPM: %w", err)
	}
	pcrHex := make([]string, len(pcrs))
	for i, p := range pcrs {
		pcrHex[i] = hex.EncodeToString(p)
	}
	obj := map[string]any{
		"version":    1,
		"hcl_report": base64.URLEncoding.EncodeToString(hcl),
		"tpm_quote":  map[string]any{"message": hex.EncodeToString(msg), "signature": hex.EncodeToString(sig), "pcrs": pcrHex},
	}
	typ := EvidenceAzSNP
	switch t := binary.LittleEndian.Uint32(hcl[hclReportTypeAt:]); t {
	case hclReportTypeSNP:
		vcek, err := a.vcek(ctx)
		if err != nil {
			return nil, err
		}
		obj["vcek"] = base64.URLEncoding.EncodeToString(vcek)
	case hclReportTypeTDX:
		typ = EvidenceAzTDX
		q, err := a.tdQuote(ctx, hcl[hclTDReportOffset:hclTDReportOffset+hclTDReportSize])
		if err != nil {
			return nil, err
		}
		obj["td_quote"] = base64.URLEncoding.EncodeToString(q)
	default:
		return nil, fmt.Errorf("client: the HCL report's type is %d, neither SEV-SNP (2) nor TDX (4)", t)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Evidence{Type: typ, Attestation: b}, nil
}

// vcek returns the VM's VCEK (DER) from IMDS's THIM endpoint.
func (a *AzureCVMAttester) vcek(ctx context.Context) ([]byte, error) {
	var thim struct {
		VCEKCert string `json:"vcekCert"`
	}
	if err := a.imds(ctx, http.MethodGet, "/metadata/THIM/amd/certification", nil, &thim); err != nil {
		return nil, fmt.Errorf("client: fetching the VCEK from IMDS: %w", err)
	}
	blk, _ := pem.Decode([]byte(thim.VCEKCert))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("client: IMDS's THIM answer has no PEM vcekCert")
	}
	return blk.Bytes, nil
}

// tdQuote asks IMDS to make a TD quote of the TDREPORT.
func (a *AzureCVMAttester) tdQuote(ctx context.Context, tdReport []byte) ([]byte, error) {
	body, _ := json.Marshal(map[string]string{"report": base64.RawURLEncoding.EncodeToString(tdReport)})
	var out struct {
		Quote string `json:"quote"`
	}
	if err := a.imds(ctx, http.MethodPost, "/acc/tdquote", body, &out); err != nil {
		return nil, fmt.Errorf("client: obtaining a TD quote from IMDS: %w", err)
	}
	q, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(out.Quote, "="))
	if err != nil || len(q) == 0 {
		return nil, errors.New("client: IMDS's TD quote is not base64url")
	}
	return q, nil
}

func (a *AzureCVMAttester) imds(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.opts.IMDSURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(b, out)
}
