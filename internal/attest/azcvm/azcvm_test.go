package azcvm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/tkms-dev/tkms/internal/attest/azcvm"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reportData is the hardware report's REPORT_DATA, as the caller's
// verification of it would return.
func reportData(e *azcvm.Evidence) []byte {
	at := 0x238
	if e.Flavour == azcvm.FlavourSNP {
		at = 0x50
	}
	if len(e.HardwareReport) < at+64 {
		return nil
	}
	return e.HardwareReport[at : at+64]
}

func check(raw []byte) (*azcvm.Bound, error) {
	e, err := azcvm.Parse(raw)
	if err != nil {
		return nil, err
	}
	return e.CheckBinding(reportData(e))
}

func TestVectorsBind(t *testing.T) {
	for _, f := range []string{"snp_evidence-v0.json", "snp_evidence-v1.json", "snp_evidence-v2.json", "snp_evidence-genoa.json", "tdx_evidence-v0.json", "tdx_evidence-v1.json"} {
		raw := read(t, f)
		if !azcvm.Looks(raw) {
			t.Fatalf("%s does not look like Azure CVM evidence", f)
		}
		b, err := check(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(b.PCRs) == 0 || len(b.Nonce) == 0 || b.Claims()["x-ms-azurevm-vmUniqueId"] == nil {
			t.Fatalf("%s: %+v", f, b)
		}
	}
	// v2 binds the nonce through the hardware report too: user-data is it.
	b, _ := check(read(t, "snp_evidence-v2.json"))
	if !strings.HasPrefix(strings.ToLower(b.UserData), hex.EncodeToString(b.Nonce)) {
		t.Fatalf("v2 user-data %s, nonce %x", b.UserData, b.Nonce)
	}
}

// edit returns the v1 SNP vector with one JSON member changed.
func edit(t *testing.T, f func(m map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(read(t, "snp_evidence-v1.json"), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, _ := json.Marshal(m)
	return b
}

// editHCL changes the HCL report's bytes.
func editHCL(t *testing.T, f func(h []byte) []byte) []byte {
	return edit(t, func(m map[string]any) {
		h, _ := base64.URLEncoding.DecodeString(m["hcl_report"].(string))
		m["hcl_report"] = base64.URLEncoding.EncodeToString(f(h))
	})
}

func quote(m map[string]any) map[string]any { return m["tpm_quote"].(map[string]any) }

func flipHex(s string, i int) string {
	b, _ := hex.DecodeString(s)
	b[i] ^= 1
	return hex.EncodeToString(b)
}

var simChain *simtdx.Chain

func simulated(t *testing.T, tamper func(*tpm2.TPMSAttest)) []byte {
	if simChain == nil {
		c, err := simtdx.New(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		simChain = c
	}
	raw, err := simazcvm.Evidence(simazcvm.Options{TDX: true, Nonce: []byte("nonce"), Tamper: tamper,
		Report: func(rd []byte) ([]byte, error) { return simChain.Quote(simtdx.QuoteOptions{ReportData: rd}) }})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestNegatives(t *testing.T) {
	otherMsg := read(t, "tdx_evidence-v1.json")
	var other map[string]any
	json.Unmarshal(otherMsg, &other)
	for _, tc := range []struct {
		name string
		raw  func(t *testing.T) []byte
		rd   func(e *azcvm.Evidence) []byte // nil: the report's own
		code string
	}{
		{"not JSON", func(*testing.T) []byte { return []byte("{") }, nil, azcvm.CodeMalformed},
		{"no TPM quote", func(t *testing.T) []byte { return edit(t, func(m map[string]any) { delete(m, "tpm_quote") }) }, nil, azcvm.CodeMalformed},
		{"HCL report not base64", func(t *testing.T) []byte { return edit(t, func(m map[string]any) { m["hcl_report"] = "!!" }) }, nil, azcvm.CodeMalformed},
		{"HCL report truncated", func(t *testing.T) []byte { return editHCL(t, func(h []byte) []byte { return h[:2599] }) }, nil, azcvm.CodeMalformed},
		{"HCL magic", func(t *testing.T) []byte { return editHCL(t, func(h []byte) []byte { h[0] = 'X'; return h }) }, nil, azcvm.CodeMalformed},
		{"report type", func(t *testing.T) []byte {
			return editHCL(t, func(h []byte) []byte { binary.LittleEndian.PutUint32(h[1224:], 3); return h })
		}, nil, azcvm.CodeMalformed},
		{"hash type", func(t *testing.T) []byte {
			return editHCL(t, func(h []byte) []byte { binary.LittleEndian.PutUint32(h[1228:], 2); return h })
		}, nil, azcvm.CodeMalformed},
		{"runtime size", func(t *testing.T) []byte {
			return editHCL(t, func(h []byte) []byte { binary.LittleEndian.PutUint32(h[1232:], 5000); return h })
		}, nil, azcvm.CodeMalformed},
		{"no VCEK", func(t *testing.T) []byte { return edit(t, func(m map[string]any) { delete(m, "vcek") }) }, nil, azcvm.CodeMalformed},
		{"TDX without TD quote", func(t *testing.T) []byte {
			var m map[string]any
			json.Unmarshal(read(t, "tdx_evidence-v1.json"), &m)
			delete(m, "td_quote")
			b, _ := json.Marshal(m)
			return b
		}, nil, azcvm.CodeMalformed},
		{"message not hex", func(t *testing.T) []byte { return edit(t, func(m map[string]any) { quote(m)["message"] = "xyz" }) }, nil, azcvm.CodeMalformed},
		{"PCR of 31 bytes", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { quote(m)["pcrs"].([]any)[3] = strings.Repeat("00", 31) })
		}, nil, azcvm.CodeMalformed},
		{"runtime data changed", func(t *testing.T) []byte {
			return editHCL(t, func(h []byte) []byte { h[1236+20] ^= 1; return h })
		}, nil, azcvm.CodeRuntimeDataMismatch},
		{"REPORT_DATA of another report", func(t *testing.T) []byte { return read(t, "snp_evidence-v1.json") },
			func(*azcvm.Evidence) []byte { return make([]byte, 64) }, azcvm.CodeRuntimeDataMismatch},
		{"no HCLAkPub", func(t *testing.T) []byte {
			return editHCL(t, func(h []byte) []byte { i := bytes.Index(h, []byte("HCLAkPub")); h[i] = 'X'; return h })
		}, func(e *azcvm.Evidence) []byte { s := sha256.Sum256(e.RuntimeData); return s[:] }, azcvm.CodeNoAttestationKey},
		{"TPM signature", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { quote(m)["signature"] = flipHex(quote(m)["signature"].(string), 9) })
		}, nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote (nonce) changed", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { quote(m)["message"] = flipHex(quote(m)["message"].(string), 42) })
		}, nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote of another VM", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { m["tpm_quote"] = other["tpm_quote"] })
		}, nil, azcvm.CodeQuoteSignatureInvalid},
		{"PCR value changed", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { p := quote(m)["pcrs"].([]any); p[0] = flipHex(p[0].(string), 0) })
		}, nil, azcvm.CodePCRMismatch},
		{"PCRs missing", func(t *testing.T) []byte {
			return edit(t, func(m map[string]any) { quote(m)["pcrs"] = quote(m)["pcrs"].([]any)[:3] })
		}, nil, azcvm.CodePCRMismatch},
		{"simulated: magic not TPM_GENERATED", func(t *testing.T) []byte {
			return simulated(t, func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 })
		}, nil, azcvm.CodeQuoteInvalid},
		{"simulated: PCR digest", func(t *testing.T) []byte {
			return simulated(t, func(a *tpm2.TPMSAttest) {
				q, _ := a.Attested.Quote()
				q.PCRDigest.Buffer[0] ^= 1
			})
		}, nil, azcvm.CodePCRMismatch},
		{"simulated: SHA-1 PCR bank", func(t *testing.T) []byte {
			return simulated(t, func(a *tpm2.TPMSAttest) {
				q, _ := a.Attested.Quote()
				q.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSHA1
			})
		}, nil, azcvm.CodePCRMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw(t)
			e, err := azcvm.Parse(raw)
			if err == nil {
				rd := reportData(e)
				if tc.rd != nil {
					rd = tc.rd(e)
				}
				_, err = e.CheckBinding(rd)
			}
			if got := azcvm.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
	if b, err := check(simulated(t, nil)); err != nil || string(b.Nonce) != "nonce" || len(b.PCRs) != 24 {
		t.Fatalf("simulated: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"snp_evidence-v1.json", "snp_evidence-genoa.json", "tdx_evidence-v1.json"} {
		f.Add(read(f, name))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := azcvm.Parse(raw)
		if err != nil {
			if azcvm.Code(err) != azcvm.CodeMalformed {
				t.Fatalf("parse error with code %s", azcvm.Code(err))
			}
			return
		}
		if _, err := e.CheckBinding(reportData(e)); err != nil && azcvm.Code(err) == azcvm.CodeInternal {
			t.Fatalf("uncoded error: %v", err)
		}
	})
}
