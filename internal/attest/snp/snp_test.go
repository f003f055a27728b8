package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sgtest "github.com/google/go-sev-guest/testing"
)

// testNow lies inside every real certificate's validity, including the trustee VLEK's
// (2024-12-10..2025-12-10).
var testNow = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow(testNow)
	}
	v, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func aciSample(t testing.TB) *ACIBundle {
	t.Helper()
	b, err := DecodeACI(read(t, "aci_snp.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sidecarBundle is the confidential-sidecar-containers report with its THIM chain, and the THIM
// "tcbm" (big-endian) as endorsed_tcb.
func sidecarBundle(t testing.TB) *ACIBundle {
	t.Helper()
	certs, err := decodePEMCerts(read(t, "sidecar_uvm_host_amd_certificate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var thim struct {
		TCBM string `json:"tcbm"`
	}
	if err := json.Unmarshal(read(t, "sidecar_uvm_host_amd_certificate.json"), &thim); err != nil {
		t.Fatal(err)
	}
	return &ACIBundle{Report: read(t, "sidecar_snp_report.bin"), EndorsementKey: certs[0], Chain: certs[1:], EndorsedTCB: thim.TCBM}
}

func virteeReport(t testing.TB) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(read(t, "virtee_report_milan.hex"))), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eternisai returns the report and GUID certificate table of an EternisAI capture.
func eternisai(t testing.TB, cloud string) (report, table []byte) {
	t.Helper()
	var j struct {
		Evidence []struct {
			Blob string `json:"blob"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal(read(t, "eternisai_sevsnp_attestation_"+cloud+".json"), &j); err != nil {
		t.Fatal(err)
	}
	blob, err := base64.StdEncoding.DecodeString(j.Evidence[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	return blob[:abi.ReportSize], blob[abi.ReportSize:]
}

func flip(b []byte, off int) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0x01
	return c
}

func withReport(b *ACIBundle, report []byte) *ACIBundle {
	c := *b
	c.Report = report
	return &c
}

func TestVerifyPositive(t *testing.T) {
	ctx := context.Background()
	type want struct {
		signer, product, version string
		vmpl                     int64
		measurementPrefix        string
		hostData                 string
		reportDataPrefix         string
	}
	tests := []struct {
		name string
		opts Options
		run  func(t *testing.T, v *Verifier) (*Result, error)
		want want
	}{
		{
			name: "aci sample, endorsed_tcb in report order",
			run:  func(t *testing.T, v *Verifier) (*Result, error) { return v.VerifyACI(ctx, aciSample(t)) },
			want: want{"VCEK", "Milan", "2", 0, "02c3b0d5", "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20",
				"36b03dab8e8751b2"}, // SHA-256 of publicWrapKey.pem
		},
		{
			name: "aci sample, endorsed_tcb big-endian upper case",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				b := aciSample(t)
				b.EndorsedTCB = "7308000000000003"
				if _, err := v.VerifyACI(ctx, b); err != nil {
					return nil, err
				}
				b.EndorsedTCB = "0300000000000873"
				if _, err := v.VerifyACI(ctx, b); err != nil {
					return nil, err
				}
				b.EndorsedTCB = strings.ToUpper("7308000000000003")
				return v.VerifyACI(ctx, b)
			},
			want: want{"VCEK", "Milan", "2", 0, "02c3b0d5", "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20", ""},
		},
		{
			name: "aci sample without endorsed_tcb",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				b := aciSample(t)
				b.EndorsedTCB = ""
				return v.VerifyACI(ctx, b)
			},
			want: want{"VCEK", "Milan", "2", 0, "02c3b0d5", "", ""},
		},
		{
			name: "aci sample at the real clock",
			opts: Options{Now: time.Now},
			run:  func(t *testing.T, v *Verifier) (*Result, error) { return v.VerifyACI(ctx, aciSample(t)) },
			want: want{"VCEK", "Milan", "2", 0, "02c3b0d5", "", ""},
		},
		{
			name: "confidential-sidecar report + THIM chain, tcbm as endorsed_tcb",
			run:  func(t *testing.T, v *Verifier) (*Result, error) { return v.VerifyACI(ctx, sidecarBundle(t)) },
			// REPORT_DATA[0:32] = SHA-256 of `{\n   "akey" : "avalue"\n}\n`.
			want: want{"VCEK", "Milan", "2", 0, "", "", ""},
		},
		{
			name: "trustee raw report + VCEK DER",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				return v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "trustee_test-vcek.der"))
			},
			want: want{"VCEK", "Milan", "2", 0, "", "", ""},
		},
		{
			name: "trustee raw report + VCEK as PEM",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: read(t, "trustee_test-vcek.der")})
				return v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), p)
			},
			want: want{"VCEK", "Milan", "2", 0, "", "", ""},
		},
		{
			name: "trustee VLEK v3 report, VMPL1 allowed by MaxVMPL 1",
			opts: Options{MaxVMPL: 1},
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				return v.VerifyReport(ctx, read(t, "trustee_test-vlek-report.bin"), read(t, "trustee_test-vlek.der"))
			},
			want: want{"VLEK", "Milan", "3", 1, "8922ebbd", "", ""},
		},
		{
			name: "virtee report + VCEK",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				return v.VerifyReport(ctx, virteeReport(t), read(t, "virtee_vcek_milan.der"))
			},
			want: want{"VCEK", "Milan", "2", 0, "", "", ""},
		},
		{
			name: "eternisai AWS v5 extended report, VLEK in the certificate table",
			opts: Options{Now: fixedNow(time.Date(2026, 3, 25, 22, 31, 56, 0, time.UTC))},
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				r, table := eternisai(t, "aws")
				return v.VerifyExtendedReport(ctx, r, table)
			},
			want: want{"VLEK", "Milan", "5", 0, "", "", ""},
		},
		{
			name: "eternisai GCP v5 extended report, VCEK in the certificate table",
			opts: Options{Now: fixedNow(time.Date(2026, 3, 25, 22, 20, 6, 0, time.UTC))},
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				r, table := eternisai(t, "gcp")
				return v.VerifyExtendedReport(ctx, r, table)
			},
			want: want{"VCEK", "Milan", "5", 0, "", "", ""},
		},
		{
			name: "caller-sent ASK/ARK are ignored, even a self-made pair",
			run: func(t *testing.T, v *Verifier) (*Result, error) {
				b := aciSample(t)
				fake := newEvilChain(t, nil)
				b.Chain = [][]byte{fake.ask.Raw, fake.ark.Raw}
				return v.VerifyACI(ctx, b)
			},
			want: want{"VCEK", "Milan", "2", 0, "02c3b0d5", "", ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, tc.opts)
			r, err := tc.run(t, v)
			if err != nil {
				t.Fatalf("verification failed: %v (code %s)", err, Code(err))
			}
			if !r.Pinned {
				t.Error("Pinned = false for a real AMD chain")
			}
			c := r.Claims
			if r.Signer != tc.want.signer || r.ProductLine != tc.want.product {
				t.Errorf("signer, product = %s, %s; want %s, %s", r.Signer, r.ProductLine, tc.want.signer, tc.want.product)
			}
			if c[ClaimVersion] != tc.want.version {
				t.Errorf("x-ms-ver = %v, want %s", c[ClaimVersion], tc.want.version)
			}
			if c[ClaimVMPL] != tc.want.vmpl {
				t.Errorf("vmpl = %v, want %d", c[ClaimVMPL], tc.want.vmpl)
			}
			if m := c[ClaimLaunchMeasurement].(string); !strings.HasPrefix(m, tc.want.measurementPrefix) || len(m) != 96 {
				t.Errorf("launchmeasurement = %s, want prefix %s", m, tc.want.measurementPrefix)
			}
			if tc.want.hostData != "" && c[ClaimHostData] != tc.want.hostData {
				t.Errorf("hostdata = %v, want %s", c[ClaimHostData], tc.want.hostData)
			}
			if rd := c[ClaimReportData].(string); !strings.HasPrefix(rd, tc.want.reportDataPrefix) {
				t.Errorf("reportdata = %s, want prefix %s", rd, tc.want.reportDataPrefix)
			}
			checkClaimsConsistent(t, r)
		})
	}
}

// checkClaimsConsistent checks that every claim is present, typed as documented and equal to the
// typed fields.
func checkClaimsConsistent(t *testing.T, r *Result) {
	t.Helper()
	c := r.Claims
	strs := map[string][]byte{
		ClaimFamilyID: r.FamilyID, ClaimImageID: r.ImageID, ClaimReportData: r.ReportData,
		ClaimLaunchMeasurement: r.Measurement, ClaimHostData: r.HostData, ClaimIDKeyDigest: r.IDKeyDigest,
		ClaimAuthorKeyDigest: r.AuthorKeyDigest, ClaimReportID: r.ReportID,
	}
	for name, b := range strs {
		if c[name] != hex.EncodeToString(b) {
			t.Errorf("%s = %v, want %x", name, c[name], b)
		}
	}
	nums := map[string]int64{
		ClaimGuestSVN: int64(r.GuestSVN), ClaimVMPL: int64(r.VMPL),
		ClaimBootloaderSVN: int64(r.TCB.Bootloader), ClaimTEESVN: int64(r.TCB.TEE),
		ClaimSNPFirmwareSVN: int64(r.TCB.SNP), ClaimMicrocodeSVN: int64(r.TCB.Microcode),
	}
	for name, n := range nums {
		if c[name] != n {
			t.Errorf("%s = %v (%T), want int64 %d", name, c[name], c[name], n)
		}
	}
	bools := map[string]bool{ClaimSMTAllowed: r.SMTAllowed, ClaimIsDebuggable: r.Debug, ClaimMigrationAllowed: r.MigrationAllowed}
	for name, b := range bools {
		if c[name] != b {
			t.Errorf("%s = %v, want %v", name, c[name], b)
		}
	}
	if c[ClaimAttestationType] != "sevsnpvm" {
		t.Errorf("x-ms-attestation-type = %v", c[ClaimAttestationType])
	}
	if c[ClaimProductLine] != r.ProductLine {
		t.Errorf("%s = %v, want %s", ClaimProductLine, c[ClaimProductLine], r.ProductLine)
	}
	if len(c) != 20 {
		t.Errorf("%d claims, want 20", len(c))
	}
	if r.Debug || r.MigrationAllowed {
		t.Errorf("accepted report with debug %v migration %v", r.Debug, r.MigrationAllowed)
	}
}

func TestACISampleClaims(t *testing.T) {
	r, err := newVerifier(t, Options{}).VerifyACI(context.Background(), aciSample(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{
		"x-ms-attestation-type":           "sevsnpvm",
		"x-ms-ver":                        "2",
		"x-ms-sevsnpvm-guestsvn":          int64(2),
		"x-ms-sevsnpvm-smt-allowed":       true,
		"x-ms-sevsnpvm-is-debuggable":     false,
		"x-ms-sevsnpvm-migration-allowed": false,
		"x-ms-sevsnpvm-vmpl":              int64(0),
		"x-ms-sevsnpvm-hostdata":          "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20",
		"x-ms-sevsnpvm-launchmeasurement": "02c3b0d5bf1d256fa4e3b5deefc07b55ff2f7029085ed350f60959140a1a51f1310753ba5ab2c03a0536b1c0c193af47",
		"x-ms-sevsnpvm-bootloader-svn":    int64(3),
		"x-ms-sevsnpvm-tee-svn":           int64(0),
		"x-ms-sevsnpvm-snpfw-svn":         int64(8),
		"x-ms-sevsnpvm-microcode-svn":     int64(115),
	}
	for k, w := range want {
		if r.Claims[k] != w {
			t.Errorf("%s = %v (%T), want %v (%T)", k, r.Claims[k], r.Claims[k], w, w)
		}
	}
	if r.ReportedTCB != 0x7308000000000003 {
		t.Errorf("ReportedTCB = %#x", r.ReportedTCB)
	}
	if got := hex.EncodeToString(r.ReportData[:32]); got != "36b03dab8e8751b26d9b33fa2fa1296f823a238ef3dd604f758a4aff5b2b41d0" {
		t.Errorf("REPORT_DATA[0:32] = %s", got)
	}
	// The policy 0x3001f of every ACI report: SMT on, ABI 0.31.
	if r.Policy != 0x3001f {
		t.Errorf("policy = %#x", r.Policy)
	}
}

func TestVerifyNegative(t *testing.T) {
	ctx := context.Background()
	vlekNotMasked := func(t *testing.T) []byte { return read(t, "trustee_test-vlek-report.bin") }
	// The fake chains of go-sev-guest's testing package share fixed ARK/ASK keys, so this root
	// also anchors the VCEKs that newSimChain makes in the cases below.
	simRoots := Options{Roots: []Root{newSimChain(t, read(t, "trustee_test-report.bin"), 0).root()}}
	tests := []struct {
		name string
		opts Options
		run  func(t *testing.T, v *Verifier) error
		code string
	}{
		// Flipped bytes: the signature must catch each.
		{"flipped byte in signature", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0x2A0)))
			return err
		}, CodeReportSignatureInvalid},
		{"flipped byte in signature S", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0x2A0+72+10)))
			return err
		}, CodeReportSignatureInvalid},
		{"flipped byte in measurement", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0x90)))
			return err
		}, CodeReportSignatureInvalid},
		{"flipped byte in report data", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0x50)))
			return err
		}, CodeReportSignatureInvalid},
		{"flipped byte in host data", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0xC0)))
			return err
		}, CodeReportSignatureInvalid},
		{"flipped byte in guest svn (raw path)", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, flip(read(t, "trustee_test-report.bin"), 0x04), read(t, "trustee_test-vcek.der"))
			return err
		}, CodeReportSignatureInvalid},
		{"debug bit cleared by an attacker", Options{}, func(t *testing.T, v *Verifier) error {
			r := read(t, "gosevguest_attestation.bin")
			r[0x08+2] &^= 0x08 // policy bit 19: DEBUG
			_, err := v.VerifyReport(ctx, r, read(t, "gosevguest_vcek.testcer"))
			return err
		}, CodeReportSignatureInvalid},
		// Size and encoding.
		{"report one byte short", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			_, err := v.VerifyACI(ctx, withReport(b, b.Report[:abi.ReportSize-1]))
			return err
		}, CodeReportMalformed},
		{"report one byte long", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, append(read(t, "trustee_test-report.bin"), 0), read(t, "trustee_test-vcek.der"))
			return err
		}, CodeReportMalformed},
		{"empty report", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, nil, read(t, "trustee_test-vcek.der"))
			return err
		}, CodeReportMalformed},
		{"nil bundle", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyACI(ctx, nil)
			return err
		}, CodeReportMalformed},
		{"reserved field set", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, flip(read(t, "trustee_test-report.bin"), 0x250), read(t, "trustee_test-vcek.der"))
			return err
		}, CodeReportMalformed},
		{"garbage certificate table", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyExtendedReport(ctx, read(t, "trustee_test-report.bin"), []byte("not a table"))
			return err
		}, CodeReportMalformed},
		// Certificates.
		{"VCEK of another chip", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			b.EndorsementKey = read(t, "trustee_test-vcek.der")
			_, err := v.VerifyACI(ctx, b)
			return err
		}, CodeChipIDMismatch},
		{"VCEK of another chip, same TCB", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "virtee_vcek_milan.der"))
			return err
		}, CodeChipIDMismatch},
		{"no VCEK", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), nil)
			return err
		}, CodeCertChainInvalid},
		{"VCEK not a certificate", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), []byte{0x30, 0x03, 0x02, 0x01, 0x00})
			return err
		}, CodeCertChainInvalid},
		{"malformed VCEK (trustee invalid-legacy)", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "trustee_test-vcek-invalid-legacy.der"))
			return err
		}, CodeCertChainInvalid},
		{"malformed VCEK (trustee invalid-new)", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "trustee_test-vcek-invalid-new.der"))
			return err
		}, CodeCertChainInvalid},
		{"ARK and ASK replaced by a self-made AMD-shaped chain", Options{}, func(t *testing.T, v *Verifier) error {
			s := newSimChain(t, read(t, "trustee_test-report.bin"), 0)
			_, err := v.VerifyReport(ctx, s.sign(t, read(t, "trustee_test-report.bin")), s.signer.Vcek.Raw)
			return err
		}, CodeCertChainInvalid},
		{"self-made chain sent in full in the ACI endorsements", Options{}, func(t *testing.T, v *Verifier) error {
			s := newSimChain(t, read(t, "trustee_test-report.bin"), 0)
			var p []byte
			for _, c := range []*x509.Certificate{s.signer.Vcek, s.signer.Ask, s.signer.Ark} {
				p = append(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
			}
			js, _ := json.Marshal(map[string]string{
				"evidence":     base64.StdEncoding.EncodeToString(s.sign(t, read(t, "trustee_test-report.bin"))),
				"endorsements": base64.StdEncoding.EncodeToString(p),
			})
			b, err := DecodeACI(js)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.VerifyACI(ctx, b)
			return err
		}, CodeCertChainInvalid},
		{"chain to a non-AMD ECDSA P-384 root", Options{}, func(t *testing.T, v *Verifier) error {
			report := read(t, "trustee_test-report.bin")
			e := newEvilChain(t, report)
			_, err := v.VerifyReport(ctx, e.sign(t, report), e.vcek.Raw)
			return err
		}, CodeCertChainInvalid},
		{"VLEK expired (Now after 2025-12-10)", Options{MaxVMPL: 1, Now: fixedNow(time.Date(2025, 12, 11, 0, 0, 0, 0, time.UTC))}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, vlekNotMasked(t), read(t, "trustee_test-vlek.der"))
			return err
		}, CodeCertChainInvalid},
		{"VLEK not yet valid", Options{MaxVMPL: 1, Now: fixedNow(time.Date(2024, 12, 1, 0, 0, 0, 0, time.UTC))}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, vlekNotMasked(t), read(t, "trustee_test-vlek.der"))
			return err
		}, CodeCertChainInvalid},
		{"VLEK-signed report with a VCEK", Options{MaxVMPL: 1}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, vlekNotMasked(t), read(t, "trustee_test-vcek.der"))
			return err
		}, CodeCertChainInvalid},
		{"VCEK-signed report with a VLEK", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "trustee_test-vlek.der"))
			return err
		}, CodeCertChainInvalid},
		{"Turin VCEK (go-sev-guest v0.15.0 cannot parse its extensions)", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, virteeReport(t), read(t, "virtee_vcek_turin.der"))
			return err
		}, CodeCertChainInvalid},
		// TCB.
		{"TCB lower than the VCEK's (simulated chain)", simRoots, func(t *testing.T, v *Verifier) error {
			report := read(t, "trustee_test-report.bin")
			s := newSimChain(t, report, 1) // the VCEK certifies microcode SPL + 1
			_, err := v.VerifyReport(ctx, s.sign(t, report), s.signer.Vcek.Raw)
			return err
		}, CodeTCBMismatch},
		{"endorsed_tcb mismatch", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			b.EndorsedTCB = "0300000000000874"
			_, err := v.VerifyACI(ctx, b)
			return err
		}, CodeEndorsedTCBMismatch},
		{"endorsed_tcb of another report (the trustee VLEK one)", Options{}, func(t *testing.T, v *Verifier) error {
			b := sidecarBundle(t)
			b.EndorsedTCB = hex.EncodeToString(read(t, "trustee_test-vlek-report.bin")[0x180:0x188])
			_, err := v.VerifyACI(ctx, b)
			return err
		}, CodeEndorsedTCBMismatch},
		{"endorsed_tcb not hex", Options{}, func(t *testing.T, v *Verifier) error {
			b := aciSample(t)
			b.EndorsedTCB = "03000000000008zz"
			_, err := v.VerifyACI(ctx, b)
			return err
		}, CodeReportMalformed},
		// Guest policy.
		{"go-sev-guest sample: DEBUG policy", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, read(t, "gosevguest_attestation.bin"), read(t, "gosevguest_vcek.testcer"))
			return err
		}, CodePolicyDebug},
		{"VMPL1 report with max VMPL 0", Options{}, func(t *testing.T, v *Verifier) error {
			_, err := v.VerifyReport(ctx, vlekNotMasked(t), read(t, "trustee_test-vlek.der"))
			return err
		}, CodeVMPLTooHigh},
		{"migration agent allowed (simulated chain)", simRoots, func(t *testing.T, v *Verifier) error {
			report := read(t, "trustee_test-report.bin")
			report[0x08+2] |= 0x04 // policy bit 18: MIGRATE_MA
			s := newSimChain(t, report, 0)
			_, err := v.VerifyReport(ctx, s.sign(t, report), s.signer.Vcek.Raw)
			return err
		}, CodePolicyMigration},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate case %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, tc.opts)
			err := tc.run(t, v)
			if err == nil {
				t.Fatalf("accepted, want %s", tc.code)
			}
			if got := Code(err); got != tc.code {
				t.Fatalf("code %s, want %s; error: %v", got, tc.code, err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Msg == "" {
				t.Fatalf("not a typed error with a message: %v", err)
			}
			t.Logf("%s: %v", tc.code, err)
		})
	}
}

func TestDecodeACIErrors(t *testing.T) {
	good := map[string]string{}
	if err := json.Unmarshal(read(t, "aci_snp.json"), &good); err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) []byte {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "<delete>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		js, _ := json.Marshal(m)
		return js
	}
	short, _ := base64.StdEncoding.DecodeString(good["evidence"])
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty input", nil},
		{"empty object", []byte("{}")},
		{"not JSON", []byte("evidence=abc")},
		{"array", []byte("[]")},
		{"numbers instead of strings", []byte(`{"evidence":1,"endorsements":2}`)},
		{"bad base64 evidence", with("evidence", "!!!"+good["evidence"])},
		{"bad base64 endorsements", with("endorsements", "%%%%")},
		{"bad base64 uvm_endorsements", with("uvm_endorsements", "*")},
		{"missing evidence", with("evidence", "<delete>")},
		{"missing endorsements", with("endorsements", "<delete>")},
		{"report too short", with("evidence", base64.StdEncoding.EncodeToString(short[:1000]))},
		{"report too long", with("evidence", base64.StdEncoding.EncodeToString(append(short, 0)))},
		{"endorsements not PEM", with("endorsements", base64.StdEncoding.EncodeToString([]byte("hello")))},
		{"endorsements PEM of a key", with("endorsements", base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})))},
		{"endorsements with trailing junk", with("endorsements", base64.StdEncoding.EncodeToString(append(mustB64(t, good["endorsements"]), "junk"...)))},
		{"endorsed_tcb too short", with("endorsed_tcb", "0300")},
		{"endorsed_tcb not hex", with("endorsed_tcb", "zz00000000000873")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := DecodeACI(tc.in)
			if err == nil {
				t.Fatalf("decoded %+v", b)
			}
			if Code(err) != CodeReportMalformed {
				t.Fatalf("code %s, want %s: %v", Code(err), CodeReportMalformed, err)
			}
		})
	}
}

func mustB64(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeACI(t *testing.T) {
	b := aciSample(t)
	if len(b.Report) != abi.ReportSize || len(b.Chain) != 2 || b.EndorsedTCB != "0300000000000873" {
		t.Fatalf("report %d bytes, chain %d, endorsed_tcb %q", len(b.Report), len(b.Chain), b.EndorsedTCB)
	}
	// The UVM endorsement is kept as raw COSE_Sign1 bytes (CBOR tag 18).
	if len(b.UVMEndorsements) == 0 || b.UVMEndorsements[0] != 0xd2 {
		t.Fatalf("uvm_endorsements: %x", b.UVMEndorsements[:4])
	}
	vcek, err := x509.ParseCertificate(b.EndorsementKey)
	if err != nil || vcek.Subject.CommonName != "SEV-VCEK" {
		t.Fatalf("endorsement key: %v %v", err, vcek.Subject)
	}
	// Unpadded base64 is accepted too.
	m := map[string]string{}
	_ = json.Unmarshal(read(t, "aci_snp.json"), &m)
	m["evidence"] = strings.TrimRight(m["evidence"], "=")
	js, _ := json.Marshal(m)
	if _, err := DecodeACI(js); err != nil {
		t.Fatal(err)
	}
	// Absent optional fields.
	delete(m, "uvm_endorsements")
	delete(m, "endorsed_tcb")
	js, _ = json.Marshal(m)
	b, err = DecodeACI(js)
	if err != nil || b.UVMEndorsements != nil || b.EndorsedTCB != "" {
		t.Fatalf("%v %v %q", err, b.UVMEndorsements, b.EndorsedTCB)
	}
}

func TestVMPLOption(t *testing.T) {
	report, vlek := read(t, "trustee_test-vlek-report.bin"), read(t, "trustee_test-vlek.der")
	for maxVMPL, code := range map[int]string{0: CodeVMPLTooHigh, 1: "", 2: "", 3: ""} {
		_, err := newVerifier(t, Options{MaxVMPL: maxVMPL}).VerifyReport(context.Background(), report, vlek)
		if Code(err) != code {
			t.Errorf("MaxVMPL %d: code %q, want %q (%v)", maxVMPL, Code(err), code, err)
		}
	}
	for _, bad := range []int{-1, 4} {
		if _, err := New(Options{MaxVMPL: bad}); err == nil {
			t.Errorf("New accepted MaxVMPL %d", bad)
		}
	}
}

func TestPolicyDenialsJoined(t *testing.T) {
	// Debug and migration on, from VMPL 1: all three reported at once, debug first.
	report := read(t, "trustee_test-report.bin")
	report[0x08+2] |= 0x04 | 0x08
	report[0x30] = 1
	s := newSimChain(t, report, 0)
	v := newVerifier(t, Options{Roots: []Root{s.root()}})
	_, err := v.VerifyReport(context.Background(), s.sign(t, report), s.signer.Vcek.Raw)
	if Code(err) != CodePolicyDebug {
		t.Fatalf("code %s: %v", Code(err), err)
	}
	for _, want := range []string{"debugging", "migration agent", "VMPL is 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestSimulatedRoots(t *testing.T) {
	ctx := context.Background()
	report := read(t, "trustee_test-report.bin")
	s := newSimChain(t, report, 0)
	signed := s.sign(t, report)
	// Not trusted by default.
	if _, err := newVerifier(t, Options{}).VerifyReport(ctx, signed, s.signer.Vcek.Raw); Code(err) != CodeCertChainInvalid {
		t.Fatalf("simulated chain without Options.Roots: code %s (%v)", Code(err), err)
	}
	// Trusted when passed, and marked as not pinned; PEM form via ParseRoot.
	var bundle []byte
	for _, c := range []*x509.Certificate{s.signer.Ask, s.signer.Ark} {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	root, err := ParseRoot("Milan", bundle)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newVerifier(t, Options{Roots: []Root{root}}).VerifyReport(ctx, signed, s.signer.Vcek.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pinned {
		t.Error("simulated result marked Pinned")
	}
	// A masked CHIP_ID (all zero) is not compared with the VCEK's HWID.
	masked := bytes.Clone(report)
	clear(masked[0x1A0:0x1E0])
	if _, err := newVerifier(t, Options{Roots: []Root{root}}).VerifyReport(ctx, s.sign(t, masked), s.signer.Vcek.Raw); err != nil {
		t.Fatalf("masked CHIP_ID: %v", err)
	}
	// The real report still verifies under the pinned root with the same verifier.
	v := newVerifier(t, Options{Roots: []Root{root}})
	r, err = v.VerifyReport(ctx, report, read(t, "trustee_test-vcek.der"))
	if err != nil || !r.Pinned {
		t.Fatalf("real report with extra roots: %v, pinned %v", err, r != nil && r.Pinned)
	}
}

func TestParseRootErrors(t *testing.T) {
	milan, err := amdroots.ReadFile("amdroots/ask_ark_milan.pem")
	if err != nil {
		t.Fatal(err)
	}
	ask, _ := pem.Decode(milan)
	genoa, _ := amdroots.ReadFile("amdroots/ask_ark_genoa.pem")
	_, genoaARK := pem.Decode(genoa)
	tests := map[string]struct {
		line string
		pem  []byte
	}{
		"unknown product line": {"Bergamo", milan},
		"no ARK":               {"Milan", pem.EncodeToMemory(ask)},
		"ASK of another ARK":   {"Milan", append(pem.EncodeToMemory(ask), genoaARK...)},
		"not PEM":              {"Milan", []byte("hello")},
		"empty":                {"Milan", nil},
	}
	for name, tc := range tests {
		if _, err := ParseRoot(tc.line, tc.pem); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Options{Roots: []Root{{ProductLine: "Milan"}}}); err == nil {
		t.Error("New accepted an empty Root")
	}
}

func TestPinnedRoots(t *testing.T) {
	roots, err := pinnedRoots()
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 3 {
		t.Fatalf("%d product lines", len(roots))
	}
	for _, r := range roots {
		if r.ARK.Subject.CommonName != "ARK-"+r.ProductLine || r.ASK.Subject.CommonName != "SEV-"+r.ProductLine ||
			r.ASVK.Subject.CommonName != "SEV-VLEK-"+r.ProductLine {
			t.Errorf("%s: %s %s %s", r.ProductLine, r.ARK.Subject.CommonName, r.ASK.Subject.CommonName, r.ASVK.Subject.CommonName)
		}
	}
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	clock := testNow
	v := newVerifier(t, Options{MaxVMPL: 1, Now: func() time.Time { return clock }})
	b := aciSample(t)
	for range 3 {
		if _, err := v.VerifyACI(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cache.m); n != 1 {
		t.Fatalf("cache has %d entries after 3 identical verifications, want 1", n)
	}
	// Warm cache: the signature is still verified every time, and TCB/chip still compared.
	if _, err := v.VerifyACI(ctx, withReport(b, flip(b.Report, 0x90))); Code(err) != CodeReportSignatureInvalid {
		t.Fatalf("warm cache, flipped measurement: %v", err)
	}
	other := *b
	other.Report = read(t, "trustee_test-report.bin")
	if _, err := v.VerifyACI(ctx, &other); Code(err) != CodeChipIDMismatch {
		t.Fatalf("warm cache, another chip's report: %v", err)
	}
	// A cached VLEK chain is not used once it expires.
	vlekReport, vlek := read(t, "trustee_test-vlek-report.bin"), read(t, "trustee_test-vlek.der")
	if _, err := v.VerifyReport(ctx, vlekReport, vlek); err != nil {
		t.Fatal(err)
	}
	clock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := v.VerifyReport(ctx, vlekReport, vlek); Code(err) != CodeCertChainInvalid {
		t.Fatalf("expired VLEK with a warm cache: %v", err)
	}
	// Bounded.
	v = newVerifier(t, Options{CacheSize: 1})
	_, _ = v.VerifyACI(ctx, b)
	_, _ = v.VerifyReport(ctx, read(t, "trustee_test-report.bin"), read(t, "trustee_test-vcek.der"))
	if n := len(v.cache.m); n != 1 {
		t.Fatalf("cache of size 1 has %d entries", n)
	}
	// Disabled.
	v = newVerifier(t, Options{CacheSize: -1})
	if _, err := v.VerifyACI(ctx, b); err != nil || v.cache != nil {
		t.Fatalf("uncached: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	v := newVerifier(t, Options{})
	b := aciSample(t)
	bad := withReport(b, flip(b.Report, 0x50))
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			in := b
			if i%2 == 1 {
				in = bad
			}
			_, err := v.VerifyACI(context.Background(), in)
			if (err == nil) != (i%2 == 0) {
				errs <- err
				return
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestCodeOfOtherErrors(t *testing.T) {
	if Code(nil) != "" || Code(errors.New("x")) != CodeInternal {
		t.Fatal("Code of nil or a plain error")
	}
	wrapped := errors.Join(errors.New("context"), errorf(CodeTCBMismatch, nil, "x"))
	if Code(wrapped) != CodeTCBMismatch {
		t.Fatal("Code does not look inside joined errors")
	}
}

// simChain is a fake AMD chain built by go-sev-guest's testing package (RSA-PSS ARK/ASK with AMD's
// names, an ECDSA P-384 VCEK with AMD's extensions), whose VCEK certifies the given report's chip
// and REPORTED_TCB (microcode SPL raised by bump).
type simChain struct {
	signer *sgtest.AmdSigner
}

func newSimChain(t *testing.T, report []byte, bump uint8) *simChain {
	t.Helper()
	r, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatal(err)
	}
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(r.GetReportedTcb()))
	tcb.UcodeSpl += bump
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &sgtest.AmdSignerBuilder{
		ProductName:      "Milan-B0",
		ArkCreationTime:  created,
		AskCreationTime:  created,
		AsvkCreationTime: created,
		VcekCreationTime: created,
		VlekCreationTime: created,
		VcekCustom:       sgtest.CertOverride{Extensions: sgtest.CustomExtensions(tcb, r.GetChipId(), "", "Milan-B0")},
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return &simChain{signer: s}
}

func (s *simChain) root() Root {
	return Root{ProductLine: "Milan", ARK: s.signer.Ark, ASK: s.signer.Ask, ASVK: s.signer.Asvk}
}

func (s *simChain) sign(t *testing.T, report []byte) []byte {
	t.Helper()
	out := bytes.Clone(report)
	r, sig, err := s.signer.Sign(abi.SignedComponent(out))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, sig, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// evilChain is a self-made ECDSA P-384 chain under a non-AMD root, whose VCEK carries AMD's
// extensions for the given report (or none, when report is nil).
type evilChain struct {
	ark, ask, vcek *x509.Certificate
	vcekKey        *ecdsa.PrivateKey
}

func newEvilChain(t *testing.T, report []byte) *evilChain {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	mk := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	nb, na := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	arkKey, askKey, vcekKey := key(), key(), key()
	arkT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Evil Root"}, NotBefore: nb, NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ark := mk(arkT, arkT, &arkKey.PublicKey, arkKey)
	askT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "SEV-Milan"}, NotBefore: nb, NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ask := mk(askT, ark, &askKey.PublicKey, arkKey)
	vcekT := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "SEV-VCEK"}, NotBefore: nb, NotAfter: na}
	if report != nil {
		r, err := abi.ReportToProto(report)
		if err != nil {
			t.Fatal(err)
		}
		vcekT.ExtraExtensions = sgtest.CustomExtensions(kds.DecomposeTCBVersion(kds.TCBVersion(r.GetReportedTcb())), r.GetChipId(), "", "Milan-B0")
	}
	vcek := mk(vcekT, ask, &vcekKey.PublicKey, askKey)
	return &evilChain{ark: ark, ask: ask, vcek: vcek, vcekKey: vcekKey}
}

func (e *evilChain) sign(t *testing.T, report []byte) []byte {
	t.Helper()
	out := bytes.Clone(report)
	digest := sha384(abi.SignedComponent(out))
	r, s, err := ecdsa.Sign(rand.Reader, e.vcekKey, digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, s, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sha384(b []byte) []byte {
	h := sha512.Sum384(b)
	return h[:]
}
