package tdx_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

func at(s string) func() time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return func() time.Time { return t }
}

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gcpQuote is the quote of the GCP vector, evidence[0].blob.
func gcpQuote(t testing.TB) []byte {
	var doc struct {
		Evidence []struct {
			Blob string `json:"blob"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal(read(t, "gcp_tdx_attestation.json"), &doc); err != nil || len(doc.Evidence) == 0 {
		t.Fatalf("gcp vector: %v", err)
	}
	b, err := base64.StdEncoding.DecodeString(doc.Evidence[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRealQuotes verifies every real v4 quote inside its PCK window and
// checks the claims a policy names.
func TestRealQuotes(t *testing.T) {
	for _, tc := range []struct {
		name, now, fmspc, mrtd string
		quote                  func(testing.TB) []byte
	}{
		{"tdx_quote_6", "2026-01-01T00:00:00Z", "00a06d080000", "21e8dead92d6c69d7cbba79816686c03a48485c7df0c11f6f04792d5e1d378f6b8c46615ba6946adccac6becffbb1e88", func(t testing.TB) []byte { return read(t, "tdx_quote_6.dat") }},
		{"azure", "2025-01-01T00:00:00Z", "00806f050000", "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b", func(t testing.TB) []byte { return read(t, "az_td_quote.bin") }},
		{"spr_e4", "2024-01-01T00:00:00Z", "50806f000000", "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb", func(t testing.TB) []byte { return read(t, "tdx_prod_quote_SPR_E4.dat") }},
		{"gcp", "2026-06-01T00:00:00Z", "00806f050000", "8370d8f6d02f2d13e211e91c93fde923049522b241425a29a7bf0071ef49b250af4ef49d852fa3e10065d1b51dfce8fb", gcpQuote},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tdx.New(tdx.Options{Now: at(tc.now)}).Verify(tc.quote(t))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !res.Pinned || res.Debug || len(res.ReportData) != 64 || len(res.MRTD) != 48 {
				t.Fatalf("result %+v", res)
			}
			c := res.Claims
			if c[tdx.ClaimAttestationType] != "tdxvm" || c[tdx.ClaimTDAttributesDebug] != false || c[tdx.ClaimTCBStatus] != tdx.TCBStatusNotEvaluated {
				t.Fatalf("claims %v", c)
			}
			if c[tdx.ClaimFMSPC] != tc.fmspc || c[tdx.ClaimMRTD] != tc.mrtd {
				t.Fatalf("fmspc %v mrtd %v", c[tdx.ClaimFMSPC], c[tdx.ClaimMRTD])
			}
			for _, k := range []string{tdx.ClaimRTMR0, tdx.ClaimRTMR3, tdx.ClaimMRConfigID, tdx.ClaimMROwner, tdx.ClaimReportData} {
				if s, _ := c[k].(string); s == "" {
					t.Errorf("claim %s missing", k)
				}
			}
		})
	}
}

// TestWindows: each real quote verifies exactly inside its PCK leaf's
// validity and is refused outside it.
func TestWindows(t *testing.T) {
	for _, tc := range []struct{ file, before, from string }{
		{"tdx_quote_6.dat", "2025-04-08T09:58:51Z", "2025-04-08T09:58:52Z"},
		{"az_td_quote.bin", "2023-09-13T21:00:50Z", "2023-09-13T21:00:51Z"},
		{"tdx_prod_quote_SPR_E4.dat", "2022-09-20T13:20:30Z", "2022-09-20T13:20:31Z"},
	} {
		q := read(t, tc.file)
		if _, err := tdx.New(tdx.Options{Now: at(tc.from)}).Verify(q); err != nil {
			t.Errorf("%s at %s: %v", tc.file, tc.from, err)
		}
		if _, err := tdx.New(tdx.Options{Now: at(tc.before)}).Verify(q); tdx.Code(err) != tdx.CodePCKChainInvalid {
			t.Errorf("%s at %s: %v, want %s", tc.file, tc.before, err, tdx.CodePCKChainInvalid)
		}
	}
	if _, err := tdx.New(tdx.Options{Now: at("2026-01-03T04:23:15Z")}).Verify(gcpQuote(t)); err != nil {
		t.Errorf("gcp at the start of its window: %v", err)
	}
	if _, err := tdx.New(tdx.Options{Now: at("2026-01-03T04:23:14Z")}).Verify(gcpQuote(t)); tdx.Code(err) != tdx.CodePCKChainInvalid {
		t.Errorf("gcp before its window: %v", err)
	}
	if _, err := tdx.New(tdx.Options{Now: at("2033-01-04T00:00:00Z")}).Verify(gcpQuote(t)); tdx.Code(err) != tdx.CodePCKChainInvalid {
		t.Errorf("gcp after its window: %v", err)
	}
}

func TestDebugTDRefused(t *testing.T) {
	res, err := tdx.New(tdx.Options{Now: at("2025-01-01T00:00:00Z")}).Verify(read(t, "tdx_quote_4.dat"))
	if tdx.Code(err) != tdx.CodeDebug {
		t.Fatalf("debug TD: %v, want %s", err, tdx.CodeDebug)
	}
	if res == nil || !res.Debug || res.Claims[tdx.ClaimFMSPC] != "50806f000000" {
		t.Fatalf("debug result %+v", res)
	}
}

func TestV5Refused(t *testing.T) {
	res, err := tdx.New(tdx.Options{Now: at("2025-01-01T00:00:00Z")}).Verify(read(t, "tdx_quote_5.dat"))
	if tdx.Code(err) != tdx.CodeVersionUnsupported || res != nil {
		t.Fatalf("v5: %v, want %s", err, tdx.CodeVersionUnsupported)
	}
}

var simChain *simtdx.Chain

func sim(t testing.TB) *simtdx.Chain {
	t.Helper()
	if simChain == nil {
		c, err := simtdx.New(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		simChain = c
	}
	return simChain
}

func simQuote(t testing.TB, opts simtdx.QuoteOptions) []byte {
	t.Helper()
	q, err := sim(t).Quote(opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestSimulated(t *testing.T) {
	rd := bytes.Repeat([]byte{7}, 64)
	q := simQuote(t, simtdx.QuoteOptions{ReportData: rd})
	res, err := tdx.New(tdx.Options{Roots: []*x509.Certificate{sim(t).Root()}}).Verify(q)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pinned || !bytes.Equal(res.ReportData, rd) || string(res.MRTD) != simtdx.DefaultMRTD || res.Claims[tdx.ClaimFMSPC] != simtdx.FMSPC {
		t.Fatalf("result %+v", res)
	}
	// Without the simulated root, the chain does not verify.
	if _, err := tdx.New(tdx.Options{}).Verify(q); tdx.Code(err) != tdx.CodePCKChainInvalid {
		t.Fatalf("untrusted simulated root: %v", err)
	}
	// Trailing bytes are not signed and ignored; the hash covers the signed quote.
	res2, err := tdx.New(tdx.Options{Roots: []*x509.Certificate{sim(t).Root()}}).Verify(append(bytes.Clone(q), 1, 2, 3))
	if err != nil || res2.QuoteSHA256 != res.QuoteSHA256 {
		t.Fatalf("trailing bytes: %v", err)
	}
}

// Offsets in a quote v4.
const (
	offTeeType     = 0x04
	offUserData    = 0x1C
	offMRTD        = 0x30 + 0x88
	offReportData  = 0x30 + 0x208
	offSignedSize  = 0x278
	offSignature   = 0x27C
	offAttKey      = 0x2BC
	offCertType    = 0x2FC
	offQEReport    = 0x302
	offQESignature = 0x482
	offQEAuthData  = 0x4C4
)

func flip(off int) func([]byte) []byte {
	return func(q []byte) []byte { q[off] ^= 0x01; return q }
}

func put16(off int, v uint16) func([]byte) []byte {
	return func(q []byte) []byte { binary.LittleEndian.PutUint16(q[off:], v); return q }
}

// TestNegatives: every tampering of a real and of a simulated quote is
// refused with its exact code.
func TestNegatives(t *testing.T) {
	real6 := read(t, "tdx_quote_6.dat")
	simQ := simQuote(t, simtdx.QuoteOptions{ReportData: []byte("bound")})
	realV := tdx.New(tdx.Options{Now: at("2026-01-01T00:00:00Z")})
	simV := tdx.New(tdx.Options{Roots: []*x509.Certificate{sim(t).Root()}})
	other, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		sim    bool
		mutate func([]byte) []byte
		code   string
	}{
		{"empty", false, func([]byte) []byte { return nil }, tdx.CodeQuoteMalformed},
		{"one byte", false, func(q []byte) []byte { return q[:1] }, tdx.CodeQuoteMalformed},
		{"version 3", false, put16(0, 3), tdx.CodeVersionUnsupported},
		{"version 5 header", false, put16(0, 5), tdx.CodeVersionUnsupported},
		{"truncated header", false, func(q []byte) []byte { return q[:0x30] }, tdx.CodeQuoteMalformed},
		{"truncated body", false, func(q []byte) []byte { return q[:0x3FB] }, tdx.CodeQuoteMalformed},
		{"truncated certification data", false, func(q []byte) []byte { return q[:len(q)-200] }, tdx.CodeQuoteMalformed},
		{"signed size beyond the quote", false, func(q []byte) []byte { binary.LittleEndian.PutUint32(q[offSignedSize:], 1<<20); return q }, tdx.CodeQuoteMalformed},
		{"SGX TEE type", false, func(q []byte) []byte { q[offTeeType] = 0; return q }, tdx.CodeQuoteMalformed},
		{"attestation key type", false, put16(2, 3), tdx.CodeQuoteMalformed},
		{"certification data type", false, put16(offCertType, 5), tdx.CodeQuoteMalformed},
		{"header user data", false, flip(offUserData), tdx.CodeQuoteSignatureInvalid},
		{"MRTD", false, flip(offMRTD), tdx.CodeQuoteSignatureInvalid},
		{"REPORT_DATA", false, flip(offReportData), tdx.CodeQuoteSignatureInvalid},
		{"signature", false, flip(offSignature + 5), tdx.CodeQuoteSignatureInvalid},
		{"attestation key", false, flip(offAttKey + 10), tdx.CodeQuoteSignatureInvalid},
		{"QE report", false, flip(offQEReport + 0x30), tdx.CodeQEReportInvalid},
		{"QE report signature", false, flip(offQESignature + 3), tdx.CodeQEReportInvalid},
		{"QE authentication data", false, flip(offQEAuthData), tdx.CodeQEReportInvalid},
		{"PCK chain PEM", false, func(q []byte) []byte {
			i := bytes.Index(q, []byte("-----BEGIN CERTIFICATE-----"))
			q[i+100] = '*'
			return q
		}, tdx.CodePCKChainInvalid},
		{"PCK chain with two certificates", false, func(q []byte) []byte {
			i := bytes.LastIndex(q, []byte("-----BEGIN CERTIFICATE-----"))
			copy(q[i:], "-----BEGIN CERTIFICATX-----")
			return q
		}, tdx.CodePCKChainInvalid},
		{"simulated debug", true, func([]byte) []byte { return simQuote(t, simtdx.QuoteOptions{Debug: true}) }, tdx.CodeDebug},
		{"simulated MRTD", true, flip(offMRTD + 1), tdx.CodeQuoteSignatureInvalid},
		{"simulated chain from another platform", true, func([]byte) []byte {
			q, err := other.Quote(simtdx.QuoteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}, tdx.CodePCKChainInvalid},
		{"simulated attestation key of another platform", true, func(q []byte) []byte {
			o, err := other.Quote(simtdx.QuoteOptions{ReportData: []byte("bound")})
			if err != nil {
				t.Fatal(err)
			}
			copy(q[offSignature:offCertType], o[offSignature:offCertType]) // its signature and key
			return q
		}, tdx.CodeQEReportInvalid},
	}
	if len(cases) < 15 {
		t.Fatalf("%d negatives, want at least 15", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, q := realV, bytes.Clone(real6)
			if tc.sim {
				v, q = simV, bytes.Clone(simQ)
			}
			res, err := v.Verify(tc.mutate(q))
			if got := tdx.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if res != nil && tc.code != tdx.CodeDebug {
				t.Fatalf("a result with %v", err)
			}
		})
	}
}
