package httpapi

// Tests of drop-in compatibility with the deployed DEPA KMS
// (iSPIRT/azure-depa-inferencing-kms, docs/spec/azure-compat.md): its
// services' key fetchers, its proposal templates signed as CCF signs them,
// its /app/auth identities and its operators' refresh cron, each against a
// real server on loopback. The request bodies are written here from the
// peer's shapes.

import (
	"bytes"
	"context"
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
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	hpkepb "github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/veraison/go-cose"
	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi/answertest"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
)

// TestDeployedFetcherFlow replays what the deployed services' key fetchers
// send (docs/spec/azure-compat.md "What deployed services actually send
// and parse"), over HTTP/2 and TLS and without Content-Type, just after a
// rotation: POST /app/key?fmt=tink without a kid answers the newest key
// (not yet advertised) and the advertised primary, and POST
// /app/unwrapKey?fmt=tink of each kid releases a one-key Tink keyset whose
// private key is that kid's.
func TestDeployedFetcherFlow(t *testing.T) {
	srv, svc, tok := newReleaseServer(t)
	var primary state.Key
	svc.Read(func(st *state.State) { primary = *st.Keys[0] })
	next, err := svc.Rotate(context.Background(), kms.ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if next.Phase(svc.Now()) != state.Created {
		t.Fatalf("the new key is %s, want created (awaiting its publish delay)", next.Phase(svc.Now()))
	}

	evidence, _ := os.ReadFile("../attest/snp/testdata/aci_snp.json")
	wrapPub, _ := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	wrapPriv := rsaKey(t, "../wrap/testdata/privateWrapKey.pem")
	// The fetcher's request: Authorization, content-length and an activity
	// id; no Content-Type.
	send := func(path string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("x-ms-request-id", "fetcher-activity-1")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	post := func(path string, body []byte) []byte {
		t.Helper()
		resp, b := send(path, body)
		if resp.ProtoMajor != 2 || resp.TLS == nil {
			t.Fatalf("%s over %s, want HTTP/2 over TLS", path, resp.Proto)
		}
		if resp.StatusCode != 200 || !json.Valid(b) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}

	// Step 1: {"attestation"} only, no kid.
	keyBody, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence)})
	var kr struct {
		WrappedKid string `json:"wrappedKid"`
		Wrapped    any    `json:"wrapped"`
	}
	if err := json.Unmarshal(post("/app/key?fmt=tink", keyBody), &kr); err != nil {
		t.Fatal(err)
	}
	wrapped, ok := kr.Wrapped.(string)
	if !ok || kr.WrappedKid != next.Kid {
		t.Fatalf("wrappedKid %q (want the newest, %s), wrapped %T", kr.WrappedKid, next.Kid, kr.Wrapped)
	}
	// Every field of every EncryptionKey is a JSON string (a non-string
	// aborts the fetcher); it iterates over the list.
	var list struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(wrapped), &list); err != nil || len(list.Keys) != 2 {
		t.Fatalf("wrapped %s: %v; want the primary and the newest key", wrapped, err)
	}
	want := map[string]state.Key{primary.Kid: primary, next.Kid: *next}
	var order []string
	for _, ek := range list.Keys {
		for _, f := range []string{"name", "encryptionKeyType", "publicKeysetHandle", "publicKeyMaterial", "creationTime", "expirationTime"} {
			if _, ok := ek[f].(string); !ok {
				t.Fatalf("EncryptionKey field %s is %T, want a string: %v", f, ek[f], ek)
			}
		}
		kd, _ := ek["keyData"].([]any)
		if len(kd) != 1 {
			t.Fatalf("keyData %v", ek["keyData"])
		}
		d := kd[0].(map[string]any)
		uri, _ := d["keyEncryptionKeyUri"].(string)
		mat, _ := d["keyMaterial"].(string)
		if _, ok := d["publicKeySignature"].(string); !ok || !json.Valid([]byte(mat)) || len(uri) <= 10 {
			t.Fatalf("keyData %v", d)
		}
		kid := uri[10:] // the fetcher strips 10 characters blindly
		k, ok := want[kid]
		if !ok {
			t.Fatalf("keyEncryptionKeyUri %q names no expected key", uri)
		}
		if name := ek["name"].(string); !strings.HasPrefix(name, "encryptionKeys/") || name[len("encryptionKeys/"):] != strconv.Itoa(k.ID) {
			t.Fatalf("name %q for key id %d", name, k.ID)
		}
		order = append(order, kid)

		// Step 2, for each key of the list.
		unwrapBody, _ := json.Marshal(map[string]any{"wrapped": "", "wrappedKid": kid, "attestation": json.RawMessage(evidence), "wrappingKey": string(wrapPub)})
		var ur struct{ Wrapped string }
		if err := json.Unmarshal(post("/app/unwrapKey?fmt=tink", unwrapBody), &ur); err != nil {
			t.Fatal(err)
		}
		ct, err := base64.StdEncoding.DecodeString(ur.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := rsa.DecryptOAEP(sha256.New(), nil, wrapPriv, ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ks tinkpb.Keyset
		if err := proto.Unmarshal(pt, &ks); err != nil || len(ks.GetKey()) != 1 {
			t.Fatalf("keyset: %v, %d keys; want exactly one", err, len(ks.GetKey()))
		}
		var hk hpkepb.HpkePrivateKey
		if err := proto.Unmarshal(ks.GetKey()[0].GetKeyData().GetValue(), &hk); err != nil {
			t.Fatal(err)
		}
		sk, err := keys.X25519.PrivateKey(hk.GetPrivateKey())
		if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) {
			t.Fatalf("the keyset released for %s does not hold its private key", kid)
		}
	}
	if order[0] != next.Kid || order[1] != primary.Kid {
		t.Fatalf("keys %v; want the newest (named by wrappedKid), then the advertised primary", order)
	}

	// The deployed KMS answers 404 to an empty wrappedKid.
	body, _ := json.Marshal(map[string]any{"wrapped": "", "wrappedKid": "", "attestation": json.RawMessage(evidence), "wrappingKey": string(wrapPub)})
	resp, b := send("/app/unwrapKey?fmt=tink", body)
	wantError(t, resp, b, http.StatusNotFound, release.CodeKeyNotFound)

	// GET /app/auth with the fetcher's token: CCF's jwt identity.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/app/auth", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var a AppAuth
	if err := json.Unmarshal(b, &a); err != nil || resp.StatusCode != 200 || a.Auth.Policy != "jwt" || a.Auth.OID != "svc" ||
		a.Auth.JWT.KeyIssuer == "" || a.Auth.JWT.Header["alg"] == nil || a.Auth.JWT.Payload["oid"] != "svc" {
		t.Fatalf("GET /app/auth with a token: %d %s", resp.StatusCode, b)
	}
}

