package main

// The deployed DEPA KMS's operators against the real tkms binary: a
// service made by tkms init with a CCF member (registered by its
// certificate) and the peer's two-field rotation policy, run by tkms serve
// over TLS with a readers setting; the member's certificate and a reader's
// identify them at GET /app/auth; the member's CCF-signed proposal is
// accepted at POST /app/proposals; the operators' refresh cron is told
// what to do instead.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	hpkepb "github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/veraison/go-cose"
	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/internal/gov"
)

// ccfIdentity is a key and its self-signed certificate, as CCF's
// keygenerator.sh makes a member's or a user's (ECDSA P-384).
type ccfIdentity struct {
	key  *ecdsa.PrivateKey
	der  []byte
	file string // the certificate, PEM
}

func newCCFIdentity(t *testing.T, dir, name string) ccfIdentity {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name+"_cert.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ccfIdentity{key: k, der: der, file: f}
}

// signProposal signs payload as CCF's ccf_cose_sign1 does.
func (c ccfIdentity) signProposal(t *testing.T, payload string) []byte {
	t.Helper()
	s, err := cose.NewSigner(cose.AlgorithmES384, c.key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.der)
	raw, err := cose.Sign1(rand.Reader, s, cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: cose.AlgorithmES384,
		cose.HeaderLabelKeyID:     []byte(hex.EncodeToString(sum[:])),
		"ccf.gov.msg.type":        "proposal",
		"ccf.gov.msg.created_at":  time.Now().Unix(),
	}, Unprotected: cose.UnprotectedHeader{}}, []byte(payload), nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestServeCCFMembersAndReaders(t *testing.T) {
	f := newTLSFixture(t)
	dir := t.TempDir()
	member := newCCFIdentity(t, dir, "member0")
	reader := newCCFIdentity(t, dir, "user0")
	stranger := newCCFIdentity(t, dir, "stranger")

	memberPEM, _ := os.ReadFile(member.file)
	membersFile := filepath.Join(dir, "members.json")
	writeJSONFile(t, membersFile, map[string]any{"members": []map[string]any{{"name": "member0", "signing_key": string(memberPEM)}}})
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	// The peer's rotation policy file: no publish delay, no suite.
	if err := os.WriteFile(filepath.Join(policies, "key_rotation_policy.json"), []byte(`{"rotation_interval_seconds": 2678400, "grace_period_seconds": 604800}`), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	govCLI(t, "init", "--members", membersFile, "--policies", policies, "--data", data, "--service-name", "depa-kms")

	// readers need TLS
	plainCfg := filepath.Join(dir, "plain.json")
	writeJSONFile(t, plainCfg, map[string]any{"listen": "127.0.0.1:0", "data_dir": data, "readers": []string{reader.file}})
	if _, errOut, code := runTkms(t, "serve", "--config", plainCfg); code == 0 || !strings.Contains(errOut, "readers: client certificates need TLS") {
		t.Fatalf("serve with readers and no TLS: exit %d, %s", code, errOut)
	}

	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"listen": "127.0.0.1:0", "data_dir": data,
		"tls_cert_file": f.certFile, "tls_key_file": f.keyFile, "readers": []string{reader.file}})
	p := startServe(t, cfg)
	base := "https://" + strings.TrimPrefix(p.URL, "http://")
	client := func(id *ccfIdentity) *http.Client {
		tc := &tls.Config{RootCAs: f.roots}
		if id != nil {
			tc.Certificates = []tls.Certificate{{Certificate: [][]byte{id.der}, PrivateKey: id.key}}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 20 * time.Second}
	}
	call := func(id *ccfIdentity, method, path, ctype string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(string(body)))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := client(id).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	// GET /app/auth as the peer's auth.sh --auth member_cert / user_cert.
	for _, tc := range []struct {
		id     *ccfIdentity
		policy string
	}{{&member, "member_cert"}, {&reader, "user_cert"}} {
		resp, body := call(tc.id, http.MethodGet, "/app/auth", "application/json", nil)
		var a struct{ Auth struct{ Policy, ID string } }
		sum := sha256.Sum256(tc.id.der)
		if json.Unmarshal(body, &a) != nil || resp.StatusCode != 200 || a.Auth.Policy != tc.policy || a.Auth.ID != hex.EncodeToString(sum[:]) {
			t.Fatalf("GET /app/auth as %s: %s: %s", tc.policy, resp.Status, body)
		}
		if resp, body := call(tc.id, http.MethodGet, "/app/keyReleasePolicy", "", nil); resp.StatusCode != 404 || !json.Valid(body) {
			t.Fatalf("GET /app/keyReleasePolicy as %s: %s: %s", tc.policy, resp.Status, body)
		}
	}
	if resp, body := call(&stranger, http.MethodGet, "/app/auth", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /app/auth with an unknown certificate: %s: %s", resp.Status, body)
	}

	// The peer's rotation policy file was read with the grace period as
	// its publish delay.
	_, body := call(nil, http.MethodGet, "/app/keyRotationPolicy", "", nil)
	if !strings.Contains(string(body), `"publish_delay_seconds":604800`) || !strings.Contains(string(body), `"suite":"x25519"`) {
		t.Fatalf("GET /app/keyRotationPolicy: %s", body)
	}

	// The member's proposal, signed as CCF signs, from the peer's template.
	settings := `{"actions":[{"name":"set_settings_policy","args":{"settings_policy":{"service":{"name":"azure-privacy-sandbox-kms","description":"Key Management Service","version":"1.0.0","debug":false}}}}]}`
	resp, body := call(nil, http.MethodPost, "/app/proposals", "application/cose", member.signProposal(t, settings))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"state":"accepted"`) {
		t.Fatalf("POST /app/proposals: %s: %s", resp.Status, body)
	}
	if _, body := call(nil, http.MethodGet, "/app/settingsPolicy", "", nil); !strings.Contains(string(body), `"name":"azure-privacy-sandbox-kms"`) {
		t.Fatalf("settings after the proposal: %s", body)
	}
	// The peer's proposal file as it is, through tkms gov propose --compat,
	// signed with the member's key.
	der, _ := x509.MarshalPKCS8PrivateKey(member.key)
	keyFile := filepath.Join(dir, "member0_privk.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	rotation := filepath.Join(dir, "key-rotation-policy.json")
	if err := os.WriteFile(rotation, []byte(`{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":86400,"grace_period_seconds":3600}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := govCLI(t, "gov", "propose", "--kms", base, "--kms-ca", f.caFile, "--key", keyFile, "--compat", rotation)
	if !strings.Contains(out, "accepted") {
		t.Fatalf("tkms gov propose --compat: %s", out)
	}
	if _, body := call(nil, http.MethodGet, "/app/keyRotationPolicy", "", nil); !strings.Contains(string(body), `"publish_delay_seconds":3600`) {
		t.Fatalf("rotation policy after the peer's proposal file: %s", body)
	}

	var list []string
	_, body = call(nil, http.MethodGet, "/app/proposals", "", nil)
	if json.Unmarshal(body, &list) != nil || len(list) != 2 {
		t.Fatalf("GET /app/proposals: %s", body)
	}

	// The refresh cron: curl -X POST with nothing.
	resp, body = call(nil, http.MethodPost, "/app/refresh", "", nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "not needed") || !strings.Contains(string(body), "tkms keys rotate") {
		t.Fatalf("the refresh cron's POST: %s: %s", resp.Status, body)
	}
	p.stopClean(syscall.SIGTERM)
}

