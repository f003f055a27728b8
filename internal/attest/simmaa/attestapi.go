package simmaa

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
)

// AttestHandler serves the SEV-SNP attest API of MAA
// (maa.AttestSNPPath, see internal/attest/maa's attestapi.go) for this
// simulated instance: it verifies the evidence with v (which must trust
// the simulated TEE: simsnp.Chain.Trust), checks that REPORT_DATA[0:32]
// is the SHA-256 of the runtime data, and answers {"token": ...}, a token
// of Issuer with the claims MAA gives an ACI container: the report's
// x-ms-sevsnpvm-* claims, x-ms-attestation-type "sevsnpvm",
// x-ms-compliance-status "azure-compliant-uvm" when a UVM endorsement
// verified, and the runtime data (JSON) as x-ms-runtime. IT ATTESTS
// NOTHING real: its tokens are trusted only where simmaa is.
func (i *Instance) AttestHandler(v *attest.Verifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != maa.AttestSNPPath {
			attestError(w, http.StatusNotFound, "NotFound", "POST "+maa.AttestSNPPath+" only")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			attestError(w, http.StatusBadRequest, "InvalidParameter", "unreadable body")
			return
		}
		tok, code, err := i.attest(r, v, body)
		if err != nil {
			attestError(w, http.StatusBadRequest, code, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
}

func (i *Instance) attest(r *http.Request, v *attest.Verifier, body []byte) (string, string, error) {
	ev, runtime, err := maa.ParseSNPAttestRequest(body)
	if err != nil {
		return "", "InvalidParameter", err
	}
	verified, err := v.Verify(r.Context(), ev.ACI())
	if err != nil {
		return "", "AttestationFailed", fmt.Errorf("the evidence does not verify: %w", err)
	}
	h := sha256.Sum256(runtime)
	if len(verified.ReportData) < 32 || !bytes.Equal(verified.ReportData[:32], h[:]) {
		return "", "AttestationFailed", fmt.Errorf("REPORT_DATA[0:32] is not the SHA-256 of the runtime data")
	}
	var rt map[string]any
	if len(runtime) > 0 {
		if err := json.Unmarshal(runtime, &rt); err != nil {
			return "", "InvalidParameter", fmt.Errorf("runtimeData is not a JSON object")
		}
	}
	now := i.now()
	claims := map[string]any{
		"iss": Issuer, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(8 * time.Hour).Unix(),
		"x-ms-ver": "1.0", "x-ms-attestation-type": "sevsnpvm",
	}
	if verified.Type == attest.TypeACI {
		claims["x-ms-compliance-status"] = "azure-compliant-uvm"
	}
	for k, c := range verified.Claims {
		if strings.HasPrefix(k, "x-ms-sevsnpvm-") {
			claims[k] = c
		}
	}
	if rt != nil {
		claims["x-ms-runtime"] = rt
	}
	tok, err := i.iss.Mint(claims)
	if err != nil {
		return "", "InternalError", err
	}
	return tok, "", nil
}

func attestError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
