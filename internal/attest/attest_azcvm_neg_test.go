package attest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/azcvm"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// bincodeQuote takes apart a vTPM quote file of trustee's older tests
// (quote.bin): bincode of the signature, the TPMS_ATTEST and the PCR
// values, each behind a little-endian u64 length (count for the PCRs, of
// 32 bytes each).
func bincodeQuote(t *testing.T, b []byte) (sig, msg []byte, pcrs [][]byte) {
	t.Helper()
	next := func(n uint64) []byte {
		if uint64(len(b)) < n {
			t.Fatalf("quote.bin: %d bytes left, want %d", len(b), n)
		}
		out := b[:n]
		b = b[n:]
		return out
	}
	u64 := func() uint64 { return binary.LittleEndian.Uint64(next(8)) }
	sig = next(u64())
	msg = next(u64())
	for n := u64(); n > 0; n-- {
		pcrs = append(pcrs, next(32))
	}
	if len(b) != 0 {
		t.Fatalf("quote.bin: %d bytes after the PCRs", len(b))
	}
	return sig, msg, pcrs
}

// splitEvidence assembles v1 evidence from the split files of a flavour
// ("snp" or "tdx"): its HCL report, its vTPM quote.bin (which must hold
// what its JSON twin tpm-quote-v1.json holds) and its VCEK or TD quote.
func splitEvidence(t *testing.T, flavour string) []byte {
	t.Helper()
	dir := "azcvm/testdata/" + flavour + "_"
	sig, msg, pcrs := bincodeQuote(t, read(t, dir+"quote.bin"))
	var twin struct {
		Signature, Message string
		PCRs               []string `json:"pcrs"`
	}
	if err := json.Unmarshal(read(t, dir+"tpm-quote-v1.json"), &twin); err != nil {
		t.Fatal(err)
	}
	hexPCRs := make([]string, len(pcrs))
	for i, p := range pcrs {
		hexPCRs[i] = hex.EncodeToString(p)
	}
	if twin.Signature != hex.EncodeToString(sig) || twin.Message != hex.EncodeToString(msg) || strings.Join(twin.PCRs, ",") != strings.Join(hexPCRs, ",") {
		t.Fatalf("%squote.bin and its tpm-quote-v1.json differ", dir)
	}
	ev := map[string]any{
		"version":    1,
		"hcl_report": base64.URLEncoding.EncodeToString(read(t, dir+"hcl-report.bin")),
		"tpm_quote":  map[string]any{"signature": twin.Signature, "message": twin.Message, "pcrs": twin.PCRs},
	}
	if flavour == "snp" {
		b, _ := pem.Decode(read(t, dir+"vcek.pem"))
		ev["vcek"] = base64.URLEncoding.EncodeToString(b.Bytes)
	} else {
		ev["td_quote"] = base64.URLEncoding.EncodeToString(read(t, "tdx/testdata/az_td_quote.bin"))
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestAzureCVMSplitVectors: the split files of trustee's older tests
// (an HCL report, its vTPM quote, its VCEK or TD quote) verify, assembled
// as v1 evidence, inside the hardware certificates' windows; the SEV-SNP
// VM's is another VM than the evidence files', bound to "challenge".
func TestAzureCVMSplitVectors(t *testing.T) {
	at := func(s string) attest.Config {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return configAt(tm)(t)
	}
	for _, tc := range []struct {
		flavour, typ, from, before, beforeCode, vmID string
	}{
		{"snp", attest.TypeAzSNP, "2023-05-02T21:22:19Z", "2023-05-02T21:22:18Z", snp.CodeCertChainInvalid, "911B0EF8-9DBA-48B0-B275-4E4DF2D39252"},
		{"tdx", attest.TypeAzTDX, "2023-09-13T21:00:51Z", "2023-09-13T21:00:50Z", tdx.CodePCKChainInvalid, ""},
	} {
		raw := splitEvidence(t, tc.flavour)
		ev, err := newVerifier(t, at(tc.from)).Verify(context.Background(), raw)
		if err != nil {
			t.Fatalf("%s split files at %s: %v", tc.flavour, tc.from, err)
		}
		if ev.Type != tc.typ || string(ev.ReportData) != "challenge" || ev.Claims["x-ms-attestation-type"] != "azurevm" || len(ev.Claims["tpm_pcr7"].(string)) != 64 {
			t.Fatalf("%s split files: %s %q %v", tc.flavour, ev.Type, ev.ReportData, ev.Claims)
		}
		if tc.vmID != "" && ev.Claims["x-ms-azurevm-vmUniqueId"] != tc.vmID {
			t.Fatalf("%s split files: VM %v", tc.flavour, ev.Claims["x-ms-azurevm-vmUniqueId"])
		}
		if _, err := newVerifier(t, at(tc.before)).Verify(context.Background(), raw); attest.Code(err) != tc.beforeCode {
			t.Fatalf("%s split files at %s: %v, want %s", tc.flavour, tc.before, err, tc.beforeCode)
		}
	}
	// The TDX split files are tdx_evidence-v1.json's parts.
	var a, b map[string]any
	json.Unmarshal(splitEvidence(t, "tdx"), &a)
	json.Unmarshal(read(t, "azcvm/testdata/tdx_evidence-v1.json"), &b)
	for _, k := range []string{"hcl_report", "td_quote"} {
		x, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(a[k].(string), "="))
		y, _ := base64.RawURLEncoding.DecodeString(strings.TrimRight(b[k].(string), "="))
		if !bytes.Equal(x, y) {
			t.Fatalf("the TDX split files' %s is not tdx_evidence-v1.json's", k)
		}
	}
}

// azCase is Azure CVM evidence that the door must refuse with code.
type azCase struct {
	name string
	raw  func(t *testing.T) []byte
	// cfg is the verifier's configuration (nil: the real vectors').
	cfg  func(t *testing.T) attest.Config
	code string
}

// azEdit returns an Azure CVM vector with its JSON members changed.
func azEdit(t *testing.T, file string, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(read(t, "azcvm/testdata/"+file), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// azBytes edits the base64url member k of an evidence object.
func azBytes(m map[string]any, k string, f func([]byte) []byte) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m[k].(string), "="))
	if err != nil {
		panic(err)
	}
	m[k] = base64.RawURLEncoding.EncodeToString(f(bytes.Clone(b)))
}

