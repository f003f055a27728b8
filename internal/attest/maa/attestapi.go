package maa

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tkms-dev/tkms/api"
)

// The attest API of an MAA instance for SEV-SNP evidence
// (https://learn.microsoft.com/rest/api/attestation/attestation/attest-sev-snp-vm):
//
//	POST {instance}/attest/SevSnpVm?api-version=2022-08-01
//	{"report": base64url(JSON{"SnpReport": base64url(report),
//	   "VcekCertChain": base64url(PEM VCEK, ASK, ARK),
//	   "Endorsements": base64url(JSON{"Uvm":[base64url(COSE_Sign1)]})}),
//	 "runtimeData": {"data": base64url(bytes), "dataType": "JSON"}}
//	-> {"token": "<JWT>"}
//
// MAA checks REPORT_DATA[0:32] = SHA-256(runtimeData) and, for "JSON",
// reflects the runtime data in the token's x-ms-runtime claim: a
// {"keys":[JWK]} there is what Key Vault's secure key release wraps the
// released key to (internal/akv).

// Attest API path and version.
const (
	AttestSNPPath       = "/attest/SevSnpVm"
	AttestAPIVersion    = "2022-08-01"
	maxAttestAnswerSize = 1 << 20
)

// SNPAttestRequest is the body of the SEV-SNP attest call.
type SNPAttestRequest struct {
	Report      string      `json:"report"`
	RuntimeData *AttestData `json:"runtimeData,omitempty"`
	InitTime    *AttestData `json:"initTimeData,omitempty"`
	Nonce       json.Number `json:"nonce,omitempty"`
}

// AttestData is runtime or init-time data.
type AttestData struct {
	Data     string `json:"data"`
	DataType string `json:"dataType"`
}

// SNPEvidence is the decoded "report" of an attest call.
type SNPEvidence struct {
	Report []byte // the SNP report
	// VCEKChain is PEM: the VCEK (or VLEK), ASK, ARK.
	VCEKChain []byte
	// UVM are the UVM endorsements (COSE_Sign1), ACI only.
	UVM [][]byte
}

type snpReportJSON struct {
	SnpReport     string `json:"SnpReport"`
	VcekCertChain string `json:"VcekCertChain"`
	Endorsements  string `json:"Endorsements,omitempty"`
}

type endorsementsJSON struct {
	Uvm []string `json:"Uvm"`
}

// SNPEvidenceFromACI takes the SNP report, chain and UVM endorsement from
// an ACI attestation object (api.ACI, what client.ACIAttester and the
// simulated TEE produce).
func SNPEvidenceFromACI(aci []byte) (*SNPEvidence, error) {
	var a api.ACI
	if err := json.Unmarshal(aci, &a); err != nil {
		return nil, fmt.Errorf("maa: the evidence is not an ACI attestation object: %w", err)
	}
	ev := &SNPEvidence{}
	var err error
	if ev.Report, err = base64.StdEncoding.DecodeString(a.Evidence); err != nil || len(ev.Report) == 0 {
		return nil, errors.New("maa: the ACI attestation object has no base64 evidence")
	}
	if ev.VCEKChain, err = base64.StdEncoding.DecodeString(a.Endorsements); err != nil || len(ev.VCEKChain) == 0 {
		return nil, errors.New("maa: the ACI attestation object has no base64 endorsements")
	}
	if a.UVMEndorsements != "" {
		u, err := base64.StdEncoding.DecodeString(a.UVMEndorsements)
		if err != nil {
			return nil, errors.New("maa: the ACI attestation object's uvm_endorsements are not base64")
		}
		ev.UVM = [][]byte{u}
	}
	return ev, nil
}

// ACI returns ev as an ACI attestation object (without endorsed_tcb), the
// form internal/attest verifies.
func (ev *SNPEvidence) ACI() []byte {
	a := api.ACI{Evidence: base64.StdEncoding.EncodeToString(ev.Report), Endorsements: base64.StdEncoding.EncodeToString(ev.VCEKChain)}
	if len(ev.UVM) > 0 {
		a.UVMEndorsements = base64.StdEncoding.EncodeToString(ev.UVM[0])
	}
	b, _ := json.Marshal(a) // strings only
	return b
}

