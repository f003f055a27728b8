package simsnp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	cose "github.com/veraison/go-cose"
)

var regenerate = flag.Bool("regenerate", false, "write a new testdata/"+fixture)

// fixture is a chain made by newChain and kept in testdata, so that most
// tests (and every fuzz worker) need not generate RSA-4096 keys.
const fixture = "simsnp-chain.pem"

// testChain is the fixture, loaded by TestMain through LoadOrCreate from a
// copy in testDir, a temporary directory removed when the tests end.
var (
	testChain *Chain
	testDir   string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *regenerate {
		c, err := newChain(time.Now())
		if err == nil {
			var b []byte
			if b, err = c.marshal(); err == nil {
				err = os.WriteFile(filepath.Join("testdata", fixture), b, 0o600)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code, err := runWithFixture(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runWithFixture(m *testing.M) (int, error) {
	b, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		return 0, err
	}
	testDir, err = os.MkdirTemp("", "simsnp-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(testDir)
	dir := filepath.Join(testDir, "fixture")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, ChainFile), b, 0o600); err != nil {
		return 0, err
	}
	if testChain, err = LoadOrCreate(dir); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// freshChain is a chain LoadOrCreate made, once per test binary.
var freshChain = sync.OnceValues(func() (*freshResult, error) {
	dir := filepath.Join(testDir, "fresh", "dev") // LoadOrCreate makes both
	c, err := LoadOrCreate(dir)
	return &freshResult{c, dir}, err
})

type freshResult struct {
	chain *Chain
	dir   string
}

func fresh(t *testing.T) (*Chain, string) {
	t.Helper()
	r, err := freshChain()
	if err != nil {
		t.Fatal(err)
	}
	return r.chain, r.dir
}

// verifyTime is a time at which c's certificates are valid: the fixture's
// are pinned, so tests do not expire with it.
func verifyTime(c *Chain) time.Time {
	return c.VCEK().NotBefore.Add(24 * time.Hour)
}

// attestation is what a verifier builds from a report and its VCEK.
func attestation(t *testing.T, c *Chain, report []byte) *spb.Attestation {
	t.Helper()
	r, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatalf("ReportToProto: %v", err)
	}
	return &spb.Attestation{
		Report: r,
		CertificateChain: &spb.CertificateChain{
			VcekCert: c.VCEK().Raw,
			AskCert:  c.ask.Raw,
			ArkCert:  c.ark.Raw,
		},
	}
}

// simulatedRoots are verify options trusting only c's ARK and ASK for Milan.
func simulatedRoots(c *Chain) *verify.Options {
	ark, ask := c.Roots()
	return &verify.Options{
		DisableCertFetching: true,
		Now:                 verifyTime(c),
		TrustedRoots: map[string][]*trust.AMDRootCerts{
			"Milan": {{ProductLine: "Milan", ProductCerts: &trust.ProductCerts{Ark: ark, Ask: ask}}},
		},
	}
}

func aciValidateOptions() *validate.Options {
	vmpl := 0
	return &validate.Options{
		GuestPolicy:               abi.SnpPolicy{SMT: true},
		PermitProvisionalFirmware: true,
		VMPL:                      &vmpl,
	}
}

func TestReportVerifiesWithSimulatedRoots(t *testing.T) {
	reportData := sha256.Sum256([]byte("-----BEGIN PUBLIC KEY-----\n"))
	hostData := sha256.Sum256([]byte("a container security policy"))
	report, err := testChain.Report(ReportOptions{ReportData: reportData[:], HostData: hostData[:]})
	if err != nil {
		t.Fatal(err)
	}
	att := attestation(t, testChain, report)
	if err := verify.SnpAttestation(att, simulatedRoots(testChain)); err != nil {
		t.Fatalf("verify.SnpAttestation with the simulated roots: %v", err)
	}
	// As the tkms verifiers will run with the insecure flag: the real AMD
	// roots and the simulated ones side by side.
	pemBytes, err := os.ReadFile("testdata/ask_ark_milan.pem")
	if err != nil {
		t.Fatal(err)
	}
	amd := trust.AMDRootCertsProduct("Milan")
	if err := amd.FromKDSCertBytes(pemBytes); err != nil {
		t.Fatal(err)
	}
	both := simulatedRoots(testChain)
	both.TrustedRoots["Milan"] = []*trust.AMDRootCerts{amd, both.TrustedRoots["Milan"][0]}
	if err := verify.SnpAttestation(att, both); err != nil {
		t.Fatalf("verify.SnpAttestation with the real and the simulated roots: %v", err)
	}

	opts := aciValidateOptions()
	opts.ReportData = append(reportData[:], make([]byte, 32)...)
	opts.HostData = hostData[:]
	opts.Measurement = []byte(DefaultMeasurement)
	opts.ChipID = testChain.chipID[:]
	opts.MinimumGuestSvn = GuestSVN
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(testChain.TCB()))
	opts.MinimumTCB = tcb
	opts.MinimumLaunchTCB = tcb
	if err := validate.SnpAttestation(att, opts); err != nil {
		t.Fatalf("validate.SnpAttestation: %v", err)
	}
}

func TestReportFailsWithRealAMDRoots(t *testing.T) {
	report, err := testChain.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile("testdata/ask_ark_milan.pem")
	if err != nil {
		t.Fatal(err)
	}
	amd := trust.AMDRootCertsProduct("Milan")
	if err := amd.FromKDSCertBytes(pemBytes); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]*verify.Options{
		"testdata AMD roots": {
			DisableCertFetching: true,
			TrustedRoots:        map[string][]*trust.AMDRootCerts{"Milan": {amd}},
		},
		"go-sev-guest embedded roots": {DisableCertFetching: true},
	} {
		t.Run(name, func(t *testing.T) {
			opts.Now = verifyTime(testChain)
			err := verify.SnpAttestation(attestation(t, testChain, report), opts)
			if err == nil {
				t.Fatal("a simulated report verified against the real AMD roots")
			}
			t.Logf("rejected as expected: %v", err)
		})
	}
}

func TestFlippedByteFailsSignature(t *testing.T) {
	report, err := testChain.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{
		0x04,  // GUEST_SVN
		0x50,  // REPORT_DATA
		0x90,  // MEASUREMENT
		0xC0,  // HOST_DATA
		0x140, // REPORT_ID
		0x180, // REPORTED_TCB
		0x1A0, // CHIP_ID
		0x29F, // last signed byte (reserved)
		0x2A0, // signature R
		0x2E8, // signature S
	} {
		t.Run(fmt.Sprintf("%#x", off), func(t *testing.T) {
			bad := bytes.Clone(report)
			bad[off] ^= 0x01
			if err := verify.SnpReportSignature(bad, testChain.VCEK()); err == nil {
				t.Errorf("report with byte %#x flipped: signature verifies", off)
			}
			r, err := abi.ReportToProto(bad)
			if err != nil {
				return // unparseable is rejected too
			}
			att := attestation(t, testChain, report)
			att.Report = r
			if err := verify.SnpAttestation(att, simulatedRoots(testChain)); err == nil {
				t.Errorf("report with byte %#x flipped: verify.SnpAttestation accepts it", off)
			}
		})
	}
}

func TestDebugFailsValidation(t *testing.T) {
	report, err := testChain.Report(ReportOptions{Debug: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(report[0x08:]); got != 0xb001f {
		t.Errorf("debug policy = %#x, want 0xb001f", got)
	}
	att := attestation(t, testChain, report)
	if err := verify.SnpAttestation(att, simulatedRoots(testChain)); err != nil {
		t.Fatalf("a debug report is still authentic: %v", err)
	}
	err = validate.SnpAttestation(att, aciValidateOptions())
	if err == nil || !strings.Contains(err.Error(), "debug") {
		t.Fatalf("validate.SnpAttestation(debug report) = %v, want a debug error", err)
	}
}

func TestReportedTCBMismatchFailsValidation(t *testing.T) {
	for name, tcb := range map[string]uint64{
		"lower":  testChain.TCB() - 1<<56, // microcode SPL one lower
		"higher": testChain.TCB() + 1,     // bootloader SPL one higher
	} {
		t.Run(name, func(t *testing.T) {
			report, err := testChain.Report(ReportOptions{ReportedTCB: &tcb})
			if err != nil {
				t.Fatal(err)
			}
			if got := binary.LittleEndian.Uint64(report[0x180:]); got != tcb {
				t.Fatalf("REPORTED_TCB = %#x, want %#x", got, tcb)
			}
			att := attestation(t, testChain, report)
			if err := verify.SnpAttestation(att, simulatedRoots(testChain)); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := validate.SnpAttestation(att, aciValidateOptions()); err == nil {
				t.Fatal("validate accepts a REPORTED_TCB that is not the VCEK's")
			}
		})
	}
}

// TestReportLayout checks the report byte by byte against the SEV-SNP ABI
// layout and verifies the signature without go-sev-guest.
func TestReportLayout(t *testing.T) {
	reportData := []byte("report data")
	measurement := bytes.Repeat([]byte{0xAB}, 48)
	hostData := bytes.Repeat([]byte{0xCD}, 32)
	report, err := testChain.Report(ReportOptions{ReportData: reportData, Measurement: measurement, HostData: hostData})
	if err != nil {
		t.Fatal(err)
	}
	if len(report) != 1184 {
		t.Fatalf("report is %d bytes, want 1184", len(report))
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(report[off:]) }
	le64 := func(off int) uint64 { return binary.LittleEndian.Uint64(report[off:]) }
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"VERSION", uint64(le32(0x00)), 2},
		{"GUEST_SVN", uint64(le32(0x04)), 2},
		{"POLICY", le64(0x08), 0x3001f},
		{"VMPL", uint64(le32(0x30)), 0},
		{"SIGNATURE_ALGO", uint64(le32(0x34)), 1},
		{"CURRENT_TCB", le64(0x38), testChain.TCB()},
		{"SIGNER_INFO", uint64(le32(0x48)), 0},
		{"REPORTED_TCB", le64(0x180), testChain.TCB()},
		{"COMMITTED_TCB", le64(0x1E0), testChain.TCB()},
		{"LAUNCH_TCB", le64(0x1F0), testChain.TCB()},
	} {
		if f.got != f.want {
			t.Errorf("%s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	if got := hex.EncodeToString(report[0x180:0x188]); got != "0300000000000873" {
		t.Errorf("REPORTED_TCB bytes = %s, want 0300000000000873", got)
	}
	wantRD := make([]byte, 64)
	copy(wantRD, reportData)
	exts, err := kds.VcekCertificateExtensions(testChain.VCEK())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name      string
		got, want []byte
	}{
		{"REPORT_DATA", report[0x50:0x90], wantRD},
		{"MEASUREMENT", report[0x90:0xC0], measurement},
		{"HOST_DATA", report[0xC0:0xE0], hostData},
		{"CHIP_ID", report[0x1A0:0x1E0], exts.HWID},
		{"reserved 0x208-0x29F", report[0x208:0x2A0], make([]byte, 0x98)},
		{"signature padding", report[0x2A0+144:], make([]byte, 512-144)},
	} {
		if !bytes.Equal(f.got, f.want) {
			t.Errorf("%s = %x, want %x", f.name, f.got, f.want)
		}
	}

	checkVCEKSignature(t, report)
}

// checkVCEKSignature verifies report's signature with crypto/ecdsa and the
// VCEK key of testChain, without go-sev-guest.
func checkVCEKSignature(t *testing.T, report []byte) {
	t.Helper()
	// AMD's signature layout: R then S, 72 bytes each, little-endian.
	rev := func(b []byte) *big.Int {
		b = bytes.Clone(b)
		slices.Reverse(b)
		return new(big.Int).SetBytes(b)
	}
	var sig struct{ R, S *big.Int }
	sig.R, sig.S = rev(report[0x2A0:0x2E8]), rev(report[0x2E8:0x330])
	der, err := asn1.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha512.Sum384(report[:0x2A0])
	pub := testChain.VCEK().PublicKey.(*ecdsa.PublicKey)
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		t.Error("the R||S little-endian signature does not verify with the VCEK key")
	}
}

// TestReportVMPL: ReportOptions.VMPL lands in the VMPL field (0x030,
// little-endian) of a report whose signature covers it.
func TestReportVMPL(t *testing.T) {
	for _, vmpl := range []uint32{0, 1, 3} {
		t.Run(fmt.Sprint(vmpl), func(t *testing.T) {
			report, err := testChain.Report(ReportOptions{VMPL: vmpl})
			if err != nil {
				t.Fatal(err)
			}
			want := binary.LittleEndian.AppendUint32(nil, vmpl)
			if got := report[0x30:0x34]; !bytes.Equal(got, want) {
				t.Errorf("VMPL bytes = %x, want %x", got, want)
			}
			checkVCEKSignature(t, report)
			if err := verify.SnpReportSignature(report, testChain.VCEK()); err != nil {
				t.Errorf("verify.SnpReportSignature: %v", err)
			}
		})
	}
}

func TestReportDefaults(t *testing.T) {
	report, err := testChain.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(report[0x90:0xC0]); got != DefaultMeasurement {
		t.Errorf("MEASUREMENT = %q, want %q", got, DefaultMeasurement)
	}
	if !bytes.Equal(report[0x50:0xE0], append(make([]byte, 64), append([]byte(DefaultMeasurement), make([]byte, 32)...)...)) {
		t.Errorf("REPORT_DATA, MEASUREMENT, HOST_DATA = %x", report[0x50:0xE0])
	}
}

func TestReportOptionErrors(t *testing.T) {
	for name, opts := range map[string]ReportOptions{
		"report data 65 bytes": {ReportData: make([]byte, 65)},
		"measurement 32 bytes": {Measurement: make([]byte, 32)},
		"measurement empty":    {Measurement: []byte{}},
		"host data 48 bytes":   {HostData: make([]byte, 48)},
		"VMPL 4":               {VMPL: 4},
	} {
		if _, err := testChain.Report(opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestChainShape(t *testing.T) {
	ark, ask := testChain.Roots()
	vcek := testChain.VCEK()
	for _, tc := range []struct {
		cert   *x509.Certificate
		cn, by string
	}{
		{ark, "ARK-Milan", "ARK-Milan"},
		{ask, "SEV-Milan", "ARK-Milan"},
		{vcek, "SEV-VCEK", "SEV-Milan"},
	} {
		if tc.cert.Subject.CommonName != tc.cn || tc.cert.Issuer.CommonName != tc.by {
			t.Errorf("subject %q issuer %q, want CN %s issued by %s", tc.cert.Subject, tc.cert.Issuer, tc.cn, tc.by)
		}
		if !strings.Contains(tc.cert.Subject.String(), "SIMULATED") || !strings.Contains(tc.cert.Issuer.String(), "SIMULATED") {
			t.Errorf("%s: names do not say SIMULATED: subject %q issuer %q", tc.cn, tc.cert.Subject, tc.cert.Issuer)
		}
		if tc.cert.SignatureAlgorithm != x509.SHA384WithRSAPSS {
			t.Errorf("%s signed with %v, want SHA384-RSAPSS", tc.cn, tc.cert.SignatureAlgorithm)
		}
	}
	for _, cert := range []*x509.Certificate{testChain.uvmLeaf, testChain.uvmCA, testChain.uvmRoot} {
		if !strings.Contains(cert.Subject.CommonName, "SIMULATED") {
			t.Errorf("UVM certificate %q does not say SIMULATED", cert.Subject)
		}
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		t.Fatal(err)
	}
	if exts.ProductName != ProductName || uint64(exts.TCBVersion) != testChain.TCB() || len(exts.HWID) != 64 {
		t.Errorf("VCEK extensions = %+v", exts)
	}
	// AMD's OIDs are present with the documented values.
	want := map[string][]byte{
		"1.3.6.1.4.1.3704.1.3.1": {0x02, 0x01, 3},
		"1.3.6.1.4.1.3704.1.3.2": {0x02, 0x01, 0},
		"1.3.6.1.4.1.3704.1.3.3": {0x02, 0x01, 8},
		"1.3.6.1.4.1.3704.1.3.8": {0x02, 0x01, 0x73},
		"1.3.6.1.4.1.3704.1.2":   append([]byte{0x16, 8}, "Milan-B0"...),
		"1.3.6.1.4.1.3704.1.4":   testChain.chipID[:],
	}
	for _, e := range vcek.Extensions {
		if w, ok := want[e.Id.String()]; ok {
			if !bytes.Equal(e.Value, w) {
				t.Errorf("extension %s = %x, want %x", e.Id, e.Value, w)
			}
			delete(want, e.Id.String())
		}
	}
	if len(want) != 0 {
		t.Errorf("VCEK lacks extensions %v", want)
	}
	if _, ok := vcek.PublicKey.(*ecdsa.PublicKey); !ok || vcek.PublicKey.(*ecdsa.PublicKey).Curve.Params().Name != "P-384" {
		t.Errorf("VCEK key is %T, want ECDSA P-384", vcek.PublicKey)
	}
	if got := uvmEKU.String(); got != UVMEKU {
		t.Errorf("uvmEKU = %s, want %s", got, UVMEKU)
	}
}

func TestLoadOrCreateIsStable(t *testing.T) {
	created, dir := fresh(t)
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range roles {
		c1, k1 := created.pair(role)
		c2, k2 := again.pair(role)
		if !bytes.Equal(c1.Raw, c2.Raw) {
			t.Errorf("%s certificate changed on reload", role)
		}
		if !k1.(interface{ Equal(crypto.PrivateKey) bool }).Equal(k2) {
			t.Errorf("%s key changed on reload", role)
		}
	}
	if again.TCB() != created.TCB() || again.chipID != created.chipID {
		t.Error("TCB or chip id changed on reload")
	}
	// A report from the reloaded chain verifies with the first one's roots.
	report, err := again.Report(ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.SnpAttestation(attestation(t, again, report), simulatedRoots(created)); err != nil {
		t.Fatal(err)
	}
	if err := validate.SnpAttestation(attestation(t, again, report), aciValidateOptions()); err != nil {
		t.Fatal(err)
	}
}

// TestLoadOrCreateConcurrent: processes starting together share one chain.
func TestLoadOrCreateConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("generates two chains")
	}
	dir := filepath.Join(t.TempDir(), "shared")
	var chains [2]*Chain
	var errs [2]error
	var wg sync.WaitGroup
	for i := range chains {
		wg.Go(func() { chains[i], errs[i] = LoadOrCreate(dir) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	onDisk, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chains {
		if !c.ark.Equal(onDisk.ark) || !c.VCEK().Equal(onDisk.VCEK()) || !c.uvmLeaf.Equal(onDisk.uvmLeaf) {
			t.Errorf("LoadOrCreate #%d returned a chain other than the one on disk", i)
		}
	}
}

func TestChainFilePermissions(t *testing.T) {
	_, dir := fresh(t)
	fi, err := os.Stat(filepath.Join(dir, ChainFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", ChainFile, fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("chain directory mode = %v, want 0700", di.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("chain directory holds %d entries, want only %s", len(entries), ChainFile)
	}
}

// TestLoadRejectsBadChainFile: a chain file that is present but damaged is
// an error and is left alone, never silently replaced.
func TestLoadRejectsBadChainFile(t *testing.T) {
	good, err := testChain.marshal()
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]byte
	for rest := good; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, pem.EncodeToMemory(b))
	}
	other, _ := fresh(t) // a second, unrelated chain
	otherFile, err := other.marshal()
	if err != nil {
		t.Fatal(err)
	}
	var otherBlocks [][]byte
	for rest := otherFile; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		otherBlocks = append(otherBlocks, pem.EncodeToMemory(b))
	}
	swap := func(i int) []byte {
		bs := slices.Clone(blocks)
		bs[i] = otherBlocks[i]
		return bytes.Join(bs, nil)
	}
	for name, content := range map[string][]byte{
		"empty":                     {},
		"garbage":                   []byte("not a chain\n"),
		"missing VCEK key":          bytes.Join(slices.Delete(slices.Clone(blocks), 5, 6), nil),
		"duplicate ARK certificate": bytes.Join(append(slices.Clone(blocks), blocks[0]), nil),
		"VCEK key of another chain": swap(5),
		"ASK of another chain":      swap(2),
		"ASK and key of another chain": func() []byte {
			bs := slices.Clone(blocks)
			bs[2], bs[3] = otherBlocks[2], otherBlocks[3]
			return bytes.Join(bs, nil)
		}(),
		"trailing data": append(bytes.Clone(good), "junk"...),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, ChainFile)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreate(dir); err == nil {
				t.Fatal("LoadOrCreate accepted a damaged chain file")
			} else {
				t.Log(err)
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, content) {
				t.Error("LoadOrCreate changed a damaged chain file")
			}
		})
	}
}