func azQuote(m map[string]any) map[string]any { return m["tpm_quote"].(map[string]any) }

func flipHexAt(s string, i int) string {
	b, _ := hex.DecodeString(s)
	b[i] ^= 1
	return hex.EncodeToString(b)
}

func flipAt(off int) func([]byte) []byte {
	return func(b []byte) []byte { b[off] ^= 1; return b }
}

func runAzCases(t *testing.T, real func(t *testing.T) attest.Config, cases []azCase) {
	t.Helper()
	if len(cases) < 15 {
		t.Fatalf("%d negatives, want at least 15", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := real
			if tc.cfg != nil {
				cfg = tc.cfg
			}
			v := newVerifier(t, cfg(t))
			ev, err := v.Verify(context.Background(), tc.raw(t))
			if got := attest.Code(err); got != tc.code || ev != nil {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}

func configAt(tm time.Time) func(t *testing.T) attest.Config {
	return func(*testing.T) attest.Config {
		var cfg attest.Config
		cfg.SNP.Now = func() time.Time { return tm }
		return cfg
	}
}

// TestAzureCVMSNPNegatives: Azure CVM evidence of the SEV-SNP flavour,
// each tampering refused through the door with its exact code: the SEV-SNP
// report's signature and chain, its policy and TCB, the binding of the
// vTPM to it, the vTPM quote, parts swapped from other vectors, truncation.
func TestAzureCVMSNPNegatives(t *testing.T) {
	const v1 = "snp_evidence-v1.json"
	const snpAt = 32 // the SNP report in the HCL report
	chain, simCfg := simulated(t)
	trusting := func(trusted bool) func(t *testing.T) attest.Config {
		return func(*testing.T) attest.Config { c := simCfg; c.Simulated = trusted; return c }
	}
	sim := func(opts simsnp.ReportOptions, tamper func(*tpm2.TPMSAttest)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			raw, err := simazcvm.Evidence(simazcvm.Options{VCEK: chain.VCEK().Raw, Nonce: []byte("nonce"), Tamper: tamper,
				Report: func(rd []byte) ([]byte, error) { o := opts; o.ReportData = rd; return chain.Report(o) }})
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}
	}
	otherTCB := chain.TCB() + 1
	pemDER := func(s string) []byte { b, _ := pem.Decode([]byte(s)); return b.Bytes }
	var genoa map[string]any
	json.Unmarshal(read(t, "azcvm/testdata/snp_evidence-genoa.json"), &genoa)
	var v2, tdxVM map[string]any
	json.Unmarshal(read(t, "azcvm/testdata/snp_evidence-v2.json"), &v2)
	json.Unmarshal(read(t, "azcvm/testdata/tdx_evidence-v1.json"), &tdxVM)
	edit := func(f func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return azEdit(t, v1, f) }
	}
	runAzCases(t, configAt(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)), []azCase{
		{"HCL report not base64", edit(func(m map[string]any) { m["hcl_report"] = "!!" }), nil, azcvm.CodeMalformed},
		{"HCL report truncated", edit(func(m map[string]any) { azBytes(m, "hcl_report", func(b []byte) []byte { return b[:2599] }) }), nil, azcvm.CodeMalformed},
		{"no VCEK", edit(func(m map[string]any) { delete(m, "vcek") }), nil, azcvm.CodeMalformed},
		{"SNP report signature", edit(func(m map[string]any) { azBytes(m, "hcl_report", flipAt(snpAt+0x2A0+5)) }), nil, snp.CodeReportSignatureInvalid},
		{"SNP launch measurement", edit(func(m map[string]any) { azBytes(m, "hcl_report", flipAt(snpAt+0x90)) }), nil, snp.CodeReportSignatureInvalid},
		{"SNP REPORT_DATA (the runtime data's hash)", edit(func(m map[string]any) { azBytes(m, "hcl_report", flipAt(snpAt+0x50)) }), nil, snp.CodeReportSignatureInvalid},
		{"VCEK of another chip (v2's)", edit(func(m map[string]any) { m["vcek"] = v2["vcek"] }), nil, snp.CodeChipIDMismatch},
		{"VCEK of a Genoa chip", edit(func(m map[string]any) {
			m["vcek"] = base64.URLEncoding.EncodeToString(pemDER(genoa["vcek"].(string)))
		}), nil, snp.CodeCertChainInvalid},
		{"VCEK not a certificate", edit(func(m map[string]any) { m["vcek"] = base64.URLEncoding.EncodeToString([]byte("not a certificate")) }), nil, snp.CodeCertChainInvalid},
		{"before the VCEK's window", func(t *testing.T) []byte { return read(t, "azcvm/testdata/"+v1) }, configAt(time.Date(2025, 1, 28, 16, 26, 54, 0, time.UTC)), snp.CodeCertChainInvalid},
		{"HCL report and VCEK of another VM (v2's)", edit(func(m map[string]any) { m["hcl_report"], m["vcek"] = v2["hcl_report"], v2["vcek"] }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"runtime data changed", edit(func(m map[string]any) { azBytes(m, "hcl_report", flipAt(1236+20)) }), nil, azcvm.CodeRuntimeDataMismatch},
		{"TPM quote signature", edit(func(m map[string]any) { azQuote(m)["signature"] = flipHexAt(azQuote(m)["signature"].(string), 9) }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote nonce", edit(func(m map[string]any) { azQuote(m)["message"] = flipHexAt(azQuote(m)["message"].(string), 42) }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote of the TDX VM", edit(func(m map[string]any) { m["tpm_quote"] = tdxVM["tpm_quote"] }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote truncated", edit(func(m map[string]any) { s := azQuote(m)["message"].(string); azQuote(m)["message"] = s[:len(s)-8] }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"PCR value changed", edit(func(m map[string]any) { p := azQuote(m)["pcrs"].([]any); p[7] = flipHexAt(p[7].(string), 0) }), nil, azcvm.CodePCRMismatch},
		{"PCRs missing", edit(func(m map[string]any) { azQuote(m)["pcrs"] = azQuote(m)["pcrs"].([]any)[:3] }), nil, azcvm.CodePCRMismatch},
		{"simulated, not trusted", sim(simsnp.ReportOptions{}, nil), trusting(false), attest.CodeSimulatedNotTrusted},
		{"simulated debug guest", sim(simsnp.ReportOptions{Debug: true}, nil), trusting(true), snp.CodePolicyDebug},
		{"simulated REPORTED_TCB not the VCEK's", sim(simsnp.ReportOptions{ReportedTCB: &otherTCB}, nil), trusting(true), snp.CodeTCBMismatch},
		{"simulated report from VMPL 1", sim(simsnp.ReportOptions{VMPL: 1}, nil), trusting(true), snp.CodeVMPLTooHigh},
		{"simulated TPMS_ATTEST magic", sim(simsnp.ReportOptions{}, func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 }), trusting(true), azcvm.CodeQuoteInvalid},
		{"simulated TPMS_ATTEST of another type", sim(simsnp.ReportOptions{}, func(a *tpm2.TPMSAttest) {
			a.Type, a.Attested = tpm2.TPMSTAttestCertify, tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{})
		}), trusting(true), azcvm.CodeQuoteInvalid},
	})
	// The same simulated evidence, untampered, verifies.
	raw := sim(simsnp.ReportOptions{}, nil)(t)
	if ev, err := newVerifier(t, trusting(true)(t)).Verify(context.Background(), raw); err != nil || string(ev.ReportData) != "nonce" || ev.Type != attest.TypeAzSNP {
		t.Fatalf("simulated: %v", err)
	}
}

// TestAzureCVMTDXNegatives: Azure CVM evidence of the TDX flavour, each
// tampering refused through the door with its exact code: the TD quote's
// signature, QE report and PCK chain, a debug TD, its TCB under Intel's
// collateral, quotes swapped from other vectors, the binding of the vTPM,
// the vTPM quote, truncation.
func TestAzureCVMTDXNegatives(t *testing.T) {
	const v1 = "tdx_evidence-v1.json"
	// Offsets in a TD quote v4 (internal/attest/tdx's tests).
	const (
		offMRTD       = 0x30 + 0x88
		offReportData = 0x30 + 0x208
		offSignature  = 0x27C
		offQEReport   = 0x302
	)
	edit := func(f func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return azEdit(t, v1, f) }
	}
	quote := func(f func([]byte) []byte) func(t *testing.T) []byte {
		return edit(func(m map[string]any) { azBytes(m, "td_quote", f) })
	}
	swap := func(file string) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			q := read(t, "tdx/testdata/"+file)
			return azEdit(t, v1, func(m map[string]any) { m["td_quote"] = base64.RawURLEncoding.EncodeToString(q) })
		}
	}
	chain, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	simTrusting := func(trusted bool) func(t *testing.T) attest.Config {
		return func(*testing.T) attest.Config {
			return attest.Config{TDX: tdx.Options{Roots: []*x509.Certificate{chain.Root()}}, Simulated: trusted}
		}
	}
	sim := func(c *simtdx.Chain, debug bool, tamper func(*tpm2.TPMSAttest)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			raw, err := simazcvm.Evidence(simazcvm.Options{TDX: true, Nonce: []byte("nonce"), Tamper: tamper,
				Report: func(rd []byte) ([]byte, error) { return c.Quote(simtdx.QuoteOptions{ReportData: rd, Debug: debug}) }})
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}
	}
	// Intel's sample collateral (FMSPC 50806f000000) configured, as
	// `tdx_collateral` does, at a time inside or after its validity.
	collateral := func(at time.Time) func(t *testing.T) attest.Config {
		return func(t *testing.T) attest.Config {
			cfg := configAt(at)(t)
			cfg.TDX.Collateral = []tdx.Collateral{*intelCollateral(t)}
			return cfg
		}
	}
	var snpVM map[string]any
	json.Unmarshal(read(t, "azcvm/testdata/snp_evidence-v1.json"), &snpVM)
	runAzCases(t, configAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)), []azCase{
		{"no TD quote", edit(func(m map[string]any) { delete(m, "td_quote") }), nil, azcvm.CodeMalformed},
		{"TD quote not base64", edit(func(m map[string]any) { m["td_quote"] = "!!" }), nil, azcvm.CodeMalformed},
		{"HCL report truncated", edit(func(m map[string]any) { azBytes(m, "hcl_report", func(b []byte) []byte { return b[:1000] }) }), nil, azcvm.CodeMalformed},
		{"TD quote truncated", quote(func(b []byte) []byte { return b[:0x3FB] }), nil, tdx.CodeQuoteMalformed},
		{"TD quote MRTD", quote(flipAt(offMRTD)), nil, tdx.CodeQuoteSignatureInvalid},
		{"TD quote REPORT_DATA (the runtime data's hash)", quote(flipAt(offReportData)), nil, tdx.CodeQuoteSignatureInvalid},
		{"TD quote signature", quote(flipAt(offSignature + 5)), nil, tdx.CodeQuoteSignatureInvalid},
		{"QE report", quote(flipAt(offQEReport + 0x30)), nil, tdx.CodeQEReportInvalid},
		{"PCK chain PEM", quote(func(q []byte) []byte {
			q[bytes.Index(q, []byte("-----BEGIN CERTIFICATE-----"))+100] = '*'
			return q
		}), nil, tdx.CodePCKChainInvalid},
		{"before the PCK's window", func(t *testing.T) []byte { return read(t, "azcvm/testdata/"+v1) }, configAt(time.Date(2023, 9, 13, 21, 0, 50, 0, time.UTC)), tdx.CodePCKChainInvalid},
		{"TD quote of another TD (tdx_quote_6)", swap("tdx_quote_6.dat"), configAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), azcvm.CodeRuntimeDataMismatch},
		{"TD quote v5 (tdx_quote_5)", swap("tdx_quote_5.dat"), nil, tdx.CodeVersionUnsupported},
		{"a debug TD's quote (tdx_quote_4)", swap("tdx_quote_4.dat"), nil, tdx.CodeDebug},
		{"TCB not up to date in Intel's collateral", swap("tdx_prod_quote_SPR_E4.dat"), collateral(time.Date(2023, 6, 20, 0, 0, 0, 0, time.UTC)), tdx.CodeTCBNotUpToDate},
		{"Intel's collateral expired", swap("tdx_prod_quote_SPR_E4.dat"), collateral(time.Date(2023, 7, 9, 0, 0, 0, 0, time.UTC)), tdx.CodeCollateralInvalid},
		{"runtime data changed", edit(func(m map[string]any) { azBytes(m, "hcl_report", flipAt(1236+20)) }), nil, azcvm.CodeRuntimeDataMismatch},
		{"TPM quote signature", edit(func(m map[string]any) { azQuote(m)["signature"] = flipHexAt(azQuote(m)["signature"].(string), 9) }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote nonce", edit(func(m map[string]any) { azQuote(m)["message"] = flipHexAt(azQuote(m)["message"].(string), 42) }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"TPM quote of the SEV-SNP VM", edit(func(m map[string]any) { m["tpm_quote"] = snpVM["tpm_quote"] }), nil, azcvm.CodeQuoteSignatureInvalid},
		{"PCR value changed", edit(func(m map[string]any) { p := azQuote(m)["pcrs"].([]any); p[0] = flipHexAt(p[0].(string), 0) }), nil, azcvm.CodePCRMismatch},
		{"simulated, not trusted", sim(chain, false, nil), simTrusting(false), attest.CodeSimulatedNotTrusted},
		{"simulated debug TD", sim(chain, true, nil), simTrusting(true), tdx.CodeDebug},
		{"simulated PCK chain of another platform", sim(other, false, nil), simTrusting(true), tdx.CodePCKChainInvalid},
		{"simulated TPMS_ATTEST magic", sim(chain, false, func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 }), simTrusting(true), azcvm.CodeQuoteInvalid},
		{"simulated SHA-1 PCR bank", sim(chain, false, func(a *tpm2.TPMSAttest) {
			q, _ := a.Attested.Quote()
			q.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSHA1
		}), simTrusting(true), azcvm.CodePCRMismatch},
	})
}
