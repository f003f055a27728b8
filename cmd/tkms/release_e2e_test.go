package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/seal"
)

// TestServeReleasesToRealEvidence: `tkms serve` configured as an SRO would
// (a trusted issuer with a static JWKS for air-gapped operation, the DEPA
// release policy naming the service's host_data) releases a key to the real
// ACI evidence; the test unwraps it with the sample's RSA-4096 key, checks
// it against the published key, and then that `keys list --data` sees the
// release recorded in the ledger after the server stops.
func TestServeReleasesToRealEvidence(t *testing.T) {
	cfgPath, data, iss := sroConfig(t, map[string]any{
		"key_release_policy": map[string]any{"claims": map[string]any{
			"x-ms-ver": []string{"2", "3"}, "x-ms-sevsnpvm-smt-allowed": true, "x-ms-sevsnpvm-is-debuggable": false,
			"x-ms-sevsnpvm-hostdata": []string{"73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"},
		}},
	})
	const aud = sroAudience
	p := startServe(t, cfgPath)
	if resp, b := do(t, "GET", p.URL+"/v1/attestation", nil); resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"simulated_tee_trusted":false`)) {
		t.Fatalf("/v1/attestation of serve: %d %s", resp.StatusCode, b)
	}

	evidence := readFile(t, "../../internal/attest/snp/testdata/aci_snp.json")
	pubPEM := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	keyList := allKeys(t, p.URL)
	body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(pubPEM), "wrappedKid": keyList[0].Kid})
	tok, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: aud, PrincipalID: "svc-1", TenantID: "tenant-1"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/app/unwrapKey?fmt=jwk", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("unwrapKey: %d %s", resp.StatusCode, out)
	}
	var ur struct{ Wrapped string }
	json.Unmarshal(out, &ur)
	ct, _ := base64.StdEncoding.DecodeString(ur.Wrapped)
	blk, _ := pem.Decode(readFile(t, "../../internal/wrap/testdata/privateWrapKey.pem"))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, k.(*rsa.PrivateKey), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	var item keys.Item
	json.Unmarshal(pt, &item)
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), keyList[0].PublicKey) {
		t.Fatal("released key does not match the published public key")
	}
	// The private key appears nowhere in the server's output.
	for _, enc := range []string{item.D, base64.StdEncoding.EncodeToString(d)} {
		if bytes.Contains([]byte(p.stderr.String()+p.stdout.String()), []byte(enc)) {
			t.Fatal("private key in the server's logs")
		}
	}
	p.stopClean(syscall.SIGTERM)

	raw, err := os.ReadFile(filepath.Join(data, "ledger.db"))
	if err != nil || !bytes.Contains(raw, []byte(`"api":"app/unwrapKey"`)) || !bytes.Contains(raw, []byte(`"oid":"svc-1"`)) {
		t.Fatalf("the release is not in the ledger (%v)", err)
	}
}

// sroAudience is the audience of sroConfig's issuer.
const sroAudience = "api://sro-kms"

// sroConfig configures `tkms serve` as an SRO would: a data directory with
// its master key, and an Entra ID-shaped issuer trusted through a static
// JWKS (air-gapped) whose tokens of tenant-1 apps are accepted. extra adds
// or replaces configuration fields. It returns the configuration file, the
// data directory and the issuer.
func sroConfig(t *testing.T, extra map[string]any) (cfgPath, data string, iss *oidcissuer.Issuer) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	if _, err := seal.CreateFile(filepath.Join(data, "master.key")); err != nil {
		t.Fatal(err)
	}
	iss, err := oidcissuer.New(filepath.Join(dir, "idp"), oidcissuer.Options{URL: "https://login.microsoftonline.com/tenant-1/v2.0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"listen": "127.0.0.1:0", "data_dir": data,
		"jwt_issuers":           []map[string]any{{"issuer": iss.URL(), "audiences": []string{sroAudience}, "jwks": json.RawMessage(iss.JWKS())}},
		"jwt_validation_policy": map[string]any{iss.URL(): map[string]any{"idtyp": "app", "tid": "tenant-1"}},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	cfgPath = filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, cfg)
	return cfgPath, data, iss
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeMarksSimulatedUVMEndorsement: with the simulated TEE trusted, the
// real ACI report (AMD-signed) with a UVM endorsement signed by the
// simulated UVM key is released, and the release is marked simulated in
// the ledger, in the log line and in the audit: part of its evidence is
// simulated.
func TestServeMarksSimulatedUVMEndorsement(t *testing.T) {
	cfgPath, data, iss := sroConfig(t, map[string]any{
		"insecure_simulated_tee": true,
		"key_release_policy": map[string]any{"claims": map[string]any{
			"x-ms-sevsnpvm-hostdata": []string{"73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"},
		}},
	})
	const aud = sroAudience
	chain, err := simsnp.LoadOrCreate(data) // the chain serve trusts
	if err != nil {
		t.Fatal(err)
	}

	// The real ACI object, its UVM endorsement replaced by a simulated one
	// of the real report's MEASUREMENT.
	var evidence map[string]string
	if err := json.Unmarshal(readFile(t, "../../internal/attest/snp/testdata/aci_snp.json"), &evidence); err != nil {
		t.Fatal(err)
	}
	report, _ := base64.StdEncoding.DecodeString(evidence["evidence"])
	simBundle, err := chain.ACIBundle(simsnp.ACIBundleOptions{UVMMeasurement: report[0x90:0xC0]})
	if err != nil {
		t.Fatal(err)
	}
	var sim map[string]string
	json.Unmarshal(simBundle, &sim)
	evidence["uvm_endorsements"] = sim["uvm_endorsements"]
	mixed, _ := json.Marshal(evidence)

	p := startServe(t, cfgPath)
	pubPEM := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(mixed), "wrappingKey": string(pubPEM), "wrappedKid": allKeys(t, p.URL)[0].Kid})
	tok, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: aud, PrincipalID: "svc-1", TenantID: "tenant-1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, out := doBody(t, http.MethodPost, p.URL+"/app/unwrapKey?fmt=jwk", http.Header{"Authorization": {"Bearer " + tok}}, body)
	if resp.StatusCode != 200 {
		t.Fatalf("unwrapKey: %d %s", resp.StatusCode, out)
	}
	released := p.waitOutput(p.stderr, regexp.MustCompile(`.*"msg":"key released".*`))
	if len(released) == 0 || !strings.Contains(released[0], `"simulated":true`) {
		t.Errorf("the log line of the release does not say simulated: %q", released)
	}
	stdout, _ := runAudit(t, 0, "--kms", p.URL, "--log-key", logKeyArg(t, p.URL))
	wantInOutput(t, "audit report", stdout, "releases: 1 (1 on simulated evidence)")
	p.stopClean(syscall.SIGTERM)
	if raw, err := os.ReadFile(filepath.Join(data, "ledger.db")); err != nil || !bytes.Contains(raw, []byte(`"evidence_type":"snp-aci","simulated":true`)) {
		t.Errorf("the ledger does not record the release as simulated (%v)", err)
	}
}
