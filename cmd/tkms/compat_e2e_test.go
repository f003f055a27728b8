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
	"maps"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	hpkepb "github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/veraison/go-cose"
	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/httpapi/answertest"
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

// ccfServe is tkms serve over TLS on a service that tkms init made with
// one CCF member (registered by its certificate) and the peer's
// two-field rotation policy file, with a readers setting naming the
// certificate of a CCF user.
type ccfServe struct {
	t                        *testing.T
	f                        *tlsFixture
	dir, base                string
	p                        *proc
	member, reader, stranger ccfIdentity
}

func startCCFServe(t *testing.T) *ccfServe {
	t.Helper()
	s := &ccfServe{t: t, f: newTLSFixture(t), dir: t.TempDir()}
	s.member = newCCFIdentity(t, s.dir, "member0")
	s.reader = newCCFIdentity(t, s.dir, "user0")
	s.stranger = newCCFIdentity(t, s.dir, "stranger")

	memberPEM, _ := os.ReadFile(s.member.file)
	membersFile := filepath.Join(s.dir, "members.json")
	writeJSONFile(t, membersFile, map[string]any{"members": []map[string]any{{"name": "member0", "signing_key": string(memberPEM)}}})
	policies := filepath.Join(s.dir, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	// The peer's rotation policy file: no publish delay, no suite.
	if err := os.WriteFile(filepath.Join(policies, "key_rotation_policy.json"), []byte(`{"rotation_interval_seconds": 2678400, "grace_period_seconds": 604800}`), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(s.dir, "data")
	govCLI(t, "init", "--members", membersFile, "--policies", policies, "--data", data, "--service-name", "depa-kms")

	// readers need TLS
	plainCfg := filepath.Join(s.dir, "plain.json")
	writeJSONFile(t, plainCfg, map[string]any{"listen": "127.0.0.1:0", "data_dir": data, "readers": []string{s.reader.file}})
	if _, errOut, code := runTkms(t, "serve", "--config", plainCfg); code == 0 || !strings.Contains(errOut, "readers: client certificates need TLS") {
		t.Fatalf("serve with readers and no TLS: exit %d, %s", code, errOut)
	}

	cfg := filepath.Join(s.dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"listen": "127.0.0.1:0", "data_dir": data,
		"tls_cert_file": s.f.certFile, "tls_key_file": s.f.keyFile, "readers": []string{s.reader.file}})
	s.p = startServe(t, cfg)
	s.base = "https://" + strings.TrimPrefix(s.p.URL, "http://")
	return s
}

// client is an HTTP/2 client presenting id's certificate (none if nil).
func (s *ccfServe) client(id *ccfIdentity) *http.Client {
	tc := &tls.Config{RootCAs: s.f.roots}
	if id != nil {
		tc.Certificates = []tls.Certificate{{Certificate: [][]byte{id.der}, PrivateKey: id.key}}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}, Timeout: 20 * time.Second}
}

func (s *ccfServe) call(id *ccfIdentity, method, path, ctype string, body []byte) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.client(id).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// propose posts payload, signed by the member as CCF signs, to POST
// /app/proposals as the peer's proposals.sh does.
func (s *ccfServe) propose(payload string) (*http.Response, []byte) {
	s.t.Helper()
	return s.call(nil, http.MethodPost, "/app/proposals", "application/cose", s.member.signProposal(s.t, payload))
}