func TestACIBundle(t *testing.T) {
	reportData := sha256.Sum256([]byte("wrapping key PEM"))
	signingTime := verifyTime(testChain).Truncate(time.Second)
	b, err := testChain.ACIBundle(ACIBundleOptions{
		Report:      ReportOptions{ReportData: reportData[:]},
		SigningTime: signingTime,
	})
	if err != nil {
		t.Fatal(err)
	}
	var bundle map[string]string
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	if len(bundle) != 4 {
		t.Errorf("bundle has fields %v, want evidence, endorsements, uvm_endorsements, endorsed_tcb", bundle)
	}
	report, err := base64.StdEncoding.DecodeString(bundle["evidence"])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(report[0x50:0x70], reportData[:]) {
		t.Errorf("REPORT_DATA = %x", report[0x50:0x90])
	}
	if got, want := bundle["endorsed_tcb"], hex.EncodeToString(report[0x180:0x188]); got != want || got != "0300000000000873" {
		t.Errorf("endorsed_tcb = %q, want %q", got, want)
	}

	// endorsements: PEM VCEK, ASK, ARK; the report verifies with that VCEK
	// and the simulated roots.
	pems, err := base64.StdEncoding.DecodeString(bundle["endorsements"])
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := pems; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	ark, ask := testChain.Roots()
	if len(certs) != 3 || !certs[0].Equal(testChain.VCEK()) || !certs[1].Equal(ask) || !certs[2].Equal(ark) {
		t.Fatalf("endorsements = %d certificates, want VCEK, ASK, ARK", len(certs))
	}
	r, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatal(err)
	}
	att := &spb.Attestation{Report: r, CertificateChain: &spb.CertificateChain{VcekCert: certs[0].Raw}}
	if err := verify.SnpAttestation(att, simulatedRoots(testChain)); err != nil {
		t.Fatalf("evidence does not verify: %v", err)
	}

	// uvm_endorsements: a COSE_Sign1 shaped like Microsoft's.
	raw, err := base64.StdEncoding.DecodeString(bundle["uvm_endorsements"])
	if err != nil {
		t.Fatal(err)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	p := msg.Headers.Protected
	if alg, err := p.Algorithm(); err != nil || alg != cose.AlgorithmPS384 {
		t.Errorf("alg = %v, %v; want PS384", alg, err)
	}
	if ct := p[cose.HeaderLabelContentType]; ct != "application/json" {
		t.Errorf("content type = %v", ct)
	}
	x5, _ := p[cose.HeaderLabelX5Chain].([]any)
	var chain []*x509.Certificate
	for _, v := range x5 {
		der, _ := v.([]byte)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("x5chain: %v", err)
		}
		chain = append(chain, cert)
	}
	if len(chain) != 3 {
		t.Fatalf("x5chain has %d certificates, want 3", len(chain))
	}
	leaf, root := chain[0], chain[2]
	if !leaf.Equal(testChain.uvmLeaf) || !root.Equal(testChain.uvmRoot) {
		t.Error("x5chain is not leaf, CA, root of the simulated UVM chain")
	}
	x5t, _ := p[cose.HeaderLabelX5T].([]any)
	leafHash := sha256.Sum256(leaf.Raw)
	if len(x5t) != 2 || x5t[0] != int64(-16) || !bytes.Equal(x5t[1].([]byte), leafHash[:]) {
		t.Errorf("x5t = %v", x5t)
	}
	did, feed := testChain.UVMTrust()
	if p["iss"] != did || p["feed"] != feed || feed != "SIMULATED-AMD-UVM" {
		t.Errorf("iss, feed = %v, %v; want %v, %v", p["iss"], p["feed"], did, feed)
	}
	if st, ok := p["signingtime"].(time.Time); !ok || !st.Equal(signingTime) {
		t.Errorf("signingtime = %T %v, want tag 1 of %v", p["signingtime"], p["signingtime"], signingTime)
	}
	if !bytes.Contains(msg.Headers.RawProtected, []byte("\x6bsigningtime\xc1\x1a")) {
		t.Error("signingtime is not CBOR tag 1 over an unsigned integer")
	}

	// Signature with the leaf key.
	verifier, err := cose.NewVerifier(cose.AlgorithmPS384, leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Verify(nil, verifier); err != nil {
		t.Fatalf("COSE signature: %v", err)
	}
	// Chain to the last x5chain certificate at signingtime.
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: signingTime,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		t.Fatalf("x5chain does not verify: %v", err)
	}
	// did:x509 resolution: the root's fingerprint and an EKU of the leaf.
	fp := sha256.Sum256(root.Raw)
	prefix := "did:x509:0:sha256:" + base64.RawURLEncoding.EncodeToString(fp[:]) + "::eku:"
	eku, found := strings.CutPrefix(did, prefix)
	if !found {
		t.Fatalf("did %q does not name the x5chain root %q", did, prefix)
	}
	if !slices.ContainsFunc(leaf.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.String() == eku }) || eku != UVMEKU {
		t.Errorf("leaf EKUs %v lack the did's %s", leaf.UnknownExtKeyUsage, eku)
	}
	// Payload.
	var payload map[string]string
	if err := json.Unmarshal(msg.Payload, &payload); err != nil {
		t.Fatal(err)
	}
	if payload["x-ms-sevsnpvm-guestsvn"] != "100" || payload["x-ms-sevsnpvm-launchmeasurement"] != hex.EncodeToString(report[0x90:0xC0]) {
		t.Errorf("payload = %s", msg.Payload)
	}

	// A flipped byte in the payload or the protected headers breaks the
	// signature.
	for _, mutate := range []func(m *cose.Sign1Message){
		func(m *cose.Sign1Message) { m.Payload[len(m.Payload)-3] ^= 1 },
		func(m *cose.Sign1Message) { m.Headers.RawProtected[len(m.Headers.RawProtected)-1] ^= 1 },
		func(m *cose.Sign1Message) { m.Signature[0] ^= 1 },
	} {
		var bad cose.Sign1Message
		if err := bad.UnmarshalCBOR(bytes.Clone(raw)); err != nil {
			t.Fatal(err)
		}
		mutate(&bad)
		if err := bad.Verify(nil, verifier); err == nil {
			t.Error("a modified UVM endorsement verifies")
		}
	}
}

