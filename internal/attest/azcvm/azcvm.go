// Package azcvm takes apart the evidence of an Azure confidential VM
// (vTPM), SEV-SNP and TDX flavours, and checks what binds its parts
// together; the hardware report itself is verified by the caller
// (internal/attest, with attest/snp or attest/tdx).
//
// The evidence (the JSON trustee's az-snp-vtpm and az-tdx-vtpm verifiers
// take) holds the HCL report that Azure's paravisor writes, a vTPM quote and
// the hardware evidence: the VCEK of the SNP report inside the HCL report,
// or a TD quote. The chain of trust:
//
//  1. the hardware report (SNP report, or TD quote) is genuine (caller);
//  2. its REPORT_DATA[0:32] is SHA-256 of the HCL runtime data (a JSON
//     document after the report);
//  3. the runtime data's key "HCLAkPub" (RSA-2048) is the vTPM's
//     attestation key, and the TPM quote (TPMS_ATTEST) is signed by it
//     (RSASSA-PKCS1-v1_5, SHA-256);
//  4. the quote is a quote (magic TPM_GENERATED, which go-tpm does not
//     check, and type ATTEST_QUOTE) whose PCR digest is SHA-256 over the
//     selected SHA-256 PCR values sent, in selection order;
//  5. its qualifying data (extraData) is the caller's nonce: tkms binds the
//     wrapping key there, the 64 bytes laid out as REPORT_DATA is.
//
// Layouts: v1/v2 ({"version", "hcl_report": base64url, "tpm_quote":
// {"message","signature": hex, "pcrs": [hex]}, "vcek": base64url DER |
// "td_quote": base64url}) and the legacy one (JSON integer arrays,
// "quote"/"report", a PEM VCEK).
package azcvm

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-tpm/tpm2"

	"github.com/tkms-dev/tkms/internal/attest/attesterr"
)

// Flavours, as evidence types name them.
const (
	FlavourSNP = "az-snp-vtpm"
	FlavourTDX = "az-tdx-vtpm"
)

// Stable error codes.
const (
	// CodeMalformed: the evidence JSON, the HCL report or the runtime data
	// cannot be taken apart.
	CodeMalformed = "AZCVM_EVIDENCE_MALFORMED"
	// CodeRuntimeDataMismatch: REPORT_DATA[0:32] of the hardware report is
	// not SHA-256 of the HCL runtime data.
	CodeRuntimeDataMismatch = "AZCVM_RUNTIME_DATA_MISMATCH"
	// CodeNoAttestationKey: the runtime data has no RSA HCLAkPub key.
	CodeNoAttestationKey = "AZCVM_NO_ATTESTATION_KEY"
	// CodeQuoteSignatureInvalid: the TPM quote is not signed by HCLAkPub.
	CodeQuoteSignatureInvalid = "AZCVM_TPM_QUOTE_SIGNATURE_INVALID"
	// CodeQuoteInvalid: the signed TPMS_ATTEST is not a TPM quote (magic,
	// type) or does not parse.
	CodeQuoteInvalid = "AZCVM_TPM_QUOTE_INVALID"
	// CodePCRMismatch: the PCR values sent do not hash to the quote's PCR
	// digest.
	CodePCRMismatch = "AZCVM_PCR_DIGEST_MISMATCH"
	// CodeInternal is what [Code] returns for an error that is not an
	// [*Error].
	CodeInternal = attesterr.CodeInternal
)

// Error is a failure with a stable code (attesterr.Error).
type Error = attesterr.Error

// Code returns the code of the first [*Error] in err's tree, "" for nil
// and [CodeInternal] for any other error.
func Code(err error) string { return attesterr.Code(err) }

func errorf(code string, cause error, format string, a ...any) *Error {
	return attesterr.New("azcvm", code, cause, format, a...)
}

// HCL report layout (little-endian).
const (
	hclReportSize    = 2600
	hwReportOffset   = 32
	snpReportSize    = 1184
	igvmHeaderOffset = 1216
	runtimeOffset    = 1236
	reportTypeSNP    = 2
	reportTypeTDX    = 4
	hashTypeSHA256   = 1
)

