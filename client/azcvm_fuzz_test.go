package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/azcvm"
)

// fixedVTPM is a vTPM whose HCL report is given; its quote is constant.
type fixedVTPM struct{ hcl []byte }

func (v fixedVTPM) HCLReport(context.Context) ([]byte, error) { return v.hcl, nil }

func (fixedVTPM) Quote(_ context.Context, nonce []byte) ([]byte, []byte, [][]byte, error) {
	return append([]byte("attest"), nonce...), []byte("signature"), [][]byte{make([]byte, 32)}, nil
}

// answer is an HTTP transport whose every answer is 200 with body: what
// IMDS says, fuzzed, without a socket.
type answer []byte

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(a)), Request: r}, nil
}

// FuzzAzureCVMAttester feeds the Azure CVM attester arbitrary HCL reports
// (what the vTPM's NV index holds) and IMDS answers (THIM's VCEK, the TD
// quote service's quote): nothing panics, and evidence is made only of an
// HCLA report of type SEV-SNP or TDX, as an object of its flavour that the
// server's parser recognises. Seeds: the HCL reports of trustee's Azure
// vectors with IMDS answers holding their VCEK and TD quote.
func FuzzAzureCVMAttester(f *testing.F) {
	read := func(name string) []byte {
		b, err := os.ReadFile("../internal/attest/" + name)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	vcek, _ := pem.Decode(read("azcvm/testdata/snp_vcek.pem"))
	thim, _ := json.Marshal(map[string]string{"vcekCert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vcek.Bytes}))})
	tdQuote, _ := json.Marshal(map[string]string{"quote": base64.RawURLEncoding.EncodeToString(read("tdx/testdata/az_td_quote.bin"))})
	f.Add(read("azcvm/testdata/snp_hcl-report.bin"), thim)
	f.Add(read("azcvm/testdata/tdx_hcl-report.bin"), tdQuote)
	f.Add(read("azcvm/testdata/tdx_hcl-report.bin"), []byte(`{"quote":"=="}`))
	f.Fuzz(func(t *testing.T, hcl, imds []byte) {
		a := NewAzureCVMAttester(AzureCVMOptions{VTPM: fixedVTPM{hcl}, HTTPClient: &http.Client{Transport: answer(imds)}})
		ev, err := a.Attest(context.Background(), [64]byte{1})
		if err != nil {
			return
		}
		if len(hcl) != hclReportSize || string(hcl[:4]) != "HCLA" {
			t.Fatalf("evidence of a %d-byte HCL report starting %q", len(hcl), hcl[:min(4, len(hcl))])
		}
		if (ev.Type != EvidenceAzSNP && ev.Type != EvidenceAzTDX) || !azcvm.Looks(ev.Attestation) {
			t.Fatalf("evidence of type %s: %s", ev.Type, ev.Attestation)
		}
		if e, err := azcvm.Parse(ev.Attestation); err == nil && (e.Flavour != ev.Type || len(e.HardwareReport) == 0) {
			t.Fatalf("%s evidence parses as %s", ev.Type, e.Flavour)
		}
	})
}
