package devtee_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// verifySim verifies simulated evidence as a KMS that trusts chain does.
func verifySim(t *testing.T, chain *simsnp.Chain, attestation []byte) *attest.Evidence {
	t.Helper()
	cfg := attest.Config{Simulated: true}
	chain.Trust(&cfg)
	v, err := attest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := v.Verify(context.Background(), attestation)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Simulated || !ev.UVMSimulated {
		t.Errorf("simulated evidence not marked simulated: %+v", ev)
	}
	return ev
}

func TestAttester(t *testing.T) {
	dir := t.TempDir()
	if _, err := devtee.NewAttester(filepath.Join(dir, "typo"), devtee.AttesterOptions{}); err == nil || !strings.Contains(err.Error(), "tkms dev --data") {
		t.Fatalf("a directory without a chain: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "typo")); err == nil {
		t.Fatal("the refused directory was created")
	}
	a, err := devtee.NewAttester(dir, devtee.AttesterOptions{HostData: bytes.Repeat([]byte{7}, 32), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := simsnp.LoadOrCreate(dir) // the chain the attester created
	if err != nil {
		t.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "sim")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Simulated || ev.Type != client.EvidenceACI {
		t.Errorf("simulated %v type %q", ev.Simulated, ev.Type)
	}
	res := verifySim(t, chain, ev.Attestation)
	if !bytes.Equal(res.ReportData, rd[:]) || res.HostData[0] != 7 || res.Claims["x-ms-sevsnpvm-is-debuggable"] != false {
		t.Errorf("REPORT_DATA %x HOST_DATA %x claims %v", res.ReportData, res.HostData, res.Claims)
	}

	dbg, err := devtee.NewAttester(dir, devtee.AttesterOptions{Debug: true, Measurement: bytes.Repeat([]byte{1}, 48)})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = dbg.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := attest.DecodeUnverified(ev.Attestation)
	if b.Report[0x90] != 1 || b.Report[8+2]&0x08 == 0 {
		t.Errorf("measurement %x policy %x, want 0101... and DEBUG", b.Report[0x90:0x98], b.Report[8:16])
	}

	for _, o := range []devtee.AttesterOptions{{Measurement: make([]byte, 32)}, {HostData: make([]byte, 48)}} {
		if _, err := devtee.NewAttester(dir, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Attest(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// devDir makes a data directory as `tkms dev` leaves it: the issuer key
// and dev.json.
func devDir(t *testing.T) (dir string, iss *oidcissuer.Issuer) {
	dir = t.TempDir()
	iss, err := oidcissuer.New(dir, oidcissuer.Options{URL: "http://127.0.0.1:8000/dev/oidc"})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]string{"kms_url": "http://127.0.0.1:8000", "issuer_url": iss.URL(), "audience": "api://tkms-dev"})
	if err := os.WriteFile(filepath.Join(dir, "dev.json"), info, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, iss
}

func TestTokenSource(t *testing.T) {
	dir, iss := devDir(t)
	start := time.Now().Truncate(time.Second)
	var elapsed atomic.Int64 // the test clock: start + elapsed
	now := func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	ts, err := devtee.NewTokenSource(dir, devtee.TokenOptions{TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(iss.JWKS(), &jwks); err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := parsed.Claims(jwks, &claims); err != nil {
		t.Fatalf("token does not verify with the issuer's keys: %v", err)
	}
	want := map[string]any{"iss": iss.URL(), "aud": "api://tkms-dev", "sub": "tkms-dev-workload", "oid": "tkms-dev-workload", "idtyp": "app", "tid": "tkms-dev-tenant"}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if exp := int64(claims["exp"].(float64)); exp != now().Add(time.Hour).Unix() {
		t.Errorf("exp %d", exp)
	}
	if again, _ := ts.Token(context.Background()); again != tok {
		t.Error("not cached")
	}
	elapsed.Add(int64(55 * time.Minute))
	if again, _ := ts.Token(context.Background()); again == tok {
		t.Error("not refreshed 5 minutes before expiry")
	}

	other, err := devtee.NewTokenSource(dir, devtee.TokenOptions{Subject: "svc", Audience: "api://other"})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ = other.Token(context.Background())
	parsed, _ = jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	claims = nil
	parsed.UnsafeClaimsWithoutVerification(&claims)
	if claims["sub"] != "svc" || claims["aud"] != "api://other" {
		t.Errorf("claims %v", claims)
	}
}

func TestTokenSourceErrors(t *testing.T) {
	empty := t.TempDir()
	if _, err := devtee.NewTokenSource(empty, devtee.TokenOptions{}); err == nil || !strings.Contains(err.Error(), "tkms dev --data") {
		t.Errorf("no dev.json: %v", err)
	}
	os.WriteFile(filepath.Join(empty, "dev.json"), []byte(`{"issuer_url":"http://127.0.0.1:1/dev/oidc"}`), 0o600)
	if _, err := devtee.NewTokenSource(empty, devtee.TokenOptions{}); err == nil || !strings.Contains(err.Error(), "issuer key") {
		t.Errorf("no key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, oidcissuer.KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("created an issuer key nobody trusts")
	}
	os.WriteFile(filepath.Join(empty, "dev.json"), []byte(`{"kms_url":"x"}`), 0o600)
	if _, err := devtee.NewTokenSource(empty, devtee.TokenOptions{}); err == nil || !strings.Contains(err.Error(), "no issuer_url") {
		t.Errorf("no issuer_url: %v", err)
	}
	dir, _ := devDir(t)
	if _, err := devtee.NewTokenSource(dir, devtee.TokenOptions{TTL: -time.Second}); err == nil {
		t.Error("negative TTL accepted")
	}
}

func TestReadDevInfo(t *testing.T) {
	dir, iss := devDir(t)
	info, err := devtee.ReadDevInfo(dir)
	if err != nil || info.KMSURL != "http://127.0.0.1:8000" || info.IssuerURL != iss.URL() || info.Audience != "api://tkms-dev" {
		t.Fatalf("ReadDevInfo = %+v, %v", info, err)
	}
	if _, err := devtee.ReadDevInfo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "tkms dev --data") {
		t.Fatalf("no dev.json: %v", err)
	}
}