// TestDevDeployedFetcher replays the deployed key fetchers against `tkms
// dev` over HTTPS and HTTP/2, with their headers (Authorization, an
// activity id, no Content-Type), right after a member's rotation: POST
// /app/key?fmt=tink with {"attestation"} alone (REPORT_DATA zero), then
// POST /app/unwrapKey?fmt=tink for every key of the list with a
// wrapping key the evidence binds. The service ends up holding both the
// advertised key and the newest one, each checked against the public key
// tkms publishes for its kid.
func TestDevDeployedFetcher(t *testing.T) {
	f := newTLSFixture(t)
	data := filepath.Join(t.TempDir(), "dev")
	cfgPath := filepath.Join(t.TempDir(), "dev.json")
	writeJSONFile(t, cfgPath, map[string]any{"tls_cert_file": f.certFile, "tls_key_file": f.keyFile})
	p := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", data, "--config", cfgPath)
	base := p.waitOutput(p.stdout, devListeningTLS)[1]
	d := readDevJSON(t, data)
	hc := f.httpsClient(0, 0, nil)
	call := func(method, path, ctype string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(string(body)))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if method == http.MethodPost && ctype == "" {
			req.Header.Set("Authorization", "Bearer "+d.WorkloadToken)
			req.Header.Set("x-ms-request-id", "fetcher-activity")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s over %s, want HTTP/2", path, resp.Proto)
		}
		return resp, b
	}

	// A member rotates (tkms keys rotate): the new key awaits its publish
	// delay while the first is advertised.
	signer, err := gov.NewFileSigner(readFile(t, filepath.Join(data, "member.key")))
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := call(http.MethodPost, "/app/refresh", "application/cose", signRotate(t, signer)); resp.StatusCode != 200 {
		t.Fatalf("refresh: %s: %s", resp.Status, body)
	}
	_, body := call(http.MethodGet, "/v1/keys?all=true", "", nil)
	var all wireKeys
	if err := json.Unmarshal(body, &all); err != nil || len(all.Keys) != 2 {
		t.Fatalf("GET /v1/keys?all=true: %s", body)
	}
	pub := map[string][]byte{}
	var newest, advertised string
	for _, k := range all.Keys {
		pub[k.Kid] = k.PublicKey
		if strings.HasPrefix(k.Reason, "governance:") {
			newest = k.Kid
		} else {
			advertised = k.Kid
		}
	}

	wrapPub, err := filepath.Abs("../../internal/wrap/testdata/publicWrapKey.pem")
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := parseRSAPrivate(t, readFile(t, "../../internal/wrap/testdata/privateWrapKey.pem"))
	simulate := func(args ...string) json.RawMessage {
		t.Helper()
		out, errOut, code := runTkms(t, append([]string{"attest", "simulate", "--data", data}, args...)...)
		if code != 0 || !json.Valid([]byte(out)) {
			t.Fatalf("tkms attest simulate: exit %d: %s", code, errOut)
		}
		return json.RawMessage(out)
	}
	zeroEvidence, boundEvidence := simulate(), simulate("--wrapping-key-pem", wrapPub)
	pemText := string(readFile(t, wrapPub))

	keyBody, _ := json.Marshal(map[string]any{"attestation": zeroEvidence})
	resp, body := call(http.MethodPost, "/app/key?fmt=tink", "", keyBody)
	var kr struct {
		WrappedKid string `json:"wrappedKid"`
		Wrapped    string `json:"wrapped"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &kr) != nil || kr.WrappedKid != newest || newest == "" {
		t.Fatalf("POST /app/key: %s: %s; want wrappedKid the newest key %s", resp.Status, body, newest)
	}
	var list struct {
		Keys []struct {
			KeyData []struct {
				KeyEncryptionKeyURI string `json:"keyEncryptionKeyUri"`
			} `json:"keyData"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(kr.Wrapped), &list); err != nil || len(list.Keys) != 2 {
		t.Fatalf("wrapped %s: want two keys", kr.Wrapped)
	}
	held := map[string]bool{}
	for i, ek := range list.Keys {
		kid := ek.KeyData[0].KeyEncryptionKeyURI[10:]
		if want := []string{advertised, newest}[i]; kid != want {
			t.Fatalf("key %d of the list is %s, want %s (the advertised key, then the newest)", i, kid, want)
		}
		unwrapBody, _ := json.Marshal(map[string]any{"wrapped": "", "wrappedKid": kid, "attestation": boundEvidence, "wrappingKey": pemText})
		resp, body := call(http.MethodPost, "/app/unwrapKey?fmt=tink", "", unwrapBody)
		var ur struct{ Wrapped string }
		if resp.StatusCode != 200 || json.Unmarshal(body, &ur) != nil {
			t.Fatalf("POST /app/unwrapKey %s: %s: %s", kid, resp.Status, body)
		}
		ct, _ := base64.StdEncoding.DecodeString(ur.Wrapped)
		pt, err := rsa.DecryptOAEP(sha256.New(), nil, rsaKey, ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ks tinkpb.Keyset
		var hk hpkepb.HpkePrivateKey
		if proto.Unmarshal(pt, &ks) != nil || len(ks.GetKey()) != 1 || proto.Unmarshal(ks.GetKey()[0].GetKeyData().GetValue(), &hk) != nil {
			t.Fatalf("%s: not a one-key Tink keyset", kid)
		}
		sk, err := ecdh.X25519().NewPrivateKey(hk.GetPrivateKey())
		if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), pub[kid]) {
			t.Fatalf("%s: the released private key is not that of the published public key", kid)
		}
		held[kid] = true
	}
	if len(held) != 2 {
		t.Fatalf("the service holds %v; want both keys", held)
	}
	p.stopClean(syscall.SIGTERM)
}
