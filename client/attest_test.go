package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	cose "github.com/veraison/go-cose"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
)

// The shared security-context sample (testdata/PROVENANCE.md) as ACI
// mounts it. It belongs to no report in the vectors, so only reading and
// parsing it is tested here; an end-to-end verification of evidence built
// from it is impossible. TestACIAttesterRealReport verifies another,
// consistent set end to end.
func TestLoadSecurityContextVector(t *testing.T) {
	sc, err := LoadSecurityContext(filepath.Join("testdata", "security-context"))
	if err != nil {
		t.Fatal(err)
	}
	checkSecurityContextVector(t, sc)
}

func checkSecurityContextVector(t *testing.T, sc *SecurityContext) {
	t.Helper()
	c := sc.HostAMDCert
	if c == nil {
		t.Fatal("no host AMD certificates")
	}
	if c.TCBM != "7308000000000003" || c.CacheControl != "86400" {
		t.Errorf("tcbm %q cacheControl %q, want 7308000000000003 and 86400", c.TCBM, c.CacheControl)
	}
	vcek := parsePEMCerts(t, c.VCEKCert)
	chain := parsePEMCerts(t, c.CertificateChain)
	if len(vcek) != 1 || vcek[0].Subject.CommonName != "SEV-VCEK" {
		t.Errorf("vcekCert: %d certificates, first %q, want one SEV-VCEK", len(vcek), vcek[0].Subject.CommonName)
	}
	if len(chain) != 2 || chain[0].Subject.CommonName != "SEV-Milan" || chain[1].Subject.CommonName != "ARK-Milan" {
		t.Errorf("certificateChain: want SEV-Milan (ASK) then ARK-Milan, got %d certificates", len(chain))
	}
	if err := vcek[0].CheckSignatureFrom(chain[0]); err != nil {
		t.Errorf("the VCEK is not signed by the ASK: %v", err)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(sc.ReferenceInfo); err != nil {
		t.Fatalf("reference info is not a tagged COSE_Sign1: %v", err)
	}
	if ct, _ := msg.Headers.Protected[cose.HeaderLabelContentType].(string); ct != "application/json" {
		t.Errorf("reference info content type %q, want application/json", ct)
	}
	if alg, _ := msg.Headers.Protected.Algorithm(); alg != cose.AlgorithmPS384 {
		t.Errorf("reference info alg %v, want PS384", alg)
	}
	if feed, _ := msg.Headers.Protected["feed"].(string); feed != "ContainerPlat-AMD-UVM" {
		t.Errorf("reference info feed %q, want ContainerPlat-AMD-UVM", feed)
	}
	if !bytes.HasPrefix(sc.SecurityPolicy, []byte("package policy")) {
		t.Errorf("policy starts %q, want Rego 'package policy'", truncate(string(sc.SecurityPolicy), 20))
	}
}

func parsePEMCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// The sidecar's fallbacks: $UVM_SECURITY_CONTEXT_DIR when no directory is
// given, and the UVM_* variables when that is unset too.
func TestLoadSecurityContextEnvironment(t *testing.T) {
	dir := filepath.Join("testdata", "security-context")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("dir variable", func(t *testing.T) {
		t.Setenv(envSecurityContextDir, dir)
		t.Setenv(envHostAMDCertificate, "not base64 and not read")
		sc, err := LoadSecurityContext("")
		if err != nil {
			t.Fatal(err)
		}
		checkSecurityContextVector(t, sc)
	})
	t.Run("variables", func(t *testing.T) {
		t.Setenv(envSecurityContextDir, "")
		t.Setenv(envHostAMDCertificate, read(hostAMDCertFile))
		t.Setenv(envReferenceInfo, read(referenceInfoFile))
		t.Setenv(envSecurityPolicy, read(securityPolicyFile))
		sc, err := LoadSecurityContext("")
		if err != nil {
			t.Fatal(err)
		}
		checkSecurityContextVector(t, sc)
	})
	t.Run("nothing set", func(t *testing.T) {
		for _, v := range []string{envSecurityContextDir, envHostAMDCertificate, envReferenceInfo, envSecurityPolicy} {
			t.Setenv(v, "")
		}
		sc, err := LoadSecurityContext("")
		if err != nil {
			t.Fatal(err) // the sidecar accepts an empty environment ...
		}
		if _, err := newACIAttester(sc, nil); err == nil || !strings.Contains(err.Error(), "no host AMD certificates") {
			t.Errorf("attester from an empty context: %v, want 'no host AMD certificates'", err) // ... the attester does not
		}
	})
	t.Run("missing file", func(t *testing.T) {
		empty := t.TempDir()
		if _, err := LoadSecurityContext(empty); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("empty directory: %v, want ErrNotExist", err)
		}
	})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func thimJSON(t testing.TB, c THIMCerts) string {
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

func TestParseTHIMCerts(t *testing.T) {
	sc, err := LoadSecurityContext(filepath.Join("testdata", "security-context"))
	if err != nil {
		t.Fatal(err)
	}
	good := *sc.HostAMDCert
	with := func(f func(*THIMCerts)) string {
		c := good
		f(&c)
		return thimJSON(t, c)
	}
	tests := []struct {
		name, in, err string
	}{
		{"vector round trip", thimJSON(t, good), ""},
		{"report-order tcbm", with(func(c *THIMCerts) { c.TCBM = "0300000000000873" }), ""},
		{"upper-case tcbm", with(func(c *THIMCerts) { c.TCBM = "DB18000000000004" }), ""},
		{"trailing newline", thimJSON(t, good) + "\n", ""},
		{"not base64", "{not base64}", "not standard base64"},
		{"base64url", "-_" + thimJSON(t, good)[2:], "not standard base64"},
		{"not JSON", b64([]byte("vcekCert")), "not THIM certificate JSON"},
		{"JSON array", b64([]byte(`[]`)), "not THIM certificate JSON"},
		{"no vcekCert", with(func(c *THIMCerts) { c.VCEKCert = "" }), "vcekCert must be one PEM certificate"},
		{"two vcekCerts", with(func(c *THIMCerts) { c.VCEKCert += c.VCEKCert }), "vcekCert must be one PEM certificate"},
		{"garbage after vcekCert", with(func(c *THIMCerts) { c.VCEKCert += "garbage" }), "vcekCert must be one PEM certificate"},
		{"vcekCert not a certificate", with(func(c *THIMCerts) {
			c.VCEKCert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
		}), "vcekCert"},
		{"private key as chain", with(func(c *THIMCerts) {
			c.CertificateChain = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}))
		}), "certificateChain"},
		{"no chain", with(func(c *THIMCerts) { c.CertificateChain = "" }), "certificateChain"},
		{"short tcbm", with(func(c *THIMCerts) { c.TCBM = "73080000" }), "tcbm must be 16 hex digits"},
		{"non-hex tcbm", with(func(c *THIMCerts) { c.TCBM = "730800000000000g" }), "tcbm must be 16 hex digits"},
		{"signed tcbm", with(func(c *THIMCerts) { c.TCBM = "+308000000000003" }), "tcbm must be 16 hex digits"},
		{"no tcbm", with(func(c *THIMCerts) { c.TCBM = "" }), "tcbm must be 16 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseTHIMCerts(tt.in)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if again, err := parseTHIMCerts(thimJSON(t, *c)); err != nil || *again != *c {
					t.Errorf("round trip: %v, %+v != %+v", err, again, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestParseReferenceInfo(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "aci-report", "body.uvm_reference_info.bin"))
	if err != nil {
		t.Fatal(err)
	}
	untagged := raw[1:] // 0xd2 is CBOR tag 18, COSE_Sign1
	if raw[0] != 0xd2 {
		t.Fatalf("vector starts with %#x, want tag 18 (0xd2)", raw[0])
	}
	flipped := bytes.Clone(raw)
	flipped[1] ^= 0xff // the array header
	tests := []struct {
		name, in, err string
		want          []byte
	}{
		{"tagged", b64(raw), "", raw},
		{"untagged", b64(untagged), "", untagged},
		{"wrapped lines", b64(raw)[:76] + "\n" + b64(raw)[76:] + "\n", "", raw},
		{"truncated", b64(raw[:len(raw)-10]), "not a COSE_Sign1", nil},
		{"flipped array header", b64(flipped), "not a COSE_Sign1", nil},
		{"JSON", b64([]byte(`{"x-ms-sevsnpvm-guestsvn":"100"}`)), "not a COSE_Sign1", nil},
		{"not base64", "***", "not standard base64", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseReferenceInfo(tt.in)
			if tt.err == "" {
				if err != nil || !bytes.Equal(got, tt.want) {
					t.Fatalf("got %d bytes, %v", len(got), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

// fixedDevice returns a captured report whatever it is asked, as a real
// device cannot: the caller must ask for the report's own REPORT_DATA.
type fixedDevice struct{ report, certTable []byte }

func (d *fixedDevice) GetReport(ctx context.Context, reportData [64]byte) ([]byte, []byte, error) {
	return bytes.Clone(d.report), bytes.Clone(d.certTable), nil
}

// realSecurityContext assembles a security context directory from the
// consistent ACI set in testdata/aci-report.
func realSecurityContext(t *testing.T) (dir string, report []byte) {
	src := filepath.Join("testdata", "aci-report")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dir = t.TempDir()
	for name, content := range map[string][]byte{
		hostAMDCertFile:    []byte(b64(read("uvm_host_amd_certificate.json"))),
		referenceInfoFile:  []byte(b64(read("body.uvm_reference_info.bin"))),
		securityPolicyFile: read("uvm_security_policy.base64"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, read("snp_report.bin")
}

// A genuine ACI report, through the attester, verifies against the pinned
// AMD roots and Microsoft's UVM endorser, as the KMS verifies it.
func TestACIAttesterRealReport(t *testing.T) {
	dir, report := realSecurityContext(t)
	a, err := NewACIAttester(ACIOptions{SecurityContextDir: dir, Device: &fixedDevice{report: report}})
	if err != nil {
		t.Fatal(err)
	}
	var reportData [64]byte
	binding := sha256.Sum256([]byte("{\n   \"akey\" : \"avalue\"\n}\n"))
	copy(reportData[:], binding[:])
	ev, err := a.Attest(context.Background(), reportData)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != EvidenceACI || ev.Simulated {
		t.Errorf("type %q simulated %v, want snp-aci, false", ev.Type, ev.Simulated)
	}
	var obj map[string]string
	if err := json.Unmarshal(ev.Attestation, &obj); err != nil {
		t.Fatal(err)
	}
	if obj["endorsed_tcb"] != "7308000000000003" {
		t.Errorf("endorsed_tcb %q, want THIM's tcbm 7308000000000003 (as the sidecar sends it)", obj["endorsed_tcb"])
	}
	thim, _ := os.ReadFile(filepath.Join("testdata", "aci-report", "uvm_host_amd_certificate.json"))
	var c THIMCerts
	if err := json.Unmarshal(thim, &c); err != nil {
		t.Fatal(err)
	}
	if obj["endorsements"] != b64([]byte(c.VCEKCert+c.CertificateChain)) {
		t.Error("endorsements is not base64(vcekCert + certificateChain)")
	}
	ref, _ := os.ReadFile(filepath.Join(dir, referenceInfoFile))
	if obj["uvm_endorsements"] != string(ref) {
		t.Error("uvm_endorsements is not reference-info-base64")
	}

	b, err := snp.DecodeACI(ev.Attestation)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := snp.New(snp.Options{Now: func() time.Time { return time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sv.VerifyACI(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pinned || res.ProductLine != "Milan" {
		t.Errorf("pinned %v product %q, want a pinned Milan root", res.Pinned, res.ProductLine)
	}
	uv, err := uvm.New(uvm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ur, err := uv.Verify(b.UVMEndorsements, res.Measurement)
	if err != nil {
		t.Fatal(err)
	}
	if ur.Feed != "ContainerPlat-AMD-UVM" {
		t.Errorf("UVM feed %q", ur.Feed)
	}
	if h := a.SecurityContext().HostData(); !bytes.Equal(res.HostData, h[:]) {
		t.Errorf("HOST_DATA %x, policy hash %x", res.HostData, h)
	}
}

// simDevice is a fake /dev/sev-guest: it returns REAL reports, signed by
// the simulated chain, with the REPORT_DATA asked for.
type simDevice struct {
	chain     *simsnp.Chain
	opts      simsnp.ReportOptions
	certTable bool
	err       error
}

func (d *simDevice) GetReport(ctx context.Context, reportData [64]byte) ([]byte, []byte, error) {
	if d.err != nil {
		return nil, nil, d.err
	}
	o := d.opts
	o.ReportData = reportData[:]
	r, err := d.chain.Report(o)
	if err != nil || !d.certTable {
		return r, nil, err
	}
	ark, ask := d.chain.Roots()
	table := abi.CertsFromProto(&spb.CertificateChain{VcekCert: d.chain.VCEK().Raw, AskCert: ask.Raw, ArkCert: ark.Raw})
	return r, table.Marshal(), nil
}

var (
	simOnce  sync.Once
	simChain *simsnp.Chain
	simErr   error
)

func testChain(t testing.TB) *simsnp.Chain {
	t.Helper()
	simOnce.Do(func() {
		dir, err := os.MkdirTemp("", "client-simsnp-")
		if err != nil {
			simErr = err
			return
		}
		simChain, simErr = simsnp.LoadOrCreate(dir)
		os.RemoveAll(dir)
	})
	if simErr != nil {
		t.Fatal(simErr)
	}
	return simChain
}

const testPolicy = "package policy\n\napi_version := \"0.10.0\"\n"

// simSecurityContext writes the security context of a container group on
// the simulated host: THIM JSON of the simulated VCEK chain, a UVM
// endorsement of simsnp's default measurement, and testPolicy.
func simSecurityContext(t *testing.T, chain *simsnp.Chain) string {
	bundle, err := chain.ACIBundle(simsnp.ACIBundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]string
	if err := json.Unmarshal(bundle, &obj); err != nil {
		t.Fatal(err)
	}
	ark, ask := chain.Roots()
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	thim := THIMCerts{
		VCEKCert:         pemOf(chain.VCEK()),
		CertificateChain: pemOf(ask) + pemOf(ark),
		TCBM:             strings.ToUpper(hex.EncodeToString(be64(chain.TCB()))),
		CacheControl:     "86400",
	}
	dir := t.TempDir()
	for name, content := range map[string]string{
		hostAMDCertFile:    thimJSON(t, thim),
		referenceInfoFile:  obj["uvm_endorsements"] + "\n",
		securityPolicyFile: b64([]byte(testPolicy)),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[7-i] = byte(v >> (8 * i))
	}
	return b
}

// verifySim verifies an ACI object as the KMS does (internal/release's
// VerifyEvidence: snp, then uvm), trusting the simulated chain.
func verifySim(t *testing.T, chain *simsnp.Chain, attestation []byte) (*snp.Result, *uvm.Result) {
	t.Helper()
	b, err := snp.DecodeACI(attestation)
	if err != nil {
		t.Fatal(err)
	}
	ark, ask := chain.Roots()
	sv, err := snp.New(snp.Options{Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sv.VerifyACI(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	did, feed := chain.UVMTrust()
	uv, err := uvm.New(uvm.Options{Trusted: []uvm.Endorser{{DID: did, Feed: feed}}})
	if err != nil {
		t.Fatal(err)
	}
	ur, err := uv.Verify(b.UVMEndorsements, res.Measurement)
	if err != nil {
		t.Fatal(err)
	}
	return res, ur
}

func testReportData(s string) [64]byte {
	var rd [64]byte
	h := sha256.Sum256([]byte(s))
	copy(rd[:], h[:])
	copy(rd[32:], "nonce from the KMS")
	return rd
}

// The ACI attester with a device producing real (simulated-chain) reports:
// its object decodes and verifies end to end.
func TestACIAttesterSimulatedHost(t *testing.T) {
	chain := testChain(t)
	dir := simSecurityContext(t, chain)
	policyHash := sha256.Sum256([]byte(testPolicy))
	dev := &simDevice{chain: chain, opts: simsnp.ReportOptions{HostData: policyHash[:]}}
	a, err := NewACIAttester(ACIOptions{SecurityContextDir: dir, Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	rd := testReportData("wrapping key")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	res, ur := verifySim(t, chain, ev.Attestation)
	if !bytes.Equal(res.ReportData, rd[:]) || !bytes.Equal(res.HostData, policyHash[:]) {
		t.Errorf("REPORT_DATA %x HOST_DATA %x", res.ReportData, res.HostData)
	}
	if res.Pinned {
		t.Error("simulated evidence verified as pinned")
	}
	if ur.Feed != simsnp.UVMFeed {
		t.Errorf("feed %q", ur.Feed)
	}
	var obj map[string]string
	json.Unmarshal(ev.Attestation, &obj)
	if want := strings.ToUpper(hex.EncodeToString(be64(chain.TCB()))); obj["endorsed_tcb"] != want {
		t.Errorf("endorsed_tcb %q, want tcbm %q as is", obj["endorsed_tcb"], want)
	}
}

// The attester refuses reports the KMS would refuse, saying why.
func TestACIAttesterChecksReport(t *testing.T) {
	chain := testChain(t)
	dir := simSecurityContext(t, chain)
	policyHash := sha256.Sum256([]byte(testPolicy))
	otherTCB := chain.TCB() + 1
	rd := testReportData("k")
	deviceErr := errors.New("ioctl: no such device")
	tests := []struct {
		name string
		dev  ReportDevice
		err  string
	}{
		{"other host data", &simDevice{chain: chain}, "HOST_DATA"},
		{"stale THIM TCB", &simDevice{chain: chain, opts: simsnp.ReportOptions{HostData: policyHash[:], ReportedTCB: &otherTCB}}, "REPORTED_TCB"},
		{"other report data", &fixedDevice{report: mustReport(t, chain, simsnp.ReportOptions{HostData: policyHash[:]})}, "REPORT_DATA"},
		{"short report", &fixedDevice{report: make([]byte, 1000)}, "want a 1184-byte"},
		{"device error", &simDevice{err: deviceErr}, "no such device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewACIAttester(ACIOptions{SecurityContextDir: dir, Device: tt.dev})
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Attest(context.Background(), rd)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func mustReport(t *testing.T, chain *simsnp.Chain, o simsnp.ReportOptions) []byte {
	r, err := chain.Report(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Raw SNP evidence decodes into internal/release's RawSNP and verifies,
// with the device's certificate table or a given VCEK.
func TestSNPAttester(t *testing.T) {
	chain := testChain(t)
	ark, ask := chain.Roots()
	sv, err := snp.New(snp.Options{Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}})
	if err != nil {
		t.Fatal(err)
	}
	rd := testReportData("raw")
	vcekPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain.VCEK().Raw})
	for _, tt := range []struct {
		name      string
		a         *SNPAttester
		wantTable bool
	}{
		{"cert table", NewSNPAttester(SNPOptions{Device: &simDevice{chain: chain, certTable: true}}), true},
		{"vcek DER", NewSNPAttester(SNPOptions{Device: &simDevice{chain: chain, certTable: true}, VCEK: chain.VCEK().Raw}), false},
		{"vcek PEM", NewSNPAttester(SNPOptions{Device: &simDevice{chain: chain}, VCEK: vcekPEM}), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := tt.a.Attest(context.Background(), rd)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != EvidenceSNP {
				t.Errorf("type %q", ev.Type)
			}
			var raw api.RawSNP
			if err := json.Unmarshal(ev.Attestation, &raw); err != nil {
				t.Fatal(err)
			}
			if raw.Type != "snp" || (len(raw.CertTable) > 0) != tt.wantTable || (len(raw.VCEK) > 0) == tt.wantTable {
				t.Errorf("type %q, cert_table %d bytes, vcek %d bytes", raw.Type, len(raw.CertTable), len(raw.VCEK))
			}
			res, err := sv.VerifyRaw(context.Background(), raw.Report, raw.VCEK, raw.CertTable)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.ReportData, rd[:]) {
				t.Errorf("REPORT_DATA %x", res.ReportData)
			}
		})
	}
	t.Run("no certificates", func(t *testing.T) {
		_, err := NewSNPAttester(SNPOptions{Device: &simDevice{chain: chain}}).Attest(context.Background(), rd)
		if err == nil || !strings.Contains(err.Error(), "no certificate table") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("bad cert table", func(t *testing.T) {
		r := mustReport(t, chain, simsnp.ReportOptions{ReportData: rd[:]})
		_, err := NewSNPAttester(SNPOptions{Device: &fixedDevice{report: r, certTable: []byte("junk")}}).Attest(context.Background(), rd)
		if err == nil || !strings.Contains(err.Error(), "certificate table") {
			t.Errorf("error %v", err)
		}
	})
}

// FuzzParseSecurityContext: parsing any three values never panics, and
// what parses survives a round trip unchanged.
func FuzzParseSecurityContext(f *testing.F) {
	for _, dir := range []string{filepath.Join("testdata", "security-context")} {
		var v [3]string
		for i, name := range []string{hostAMDCertFile, referenceInfoFile, securityPolicyFile} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				f.Fatal(err)
			}
			v[i] = string(b)
		}
		f.Add(v[0], v[1], v[2])
		f.Add(v[0][:len(v[0])/2], v[1][:40], "")
	}
	f.Add("", "", "")
	f.Add(b64([]byte(`{"vcekCert":"","tcbm":"7308000000000003"}`)), b64([]byte{0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40}), "cGFja2FnZQ==")
	f.Fuzz(func(t *testing.T, host, ref, policy string) {
		sc, err := parseSecurityContext(host, ref, policy)
		if err != nil {
			return
		}
		var host2, ref2 string
		if sc.HostAMDCert != nil {
			host2 = thimJSON(t, *sc.HostAMDCert)
		}
		if sc.ReferenceInfo != nil {
			ref2 = b64(sc.ReferenceInfo)
		}
		again, err := parseSecurityContext(host2, ref2, b64(sc.SecurityPolicy))
		if err != nil {
			t.Fatalf("re-encoded context does not parse: %v", err)
		}
		if (again.HostAMDCert == nil) != (sc.HostAMDCert == nil) || (sc.HostAMDCert != nil && *again.HostAMDCert != *sc.HostAMDCert) ||
			!bytes.Equal(again.ReferenceInfo, sc.ReferenceInfo) || !bytes.Equal(again.SecurityPolicy, sc.SecurityPolicy) {
			t.Fatal("round trip changed the context")
		}
	})
}