func TestACIBundleOptions(t *testing.T) {
	other := bytes.Repeat([]byte{0x11}, 48)
	b, err := testChain.ACIBundle(ACIBundleOptions{UVMSVN: "7", UVMMeasurement: other})
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		UVM string `json:"uvm_endorsements"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(bundle.UVM)
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	var payload map[string]string
	if err := json.Unmarshal(msg.Payload, &payload); err != nil {
		t.Fatal(err)
	}
	if payload["x-ms-sevsnpvm-guestsvn"] != "7" || payload["x-ms-sevsnpvm-launchmeasurement"] != hex.EncodeToString(other) {
		t.Errorf("payload = %s", msg.Payload)
	}
	st, ok := msg.Headers.Protected["signingtime"].(time.Time)
	if !ok || time.Since(st) > time.Minute {
		t.Errorf("default signingtime = %v, want about now", st)
	}
}

func TestEpochTimeCBOR(t *testing.T) {
	for _, tc := range []struct {
		t    uint64
		want string
	}{
		{0, "c100"},
		{23, "c117"},
		{24, "c11818"},
		{0x100, "c1190100"},
		{1700000000, "c11a6553f100"},
		{1 << 32, "c11b0000000100000000"},
	} {
		got, err := epochTime(tc.t).MarshalCBOR()
		if err != nil || hex.EncodeToString(got) != tc.want {
			t.Errorf("epochTime(%d) = %x, %v; want %s", tc.t, got, err, tc.want)
		}
	}
}

func FuzzParseChain(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		f.Fatal(err)
	}
	// The whole fixture is a seed of the unit tests; the fuzzer starts from
	// its first certificate alone, because every complete chain costs RSA-4096
	// key checks that coverage instrumentation makes very slow.
	end := bytes.Index(good, []byte("-----END CERTIFICATE-----\n")) + len("-----END CERTIFICATE-----\n")
	if fuzzing := flag.Lookup("test.fuzz"); fuzzing == nil || fuzzing.Value.String() == "" {
		f.Add(good)
	}
	f.Add(good[:end])
	f.Add([]byte("amd-ark\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseChain(b)
		if err != nil {
			return
		}
		// Whatever parses is a consistent chain that signs verifiable reports.
		report, err := c.Report(ReportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := verify.SnpReportSignature(report, c.VCEK()); err != nil {
			t.Fatal(err)
		}
	})
}