// newReleaseServer is a service with key release (the dev-style OIDC
// issuer, a policy admitting the real ACI sample) behind a real HTTP/2
// server over TLS on loopback, and a managed-identity token for it.
func newReleaseServer(t *testing.T) (*httptest.Server, *kms.Service, string) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	iss := releasetest.Issuer(t)
	hostData := "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}}})
	jwtPol := &state.JWTPolicy{Issuers: []state.JWTIssuer{{Issuer: iss.URL(), Audiences: []string{"https://management.azure.com/"}, DiscoveryURL: iss.DiscoveryURL()}}}
	svc := releasetest.KMS(t, kms.Config{ReleasePolicy: pol, JWT: jwtPol})
	av, err := attest.New(attest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := release.New(release.Config{KMS: svc, Auth: releasetest.Auth(t, iss, "https://management.azure.com/"), Attest: av, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(New(svc, Options{Logger: log, Release: rel}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tok, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: "https://management.azure.com/", PrincipalID: "svc", TenantID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return srv, svc, tok
}

func rsaKey(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// ccfMember is a consortium member as CCF makes them: a P-384 key and a
// self-signed certificate, the member registered with the certificate.
type ccfMember struct {
	key    *ecdsa.PrivateKey
	cert   *x509.Certificate
	member gov.Member
}

func newCCFMember(t *testing.T, name string) *ccfMember {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	m, err := gov.NewMember(name, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "")
	if err != nil {
		t.Fatal(err)
	}
	return &ccfMember{key: k, cert: cert, member: m}
}

// sign signs payload as CCF's ccf_cose_sign1 does: ES384, kid the hex
// SHA-256 of the certificate's DER, ccf.gov.msg.type and created_at.
func (c *ccfMember) sign(t *testing.T, payload string, created time.Time) []byte {
	t.Helper()
	s, err := cose.NewSigner(cose.AlgorithmES384, c.key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.cert.Raw)
	h := cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: cose.AlgorithmES384,
		cose.HeaderLabelKeyID:     []byte(hex.EncodeToString(sum[:])),
		gov.HeaderType:            "proposal",
		gov.HeaderCreatedAt:       created.Unix(),
	}, Unprotected: cose.UnprotectedHeader{}}
	raw, err := cose.Sign1(rand.Reader, s, h, []byte(payload), nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (c *ccfMember) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.cert.Raw}, PrivateKey: c.key, Leaf: c.cert}
}

// newCCFEnv is a service governed by one CCF member alone, behind a real
// HTTPS server that asks clients for certificates as tkms serve does.
func newCCFEnv(t *testing.T, readers ...*x509.Certificate) (*env, *ccfMember) {
	t.Helper()
	m := newCCFMember(t, "member0")
	e := &env{t: t, clock: &clock{t: t0}}
	e.svc = openGoverned(t, t.TempDir(), e.clock.Now, []gov.Member{m.member}, constitution(1))
	e.tick()
	e.srv = httptest.NewUnstartedServer(New(e.svc, Options{OperatorToken: operatorToken, Logger: slog.New(slog.DiscardHandler), Readers: readers}))
	e.srv.EnableHTTP2 = true
	e.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	e.srv.StartTLS()
	t.Cleanup(func() { e.srv.Close(); e.svc.Close() })
	return e, m
}

// The peer's proposal templates (governance/proposals/*.json), as its
// scripts submit them.
const (
	peerReleaseAddProposal    = `{"actions":[{"name":"set_key_release_policy","args":{"service":"depa-inferencing","gte":{"x-ms-ver":"2"},"gt":{"x-ms-ver":"1"},"type":"add","claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-smt-allowed":true,"x-ms-sevsnpvm-is-debuggable":false}}}]}`
	peerReleaseRemoveProposal = `{"actions":[{"name":"set_key_release_policy","args":{"service":"some service","type":"remove","claims":{"x-ms-ver":["2","3"]},"gte":{"x-ms-ver":"2"},"gt":{"x-ms-ver":"1"}}}]}`
	peerSettingsProposal      = `{"actions":[{"name":"set_settings_policy","args":{"settings_policy":{"service":{"name":"custom-kms","description":"Custom Key Management Service","version":"2.0.0","debug":true}}}}]}`
	peerExposureProposal      = `{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":3600,"grace_period_seconds":5}}}]}`
	peerJWTProposal           = `{"actions":[{"name":"set_jwt_validation_policy","args":{"issuer":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","validation_policy":{"iss":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","aud":"https://management.azure.com/","idtyp":"app","oid":"049a48cd-7652-4159-82cf-7a2a42248b38"}}}]}`
)

// TestPeerGovernance submits the peer's proposal templates, signed as CCF
// signs (kid = SHA-256 of the member's certificate), to POST
// /app/proposals with its script's Content-Type, and reads their effect
// through the /app endpoints its tests read: the release policy after add
// and remove, the settings, the JWT validation policy, and a rotation
// policy without publish delay that advertises a new key only after the
// grace period while /app/key would already answer it.
func TestPeerGovernance(t *testing.T) {
	e, m := newCCFEnv(t)
	var ids []string
	submit := func(payload string) {
		t.Helper()
		e.clock.Add(2 * time.Second) // the peer's tests sleep between proposals
		raw := m.sign(t, payload, e.clock.Now())
		resp, body := e.postCOSE("/app/proposals", raw)
		if resp.StatusCode != 200 {
			t.Fatalf("POST /app/proposals %s: %d %s", payload, resp.StatusCode, body)
		}
		var ap AppProposal
		// The peer's answer schema requires ballot_count, proposal_id,
		// proposer_id, state and votes.
		if err := json.Unmarshal(body, &ap); err != nil || ap.State != state.ProposalAccepted || ap.ProposerID != m.member.ID ||
			!bytes.Contains(body, []byte(`"votes":{}`)) || !bytes.Contains(body, []byte(`"ballot_count":0`)) || ap.ProposalID == "" {
			t.Fatalf("answer %s (%v)", body, err)
		}
		ids = append(ids, gov.ProposalID(raw))
	}
	policyHas := func(want ...string) {
		t.Helper()
		resp, body := e.get("/app/keyReleasePolicy")
		if resp.StatusCode != 200 || !json.Valid(body) || !bytes.HasPrefix(body, []byte(`{"type":"add",`)) {
			t.Fatalf("GET /app/keyReleasePolicy: %d %s", resp.StatusCode, body)
		}
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				t.Fatalf("policy %s lacks %s", body, w)
			}
		}
	}

	submit(peerReleaseAddProposal)
	policyHas(`"x-ms-ver":["2","3"]`, `"x-ms-sevsnpvm-smt-allowed":[true]`, `"gte":{"x-ms-ver":2}`, `"gt":{"x-ms-ver":1}`)
	submit(peerReleaseRemoveProposal)
	policyHas(`"claims":{"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-sevsnpvm-smt-allowed":[true]}}`)
	if _, body := e.get("/app/keyReleasePolicy"); strings.Contains(string(body), "x-ms-ver") {
		t.Fatalf("removed claims left over: %s", body)
	}

	submit(peerSettingsProposal)
	var settings state.Settings
	e.getJSON("/app/settingsPolicy", &settings)
	if settings.Service.Name != "custom-kms" || !settings.Service.Debug || settings.Service.Version != "2.0.0" {
		t.Fatalf("settings %+v", settings)
	}

	// The peer's JWT issuer is trusted first, in tkms's grammar (the peer
	// uses CCF's set_jwt_issuer).
	trust := `{"actions":[{"name":"set_jwt_issuer","args":{"issuer":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","audiences":["https://management.azure.com/"],"jwks_url":"https://login.microsoftonline.com/common/discovery/keys"}}]}`
	submit(trust)
	submit(peerJWTProposal)
	var jp map[string]map[string]any
	e.getJSON("/app/jwtValidationPolicy", &jp)
	if c := jp["https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"]; c["oid"] != "049a48cd-7652-4159-82cf-7a2a42248b38" || c["idtyp"] != "app" {
		t.Fatalf("jwt validation policy %v", jp)
	}

	// Exposure delay: no publish delay given, so it is the grace period.
	submit(peerExposureProposal)
	var rp map[string]any
	e.getJSON("/app/keyRotationPolicy", &rp)
	if rp["rotation_interval_seconds"] != 3600.0 || rp["grace_period_seconds"] != 5.0 || rp["publish_delay_seconds"] != 5.0 || rp["suite"] != "x25519" {
		t.Fatalf("rotation policy %v; want the publish delay of the grace period and the suite in force", rp)
	}
	var before struct {
		ID  int    `json:"id"`
		Kid string `json:"kid"`
	}
	e.getJSON("/app/pubkey", &before)
	rotate := `{"actions":[{"name":"rotate_key_now","args":{}}]}`
	e.clock.Add(2 * time.Second)
	resp, body := e.postCOSE("/app/refresh", m.sign(t, rotate, e.clock.Now()))
	if resp.StatusCode != 200 {
		t.Fatalf("refresh: %d %s", resp.StatusCode, body)
	}
	var fresh struct {
		Kid string `json:"kid"`
		ID  int    `json:"id"`
	}
	json.Unmarshal(body, &fresh)
	var now struct {
		ID int `json:"id"`
	}
	e.getJSON("/app/pubkey", &now)
	if now.ID != before.ID || fresh.ID == before.ID {
		t.Fatalf("right after the refresh /app/pubkey answers id %d; want still %d (the new key is %d)", now.ID, before.ID, fresh.ID)
	}
	e.clock.Add(6 * time.Second)
	e.tick()
	e.getJSON("/app/pubkey", &now)
	n, _ := strconv.Atoi(fresh.Kid[strings.LastIndexByte(fresh.Kid, '_')+1:])
	if now.ID != fresh.ID || now.ID != n%90+10 {
		t.Fatalf("after the grace period /app/pubkey answers id %d; want %d (key number %d)", now.ID, fresh.ID, n)
	}

	// GET /app/proposals: every proposal's COSE_Sign1 in hex, oldest first
	// (the refresh's rotation among them).
	var list []string
	e.getJSON("/app/proposals", &list)
	if len(list) != len(ids)+1 {
		t.Fatalf("%d proposals listed, want %d", len(list), len(ids)+1)
	}
	for i, id := range ids {
		if got := proposalIDOfHex(t, list[i]); got != id {
			t.Fatalf("proposal %d is %s, want %s", i, got, id)
		}
	}
	raw, _ := hex.DecodeString(list[0])
	msg, _ := gov.ParseMessage(raw)
	if !strings.Contains(string(msg.Payload), `"service":"depa-inferencing"`) {
		t.Fatalf("the listed proposal is not the one signed: %s", msg.Payload)
	}

	// The same validation as tkms's grammar: a peer-shaped action that
	// tkms's grammar would refuse is refused, and nothing is written.
	seq := e.svc.Seq()
	e.clock.Add(2 * time.Second)
	bad := `{"actions":[{"name":"set_key_rotation_policy","args":{"key_rotation_policy":{"rotation_interval_seconds":0,"grace_period_seconds":5}}}]}`
	resp, body = e.postCOSE("/app/proposals", m.sign(t, bad, e.clock.Now()))
	wantError(t, resp, body, 400, gov.CodeInvalidAction)
	// A certificate that is not a member's signs as nobody.
	other := newCCFMember(t, "outsider")
	resp, body = e.postCOSE("/app/proposals", other.sign(t, peerSettingsProposal, e.clock.Now()))
	wantError(t, resp, body, 401, kms.CodeNotAMember)
	if e.svc.Seq() != seq {
		t.Fatalf("refused proposals wrote entries: seq %d -> %d", seq, e.svc.Seq())
	}
}