// Evidence is Azure CVM evidence taken apart, NOT verified.
type Evidence struct {
	Flavour string // FlavourSNP or FlavourTDX
	// HardwareReport is the SNP report (1184 bytes) of the HCL report, or
	// the TD quote for FlavourTDX.
	HardwareReport []byte
	// VCEK is the SNP report's VCEK (DER or PEM), FlavourSNP only.
	VCEK []byte
	// RuntimeData is the HCL runtime data, the JSON whose SHA-256 the
	// hardware report's REPORT_DATA[0:32] must hold.
	RuntimeData []byte
	// TPMQuote is the vTPM's TPMS_ATTEST, TPMSignature its RSASSA
	// signature, PCRs the 24 SHA-256 PCR values sent.
	TPMQuote, TPMSignature []byte
	PCRs                   [][]byte
}

// flexBytes is bytes as the layouts hold them: a JSON array of integers,
// or a string (hex or base64, per field).
type flexBytes struct {
	raw json.RawMessage
}

func (f *flexBytes) UnmarshalJSON(b []byte) error { f.raw = bytes.Clone(b); return nil }

func (f flexBytes) present() bool { return len(f.raw) > 0 && string(f.raw) != "null" }

// decode returns the bytes; a string is decoded by dec.
func (f flexBytes) decode(dec func(string) ([]byte, error)) ([]byte, error) {
	if len(f.raw) > 0 && f.raw[0] == '[' {
		var ints []int
		if err := json.Unmarshal(f.raw, &ints); err != nil {
			return nil, err
		}
		out := make([]byte, len(ints))
		for i, n := range ints {
			if n < 0 || n > 255 {
				return nil, fmt.Errorf("byte %d is %d", i, n)
			}
			out[i] = byte(n)
		}
		return out, nil
	}
	var s string
	if err := json.Unmarshal(f.raw, &s); err != nil {
		return nil, err
	}
	return dec(s)
}

// decodeBase64 accepts base64url or standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func decodeHex(s string) ([]byte, error) { return hex.DecodeString(strings.TrimSpace(s)) }

func rawBytes(s string) ([]byte, error) { return []byte(s), nil }

type tpmQuoteJSON struct {
	Message   flexBytes   `json:"message"`
	Signature flexBytes   `json:"signature"`
	PCRs      []flexBytes `json:"pcrs"`
}

type evidenceJSON struct {
	Version   *int          `json:"version"`
	HCLReport flexBytes     `json:"hcl_report"`
	Report    flexBytes     `json:"report"` // legacy
	TPMQuote  *tpmQuoteJSON `json:"tpm_quote"`
	Quote     *tpmQuoteJSON `json:"quote"` // legacy
	VCEK      flexBytes     `json:"vcek"`
	TDQuote   flexBytes     `json:"td_quote"`
}

