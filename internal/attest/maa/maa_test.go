package maa_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

const sharedWEU = "https://sharedweu.weu.attest.azure.net"

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func at(s string) func() time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return func() time.Time { return tm }
}

func newVerifier(t testing.TB, now func() time.Time, instances ...maa.Instance) *maa.Verifier {
	t.Helper()
	v, err := maa.New(context.Background(), maa.Options{Instances: instances, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func weu(t testing.TB) maa.Instance {
	return maa.Instance{Issuer: sharedWEU, JWKS: read(t, "maa-shared-rsa-keys.scrtlabs.jwks.json")}
}

// TestRealToken: the sharedweu token verifies inside its validity with the
// instance's keys, and its claims are offered flattened.
func TestRealToken(t *testing.T) {
	v := newVerifier(t, at("2023-03-30T12:00:00Z"), weu(t))
	res, err := v.Verify(context.Background(), string(read(t, "sharedweu_L138.jwt")))
	if err != nil {
		t.Fatal(err)
	}
	c := res.Claims
	for k, want := range map[string]any{
		"x-ms-attestation-type":                                        "azurevm",
		"x-ms-isolation-tee.x-ms-attestation-type":                     "sevsnpvm",
		"x-ms-isolation-tee.x-ms-compliance-status":                    "azure-compliant-cvm",
		"x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable":               false,
		"x-ms-runtime.client-payload.nonce":                            "QURFMDEwMQ==",
		"x-ms-isolation-tee.x-ms-runtime.vm-configuration.secure-boot": true,
		"x-ms-policy-hash":                                             "wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs",
	} {
		if c[k] != want {
			t.Errorf("%s = %v, want %v", k, c[k], want)
		}
	}
	if n, ok := c["x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn"].(json.Number); !ok || n != "4" {
		t.Errorf("guestsvn %v", c["x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn"])
	}
	if res.Issuer != sharedWEU || res.Simulated || res.ReportData != nil || len(res.Measurement) != 48 || len(res.HostData) != 32 {
		t.Fatalf("%+v", res)
	}
}

func simInstance(t testing.TB) *simmaa.Instance {
	i, err := simmaa.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestSimulated(t *testing.T) {
	sim := simInstance(t)
	rd := bytes.Repeat([]byte{9}, 64)
	tok, err := sim.Token(simmaa.TokenOptions{ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	res, err := newVerifier(t, nil, sim.Trusted()).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Simulated || !bytes.Equal(res.ReportData, rd) || res.Claims["x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement"] != simmaa.DefaultMeasurement {
		t.Fatalf("%+v", res)
	}
}

// TestNegatives: each refusal has its exact code.
func TestNegatives(t *testing.T) {
	ctx := context.Background()
	real := strings.TrimSpace(string(read(t, "sharedweu_L138.jwt")))
	parts := strings.Split(real, ".")
	sim := simInstance(t)
	other := simInstance(t) // the same issuer, another key
	rd := bytes.Repeat([]byte{1}, 64)
	simTok := func(o simmaa.TokenOptions) string {
		if o.ReportData == nil {
			o.ReportData = rd
		}
		s, err := sim.Token(o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherTok, _ := other.Token(simmaa.TokenOptions{ReportData: rd})
	reencode := func(seg int, f func(map[string]any)) string {
		b, _ := base64.RawURLEncoding.DecodeString(parts[seg])
		var m map[string]any
		json.Unmarshal(b, &m)
		f(m)
		nb, _ := json.Marshal(m)
		p := append([]string(nil), parts...)
		p[seg] = base64.RawURLEncoding.EncodeToString(nb)
		return strings.Join(p, ".")
	}
	inWindow := at("2023-03-30T12:00:00Z")
	// An instance minting tokens of any claims (a real issuer, static keys).
	custom, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: "https://custom.tkms.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	customIn := []maa.Instance{{Issuer: "https://custom.tkms.invalid", JWKS: custom.JWKS()}}
	mint := func(reportData string, isolation map[string]any) string {
		now := time.Now()
		tok, err := custom.Mint(map[string]any{
			"iss": "https://custom.tkms.invalid", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"x-ms-attestation-type": "azurevm", "x-ms-isolation-tee": isolation,
			"x-ms-runtime": map[string]any{"client-payload": map[string]any{"tkms-report-data": reportData}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	snpTEE := map[string]any{"x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false}
	rd64 := base64.StdEncoding.EncodeToString(rd)
	if _, err := newVerifier(t, nil, customIn...).Verify(ctx, mint(rd64, snpTEE)); err != nil {
		t.Fatalf("the custom instance's token: %v", err)
	}
	cases := []struct {
		name, token string
		now         func() time.Time
		instances   []maa.Instance
		code        string
	}{
		{"no instance", real, inWindow, nil, maa.CodeNotConfigured},
		{"empty", "", inWindow, []maa.Instance{weu(t)}, maa.CodeTokenMalformed},
		{"not a JWT", "hello", inWindow, []maa.Instance{weu(t)}, maa.CodeTokenMalformed},
		{"two segments", parts[0] + "." + parts[1], inWindow, []maa.Instance{weu(t)}, maa.CodeTokenMalformed},
		{"truncated signature", real[:len(real)-10], inWindow, []maa.Instance{weu(t)}, maa.CodeSignatureInvalid},
		{"claims changed", reencode(1, func(m map[string]any) { m["x-ms-attestation-type"] = "sevsnpvm" }), inWindow, []maa.Instance{weu(t)}, maa.CodeSignatureInvalid},
		{"alg none", reencode(0, func(m map[string]any) { m["alg"] = "none" }), inWindow, []maa.Instance{weu(t)}, maa.CodeTokenMalformed},
		{"alg HS256", reencode(0, func(m map[string]any) { m["alg"] = "HS256" }), inWindow, []maa.Instance{weu(t)}, maa.CodeTokenMalformed},
		{"kid of another key", reencode(0, func(m map[string]any) { m["kid"] = "J0pAPdfXXHqWWimgrH853wMIdh5/fLe1z6uSXYPXCa0=" }), inWindow, []maa.Instance{weu(t)}, maa.CodeSignatureInvalid},
		{"unknown kid", reencode(0, func(m map[string]any) { m["kid"] = "nope" }), inWindow, []maa.Instance{weu(t)}, maa.CodeUnknownKID},
		{"another instance's token", strings.TrimSpace(string(read(t, "sharedeus2_L643.jwt"))), at("2022-06-01T00:00:00Z"), []maa.Instance{weu(t)}, maa.CodeIssuerUntrusted},
		{"key set of another instance", real, inWindow, []maa.Instance{{Issuer: sharedWEU, JWKS: other.Trusted().JWKS}}, maa.CodeUnknownKID},
		{"expired", real, at("2023-03-31T00:00:00Z"), []maa.Instance{weu(t)}, maa.CodeTokenExpired},
		{"not yet valid", real, at("2023-03-30T10:00:00Z"), []maa.Instance{weu(t)}, maa.CodeTokenNotYetValid},
		{"simulated, untrusted", simTok(simmaa.TokenOptions{}), nil, []maa.Instance{weu(t)}, maa.CodeIssuerUntrusted},
		{"simulated by another key", otherTok, nil, []maa.Instance{sim.Trusted()}, maa.CodeUnknownKID},
		{"simulated debug", simTok(simmaa.TokenOptions{Debug: true}), nil, []maa.Instance{sim.Trusted()}, maa.CodeDebug},
		{"simulated expired", simTok(simmaa.TokenOptions{IssuedAt: time.Now().Add(-9 * time.Hour)}), nil, []maa.Instance{sim.Trusted()}, maa.CodeTokenExpired},
		{"binding not base64", mint("not base64!", snpTEE), nil, customIn, maa.CodeReportDataInvalid},
		{"binding of 32 bytes", mint(base64.StdEncoding.EncodeToString(rd[:32]), snpTEE), nil, customIn, maa.CodeReportDataInvalid},
		{"binding in base64url", mint(base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 64)), snpTEE), nil, customIn, maa.CodeReportDataInvalid},
		{"debuggable TDX isolation", mint(rd64, map[string]any{"x-ms-attestation-type": "tdxvm", "tdx_td_attributes_debug": true}), nil, customIn, maa.CodeDebug},
		{"the custom instance's token, another instance trusted", mint(rd64, snpTEE), nil, []maa.Instance{sim.Trusted()}, maa.CodeIssuerUntrusted},
	}
	if len(cases) < 15 {
		t.Fatalf("%d negatives, want at least 15", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newVerifier(t, tc.now, tc.instances...).Verify(ctx, tc.token)
			if got := maa.Code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if err != nil && strings.Contains(err.Error(), parts[2][:20]) {
				t.Fatal("the error quotes the token")
			}
		})
	}
}