// TestAppAuthClientCertificates: over TLS, a member's registered
// certificate is "member_cert" and a reader's "user_cert" at GET
// /app/auth, in CCF's shape; an unknown certificate is refused there; the
// policy reads answer callers with certificates as any other.
func TestAppAuthClientCertificates(t *testing.T) {
	reader := newCCFMember(t, "reader0") // only its certificate is used
	e, m := newCCFEnv(t, reader.cert)
	stranger := newCCFMember(t, "stranger")
	client := func(c *ccfMember) *http.Client {
		tr := e.srv.Client().Transport.(*http.Transport).Clone()
		if c != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{c.tlsCert()}
		}
		return &http.Client{Transport: tr}
	}
	get := func(c *ccfMember, path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := client(c).Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tc := range []struct {
		who    *ccfMember
		policy string
	}{{m, "member_cert"}, {reader, "user_cert"}} {
		resp, body := get(tc.who, "/app/auth")
		var a struct {
			Auth struct {
				Policy, ID, Cert, MemberID string
				Data                       map[string]any
			}
		}
		if err := json.Unmarshal(body, &a); err != nil || resp.StatusCode != 200 || a.Auth.Policy != tc.policy {
			t.Fatalf("%s: GET /app/auth: %d %s", tc.policy, resp.StatusCode, body)
		}
		if a.Auth.ID != CertID(tc.who.cert) || a.Auth.Data == nil || !strings.Contains(a.Auth.Cert, "BEGIN CERTIFICATE") {
			t.Fatalf("%s: %s", tc.policy, body)
		}
		if tc.policy == "member_cert" && !strings.Contains(string(body), `"member_id":"`+m.member.ID+`"`) {
			t.Fatalf("member_cert without tkms's member id: %s", body)
		}
		for _, p := range []string{"/app/keyReleasePolicy", "/app/settingsPolicy", "/app/jwtValidationPolicy", "/app/keyRotationPolicy"} {
			if resp, body := get(tc.who, p); resp.StatusCode != 200 && resp.StatusCode != 404 || !json.Valid(body) {
				t.Fatalf("%s with a %s certificate: %d %s", p, tc.policy, resp.StatusCode, body)
			}
		}
	}
	resp, body := get(stranger, "/app/auth")
	wantError(t, resp, body, http.StatusUnauthorized, CodeUnauthorized)
	resp, body = get(nil, "/app/auth") // no certificate, no token, no release configured
	wantError(t, resp, body, http.StatusServiceUnavailable, CodeReleaseNotConfigured)
}

