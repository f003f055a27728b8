// Package simazcvm makes SIMULATED Azure confidential VM evidence for
// development and tests: an HCL report around a simulated hardware report
// (internal/attest/simsnp's SEV-SNP report, or internal/attest/simtdx's TD
// quote) whose REPORT_DATA binds HCL runtime data holding a fresh vTPM
// attestation key, and a TPM2 quote of 24 simulated PCRs signed by that key
// over the caller's nonce, in the v1 layout of internal/attest/azcvm.
//
// IT IS NOT A TEE: whoever runs it makes evidence for any nonce.
package simazcvm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-tpm/tpm2"
)

// HardwareReport returns a signed hardware report whose REPORT_DATA is
// reportData (64 bytes): a SEV-SNP report (1184 bytes) or a TD quote.
type HardwareReport func(reportData []byte) ([]byte, error)

// Options choose the evidence.
type Options struct {
	// TDX makes az-tdx-vtpm evidence (Report returns a TD quote); else
	// az-snp-vtpm (Report returns an SNP report and VCEK is its VCEK DER).
	TDX    bool
	Report HardwareReport
	VCEK   []byte
	// Nonce is the TPM quote's qualifying data (at most 64 bytes): tkms's
	// binding, laid out as REPORT_DATA.
	Nonce []byte
	// Tamper, when set, changes the TPMS_ATTEST before it is signed (for
	// tests of what a verifier checks beyond the signature).
	Tamper func(*tpm2.TPMSAttest)
}

// PCR returns the value of simulated PCR i.
func PCR(i int) []byte {
	h := sha256.Sum256([]byte("SIMULATED PCR " + strconv.Itoa(i)))
	return h[:]
}

// VTPM is a simulated vTPM with its HCL report: it satisfies client.VTPM.
type VTPM struct {
	ak     *rsa.PrivateKey
	hcl    []byte
	hw     []byte
	tamper func(*tpm2.TPMSAttest)
}

// NewVTPM makes a simulated vTPM: a fresh attestation key, HCL runtime
// data holding it (user-data: opts.Nonce as hex), the hardware report
// binding that data, and the HCL report around them.
func NewVTPM(opts Options) (*VTPM, error) {
	if len(opts.Nonce) > 64 {
		return nil, fmt.Errorf("simazcvm: nonce is %d bytes, at most 64", len(opts.Nonce))
	}
	ak, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("simazcvm: %w", err)
	}
	akJWK, err := jose.JSONWebKey{Key: &ak.PublicKey, KeyID: "HCLAkPub"}.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("simazcvm: %w", err)
	}
	runtime, err := json.Marshal(map[string]any{
		"keys": []json.RawMessage{akJWK},
		"vm-configuration": map[string]any{
			"console-enabled": false, "secure-boot": true, "tpm-enabled": true, "vmUniqueId": "SIMULATED-AZURE-CVM",
		},
		"user-data": hex.EncodeToString(opts.Nonce),
	})
	if err != nil {
		return nil, fmt.Errorf("simazcvm: %w", err)
	}
	rd := make([]byte, 64)
	h := sha256.Sum256(runtime)
	copy(rd, h[:])
	hw, err := opts.Report(rd)
	if err != nil {
		return nil, fmt.Errorf("simazcvm: %w", err)
	}
	hcl := make([]byte, 2600)
	copy(hcl, "HCLA")
	binary.LittleEndian.PutUint32(hcl[4:], 2)
	reportType := uint32(2)
	if opts.TDX {
		reportType = 4 // the TDREPORT is not checked: the TD quote is
	} else {
		copy(hcl[32:], hw)
	}
	binary.LittleEndian.PutUint32(hcl[1216:], uint32(20+len(runtime)))
	binary.LittleEndian.PutUint32(hcl[1220:], 1)
	binary.LittleEndian.PutUint32(hcl[1224:], reportType)
	binary.LittleEndian.PutUint32(hcl[1228:], 1) // SHA-256
	binary.LittleEndian.PutUint32(hcl[1232:], uint32(len(runtime)))
	if 1236+len(runtime) > len(hcl) {
		return nil, fmt.Errorf("simazcvm: runtime data of %d bytes does not fit", len(runtime))
	}
	copy(hcl[1236:], runtime)
	return &VTPM{ak: ak, hcl: hcl, hw: hw, tamper: opts.Tamper}, nil
}

// HCLReport returns the HCL report.
func (v *VTPM) HCLReport(context.Context) ([]byte, error) { return bytes.Clone(v.hcl), nil }

// HardwareReport returns the hardware report: the SEV-SNP report inside
// the HCL report, or the TD quote (which IMDS would make).
func (v *VTPM) HardwareReport() []byte { return bytes.Clone(v.hw) }

// Quote returns a quote of the 24 simulated PCRs over nonce, signed by the
// attestation key.
func (v *VTPM) Quote(_ context.Context, nonce []byte) (attest, signature []byte, pcrs [][]byte, err error) {
	digest := sha256.New()
	for i := range 24 {
		pcrs = append(pcrs, PCR(i))
		digest.Write(PCR(i))
	}
	att := tpm2.TPMSAttest{
		Magic:     tpm2.TPMGeneratedValue,
		Type:      tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0xff}}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: digest.Sum(nil)},
		}),
	}
	if v.tamper != nil {
		v.tamper(&att)
	}
	msg := tpm2.Marshal(att)
	mh := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, v.ak, crypto.SHA256, mh[:])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("simazcvm: %w", err)
	}
	return msg, sig, pcrs, nil
}

// Evidence returns simulated Azure CVM evidence (JSON, v1 layout).
func Evidence(opts Options) ([]byte, error) {
	v, err := NewVTPM(opts)
	if err != nil {
		return nil, err
	}
	msg, sig, pcrs, err := v.Quote(context.Background(), opts.Nonce)
	if err != nil {
		return nil, err
	}
	pcrHex := make([]string, len(pcrs))
	for i, p := range pcrs {
		pcrHex[i] = hex.EncodeToString(p)
	}
	ev := map[string]any{
		"version":    1,
		"hcl_report": base64.URLEncoding.EncodeToString(v.hcl),
		"tpm_quote":  map[string]any{"message": hex.EncodeToString(msg), "signature": hex.EncodeToString(sig), "pcrs": pcrHex},
	}
	if opts.TDX {
		ev["td_quote"] = base64.URLEncoding.EncodeToString(v.hw)
	} else {
		ev["vcek"] = base64.URLEncoding.EncodeToString(opts.VCEK)
	}
	return json.Marshal(ev)
}
