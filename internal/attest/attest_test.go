package attest_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
)

// Real evidence (snp/testdata/PROVENANCE.md): a production ACI bundle and
// a raw Milan report with its VCEK.
const (
	aciSample = "snp/testdata/aci_snp.json"
	rawReport = "snp/testdata/trustee_test-report.bin"
	rawVCEK   = "snp/testdata/trustee_test-vcek.der"
)

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawSNP(t testing.TB) []byte {
	b, _ := json.Marshal(api.RawSNP{Type: "snp", Report: read(t, rawReport), VCEK: read(t, rawVCEK)})
	return b
}

// simChain is the simulated chain of simsnp's test fixture (generating
// one takes seconds), with a time at which its certificates are valid.
type simChain struct {
	*simsnp.Chain
	at time.Time
}

// bundle returns simulated ACI evidence signed at c.at.
func (c simChain) bundle(t testing.TB, opts simsnp.ACIBundleOptions) []byte {
	t.Helper()
	opts.SigningTime = c.at
	b, err := c.ACIBundle(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// simulated returns the simulated chain and a config that trusts it (but
// not its evidence: Config.Simulated is false).
func simulated(t testing.TB) (simChain, attest.Config) {
	t.Helper()
	fixture := read(t, "simsnp/testdata/"+simsnp.ChainFile)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	chain, err := simsnp.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := chain.VCEK().NotBefore.Add(24 * time.Hour)
	ark, ask := chain.Roots()
	did, feed := chain.UVMTrust()
	return simChain{chain, at}, attest.Config{
		SNP:                snp.Options{Now: func() time.Time { return at }, Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}},
		SimulatedEndorsers: []uvm.Endorser{{DID: did, Feed: feed}},
	}
}

func newVerifier(t testing.TB, cfg attest.Config) *attest.Verifier {
	t.Helper()
	v, err := attest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyFormats(t *testing.T) {
	chain, simCfg := simulated(t)
	simACI := chain.bundle(t, simsnp.ACIBundleOptions{})
	simTrusted := simCfg
	simTrusted.Simulated = true
	flipped := read(t, aciSample)
	flipped = []byte(strings.Replace(string(flipped), `"evidence": "`, `"evidence": "A`, 1))
	for _, tc := range []struct {
		name      string
		cfg       attest.Config
		raw       []byte
		typ, code string
		simulated bool
		uvm       bool
	}{
		{name: "real ACI", raw: read(t, aciSample), typ: attest.TypeACI, uvm: true},
		{name: "real raw SNP", raw: rawSNP(t), typ: attest.TypeSNP},
		{name: "raw SNP without certificate", raw: []byte(`{"type":"snp","report":"AAAA"}`), typ: attest.TypeSNP, code: snp.CodeReportMalformed},
		{name: "raw SNP of the wrong shape", raw: []byte(`{"type":"snp","report":7}`), typ: attest.TypeSNP, code: snp.CodeReportMalformed},
		{name: "not JSON", raw: []byte("junk"), typ: attest.TypeACI, code: snp.CodeReportMalformed},
		{name: "ACI with a damaged report", raw: flipped, typ: attest.TypeACI, code: snp.CodeReportMalformed},
		{name: "simulated, not trusted", cfg: simCfg, raw: simACI, typ: attest.TypeACI, code: attest.CodeSimulatedNotTrusted},
		{name: "simulated, trusted", cfg: simTrusted, raw: simACI, typ: attest.TypeACI, simulated: true, uvm: true},
		{name: "simulated, roots not given", cfg: attest.Config{Simulated: true}, raw: simACI, typ: attest.TypeACI, code: snp.CodeCertChainInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, tc.cfg)
			if got := attest.Type(tc.raw); got != tc.typ {
				t.Fatalf("Type %q, want %q", got, tc.typ)
			}
			ev, err := v.Verify(context.Background(), tc.raw)
			if tc.code != "" {
				var ae *attest.Error
				if ev != nil || !errors.As(err, &ae) || ae.Code != tc.code || attest.Code(err) != tc.code || !strings.HasPrefix(err.Error(), tc.code+": ") {
					t.Fatalf("got %v, %v; want code %s", ev, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.typ || ev.Simulated != tc.simulated || ev.UVMSimulated != (tc.simulated && tc.uvm) || len(ev.ReportData) != 64 || len(ev.Measurement) != 48 {
				t.Fatalf("evidence %+v", ev)
			}
			if _, ok := ev.Claims["uvm_endorsements-feed"]; ok != tc.uvm || ev.UVMSigningTime.IsZero() == tc.uvm {
				t.Fatalf("uvm claims %v, signing time %v; want uvm %v", ev.Claims, ev.UVMSigningTime, tc.uvm)
			}
			if ev.Claims["x-ms-attestation-type"] != "sevsnpvm" || ev.Signer == "" || ev.ProductLine == "" {
				t.Fatalf("claims %v", ev.Claims)
			}
		})
	}
}

// TestInspectUnpinned: the inspect mode accepts simulated evidence without
// Config.Simulated and marks it, and keeps the report's claims when the UVM
// endorsement fails.
func TestInspectUnpinned(t *testing.T) {
	chain, cfg := simulated(t)
	v := newVerifier(t, cfg)
	good := chain.bundle(t, simsnp.ACIBundleOptions{})
	ev, err := v.InspectUnpinned(context.Background(), good)
	if err != nil || !ev.Simulated || !ev.UVMSimulated {
		t.Fatalf("%+v, %v", ev, err)
	}
	bad := chain.bundle(t, simsnp.ACIBundleOptions{UVMMeasurement: make([]byte, 48)})
	ev, err = v.InspectUnpinned(context.Background(), bad)
	if attest.Code(err) != "UVM_MEASUREMENT_MISMATCH" || ev == nil || ev.Claims["x-ms-sevsnpvm-launchmeasurement"] == nil {
		t.Fatalf("%+v, %v", ev, err)
	}
	if ev, err := v.Verify(context.Background(), bad); ev != nil || attest.Code(err) != attest.CodeSimulatedNotTrusted {
		t.Fatalf("Verify: %+v, %v", ev, err)
	}
}

func TestDecodeUnverified(t *testing.T) {
	u, err := attest.DecodeUnverified(read(t, aciSample))
	if err != nil || u.Type != attest.TypeACI || len(u.Report) != 1184 || len(u.VCEK) == 0 || len(u.UVMEndorsement) == 0 {
		t.Fatalf("%+v, %v", u, err)
	}
	u, err = attest.DecodeUnverified(rawSNP(t))
	if err != nil || u.Type != attest.TypeSNP || len(u.Report) != 1184 || len(u.VCEK) == 0 || u.CertTable != nil {
		t.Fatalf("%+v, %v", u, err)
	}
	for _, raw := range []string{`{"type":"snp"}`, `{"type":"snp","report":1}`, `{}`, `[]`} {
		if _, err := attest.DecodeUnverified([]byte(raw)); attest.Code(err) != snp.CodeReportMalformed {
			t.Fatalf("%s: %v", raw, err)
		}
	}
}

func TestTrust(t *testing.T) {
	_, cfg := simulated(t)
	cfg.Simulated = true
	tr := newVerifier(t, cfg).Trust()
	if !tr.SimulatedTEE || len(tr.UVMEndorsers) != len(uvm.DefaultTrusted())+1 || len(tr.EvidenceTypes) != 6 || len(tr.Formats) != 6 || !tr.Formats[0].Simulated || tr.Formats[2].Simulated {
		t.Fatalf("%+v", tr)
	}
	tr = newVerifier(t, attest.Config{}).Trust()
	if tr.SimulatedTEE || len(tr.UVMEndorsers) != len(uvm.DefaultTrusted()) {
		t.Fatalf("%+v", tr)
	}
}

// FuzzVerifyEvidence feeds arbitrary attestation objects to the door: nothing may
// panic, the format Verify reports is the one Type detects, and every
// refusal has a code; verified evidence claims its type, and is simulated
// when its UVM endorsement is. Seeds: the real ACI bundle, a real raw SNP
// object, simulated evidence, and a real vector of every other format.
func FuzzVerifyEvidence(f *testing.F) {
	chain, cfg := simulated(f)
	cfg.Simulated = true
	v := newVerifier(f, cfg)
	sim := chain.bundle(f, simsnp.ACIBundleOptions{})
	f.Add(read(f, aciSample))
	f.Add(rawSNP(f))
	f.Add(sim)
	f.Add([]byte(`{"type":"snp","report":"","cert_table":"AAAA"}`))
	f.Add(tdxObject(f, read(f, "tdx/testdata/tdx_quote_6.dat")))
	f.Add(read(f, "maa/testdata/sharedweu_L138.jwt"))
	f.Add(read(f, "azcvm/testdata/snp_evidence-v1.json"))
	f.Add(read(f, "azcvm/testdata/tdx_evidence-v1.json"))
	f.Add(read(f, "tdx/testdata/az_td_quote.bin"))
	f.Add([]byte(`{"type":"maa","token":"` + strings.TrimSpace(string(read(f, "maa/testdata/sharedweu_L138.jwt"))) + `"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := v.Verify(context.Background(), raw)
		if err != nil {
			if ev != nil || attest.Code(err) == "" {
				t.Fatalf("evidence %v with error %v", ev, err)
			}
			return
		}
		if ev.Type != attest.Type(raw) {
			t.Fatalf("verified as %s, detected as %s", ev.Type, attest.Type(raw))
		}
		if ev.Claims["tkms-evidence-type"] != ev.Type || (ev.UVMSimulated && !ev.Simulated) {
			t.Fatalf("evidence of type %s claims type %v; simulated %v, UVM simulated %v", ev.Type, ev.Claims["tkms-evidence-type"], ev.Simulated, ev.UVMSimulated)
		}
		if _, err := attest.DecodeUnverified(raw); err != nil {
			t.Fatalf("verified evidence does not decode: %v", err)
		}
	})
}

// TestRealReportSimulatedEndorsement: the real ACI report (AMD-signed) with
// a UVM endorsement signed by the simulated UVM key is simulated evidence:
// refused unless the simulated TEE is trusted, and then marked simulated
// (not only UVMSimulated), so that its release is.
func TestRealReportSimulatedEndorsement(t *testing.T) {
	chain, cfg := simulated(t)
	var obj map[string]string
	if err := json.Unmarshal(read(t, aciSample), &obj); err != nil {
		t.Fatal(err)
	}
	aci, err := snp.DecodeACI(read(t, aciSample))
	if err != nil {
		t.Fatal(err)
	}
	var sim map[string]string
	json.Unmarshal(chain.bundle(t, simsnp.ACIBundleOptions{UVMMeasurement: aci.Report[0x90:0xC0]}), &sim)
	obj["uvm_endorsements"] = sim["uvm_endorsements"]
	mixed, _ := json.Marshal(obj)

	if _, err := newVerifier(t, cfg).Verify(context.Background(), mixed); attest.Code(err) != attest.CodeSimulatedNotTrusted {
		t.Fatalf("without trust in the simulated TEE: %v, want %s", err, attest.CodeSimulatedNotTrusted)
	}
	cfg.Simulated = true
	ev, err := newVerifier(t, cfg).Verify(context.Background(), mixed)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Simulated || !ev.UVMSimulated || ev.Claims["uvm_endorsements-feed"] != simsnp.UVMFeed {
		t.Fatalf("evidence: simulated %v, UVM simulated %v, feed %v", ev.Simulated, ev.UVMSimulated, ev.Claims["uvm_endorsements-feed"])
	}
	if ev, err := newVerifier(t, cfg).Verify(context.Background(), read(t, aciSample)); err != nil || ev.Simulated {
		t.Fatalf("the real evidence beside a trusted simulated TEE: %+v, %v", ev, err)
	}
}
