package attest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
)

func TestMAAThroughTheDoor(t *testing.T) {
	ctx := context.Background()
	sim, err := simmaa.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	weu := maa.Instance{Issuer: "https://sharedweu.weu.attest.azure.net", JWKS: read(t, "maa/testdata/maa-shared-rsa-keys.scrtlabs.jwks.json")}
	cfg := attest.Config{MAA: maa.Options{Instances: []maa.Instance{weu, sim.Trusted()}}}
	at := time.Date(2023, 3, 30, 12, 0, 0, 0, time.UTC)
	cfg.SNP.Now = func() time.Time { return at }
	v := newVerifier(t, cfg)
	t.Cleanup(v.Close)

	bare := read(t, "maa/testdata/sharedweu_L138.jwt")
	obj, _ := json.Marshal(api.MAA{Type: attest.TypeMAA, Token: string(bytes.TrimSpace(bare))})
	for _, raw := range [][]byte{bare, obj} {
		if attest.Type(raw) != attest.TypeMAA {
			t.Fatalf("type %q", attest.Type(raw))
		}
		ev, err := v.Verify(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Simulated || ev.Signer != weu.Issuer || len(ev.Measurement) != 48 || ev.ReportData != nil || ev.Claims["x-ms-isolation-tee.x-ms-compliance-status"] != "azure-compliant-cvm" {
			t.Fatalf("%+v", ev)
		}
	}
	at = time.Now()
	rd := bytes.Repeat([]byte{5}, 64)
	tok, err := sim.Token(simmaa.TokenOptions{ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, []byte(tok)); attest.Code(err) != attest.CodeSimulatedNotTrusted {
		t.Fatalf("simulated without Config.Simulated: %v", err)
	}
	cfg.Simulated = true
	vs := newVerifier(t, cfg)
	t.Cleanup(vs.Close)
	if ev, err := vs.Verify(ctx, []byte(tok)); err != nil || !ev.Simulated || !bytes.Equal(ev.ReportData, rd) {
		t.Fatalf("simulated: %+v %v", ev, err)
	}
	if f := vs.Trust().Formats[3]; f.Type != attest.TypeMAA || !f.Simulated || len(f.Roots) != 2 {
		t.Fatalf("trust %+v", f)
	}
	dbg, _ := sim.Token(simmaa.TokenOptions{ReportData: rd, Debug: true})
	if ev, err := vs.InspectUnpinned(ctx, []byte(dbg)); attest.Code(err) != maa.CodeDebug || ev == nil || ev.Claims == nil {
		t.Fatalf("debug: %v", err)
	}
	if _, err := newVerifier(t, attest.Config{}).Verify(ctx, bare); attest.Code(err) != maa.CodeNotConfigured {
		t.Fatalf("no instance: %v", err)
	}
	for _, raw := range []string{`{"type":"maa"}`, `{"type":"maa","token":1}`} {
		if _, err := vs.Verify(ctx, []byte(raw)); attest.Code(err) != maa.CodeTokenMalformed {
			t.Fatalf("%s: %v", raw, err)
		}
	}
}