// TestRefreshCron: the peer's operators run a cron that posts an empty
// /app/refresh. tkms rotates by itself and keeps refusing it, saying so
// and saying how to rotate now; nothing is written.
func TestRefreshCron(t *testing.T) {
	governed := newGovEnv(t, 1, 1)
	plain := newEnv(t, nil, false)
	for _, tc := range []struct {
		e      *env
		status int
		code   string
	}{{governed.env, 403, CodeGovRequired}, {plain, 401, CodeUnauthorized}} {
		seq := tc.e.svc.Seq()
		resp, body := tc.e.post("/app/refresh", "", nil) // curl -X POST, no body, no credential
		wantError(t, resp, body, tc.status, tc.code)
		if !strings.Contains(string(body), "rotates keys itself") || !strings.Contains(string(body), "not needed") || !strings.Contains(string(body), "tkms keys rotate") {
			t.Fatalf("%s does not say that rotation is automatic: %s", tc.code, body)
		}
		if tc.e.svc.Seq() != seq {
			t.Fatal("a refused refresh wrote an entry")
		}
	}
}

// TestEveryJSONBodyParses sends every endpoint every method with bodies
// and credentials good and bad, in three states (a plain service; a
// governed one whose release policy was added then removed, as the peer's
// tests leave it; one with key release, over HTTP/2 and TLS), and checks
// that every answer is JSON that parses, but for the few documented
// non-JSON successes (metrics, log tiles and checkpoint, OHTTP key
// configurations); every error is the JSON error shape.
func TestEveryJSONBodyParses(t *testing.T) {
	plain := newEnv(t, nil, false)
	governed := newGovEnv(t, 1, 1)
	for _, ch := range []string{`{"type":"add","claims":{"x-ms-ver":"2"}}`, `{"type":"remove","claims":{"x-ms-ver":"2"}}`} {
		governed.clock.Add(time.Second)
		governed.resultOf(governed.postCOSE("/v1/gov/proposals", governed.propose(0, governed.clock.Now(),
			gov.Action{Name: gov.ActSetKeyReleasePolicy, Args: json.RawMessage(ch)})))(200)
	}
	var left json.RawMessage
	governed.svc.Read(func(st *state.State) { left = st.ReleasePolicy })
	if string(left) != "{}" {
		t.Fatalf("after add then remove the policy is %q; the case under test is the empty policy {}", left)
	}
	releaseSrv, releaseSvc, tok := newReleaseServer(t)
	evidence, _ := os.ReadFile("../attest/snp/testdata/aci_snp.json")
	wrapPub, _ := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	var kid string
	releaseSvc.Read(func(st *state.State) { kid = st.Keys[0].Kid })
	goodRelease, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(wrapPub), "wrappedKid": kid, "wrapped": ""})
	emptyKid, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(wrapPub), "wrappedKid": ""})

	paths := slices.Clone(answertest.Paths)
	for p := range plain.srv.Config.Handler.(*Server).exact {
		paths = append(paths, p)
	}
	paths = append(paths, "/app/key?kid="+kid+"&fmt=jwk", "/v1/keys/"+kid+"/release")
	bodies := append(slices.Clone(answertest.Bodies), answertest.Body{Body: goodRelease}, answertest.Body{Body: emptyKid})
	auths := []string{"", "Bearer junk", "Bearer " + tok, "Bearer " + operatorToken}
	operatorElsewhere := func(path, auth string) bool {
		return auth == "Bearer "+operatorToken && !strings.Contains(path, "refresh")
	}
	n := 0
	for _, srv := range []*httptest.Server{plain.srv, governed.srv, releaseSrv} {
		n += answertest.Crawl(t, srv.Client(), srv.URL, paths, bodies, auths, operatorElsewhere)
	}
	t.Logf("%d answers parsed", n)
	// The policy the peer's add-then-remove leaves is unset, and says so.
	resp, body := governed.get("/app/keyReleasePolicy")
	wantError(t, resp, body, http.StatusNotFound, "POLICY_UNSET")
}