// Looks reports whether raw looks like Azure CVM evidence (a JSON object
// with a TPM quote and an HCL report), without taking it apart.
func Looks(raw []byte) bool {
	var e struct {
		HCLReport json.RawMessage `json:"hcl_report"`
		Report    json.RawMessage `json:"report"`
		TPMQuote  json.RawMessage `json:"tpm_quote"`
		Quote     json.RawMessage `json:"quote"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return false
	}
	return (len(e.HCLReport) > 0 || len(e.Report) > 0) && (len(e.TPMQuote) > 0 || len(e.Quote) > 0)
}

// Parse takes evidence apart.
func Parse(raw []byte) (*Evidence, error) {
	var e evidenceJSON
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, errorf(CodeMalformed, err, "the evidence is not a JSON object of the Azure CVM layout")
	}
	legacy := e.Version == nil
	hclField, q := e.HCLReport, e.TPMQuote
	if !hclField.present() {
		hclField = e.Report
	}
	if q == nil {
		q = e.Quote
	}
	if !hclField.present() || q == nil {
		return nil, errorf(CodeMalformed, nil, "the evidence has no HCL report or no TPM quote")
	}
	hcl, err := hclField.decode(decodeBase64)
	if err != nil {
		return nil, errorf(CodeMalformed, err, "the HCL report does not decode")
	}
	ev := &Evidence{}
	if ev.TPMQuote, err = q.Message.decode(decodeHex); err != nil {
		return nil, errorf(CodeMalformed, err, "the TPM quote message does not decode")
	}
	if ev.TPMSignature, err = q.Signature.decode(decodeHex); err != nil {
		return nil, errorf(CodeMalformed, err, "the TPM quote signature does not decode")
	}
	for i, p := range q.PCRs {
		b, err := p.decode(decodeHex)
		if err != nil || len(b) != sha256.Size {
			return nil, errorf(CodeMalformed, err, "PCR %d is not a SHA-256 value", i)
		}
		ev.PCRs = append(ev.PCRs, b)
	}
	if len(hcl) != hclReportSize || string(hcl[:4]) != "HCLA" {
		return nil, errorf(CodeMalformed, nil, "the HCL report is %d bytes (want %d, starting HCLA)", len(hcl), hclReportSize)
	}
	reportType := binary.LittleEndian.Uint32(hcl[igvmHeaderOffset+8:])
	hashType := binary.LittleEndian.Uint32(hcl[igvmHeaderOffset+12:])
	varSize := binary.LittleEndian.Uint32(hcl[igvmHeaderOffset+16:])
	if hashType != hashTypeSHA256 {
		return nil, errorf(CodeMalformed, nil, "the HCL runtime data hash type is %d, want %d (SHA-256)", hashType, hashTypeSHA256)
	}
	if int(varSize) > len(hcl)-runtimeOffset {
		return nil, errorf(CodeMalformed, nil, "the HCL runtime data is %d bytes, more than the report holds", varSize)
	}
	ev.RuntimeData = bytes.Clone(hcl[runtimeOffset : runtimeOffset+int(varSize)])
	switch reportType {
	case reportTypeSNP:
		ev.Flavour = FlavourSNP
		ev.HardwareReport = bytes.Clone(hcl[hwReportOffset : hwReportOffset+snpReportSize])
		dec := decodeBase64
		if legacy {
			dec = rawBytes // a PEM certificate
		}
		if !e.VCEK.present() {
			return nil, errorf(CodeMalformed, nil, "SEV-SNP evidence without a VCEK")
		}
		if ev.VCEK, err = e.VCEK.decode(dec); err != nil {
			return nil, errorf(CodeMalformed, err, "the VCEK does not decode")
		}
	case reportTypeTDX:
		ev.Flavour = FlavourTDX
		if !e.TDQuote.present() {
			return nil, errorf(CodeMalformed, nil, "TDX evidence without a TD quote")
		}
		if ev.HardwareReport, err = e.TDQuote.decode(decodeBase64); err != nil {
			return nil, errorf(CodeMalformed, err, "the TD quote does not decode")
		}
	default:
		return nil, errorf(CodeMalformed, nil, "the HCL report type is %d, want %d (SEV-SNP) or %d (TDX)", reportType, reportTypeSNP, reportTypeTDX)
	}
	return ev, nil
}

// Bound is what the vTPM part of the evidence establishes once the
// hardware report is verified.
type Bound struct {
	// Nonce is the TPM quote's qualifying data.
	Nonce []byte
	// PCRs are the quoted PCR values by index.
	PCRs map[int][]byte
	// VMConfiguration is the runtime data's "vm-configuration" object.
	VMConfiguration map[string]any
	// UserData is the runtime data's "user-data" (hex), if any.
	UserData string
}

// CheckBinding checks steps 2-4 of the package doc: reportData is the
// verified hardware report's REPORT_DATA.
func (ev *Evidence) CheckBinding(reportData []byte) (*Bound, error) {
	h := sha256.Sum256(ev.RuntimeData)
	if len(reportData) < 32 || !bytes.Equal(reportData[:32], h[:]) {
		return nil, errorf(CodeRuntimeDataMismatch, nil, "REPORT_DATA[0:32] is %x, want SHA-256 of the HCL runtime data %x", prefix(reportData, 32), h)
	}
	var rt struct {
		Keys            []json.RawMessage `json:"keys"`
		VMConfiguration map[string]any    `json:"vm-configuration"`
		UserData        string            `json:"user-data"`
	}
	if err := json.Unmarshal(ev.RuntimeData, &rt); err != nil {
		return nil, errorf(CodeMalformed, err, "the HCL runtime data is not JSON")
	}
	var ak *rsa.PublicKey
	for _, k := range rt.Keys {
		var jwk jose.JSONWebKey
		if jwk.UnmarshalJSON(k) != nil || jwk.KeyID != "HCLAkPub" {
			continue
		}
		if pub, ok := jwk.Key.(*rsa.PublicKey); ok && pub.N.BitLen() >= 2048 {
			ak = pub
		}
	}
	if ak == nil {
		return nil, errorf(CodeNoAttestationKey, nil, "the HCL runtime data has no RSA key HCLAkPub (at least 2048 bits)")
	}
	digest := sha256.Sum256(ev.TPMQuote)
	if err := rsa.VerifyPKCS1v15(ak, crypto.SHA256, digest[:], ev.TPMSignature); err != nil {
		return nil, errorf(CodeQuoteSignatureInvalid, err, "the TPM quote is not signed by HCLAkPub")
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.TPMQuote)
	if err != nil {
		return nil, errorf(CodeQuoteInvalid, err, "the signed TPMS_ATTEST does not parse")
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, errorf(CodeQuoteInvalid, nil, "the TPMS_ATTEST magic is 0x%x, want 0x%x (TPM_GENERATED)", uint32(att.Magic), uint32(tpm2.TPMGeneratedValue))
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, errorf(CodeQuoteInvalid, nil, "the TPMS_ATTEST type is 0x%x, want 0x%x (quote)", uint16(att.Type), uint16(tpm2.TPMSTAttestQuote))
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return nil, errorf(CodeQuoteInvalid, err, "the TPMS_ATTEST holds no quote")
	}
	b := &Bound{Nonce: bytes.Clone(att.ExtraData.Buffer), PCRs: map[int][]byte{}, VMConfiguration: rt.VMConfiguration, UserData: rt.UserData}
	sum := sha256.New()
	for _, sel := range qi.PCRSelect.PCRSelections {
		if sel.Hash != tpm2.TPMAlgSHA256 {
			return nil, errorf(CodePCRMismatch, nil, "the quote selects PCRs of hash 0x%x; only SHA-256 PCR values are sent", uint16(sel.Hash))
		}
		for i := 0; i < len(sel.PCRSelect)*8; i++ {
			if sel.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			if i >= len(ev.PCRs) {
				return nil, errorf(CodePCRMismatch, nil, "the quote selects PCR %d, which was not sent", i)
			}
			sum.Write(ev.PCRs[i])
			b.PCRs[i] = ev.PCRs[i]
		}
	}
	if got := sum.Sum(nil); !bytes.Equal(got, qi.PCRDigest.Buffer) {
		return nil, errorf(CodePCRMismatch, nil, "the PCR values sent hash to %x, the quote's PCR digest is %x", got, qi.PCRDigest.Buffer)
	}
	return b, nil
}

// Claims returns the claims of the vTPM part: the quoted PCRs
// ("tpm_pcr<N>", hex), the runtime data's VM configuration
// ("x-ms-azurevm-<member>") and the quote's nonce ("tpm_nonce", hex).
func (b *Bound) Claims() map[string]any {
	c := map[string]any{"tpm_nonce": hex.EncodeToString(b.Nonce)}
	for i, v := range b.PCRs {
		c["tpm_pcr"+strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	for k, v := range b.VMConfiguration {
		switch v := v.(type) {
		case string, bool:
			c["x-ms-azurevm-"+k] = v
		case float64:
			c["x-ms-azurevm-"+k] = int64(v)
		}
	}
	if b.UserData != "" {
		c["x-ms-azurevm-user-data"] = b.UserData
	}
	return c
}

func prefix(b []byte, n int) []byte {
	if len(b) < n {
		return b
	}
	return b[:n]
}