// NewSNPAttestRequest builds the attest call for ev with runtime data
// (JSON, whose SHA-256 the report's REPORT_DATA[0:32] must hold).
func NewSNPAttestRequest(ev *SNPEvidence, runtimeJSON []byte) ([]byte, error) {
	r := snpReportJSON{
		SnpReport:     base64.URLEncoding.EncodeToString(ev.Report),
		VcekCertChain: base64.URLEncoding.EncodeToString(ev.VCEKChain),
	}
	if len(ev.UVM) > 0 {
		var e endorsementsJSON
		for _, u := range ev.UVM {
			e.Uvm = append(e.Uvm, base64.URLEncoding.EncodeToString(u))
		}
		eb, _ := json.Marshal(e)
		r.Endorsements = base64.URLEncoding.EncodeToString(eb)
	}
	rb, _ := json.Marshal(r)
	return json.Marshal(SNPAttestRequest{
		Report:      base64.URLEncoding.EncodeToString(rb),
		RuntimeData: &AttestData{Data: base64.URLEncoding.EncodeToString(runtimeJSON), DataType: "JSON"},
	})
}

// ParseSNPAttestRequest decodes an attest call (the instance's side): the
// evidence and the runtime data (nil when absent).
func ParseSNPAttestRequest(b []byte) (*SNPEvidence, []byte, error) {
	var req SNPAttestRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, nil, errors.New("maa: the attest request is not JSON")
	}
	rb, err := DecodeBase64URL(req.Report)
	if err != nil {
		return nil, nil, errors.New("maa: report is not base64url")
	}
	var r snpReportJSON
	if err := json.Unmarshal(rb, &r); err != nil {
		return nil, nil, errors.New(`maa: report is not {"SnpReport","VcekCertChain",...}`)
	}
	ev := &SNPEvidence{}
	if ev.Report, err = DecodeBase64URL(r.SnpReport); err != nil || len(ev.Report) == 0 {
		return nil, nil, errors.New("maa: SnpReport is not base64url")
	}
	if ev.VCEKChain, err = DecodeBase64URL(r.VcekCertChain); err != nil || len(ev.VCEKChain) == 0 {
		return nil, nil, errors.New("maa: VcekCertChain is not base64url")
	}
	if r.Endorsements != "" {
		eb, err := DecodeBase64URL(r.Endorsements)
		var e endorsementsJSON
		if err != nil || json.Unmarshal(eb, &e) != nil {
			return nil, nil, errors.New(`maa: Endorsements is not base64url of {"Uvm":[...]}`)
		}
		for _, u := range e.Uvm {
			ub, err := DecodeBase64URL(u)
			if err != nil {
				return nil, nil, errors.New("maa: an Uvm endorsement is not base64url")
			}
			ev.UVM = append(ev.UVM, ub)
		}
	}
	var runtime []byte
	if req.RuntimeData != nil {
		if runtime, err = DecodeBase64URL(req.RuntimeData.Data); err != nil {
			return nil, nil, errors.New("maa: runtimeData.data is not base64url")
		}
	}
	return ev, runtime, nil
}

// ParseAttestResponse returns the token of an attest call's answer.
func ParseAttestResponse(b []byte) (string, error) {
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &r); err != nil || strings.Count(r.Token, ".") != 2 {
		return "", newError(CodeTokenMalformed, `the attest answer is not {"token": <JWT>}`, nil)
	}
	return r.Token, nil
}

// AttestSNP calls the attest API of the instance at instanceURL and
// returns its token, unverified ([Verifier.Verify] verifies it).
func AttestSNP(ctx context.Context, hc *http.Client, instanceURL string, ev *SNPEvidence, runtimeJSON []byte) (string, error) {
	body, err := NewSNPAttestRequest(ev, runtimeJSON)
	if err != nil {
		return "", err
	}
	u := strings.TrimSuffix(instanceURL, "/") + AttestSNPPath + "?api-version=" + AttestAPIVersion
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("maa: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("maa: attest: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAttestAnswerSize))
	if err != nil {
		return "", fmt.Errorf("maa: attest: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return "", fmt.Errorf("maa: attest: %s answered %d: %s", instanceURL, resp.StatusCode, msg)
	}
	return ParseAttestResponse(b)
}

// decodeB64URL decodes base64url with or without padding.
func DecodeBase64URL(s string) ([]byte, error) {
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.URLEncoding.DecodeString(s)
}
