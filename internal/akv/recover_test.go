package akv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/akv/akvsim"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

// fixture is a simulated TEE (simsnp's fixed chain, so that no RSA-4096
// key is made) and the simulated Azure side.
type fixture struct {
	chain *simsnp.Chain
	bed   *akvsim.Bed
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	chain, v, err := simsnp.FixtureVerifier()
	if err != nil {
		t.Fatal(err)
	}
	bed, err := akvsim.Start(context.Background(), dir, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	return &fixture{chain: chain, bed: bed}
}

var hostData = bytes.Repeat([]byte{0x7c}, 32)

// approved is the release policy of the tests: the simulated MAA instance,
// an ACI container of host data hostData, not debuggable.
func approved() []byte {
	return akvsim.Policy(simmaa.Issuer, map[string]any{
		"x-ms-attestation-type":       "sevsnpvm",
		"x-ms-compliance-status":      "azure-compliant-uvm",
		"x-ms-sevsnpvm-hostdata":      hex.EncodeToString(hostData),
		"x-ms-sevsnpvm-is-debuggable": false,
	})
}

// simTEE attests with the fixture's simulated chain.
type simTEE struct {
	chain    *simsnp.Chain
	hostData []byte
}

func (s simTEE) Attest(ctx context.Context, rd [64]byte) (*client.Evidence, error) {
	b, err := s.chain.ACIBundle(simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{ReportData: rd[:], HostData: s.hostData}})
	if err != nil {
		return nil, err
	}
	return &client.Evidence{Type: client.EvidenceACI, Attestation: b, Simulated: true}, nil
}

func (f *fixture) attester(t *testing.T, hd []byte) client.Attester {
	return simTEE{chain: f.chain, hostData: hd}
}

// TestRecover: the whole automatic recovery against the stand-ins: a node
// of the approved host data gets the recovery key; one of other host data,
// a vault key under another policy, a sealed key for another vault key,
// an untrusted vault certificate and a caller without a token get nothing,
// each with its own code.
func TestRecover(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	m, err := f.bed.CreateMember(ctx, "tkms-recovery", approved())
	if err != nil {
		t.Fatal(err)
	}
	recoveryKey := make([]byte, 32)
	rand.Read(recoveryKey)
	sealed, err := akv.Seal(m.PublicKey, recoveryKey)
	if err != nil {
		t.Fatal(err)
	}

	got, rec, err := akv.Recover(ctx, m, sealed, f.bed.RecoverOptions(f.attester(t, hostData)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, recoveryKey) {
		t.Fatal("the released recovery key is not the sealed one")
	}
	if rec.KID != m.KID() || rec.ReleasePolicySHA256 != m.ReleasePolicySHA256 || rec.MAAInstance != simmaa.Issuer ||
		len(rec.EvidenceSHA256) != 64 || len(rec.TokenSHA256) != 64 || len(rec.ReleaseSHA256) != 64 ||
		!strings.Contains(rec.Signer, "SIMULATED KEY VAULT") || rec.Enc != akv.EncRSAAESKeyWrap {
		t.Fatalf("record %+v", rec)
	}

	t.Run("as a recovery key holder", func(t *testing.T) {
		h := akv.NewHolder(m, f.bed.RecoverOptions(f.attester(t, hostData)))
		if h.Name() != m.KID() || h.Last() != nil {
			t.Fatalf("%s %v", h.Name(), h.Last())
		}
		w, err := h.Wrap(recoveryKey)
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.Unwrap(ctx, w)
		if err != nil || !bytes.Equal(got, recoveryKey) || h.Last() == nil || h.Last().KID != m.KID() {
			t.Fatalf("%v, record %+v", err, h.Last())
		}
	})
	t.Run("RSA_AES_KEY_WRAP_256", func(t *testing.T) {
		o := f.bed.RecoverOptions(f.attester(t, hostData))
		o.Enc = akv.EncRSAAESKeyWrap256
		if got, _, err := akv.Recover(ctx, m, sealed, o); err != nil || !bytes.Equal(got, recoveryKey) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("other host data: the vault's policy refuses", func(t *testing.T) {
		_, _, err := akv.Recover(ctx, m, sealed, f.bed.RecoverOptions(f.attester(t, bytes.Repeat([]byte{1}, 32))))
		if akv.Code(err) != akv.CodeVault || !strings.Contains(err.Error(), "403 AccessDenied") || !strings.Contains(err.Error(), "x-ms-sevsnpvm-hostdata") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("a key under another policy than approved", func(t *testing.T) {
		other, err := f.bed.CreateMember(ctx, "loose", akvsim.Policy(simmaa.Issuer, map[string]any{"x-ms-attestation-type": "sevsnpvm"}))
		if err != nil {
			t.Fatal(err)
		}
		other.ReleasePolicySHA256 = m.ReleasePolicySHA256 // the consortium approved the strict policy
		s, _ := akv.Seal(other.PublicKey, recoveryKey)
		if _, _, err := akv.Recover(ctx, other, s, f.bed.RecoverOptions(f.attester(t, hostData))); akv.Code(err) != akv.CodeMismatch || !strings.Contains(err.Error(), "release policy") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("sealed to another vault key", func(t *testing.T) {
		other, err := f.bed.CreateMember(ctx, "other", approved())
		if err != nil {
			t.Fatal(err)
		}
		s, _ := akv.Seal(other.PublicKey, recoveryKey)
		if _, _, err := akv.Recover(ctx, m, s, f.bed.RecoverOptions(f.attester(t, hostData))); akv.Code(err) != akv.CodeSealed {
			t.Fatalf("%v", err)
		}
	})
	t.Run("untrusted vault certificate", func(t *testing.T) {
		o := f.bed.RecoverOptions(f.attester(t, hostData))
		o.Roots = x509.NewCertPool()
		if _, _, err := akv.Recover(ctx, m, sealed, o); akv.Code(err) != akv.CodeSigner {
			t.Fatalf("%v", err)
		}
	})
	t.Run("no bearer token", func(t *testing.T) {
		o := f.bed.RecoverOptions(f.attester(t, hostData))
		o.Token = nil
		if _, _, err := akv.Recover(ctx, m, sealed, o); akv.Code(err) != akv.CodeVault || !strings.Contains(err.Error(), "401") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("MAA unreachable", func(t *testing.T) {
		o := f.bed.RecoverOptions(f.attester(t, hostData))
		o.MAAURL = "http://127.0.0.1:1"
		if _, _, err := akv.Recover(ctx, m, sealed, o); akv.Code(err) != akv.CodeMAA {
			t.Fatalf("%v", err)
		}
	})
	t.Run("GET key of an unknown key", func(t *testing.T) {
		c := &akv.Client{VaultURL: f.bed.VaultURL, Token: f.bed.Token, HTTPClient: http.DefaultClient}
		if _, err := c.GetKey(ctx, "nope", "0"); akv.Code(err) != akv.CodeVault || !strings.Contains(err.Error(), "KeyNotFound") {
			t.Fatalf("%v", err)
		}
	})
}
