package release

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simazcvm"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// readFile returns the contents of a test vector.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withAttest makes e's release service verify evidence with cfg.
func (e *env) withAttest(cfg attest.Config) {
	e.t.Helper()
	av, err := attest.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(av.Close)
	if e.rel, err = New(Config{KMS: e.kms, Auth: releasetest.Auth(e.t, e.issuer, audience), Attest: av, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		e.t.Fatal(err)
	}
}

// TestEveryFormatBindsTheWrappingKey: under a policy admitting every
// format other than ACI, simulated evidence of each releases the key when
// it binds the request's wrapping key (a TD quote's REPORT_DATA, an Azure
// CVM's TPM quote nonce, an MAA token's tkms-report-data) and is refused
// with WRAPPING_KEY_HASH_MISMATCH when it binds another; real evidence of
// each format, which verifies but binds no key of this test, is refused
// the same way.
func TestEveryFormatBindsTheWrappingKey(t *testing.T) {
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"tkms-evidence-type": []string{attest.TypeTDX, attest.TypeAzSNP, attest.TypeAzTDX, attest.TypeMAA},
	}})
	e := newEnv(t, pol)
	bind := wrap.AppBindingHash(e.pubPEM)
	ours := append(bind[:], make([]byte, 32)...)
	theirs := append(make([]byte, 32), ours[:32]...)

	tdxChain, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tdxCfg := attest.Config{TDX: tdx.Options{Roots: []*x509.Certificate{tdxChain.Root()}}, Simulated: true}
	snpChain, err := simsnp.Fixture()
	if err != nil {
		t.Fatal(err)
	}
	snpAt := snpChain.VCEK().NotBefore.Add(24 * time.Hour)
	snpCfg := attest.Config{Simulated: true, SNP: snp.Options{Now: func() time.Time { return snpAt }}}
	snpChain.Trust(&snpCfg)
	sim, err := simmaa.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	maaCfg := attest.Config{MAA: maa.Options{Instances: []maa.Instance{sim.Trusted()}}, Simulated: true}
	at := func(s string) attest.Config {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return attest.Config{SNP: snp.Options{Now: func() time.Time { return tm }}}
	}
	file := func(path string) []byte { return readFile(t, path) }
	realMAA := at("2023-03-30T12:00:00Z")
	realMAA.MAA.Instances = []maa.Instance{{Issuer: "https://sharedweu.weu.attest.azure.net", JWKS: file("../attest/maa/testdata/maa-shared-rsa-keys.scrtlabs.jwks.json")}}

	for _, f := range []struct {
		typ  string
		cfg  attest.Config
		make func(rd []byte) ([]byte, error)
	}{
		{attest.TypeTDX, tdxCfg, func(rd []byte) ([]byte, error) {
			q, err := tdxChain.Quote(simtdx.QuoteOptions{ReportData: rd})
			if err != nil {
				return nil, err
			}
			return json.Marshal(api.TDX{Type: attest.TypeTDX, Quote: q})
		}},
		{attest.TypeAzTDX, tdxCfg, func(rd []byte) ([]byte, error) {
			return simazcvm.Evidence(simazcvm.Options{TDX: true, Nonce: rd, Report: func(hw []byte) ([]byte, error) {
				return tdxChain.Quote(simtdx.QuoteOptions{ReportData: hw})
			}})
		}},
		{attest.TypeAzSNP, snpCfg, func(rd []byte) ([]byte, error) {
			return simazcvm.Evidence(simazcvm.Options{VCEK: snpChain.VCEK().Raw, Nonce: rd, Report: func(hw []byte) ([]byte, error) {
				return snpChain.Report(simsnp.ReportOptions{ReportData: hw})
			}})
		}},
		{attest.TypeMAA, maaCfg, func(rd []byte) ([]byte, error) {
			tok, err := sim.Token(simmaa.TokenOptions{ReportData: rd})
			if err != nil {
				return nil, err
			}
			return json.Marshal(api.MAA{Type: attest.TypeMAA, Token: tok})
		}},
	} {
		e.withAttest(f.cfg)
		for i, rd := range [][]byte{ours, theirs} {
			att, err := f.make(rd)
			if err != nil {
				t.Fatal(err)
			}
			if got := attest.Type(att); got != f.typ {
				t.Fatalf("simulated %s evidence is told apart as %s", f.typ, got)
			}
			resp, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(func(b map[string]any) { b["attestation"] = json.RawMessage(att) }), "jwk")
			if i == 1 {
				var re *Error
				if !errors.As(err, &re) || re.Code != CodeWrappingKeyMismatch || re.Kind != KindRefused {
					t.Fatalf("simulated %s bound to another key: %v, want %s", f.typ, err, CodeWrappingKeyMismatch)
				}
				continue
			}
			if err != nil {
				t.Fatalf("simulated %s bound to the wrapping key: %v", f.typ, err)
			}
			var item keys.Item
			if err := json.Unmarshal(e.unwrap(resp.Wrapped), &item); err != nil || item.Kid != e.kid() {
				t.Fatalf("simulated %s: the released key %v", f.typ, err)
			}
		}
	}

	for _, r := range []struct {
		name string
		cfg  attest.Config
		att  []byte
	}{
		{"Azure's TD quote", at("2025-01-01T00:00:00Z"), func() []byte {
			b, _ := json.Marshal(api.TDX{Type: attest.TypeTDX, Quote: file("../attest/tdx/testdata/az_td_quote.bin")})
			return b
		}()},
		{"Azure CVM SEV-SNP evidence (nonce \"challenge\")", at("2025-06-01T00:00:00Z"), file("../attest/azcvm/testdata/snp_evidence-v1.json")},
		{"Azure CVM TDX evidence (nonce \"challenge\")", at("2025-01-01T00:00:00Z"), file("../attest/azcvm/testdata/tdx_evidence-v1.json")},
		{"an MAA token without tkms-report-data", realMAA, func() []byte {
			b, _ := json.Marshal(api.MAA{Type: attest.TypeMAA, Token: strings.TrimSpace(string(file("../attest/maa/testdata/sharedweu_L138.jwt")))})
			return b
		}()},
	} {
		e.withAttest(r.cfg)
		if _, err := e.rel.VerifyEvidence(context.Background(), r.att); err != nil {
			t.Fatalf("%s does not verify: %v", r.name, err)
		}
		_, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(func(b map[string]any) { b["attestation"] = json.RawMessage(r.att) }), "")
		var re *Error
		if !errors.As(err, &re) || re.Code != CodeWrappingKeyMismatch {
			t.Fatalf("%s: %v, want %s", r.name, err, CodeWrappingKeyMismatch)
		}
	}
}