// accepted proposes payload and fails unless it is accepted.
func (s *ccfServe) accepted(payload string) {
	s.t.Helper()
	resp, body := s.propose(payload)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"state":"accepted"`) || !strings.Contains(string(body), `"votes":{}`) {
		s.t.Fatalf("POST /app/proposals %s: %s: %s", payload, resp.Status, body)
	}
}

// getJSON GETs path without credentials and decodes its 200 answer.
func (s *ccfServe) getJSON(path string, v any) {
	s.t.Helper()
	resp, body := s.call(nil, http.MethodGet, path, "", nil)
	if resp.StatusCode != 200 || json.Unmarshal(body, v) != nil {
		s.t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
}

func TestServeCCFMembersAndReaders(t *testing.T) {
	s := startCCFServe(t)
	call := s.call

	// GET /app/auth as the peer's auth.sh --auth member_cert / user_cert.
	for _, tc := range []struct {
		id     *ccfIdentity
		policy string
	}{{&s.member, "member_cert"}, {&s.reader, "user_cert"}} {
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
	if resp, body := call(&s.stranger, http.MethodGet, "/app/auth", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /app/auth with an unknown certificate: %s: %s", resp.Status, body)
	}

	// The peer's rotation policy file was read with the grace period as
	// its publish delay.
	_, body := call(nil, http.MethodGet, "/app/keyRotationPolicy", "", nil)
	if !strings.Contains(string(body), `"publish_delay_seconds":604800`) || !strings.Contains(string(body), `"suite":"x25519"`) {
		t.Fatalf("GET /app/keyRotationPolicy: %s", body)
	}

	// The member's proposal, signed as CCF signs, from the peer's template.
	s.accepted(`{"actions":[{"name":"set_settings_policy","args":{"settings_policy":{"service":{"name":"azure-privacy-sandbox-kms","description":"Key Management Service","version":"1.0.0","debug":false}}}}]}`)
	if _, body := call(nil, http.MethodGet, "/app/settingsPolicy", "", nil); !strings.Contains(string(body), `"name":"azure-privacy-sandbox-kms"`) {
		t.Fatalf("settings after the proposal: %s", body)
	}
	// The peer's proposal file as it is, through tkms gov propose --compat,
	// signed with the member's key.
	der, _ := x509.MarshalPKCS8PrivateKey(s.member.key)
	keyFile := filepath.Join(s.dir, "member0_privk.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	rotation := filepath.Join(s.dir, "key-rotation-policy.json")
	if err := os.WriteFile(rotation, []byte(`{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":86400,"grace_period_seconds":3600}}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := govCLI(t, "gov", "propose", "--kms", s.base, "--kms-ca", s.f.caFile, "--key", keyFile, "--compat", rotation)
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
	resp, body := call(nil, http.MethodPost, "/app/refresh", "", nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "not needed") || !strings.Contains(string(body), "tkms keys rotate") {
		t.Fatalf("the refresh cron's POST: %s: %s", resp.Status, body)
	}
	s.p.stopClean(syscall.SIGTERM)
}

// TestDevDeployedFetcher replays the deployed key fetchers against `tkms
// dev` over HTTPS and HTTP/2, with their headers (Authorization, an
// activity id, no Content-Type), right after a member's rotation: POST
// /app/key?fmt=tink with {"attestation"} alone (REPORT_DATA zero), then
// POST /app/unwrapKey?fmt=tink for every key of the list with a
// wrapping key the evidence binds. The service ends up holding both the
// advertised key and the newest one, each checked against the public key
// tkms publishes for its kid. tkms dev runs on the peer's rotation policy
// (no publish delay: the rotated key is published a grace period after
// its creation). Then: an empty wrappedKid is 404 as the peer's, GET
// /app/auth with the token is CCF's jwt identity, and every answer of
// every endpoint parses.
func TestDevDeployedFetcher(t *testing.T) {
	f := newTLSFixture(t)
	data := filepath.Join(t.TempDir(), "dev")
	cfgPath := filepath.Join(t.TempDir(), "dev.json")
	// The peer's rotation policy in the configuration: no publish delay
	// (it is the grace period), no suite.
	writeJSONFile(t, cfgPath, map[string]any{"tls_cert_file": f.certFile, "tls_key_file": f.keyFile,
		"key_rotation_policy": map[string]any{"rotation_interval_seconds": 2678400, "grace_period_seconds": 3600}})
	p := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", data, "--config", cfgPath)
	base := p.waitOutput(p.stdout, devListeningTLS)[1]
	d := readDevJSON(t, data)
	hc := f.httpsClient(0, 0, nil)
	// The fetchers' client sends no User-Agent and no Accept-Encoding.
	fetcher := f.httpsClient(0, 0, nil)
	fetcher.Transport.(*http.Transport).DisableCompression = true
	call := func(method, path, ctype string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(string(body)))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		c := hc
		if method == http.MethodPost && ctype == "" {
			// Authorization, content-length and an activity id only.
			req.Header.Set("Authorization", "Bearer "+d.WorkloadToken)
			req.Header.Set("x-ms-request-id", "fetcher-activity")
			req.Header.Set("User-Agent", "")
			c = fetcher
		}
		resp, err := c.Do(req)
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
			if k.NotBefore.Sub(k.Created) != time.Hour {
				t.Fatalf("the rotated key is published %v after its creation; want the grace period, 1h", k.NotBefore.Sub(k.Created))
			}
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
		if want := []string{newest, advertised}[i]; kid != want {
			t.Fatalf("key %d of the list is %s, want %s (the newest key, named by wrappedKid, then the advertised one)", i, kid, want)
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

	// "wrappedKid": "" is 404 KEY_NOT_FOUND, as the peer answers it.
	release := map[string]any{"wrapped": "", "wrappedKid": advertised, "attestation": boundEvidence, "wrappingKey": pemText}
	emptyKid := maps.Clone(release)
	emptyKid["wrappedKid"] = ""
	b, _ := json.Marshal(emptyKid)
	resp, body = call(http.MethodPost, "/app/unwrapKey?fmt=tink", "", b)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-ms-kms-error-code") != "KEY_NOT_FOUND" {
		t.Fatalf(`POST /app/unwrapKey with "wrappedKid": "": %s: %s`, resp.Status, body)
	}

	// GET /app/auth with the workload's token: CCF's jwt identity, tkms's
	// fields beside.
	resp, a, body := appAuth(t, hc, base, "Bearer "+d.WorkloadToken)
	if resp.StatusCode != 200 || a.Auth.Policy != "jwt" || a.Auth.JWT.KeyIssuer == "" ||
		a.Auth.JWT.KeyIssuer != a.Auth.Iss || a.Auth.JWT.Header["kid"] == nil || a.Auth.OID == "" || a.Auth.JWT.Payload["oid"] != a.Auth.OID {
		t.Fatalf("GET /app/auth with a token: %s: %s", resp.Status, body)
	}

	everyAnswerParses(t, base, hc, release, "Bearer "+d.WorkloadToken)
	p.stopClean(syscall.SIGTERM)
}

// The peer's governance inputs, written here from the shapes of its
// proposal templates (governance/policies/*.json and governance/proposals/
// *.json): the release policy DEPA deploys, with the DEPA fork's gte and gt
// (thresholds as strings and as numbers); the remove template; its settings
// and rotation templates; a managed identity's JWT validation policy.
const (
	peerHostData      = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	peerReleaseAdd    = `{"actions":[{"name":"set_key_release_policy","args":{"service":"depa-inferencing","type":"add","claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-smt-allowed":true,"x-ms-sevsnpvm-is-debuggable":false,"x-ms-sevsnpvm-hostdata":["` + peerHostData + `"]},"gte":{"x-ms-sevsnpvm-guestsvn":"1"},"gt":{"x-ms-sevsnpvm-snpfw-svn":0}}}]}`
	peerReleaseRemove = `{"actions":[{"name":"set_key_release_policy","args":{"service":"some service","type":"remove","claims":{"x-ms-ver":["2","3"]}}}]}`
	peerReleaseRest   = `{"actions":[{"name":"set_key_release_policy","args":{"service":"depa-inferencing","type":"remove","claims":{"x-ms-sevsnpvm-smt-allowed":true,"x-ms-sevsnpvm-is-debuggable":false,"x-ms-sevsnpvm-hostdata":["` + peerHostData + `"]},"gte":{"x-ms-sevsnpvm-guestsvn":"1"},"gt":{"x-ms-sevsnpvm-snpfw-svn":0}}}]}`
	peerSettings      = `{"actions":[{"name":"set_settings_policy","args":{"settings_policy":{"service":{"name":"depa-kms","description":"DEPA inferencing key management","version":"1.2.0","debug":true}}}}]}`
	peerRotation      = `{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":86400,"grace_period_seconds":3600}}}]}`
	peerIssuer        = "https://sts.windows.net/0b4c8a8e-1d64-4f4b-9d35-6f1c2a7e9b10/"
	peerJWTValidation = `{"actions":[{"name":"set_jwt_validation_policy","args":{"issuer":"` + peerIssuer + `","validation_policy":{"iss":"` + peerIssuer + `","aud":"https://management.azure.com/","appidacr":"2","idtyp":"app","oid":"5d0f7a52-3c1e-4c1b-8f7e-2b9f0e6c4a11","sub":"5d0f7a52-3c1e-4c1b-8f7e-2b9f0e6c4a11","tid":"0b4c8a8e-1d64-4f4b-9d35-6f1c2a7e9b10","ver":"1.0","xms_mirid":["/subscriptions/s/resourcegroups/kms/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kv-mi","/subscriptions/s/resourcegroups/kms/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bfe-mi"]}}}]}`
)

// TestServePeerGovernanceInputs submits each of the peer's governance
// inputs, signed as CCF signs them (kid = SHA-256 of the member's
// certificate), to POST /app/proposals of tkms serve, and reads their
// effect where the peer's tests read it, and in releases (a managed
// identity's token and the peer's real ACI sample get a key under the
// policies so set; after the peer's removals, 400 POLICY_UNSET); what
// tkms's grammar refuses is refused in the peer's shape too; the rotation policy without a
// publish delay publishes a refreshed key one grace period after its
// creation, and keeps the suite in force; GET /app/proposals lists each
// accepted proposal as signed, oldest first; and with the release policy
// emptied by the peer's removals every answer of every endpoint parses.
func TestServePeerGovernanceInputs(t *testing.T) {
	s := startCCFServe(t)
	var sent []string // accepted proposals' payloads, in order
	accept := func(payload string) {
		t.Helper()
		s.accepted(payload)
		sent = append(sent, payload)
	}
	refused := func(payload, what string) {
		t.Helper()
		resp, body := s.propose(payload)
		var e struct {
			Error struct{ Code, Message string }
		}
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Error.Code != gov.CodeInvalidAction || !strings.Contains(e.Error.Message, what) {
			t.Fatalf("POST /app/proposals %s: %s: %s; want 400 %s mentioning %q", payload, resp.Status, body, gov.CodeInvalidAction, what)
		}
	}
	sameJSON := func(path, want string) {
		t.Helper()
		var got, w any
		s.getJSON(path, &got)
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, w) {
			g, _ := json.Marshal(got)
			t.Fatalf("GET %s: %s\nwant %s", path, g, want)
		}
	}

	// set_key_release_policy: add, then the peer's remove template.
	accept(peerReleaseAdd)
	sameJSON("/app/keyReleasePolicy", `{"type":"add","claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-smt-allowed":[true],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-sevsnpvm-hostdata":["`+peerHostData+`"]},"gte":{"x-ms-sevsnpvm-guestsvn":1},"gt":{"x-ms-sevsnpvm-snpfw-svn":0}}`)
	accept(peerReleaseRemove)
	sameJSON("/app/keyReleasePolicy", `{"type":"add","claims":{"x-ms-sevsnpvm-smt-allowed":[true],"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-sevsnpvm-hostdata":["`+peerHostData+`"]},"gte":{"x-ms-sevsnpvm-guestsvn":1},"gt":{"x-ms-sevsnpvm-snpfw-svn":0}}`)
	// The peer fails removing a claim the policy lacks, as tkms; a value
	// it lacks the peer skips, and tkms refuses (a mistyped measurement
	// must not stay allowed).
	refused(strings.Replace(peerReleaseRemove, "some service", "the same removal again", 1), "no such claim")
	refused(`{"actions":[{"name":"set_key_release_policy","args":{"service":"depa-inferencing","type":"remove","claims":{"x-ms-sevsnpvm-hostdata":["`+strings.Repeat("ab", 32)+`"]}}}]}`, "does not hold")

	// set_settings_policy
	accept(peerSettings)
	sameJSON("/app/settingsPolicy", `{"service":{"name":"depa-kms","description":"DEPA inferencing key management","version":"1.2.0","debug":true}}`)

	// set_jwt_validation_policy, once the issuer is trusted (tkms's
	// set_jwt_issuer; the peer uses CCF's).
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rk.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	refused(peerJWTValidation, "not configured")
	accept(`{"actions":[{"name":"set_jwt_issuer","args":{"issuer":"` + peerIssuer + `","audiences":["https://management.azure.com/"],"jwks":` + string(jwks) + `}}]}`)
	accept(peerJWTValidation)
	var jp map[string]json.RawMessage
	s.getJSON("/app/jwtValidationPolicy", &jp)
	var want struct {
		Actions []struct {
			Args struct {
				ValidationPolicy map[string]any `json:"validation_policy"`
			}
		}
	}
	var got map[string]any
	json.Unmarshal([]byte(peerJWTValidation), &want)
	if json.Unmarshal(jp[peerIssuer], &got) != nil || !reflect.DeepEqual(got, want.Actions[0].Args.ValidationPolicy) {
		t.Fatalf("GET /app/jwtValidationPolicy: %s", jp[peerIssuer])
	}

	// The policies so set decide releases: a managed identity's token
	// that the validation policy admits, and the peer's real ACI sample
	// that the release policy admits, get a key; a token of another
	// identity does not.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rk}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	mint := func(mirid string) string {
		t.Helper()
		now := time.Now()
		tok, err := jwt.Signed(signer).Claims(map[string]any{"iss": peerIssuer, "aud": "https://management.azure.com/", "appidacr": "2",
			"idtyp": "app", "oid": "5d0f7a52-3c1e-4c1b-8f7e-2b9f0e6c4a11", "sub": "5d0f7a52-3c1e-4c1b-8f7e-2b9f0e6c4a11",
			"tid": "0b4c8a8e-1d64-4f4b-9d35-6f1c2a7e9b10", "ver": "1.0", "xms_mirid": mirid,
			"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	token := "Bearer " + mint("/subscriptions/s/resourcegroups/kms/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bfe-mi")
	stranger := "Bearer " + mint("/subscriptions/s/resourcegroups/kms/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other")
	bearer := func(method, path, auth string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", auth) // and no Content-Type, as the fetchers
		resp, err := s.client(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, a, body := appAuth(t, s.client(nil), s.base, token)
	if resp.StatusCode != 200 || a.Auth.Policy != "jwt" || a.Auth.JWT.KeyIssuer != peerIssuer || a.Auth.JWT.Header["kid"] != "k1" || a.Auth.JWT.Payload["idtyp"] != "app" {
		t.Fatalf("GET /app/auth with the managed identity's token: %s: %s", resp.Status, body)
	}
	sample := json.RawMessage(readFile(t, "../../internal/attest/snp/testdata/aci_snp.json"))
	keyBody, _ := json.Marshal(map[string]any{"attestation": sample})
	if resp, body := bearer(http.MethodPost, "/app/key?fmt=tink", token, keyBody); resp.StatusCode != 200 || !strings.Contains(string(body), `"wrappedKid"`) {
		t.Fatalf("POST /app/key under the peer's policies: %s: %s", resp.Status, body)
	}
	if resp, body := bearer(http.MethodPost, "/app/key?fmt=tink", stranger, keyBody); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /app/key with a token the validation policy does not admit: %s: %s", resp.Status, body)
	}

	// What tkms's grammar refuses is refused in the peer's shape, and
	// nothing is recorded.
	var before []string
	s.getJSON("/app/proposals", &before)
	refused(`{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":"300","grace_period_seconds":60}}}]}`, "set_key_rotation_policy")
	refused(`{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":0,"grace_period_seconds":60}}}]}`, "set_key_rotation_policy")
	refused(`{"actions":[{"name":"set_settings_policy","args":{"settings_policy":{"service":{"name":"x","description":"y","version":"1","debug":"yes"}}}}]}`, "set_settings_policy")
	refused(`{"actions":[{"name":"set_key_release_policy","args":{"service":"s","type":"replace","claims":{"x-ms-ver":"2"}}}]}`, `want "add" or "remove"`)
	refused(`{"actions":[{"name":"set_key_release_policy","args":{"service":"s","type":"add","claims":{"x-ms-ver":"2"},"gte":{"x-ms-ver":"two"}}}]}`, "want a number")
	refused(`{"actions":[{"name":"set_jwt_validation_policy","args":{"issuer":"`+peerIssuer+`","validation_policy":{"oid":{"a":1}}}}]}`, "set_jwt_validation_policy")
	var after []string
	s.getJSON("/app/proposals", &after)
	if len(after) != len(before) {
		t.Fatalf("refused proposals were recorded: %d proposals, then %d", len(before), len(after))
	}

	// set_key_rotation_policy without a publish delay: a refreshed key is
	// published one grace period after its creation, while /app/key
	// without kid answers it at once (TestDevDeployedFetcher).
	accept(peerRotation)
	var rp map[string]any
	s.getJSON("/app/keyRotationPolicy", &rp)
	if rp["rotation_interval_seconds"] != 86400.0 || rp["grace_period_seconds"] != 3600.0 || rp["publish_delay_seconds"] != 3600.0 || rp["suite"] != "x25519" {
		t.Fatalf("GET /app/keyRotationPolicy: %v", rp)
	}
	var primary struct{ ID int }
	s.getJSON("/app/pubkey", &primary)
	rotate := `{"actions":[{"name":"rotate_key_now","args":{"reason":"after the peer's rotation policy"}}]}`
	resp, body = s.call(nil, http.MethodPost, "/app/refresh", "application/cose", s.member.signProposal(t, rotate))
	var fresh struct {
		Kid string
		ID  int
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &fresh) != nil || fresh.ID == primary.ID {
		t.Fatalf("POST /app/refresh (a member's rotation): %s: %s", resp.Status, body)
	}
	sent = append(sent, rotate)
	var now struct{ ID int }
	s.getJSON("/app/pubkey", &now)
	if now.ID != primary.ID {
		t.Fatalf("right after the refresh /app/pubkey answers id %d; want still %d", now.ID, primary.ID)
	}
	var all wireKeys
	s.getJSON("/v1/keys?all=true", &all)
	for _, k := range all.Keys {
		if k.Kid == fresh.Kid && k.NotBefore.Sub(k.Created) != time.Hour {
			t.Fatalf("the refreshed key is published %v after its creation; want the grace period, 1h", k.NotBefore.Sub(k.Created))
		}
	}
	// A missing suite keeps the suite in force, here set in tkms's grammar.
	accept(`{"actions":[{"name":"set_key_rotation_policy","args":{"rotation_interval_seconds":86400,"grace_period_seconds":3600,"publish_delay_seconds":600,"suite":"p256"}}]}`)
	accept(`{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":86400,"grace_period_seconds":7200}}}]}`)
	s.getJSON("/app/keyRotationPolicy", &rp)
	if rp["suite"] != "p256" || rp["publish_delay_seconds"] != 7200.0 {
		t.Fatalf("GET /app/keyRotationPolicy after the peer's policy on a p256 service: %v", rp)
	}

	// GET /app/proposals: each accepted proposal's COSE_Sign1 in hex,
	// oldest first, its payload as signed.
	var list []string
	s.getJSON("/app/proposals", &list)
	if len(list) != len(sent) {
		t.Fatalf("GET /app/proposals lists %d proposals; want %d", len(list), len(sent))
	}
	for i, h := range list {
		raw, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("proposal %d: not hex: %v", i, err)
		}
		msg, err := gov.ParseMessage(raw)
		if err != nil || string(msg.Payload) != sent[i] {
			t.Fatalf("proposal %d: %v; payload %s, want %s", i, err, msg.Payload, sent[i])
		}
	}

	// The peer's removals leave the release policy empty: it is unset, and
	// says so in JSON (the peer answered {"type":"add",}).
	accept(peerReleaseRest)
	resp, body = s.call(nil, http.MethodGet, "/app/keyReleasePolicy", "", nil)
	if resp.StatusCode != 404 || !json.Valid(body) || !strings.Contains(string(body), `"POLICY_UNSET"`) {
		t.Fatalf("GET /app/keyReleasePolicy after the removals: %s: %s", resp.Status, body)
	}
	// ... and denies, with 400 where the peer fails with 500.
	resp, body = bearer(http.MethodPost, "/app/key?fmt=tink", token, keyBody)
	if resp.StatusCode != 400 || resp.Header.Get("x-ms-kms-error-code") != "POLICY_UNSET" {
		t.Fatalf("POST /app/key with the release policy unset: %s: %s", resp.Status, body)
	}
	release := map[string]any{"wrapped": "", "wrappedKid": fresh.Kid, "attestation": sample,
		"wrappingKey": string(readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem"))}
	everyAnswerParses(t, s.base, s.client(&s.member), release, token)
	s.p.stopClean(syscall.SIGTERM)
}

// everyAnswerParses sends every endpoint of the tkms at base every method,
// with bodies and credentials good and bad (release, a body for
// /app/unwrapKey and the release endpoints; token, a workload's bearer
// token), and fails unless every answer parses (answertest.Crawl).
func everyAnswerParses(t *testing.T, base string, hc *http.Client, release map[string]any, token ...string) {
	t.Helper()
	bodies := slices.Clone(answertest.Bodies)
	if release != nil {
		for _, kid := range []string{release["wrappedKid"].(string), ""} {
			b := maps.Clone(release)
			b["wrappedKid"] = kid
			raw, _ := json.Marshal(b)
			bodies = append(bodies, answertest.Body{Body: raw})
		}
	}
	n := answertest.Crawl(t, hc, base, answertest.Paths, bodies, append([]string{"", "Bearer junk"}, token...), nil)
	t.Logf("%d answers of %s parsed", n, base)
}

// appAuth GETs /app/auth of the tkms at base with authorization and
// decodes a 200 answer as a token's identity.
func appAuth(t *testing.T, hc *http.Client, base, authorization string) (*http.Response, httpapi.AppAuth, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/app/auth", nil)
	req.Header.Set("Authorization", authorization)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var a httpapi.AppAuth
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("GET /app/auth: %v: %s", err, body)
		}
	}
	return resp, a, body
}
