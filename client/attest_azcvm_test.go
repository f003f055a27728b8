package client

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// azIMDS is Azure's instance metadata service on loopback: THIM's VCEK
// and the TD quote service (which answers with the simulated TD quote).
func azIMDS(t *testing.T, vcek []byte, tdQuote []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no Metadata header", http.StatusBadRequest)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/metadata/THIM/amd/certification" && vcek != nil:
			json.NewEncoder(w).Encode(map[string]string{"vcekCert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: vcek})), "tcbm": "x"})
		case r.Method == http.MethodPost && r.URL.Path == "/acc/tdquote" && tdQuote != nil:
			var in struct{ Report string }
			if json.NewDecoder(r.Body).Decode(&in) != nil || len(in.Report) == 0 {
				http.Error(w, "no report", http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"quote": base64.RawURLEncoding.EncodeToString(tdQuote)})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestAzureCVMAttester: with a simulated vTPM (the hardware boundary) and a
// loopback IMDS, the attester's evidence of each flavour verifies through
// the server's door, bound to the report data.
func TestAzureCVMAttester(t *testing.T) {
	snpChain := testChain(t)
	tdxChain, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ark, ask := snpChain.Roots()
	v, err := attest.New(attest.Config{Simulated: true,
		SNP: snp.Options{Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}},
		TDX: tdx.Options{Roots: []*x509.Certificate{tdxChain.Root()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rd := [64]byte{9, 8, 7}
	for _, tdxFlavour := range []bool{false, true} {
		opts := simazcvm.Options{TDX: tdxFlavour}
		if tdxFlavour {
			opts.Report = func(rd []byte) ([]byte, error) { return tdxChain.Quote(simtdx.QuoteOptions{ReportData: rd}) }
		} else {
			opts.Report = func(rd []byte) ([]byte, error) { return snpChain.Report(simsnp.ReportOptions{ReportData: rd}) }
		}
		vtpm, err := simazcvm.NewVTPM(opts)
		if err != nil {
			t.Fatal(err)
		}
		var imds *httptest.Server
		if tdxFlavour {
			imds = azIMDS(t, nil, vtpm.HardwareReport())
		} else {
			imds = azIMDS(t, snpChain.VCEK().Raw, nil)
		}
		a := NewAzureCVMAttester(AzureCVMOptions{VTPM: vtpm, IMDSURL: imds.URL})
		ev, err := a.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(context.Background(), ev.Attestation)
		if err != nil || got.Type != ev.Type || [64]byte(got.ReportData) != rd {
			t.Fatalf("tdx=%v: %+v %v", tdxFlavour, got, err)
		}

		// IMDS without the endpoint: a clear error.
		a = NewAzureCVMAttester(AzureCVMOptions{VTPM: vtpm, IMDSURL: azIMDS(t, nil, nil).URL})
		if _, err := a.Attest(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "IMDS") {
			t.Fatalf("tdx=%v without IMDS: %v", tdxFlavour, err)
		}
	}
}
