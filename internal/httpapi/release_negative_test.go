package httpapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// The negative suite of issue 3 ("Tests that must exist"): every case is one
// HTTP request to a loopback server, answered with an exact status and
// x-ms-kms-error-code (for attestation failures, the verifier's own code
// leads the message), after which nothing was released and the same server
// still releases the key to a valid request.

const (
	negAudience  = "api://tkms-negative"
	negPrincipal = "99999999-8888-7777-6666-555555555555"
	// aciHostDataHex is the HOST_DATA of the real ACI sample.
	aciHostDataHex = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	// uvmTestFeed is the feed of the throwaway UVM signing chain the
	// simulated-trusting server also trusts.
	uvmTestFeed = "TKMS-TEST-UVM"
	uvmTestEKU  = "1.3.6.1.4.1.311.76.59.1.2"
)

// simHostData is the HOST_DATA of the simulated evidence.
var simHostData = sha256.Sum256([]byte("tkms negative suite: simulated container policy"))

// The simulated chain costs two RSA-4096 keys: make it once per test binary.
var (
	simOnce  sync.Once
	simChain *simsnp.Chain
	simErr   error
)

func negSimChain(t *testing.T) *simsnp.Chain {
	t.Helper()
	simOnce.Do(func() {
		var dir string
		if dir, simErr = os.MkdirTemp("", "tkms-simsnp-"); simErr != nil {
			return
		}
		defer os.RemoveAll(dir) // the chain is in memory once loaded
		simChain, simErr = simsnp.LoadOrCreate(dir)
	})
	if simErr != nil {
		t.Fatal(simErr)
	}
	return simChain
}

// relOptions choose a release server's trust.
type relOptions struct {
	roots      []snp.Root
	uvmTrusted []uvm.Endorser
	minSVN     uint64
	simulated  bool
	evidence   []byte // what valid() sends
}

// relServer is tkms's HTTP API with key release over loopback: a real OIDC
// issuer, a KMS on a temporary directory under an injected clock, and the
// real verifiers.
type relServer struct {
	t       *testing.T
	clock   *clock
	kms     *kms.Service
	issuer  *oidcissuer.Issuer
	srv     *httptest.Server
	pubPEM  string
	priv    *rsa.PrivateKey
	good    []byte // the valid attestation object of this server
	kid     string
	base    time.Time
	rogue   *oidcissuer.Issuer // same iss URL, another key
	foreign *oidcissuer.Issuer // another issuer
}

func negPolicy() []byte {
	b, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-hostdata":      []string{aciHostDataHex, hex.EncodeToString(simHostData[:])},
		"x-ms-sevsnpvm-is-debuggable": false,
	}})
	return b
}

func newRelServer(t *testing.T, o relOptions) *relServer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	s := &relServer{t: t, base: time.Now(), good: o.evidence}
	s.clock = &clock{t: s.base}
	var err error
	if s.issuer, err = oidcissuer.New(t.TempDir(), oidcissuer.Options{}); err != nil {
		t.Fatal(err)
	}
	idp := httptest.NewServer(s.issuer.Handler())
	t.Cleanup(idp.Close)
	if err := s.issuer.SetURL(idp.URL); err != nil {
		t.Fatal(err)
	}
	if s.rogue, err = oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: idp.URL}); err != nil {
		t.Fatal(err)
	}
	if s.foreign, err = oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: "https://login.example.com/other/v2.0"}); err != nil {
		t.Fatal(err)
	}
	sealer, _ := seal.New(seal.NewKey())
	s.kms, err = kms.Open(context.Background(), kms.Config{DataDir: t.TempDir(), Sealer: sealer, RotationPolicy: state.DefaultRotationPolicy(),
		Logger: log, ReleasePolicy: negPolicy(), Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kms.Close() })
	if _, err := s.kms.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.kms.Read(func(st *state.State) { s.kid = st.Keys[0].Kid })
	auth, err := jwtauth.New(context.Background(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: idp.URL, Audiences: []string{negAudience}, DiscoveryURL: s.issuer.DiscoveryURL()}},
		Policy:  jwtauth.Policy{idp.URL: {"idtyp": "app"}}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auth.Close)
	av, err := attest.New(attest.Config{SNP: snp.Options{Roots: o.roots}, UVM: uvm.Options{Trusted: o.uvmTrusted, MinSVN: o.minSVN}, Simulated: o.simulated})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := release.New(release.Config{KMS: s.kms, Auth: auth, Attest: av, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(New(s.kms, Options{Logger: log, Release: rel}))
	t.Cleanup(s.srv.Close)

	pub, err := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	if err != nil {
		t.Fatal(err)
	}
	s.pubPEM = string(pub)
	privPEM, _ := os.ReadFile("../wrap/testdata/privateWrapKey.pem")
	blk, _ := pem.Decode(privPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		rk, err2 := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err2 != nil {
			t.Fatal(err)
		}
		k = rk
	}
	s.priv = k.(*rsa.PrivateKey)
	return s
}

// claims returns the claims of a valid token, at the time of the call.
func (s *relServer) claims() map[string]any {
	return s.issuer.ManagedIdentityClaims(oidcissuer.ManagedIdentity{Audience: negAudience, PrincipalID: negPrincipal, TenantID: "tenant"})
}

func mint(t *testing.T, iss *oidcissuer.Issuer, c map[string]any) string {
	t.Helper()
	tok, err := iss.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// token mints a valid token, edited by mutate.
func (s *relServer) token(mutate func(map[string]any)) string {
	c := s.claims()
	if mutate != nil {
		mutate(c)
	}
	return mint(s.t, s.issuer, c)
}

// body returns a valid request body for this server, edited by mutate.
func (s *relServer) body(mutate func(map[string]any)) []byte {
	b := map[string]any{"attestation": json.RawMessage(s.good), "wrappingKey": s.pubPEM, "wrappedKid": s.kid, "wrapped": ""}
	if mutate != nil {
		mutate(b)
	}
	out, err := json.Marshal(b)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// withAttestation returns a body carrying att instead of the valid evidence.
func (s *relServer) withAttestation(att []byte) []byte {
	return s.body(func(b map[string]any) { b["attestation"] = json.RawMessage(att) })
}

func (s *relServer) post(path, auth string, body []byte) (*http.Response, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func (s *relServer) releases() uint64 {
	var n uint64
	s.kms.Read(func(st *state.State) { n = st.Releases })
	return n
}

// checkRelease asserts a 200 answer of /app/unwrapKey whose wrapped payload
// is the private key of kid, unwrapped with the sample's private key.
func (s *relServer) checkRelease(resp *http.Response, out []byte, kid string) {
	s.t.Helper()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("release: %d %s %s", resp.StatusCode, resp.Header.Get("x-ms-kms-error-code"), out)
	}
	var ur api.AppUnwrapResponse
	if err := json.Unmarshal(out, &ur); err != nil {
		s.t.Fatal(err)
	}
	ct, err := base64.StdEncoding.DecodeString(ur.Wrapped)
	if err != nil {
		s.t.Fatal(err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, s.priv, ct, nil)
	if err != nil {
		s.t.Fatalf("unwrapping the released key: %v", err)
	}
	var item keys.Item
	if err := json.Unmarshal(pt, &item); err != nil || item.Kid != kid || item.D == "" {
		s.t.Fatalf("released payload is not the jwk of %s (%v)", kid, err)
	}
	var pub []byte
	s.kms.Read(func(st *state.State) { pub = st.Key(kid).PublicKey })
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		s.t.Fatalf("released private key does not match the published public key of %s", kid)
	}
}

// stillServes asserts that a valid request is released.
func (s *relServer) stillServes() {
	s.t.Helper()
	before := s.releases()
	resp, out := s.post("/app/unwrapKey?fmt=jwk", s.token(nil), s.body(nil))
	s.checkRelease(resp, out, s.kid)
	if got := s.releases(); got != before+1 {
		s.t.Fatalf("%d releases recorded after a valid release, want %d", got, before+1)
	}
}

// negCase is one request and the answer it must get. A status of 200 means
// the request must be released (cases that look hostile but are not, such as
// ASK/ARK that tkms ignores). inner, when set, is the verifier code that
// must lead the message of ATTESTATION_VALIDATION_FAILED.
type negCase struct {
	name   string
	path   string // default /app/unwrapKey
	auth   func() string
	body   func() []byte
	setup  func() (restore func())
	status int
	code   string
	inner  string
	has    string // a substring the error message must hold
	skip   string // a product bug: the reason
}

func runNegCases(t *testing.T, s *relServer, cases []negCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			s.t = t
			path := tc.path
			if path == "" {
				path = "/app/unwrapKey"
			}
			auth := s.token(nil)
			if tc.auth != nil {
				auth = tc.auth()
			}
			body := s.body(nil)
			if tc.body != nil {
				body = tc.body()
			}
			func() {
				if tc.setup != nil {
					defer tc.setup()()
				}
				before := s.releases()
				resp, out := s.post(path, auth, body)
				s.check(tc, path, before, resp, out)
			}()
			s.stillServes()
		})
	}
	s.t = t
	s.stillServes()
}

// check asserts the answer to tc.
func (s *relServer) check(tc negCase, path string, before uint64, resp *http.Response, out []byte) {
	t := s.t
	t.Helper()
	switch {
	case tc.status == http.StatusOK && strings.HasPrefix(path, "/app/unwrapKey"):
		s.checkRelease(resp, out, s.kid)
		if got := s.releases(); got != before+1 {
			t.Fatalf("%d releases recorded, want %d", got, before+1)
		}
	case tc.status == http.StatusOK:
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, out)
		}
	default:
		wantError(t, resp, out, tc.status, tc.code)
		if tc.inner != "" {
			var eb errorBody
			json.Unmarshal(out, &eb)
			if !strings.HasPrefix(eb.Error.Message, tc.inner+": ") {
				t.Fatalf("message %q, want it to start with %s", eb.Error.Message, tc.inner)
			}
		}
		if got := s.releases(); got != before {
			t.Fatalf("a denied request was recorded as a release (%d -> %d)", before, got)
		}
	}
}

// aciFields returns the fields of an ACI attestation object.
func aciFields(t *testing.T, att []byte) map[string]string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(att, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func marshalFields(m map[string]string) []byte {
	b, _ := json.Marshal(m)
	return b
}

// editField returns att with field replaced by edit(field's value).
func editField(t *testing.T, att []byte, field string, edit func(string) string) []byte {
	t.Helper()
	m := aciFields(t, att)
	m[field] = edit(m[field])
	return marshalFields(m)
}

// flipAt returns att with bit 0 of byte i of the base64 field flipped.
func flipAt(t *testing.T, att []byte, field string, i func(n int) int) []byte {
	t.Helper()
	return editField(t, att, field, func(v string) string {
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		raw[i(len(raw))] ^= 1
		return base64.StdEncoding.EncodeToString(raw)
	})
}

func at(i int) func(int) int { return func(int) int { return i } }

// endorsementCerts returns the certificates of att's endorsements.
func endorsementCerts(t *testing.T, att []byte) []*x509.Certificate {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(aciFields(t, att)["endorsements"])
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return certs
}

// withEndorsements returns att with endorsements replaced by certs (PEM).
func withEndorsements(t *testing.T, att []byte, certs ...[]byte) []byte {
	t.Helper()
	var p []byte
	for _, der := range certs {
		p = append(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return editField(t, att, "endorsements", func(string) string { return base64.StdEncoding.EncodeToString(p) })
}

// selfMadeChain returns a self-made root and intermediate (RSA-2048; CA
// certificates named like AMD's when amdNames) and a re-issue of vcek under
// the intermediate: same subject, public key (so the real report signature
// still verifies under it) and AMD extensions, another issuer.
func selfMadeChain(t *testing.T, vcek *x509.Certificate, amdNames bool) (ark, ask, forged []byte) {
	t.Helper()
	rootName, interName := pkix.Name{CommonName: "Example Root CA", Organization: []string{"Example Corp"}},
		pkix.Name{CommonName: "Example Issuing CA", Organization: []string{"Example Corp"}}
	if amdNames {
		amd := func(cn string) pkix.Name {
			return pkix.Name{CommonName: cn, OrganizationalUnit: []string{"Engineering"}, Organization: []string{"Advanced Micro Devices"},
				Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"}}
		}
		rootName, interName = amd("ARK-Milan"), amd("SEV-Milan")
	}
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	interKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	nb, na := time.Now().Add(-24*time.Hour), time.Now().Add(24*365*time.Hour)
	ca := func(serial int64, name pkix.Name) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: name, NotBefore: nb, NotAfter: na,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
			SignatureAlgorithm: x509.SHA384WithRSAPSS}
	}
	rootTmpl, interTmpl := ca(1, rootName), ca(2, interName)
	var err error
	if ark, err = x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey); err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(ark)
	if ask, err = x509.CreateCertificate(rand.Reader, interTmpl, rootCert, &interKey.PublicKey, rootKey); err != nil {
		t.Fatal(err)
	}
	interCert, _ := x509.ParseCertificate(ask)
	amdOID := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704}
	var exts []pkix.Extension
	for _, e := range vcek.Extensions {
		if len(e.Id) > len(amdOID) && e.Id[:len(amdOID)].Equal(amdOID) {
			exts = append(exts, e)
		}
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: vcek.Subject, NotBefore: nb, NotAfter: na,
		ExtraExtensions: exts, SignatureAlgorithm: x509.SHA384WithRSAPSS}
	if forged, err = x509.CreateCertificate(rand.Reader, leaf, interCert, vcek.PublicKey, interKey); err != nil {
		t.Fatal(err)
	}
	return ark, ask, forged
}

// compactJWS returns a hand-made compact JWS of header and claims, signed
// by sign over the signing input (an empty signature when sign is nil).
func compactJWS(header, claims map[string]any, sign func(input []byte) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestAppReleaseNegativeRealEvidence runs the negative suite against a
// server with production trust (pinned AMD roots, Microsoft's UVM feeds)
// whose valid request is the real ACI sample with its wrapping key.
func TestAppReleaseNegativeRealEvidence(t *testing.T) {
	evidence, err := os.ReadFile("../attest/snp/testdata/aci_snp.json")
	if err != nil {
		t.Fatal(err)
	}
	s := newRelServer(t, relOptions{evidence: evidence})
	s.stillServes()
	good := s.good
	vcek := endorsementCerts(t, good)[0]

	// Another chip's VCEK (the confidential-sidecar-containers sample).
	otherPEM, err := os.ReadFile("../attest/snp/testdata/sidecar_uvm_host_amd_certificate.pem")
	if err != nil {
		t.Fatal(err)
	}
	otherBlock, _ := pem.Decode(otherPEM)
	amdArk, amdAsk, forgedAMD := selfMadeChain(t, vcek, true)
	otherArk, otherAsk, forgedOther := selfMadeChain(t, vcek, false)

	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: smallDER}))
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherDER, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	otherKeyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: otherDER}))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))

	// An RSA-8192 public key (a random odd modulus: it need only parse).
	n8192, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 8191))
	n8192.SetBit(n8192, 8191, 1).SetBit(n8192, 0, 1)
	bigDER, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n8192, E: 65537})
	bigPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: bigDER}))
	wrapPub, _ := x509.ParsePKIXPublicKey(func() []byte { b, _ := pem.Decode([]byte(s.pubPEM)); return b.Bytes }())
	pkcs1PEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(wrapPub.(*rsa.PublicKey))}))

	issuerPubDER, _ := x509.MarshalPKIXPublicKey(s.issuer.PublicKey())
	issuerPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: issuerPubDER})

	var k state.Key
	s.kms.Read(func(st *state.State) { k = *st.Key(s.kid) })
	now := time.Now()
	tok := func(mutate func(map[string]any)) func() string {
		return func() string { return s.token(mutate) }
	}
	bodyWith := func(mutate func(map[string]any)) func() []byte {
		return func() []byte { return s.body(mutate) }
	}
	att := func(a []byte) func() []byte { return func() []byte { return s.withAttestation(a) } }
	setClock := func(at time.Time) func() func() {
		return func() func() {
			s.clock.Set(at)
			return func() { s.clock.Set(s.base) }
		}
	}
	const attFailed = release.CodeAttestationFailed

	runNegCases(t, s, []negCase{
		// The report: every signed field is covered by the signature.
		{name: "report signature flipped (R)", body: att(flipAt(t, good, "evidence", at(0x2A0+5))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
		{name: "report signature flipped (S)", body: att(flipAt(t, good, "evidence", at(0x2E8+7))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
		{name: "measurement flipped", body: att(flipAt(t, good, "evidence", at(0x90+3))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
		{name: "report data flipped", body: att(flipAt(t, good, "evidence", at(0x50))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
		{name: "host data flipped", body: att(flipAt(t, good, "evidence", at(0xC0+31))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
		{name: "reported tcb flipped", body: att(flipAt(t, good, "evidence", at(0x180))), status: 400, code: attFailed, inner: snp.CodeTCBMismatch},
		{name: "chip id flipped", body: att(flipAt(t, good, "evidence", at(0x1A0+9))), status: 400, code: attFailed, inner: snp.CodeChipIDMismatch},
		{name: "report one byte short", body: att(editField(t, good, "evidence", func(v string) string {
			raw, _ := base64.StdEncoding.DecodeString(v)
			return base64.StdEncoding.EncodeToString(raw[:len(raw)-1])
		})), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "report one byte long", body: att(editField(t, good, "evidence", func(v string) string {
			raw, _ := base64.StdEncoding.DecodeString(v)
			return base64.StdEncoding.EncodeToString(append(raw, 0))
		})), status: 400, code: attFailed, inner: snp.CodeReportMalformed},

		// The endorsement key and its chain.
		{name: "VCEK of another chip", body: att(withEndorsements(t, good, otherBlock.Bytes)), status: 400, code: attFailed, inner: snp.CodeChipIDMismatch},
		{name: "ASK and ARK swapped for a self-made chain (ignored)", body: att(withEndorsements(t, good, vcek.Raw, amdAsk, amdArk)), status: 200},
		{name: "VCEK re-issued under a self-made AMD-named chain", body: att(withEndorsements(t, good, forgedAMD, amdAsk, amdArk)), status: 400, code: attFailed, inner: snp.CodeCertChainInvalid},
		{name: "VCEK re-issued under a non-AMD root", body: att(withEndorsements(t, good, forgedOther, otherAsk, otherArk)), status: 400, code: attFailed, inner: snp.CodeCertChainInvalid},
		{name: "ARK sent first, as if it were the VCEK", body: att(withEndorsements(t, good, endorsementCerts(t, good)[2].Raw, vcek.Raw)), status: 400, code: attFailed, inner: snp.CodeCertChainInvalid},
		{name: "endorsements not certificates", body: att(editField(t, good, "endorsements", func(string) string {
			return base64.StdEncoding.EncodeToString([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
		})), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "endorsed_tcb mismatch", body: att(editField(t, good, "endorsed_tcb", func(string) string { return "0300000000000874" })), status: 400, code: attFailed, inner: snp.CodeEndorsedTCBMismatch},
		{name: "endorsed_tcb not hex", body: att(editField(t, good, "endorsed_tcb", func(string) string { return "zz00000000000873" })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "endorsed_tcb big-endian (tcbm) accepted", body: att(editField(t, good, "endorsed_tcb", func(string) string { return "7308000000000003" })), status: 200},

		// The UVM endorsement.
		{name: "uvm endorsement signature flipped", body: att(flipAt(t, good, "uvm_endorsements", func(n int) int { return n - 10 })), status: 400, code: attFailed, inner: "UVM_SIGNATURE_INVALID"},
		{name: "uvm endorsement truncated", body: att(editField(t, good, "uvm_endorsements", func(v string) string {
			raw, _ := base64.StdEncoding.DecodeString(v)
			return base64.StdEncoding.EncodeToString(raw[:len(raw)/2])
		})), status: 400, code: attFailed, inner: "UVM_MALFORMED"},

		// Missing attestation fields and bad encodings.
		{name: "no attestation", body: bodyWith(func(b map[string]any) { delete(b, "attestation") }), status: 400, code: release.CodeInvalidRequest},
		{name: "attestation null", body: bodyWith(func(b map[string]any) { b["attestation"] = nil }), status: 400, code: release.CodeInvalidRequest},
		{name: "attestation empty string", body: bodyWith(func(b map[string]any) { b["attestation"] = "" }), status: 400, code: release.CodeInvalidRequest},
		{name: "attestation as a JSON string (accepted)", body: bodyWith(func(b map[string]any) { b["attestation"] = string(good) }), status: 200},
		{name: "no evidence", body: att(editField(t, good, "evidence", func(string) string { return "" })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "no endorsements", body: att(editField(t, good, "endorsements", func(string) string { return "" })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "no uvm_endorsements", body: att(editField(t, good, "uvm_endorsements", func(string) string { return "" })), status: 400, code: attFailed, inner: "UVM_MALFORMED"},
		{name: "evidence bad base64", body: att(editField(t, good, "evidence", func(v string) string { return "!!" + v[2:] })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "endorsements bad base64", body: att(editField(t, good, "endorsements", func(v string) string { return v[:10] + "*" + v[11:] })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "uvm_endorsements bad base64", body: att(editField(t, good, "uvm_endorsements", func(v string) string { return v[:20] + "%%%%" + v[24:] })), status: 400, code: attFailed, inner: snp.CodeReportMalformed},
		{name: "attestation not an object of strings", body: att([]byte(`{"evidence":1}`)), status: 400, code: attFailed, inner: snp.CodeReportMalformed},

		// The request.
		{name: "body not JSON", body: func() []byte { return []byte("{") }, status: 400, code: release.CodeInvalidRequest},
		{name: "body a JSON array", body: func() []byte { return []byte("[]") }, status: 400, code: release.CodeInvalidRequest},
		{name: "huge body", body: func() []byte {
			return s.body(func(b map[string]any) { b["wrapped"] = strings.Repeat("A", 1<<20) })
		}, status: http.StatusRequestEntityTooLarge, code: CodeBodyTooLarge},
		{name: "no wrappedKid", body: bodyWith(func(b map[string]any) { delete(b, "wrappedKid") }), status: 400, code: release.CodeMissingWrappedKid},
		{name: "bad fmt", path: "/app/unwrapKey?fmt=pem", status: 400, code: release.CodeInvalidFmtParameter},
		{name: "/app/key bad fmt", path: "/app/key?fmt=pem", status: 400, code: release.CodeInvalidFmtParameter},

		// The wrapping key and its binding.
		{name: "wrapping key of another party", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = otherKeyPEM }), status: 400, code: release.CodeWrappingKeyMismatch, has: "report data begins"},
		{name: "wrapping key PEM without trailing newline", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = strings.TrimSuffix(s.pubPEM, "\n") }), status: 400, code: release.CodeWrappingKeyMismatch, has: "trailing newline"},
		{name: "wrapping key PEM with CRLF line ends", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = strings.ReplaceAll(s.pubPEM, "\n", "\r\n") }), status: 400, code: release.CodeWrappingKeyMismatch},
		{name: "wrapping key RSA-1024", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = smallPEM }), status: 400, code: release.CodeWrappingKeyError},
		{name: "wrapping key not RSA", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = ecPEM }), status: 400, code: release.CodeWrappingKeyError},
		{name: "wrapping key not PEM", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA" }), status: 400, code: release.CodeInvalidPEMFormat},
		{name: "wrapping key RSA-8192", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = bigPEM }), status: 400, code: release.CodeWrappingKeyError},
		{name: "wrapping key PKCS#1 RSA PUBLIC KEY", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = pkcs1PEM }), status: 400, code: release.CodeInvalidPEMFormat},
		{name: "wrapping key twice", body: bodyWith(func(b map[string]any) { b["wrappingKey"] = s.pubPEM + s.pubPEM }), status: 400, code: release.CodeInvalidPEMFormat},
		{name: "no wrapping key", body: bodyWith(func(b map[string]any) { delete(b, "wrappingKey") }), status: 400, code: release.CodeInvalidPEMFormat},

		// The key.
		{name: "unknown kid", body: bodyWith(func(b map[string]any) { b["wrappedKid"] = "nope_42" }), status: 404, code: release.CodeKeyNotFound},
		{name: "/app/key unknown kid", path: "/app/key?kid=nope_42", status: 404, code: release.CodeKeyNotFound},
		{name: "key in grace (released)", setup: setClock(k.NotAfter.Add(time.Hour)), status: 200},
		{name: "key in its last second of grace (released)", setup: setClock(k.ReleaseUntil.Add(-time.Second)), status: 200},
		{name: "expired key", setup: setClock(k.ReleaseUntil), status: http.StatusGone, code: release.CodeKeyExpired},

		// The token.
		{name: "no token", auth: func() string { return "" }, status: 401, code: jwtauth.CodeMissing},
		{name: "not a bearer credential", auth: func() string { return "Basic dXNlcjpwYXNz" }, status: 401, code: jwtauth.CodeMissing},
		{name: "JWT expired", auth: tok(func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-3*time.Hour).Unix(), now.Add(-3*time.Hour).Unix(), now.Add(-2*time.Hour).Unix()
		}), status: 401, code: jwtauth.CodeExpired},
		{name: "JWT not yet valid", auth: tok(func(c map[string]any) {
			c["nbf"], c["exp"] = now.Add(2*time.Hour).Unix(), now.Add(3*time.Hour).Unix()
		}), status: 401, code: jwtauth.CodeNotYetValid},
		{name: "JWT without exp", auth: tok(func(c map[string]any) { delete(c, "exp") }), status: 401, code: jwtauth.CodeInvalid},
		{name: "JWT wrong audience", auth: tok(func(c map[string]any) { c["aud"] = "api://someone-else" }), status: 401, code: jwtauth.CodeAudience},
		{name: "JWT wrong issuer", auth: func() string {
			c := s.claims()
			c["iss"] = s.foreign.URL()
			return mint(t, s.foreign, c)
		}, status: 401, code: jwtauth.CodeIssuer},
		{name: "JWT alg none", auth: func() string {
			return "Bearer " + compactJWS(map[string]any{"alg": "none", "typ": "JWT", "kid": s.issuer.KeyID()}, s.claims(), nil)
		}, status: 401, code: jwtauth.CodeInvalid},
		{name: "JWT HS256 keyed with the issuer's RSA public key", auth: func() string {
			return "Bearer " + compactJWS(map[string]any{"alg": "HS256", "typ": "JWT", "kid": s.issuer.KeyID()}, s.claims(), func(in []byte) []byte {
				m := hmac.New(sha256.New, issuerPubPEM)
				m.Write(in)
				return m.Sum(nil)
			})
		}, status: 401, code: jwtauth.CodeInvalid},
		{name: "JWT RS256 signature flipped", auth: func() string {
			a := s.token(nil)
			i := strings.LastIndexByte(a, '.') + 3
			c := byte('A')
			if a[i] == 'A' {
				c = 'B'
			}
			return a[:i] + string(c) + a[i+1:]
		}, status: 401, code: jwtauth.CodeInvalid},
		{name: "JWT ES256 header over the RSA key", auth: func() string {
			return "Bearer " + compactJWS(map[string]any{"alg": "ES256", "typ": "JWT", "kid": s.issuer.KeyID()}, s.claims(), func([]byte) []byte { return make([]byte, 64) })
		}, status: 401, code: jwtauth.CodeInvalid},
		{name: "JWT aud array holding the audience (accepted)", auth: tok(func(c map[string]any) { c["aud"] = []string{"api://x", negAudience} }), status: 200},
		{name: "JWT unknown kid (another key, same iss)", auth: func() string { return mint(t, s.rogue, s.claims()) }, status: 401, code: jwtauth.CodeUnknownKID},
		{name: "JWT policy claim mismatch", auth: tok(func(c map[string]any) { c["idtyp"] = "user" }), status: 401, code: jwtauth.CodePolicyMismatch},
		{name: "JWT without oid and sub", auth: tok(func(c map[string]any) { delete(c, "oid"); delete(c, "sub") }), status: 401, code: jwtauth.CodeNoIdentity},
		{name: "JWT without oid, with sub (released to sub)", auth: tok(func(c map[string]any) { delete(c, "oid") }), status: 200},
		{name: "/app/key without token", path: "/app/key", auth: func() string { return "" }, status: 401, code: jwtauth.CodeMissing},
		{name: "/app/key flipped report signature", path: "/app/key", body: att(flipAt(t, good, "evidence", at(0x2A0+5))), status: 400, code: attFailed, inner: snp.CodeReportSignatureInvalid},
	})
}

// simBundle returns a simulated ACI bundle bound to the sample's wrapping
// key, with the suite's simulated HOST_DATA, edited by opts.
func simBundle(t *testing.T, c *simsnp.Chain, pubPEM string, edit func(*simsnp.ACIBundleOptions)) []byte {
	t.Helper()
	bind := sha256.Sum256([]byte(pubPEM))
	o := simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{ReportData: bind[:], HostData: simHostData[:]}}
	if edit != nil {
		edit(&o)
	}
	b, err := c.ACIBundle(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withUVM returns att with its UVM endorsement replaced by one over the
// simulated measurement, signed by tc under did and feed.
func withUVM(t *testing.T, att []byte, tc *uvm.TestChain, did, feed string, svn uint64) []byte {
	t.Helper()
	e, err := uvm.Sign(uvm.MarshalPayload(svn, []byte(simsnp.DefaultMeasurement)), tc.Key, tc.Chain, did, feed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return editField(t, att, "uvm_endorsements", func(string) string { return base64.StdEncoding.EncodeToString(e) })
}

// TestAppReleaseNegativeSimulated runs the cases that need evidence the
// real sample cannot provide (debug policy, a TCB below the VCEK's, UVM
// endorsements of other feeds, DIDs and measurements) against a server that
// trusts the simulated chain as `tkms dev` does, and simulated evidence
// against servers that do not.
func TestAppReleaseNegativeSimulated(t *testing.T) {
	c := negSimChain(t)
	ark, ask := c.Roots()
	roots := []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}
	simDID, simFeed := c.UVMTrust()
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tc, err := uvm.NewTestChain(uvmTestEKU, nb, na)
	if err != nil {
		t.Fatal(err)
	}
	tc2, err := uvm.NewTestChain(uvmTestEKU, nb, na)
	if err != nil {
		t.Fatal(err)
	}
	const minSVN = 50

	pub, err := os.ReadFile("../wrap/testdata/publicWrapKey.pem")
	if err != nil {
		t.Fatal(err)
	}
	good := simBundle(t, c, string(pub), nil)
	s := newRelServer(t, relOptions{
		evidence: good, roots: roots, simulated: true, minSVN: minSVN,
		uvmTrusted: []uvm.Endorser{{DID: simDID, Feed: simFeed}, {DID: tc.DID, Feed: uvmTestFeed}},
	})
	s.stillServes()
	last, err := s.kms.Entry(s.kms.Seq())
	if err != nil {
		t.Fatal(err)
	}
	var r state.KeyReleased
	if err := json.Unmarshal(last.Body, &r); err != nil || !r.Simulated || r.HostData != hex.EncodeToString(simHostData[:]) {
		t.Fatalf("simulated release recorded as %+v (%v)", r, err)
	}

	lower := c.TCB() - 1 // the microcode SPL is the top byte; the boot loader's the bottom one
	otherUVM := bytes.Repeat([]byte{0x5a}, 48)
	otherHost := sha256.Sum256([]byte("another container policy"))
	bundle := func(edit func(*simsnp.ACIBundleOptions)) func() []byte {
		b := simBundle(t, c, s.pubPEM, edit)
		return func() []byte { return s.withAttestation(b) }
	}
	att := func(a []byte) func() []byte { return func() []byte { return s.withAttestation(a) } }
	const attFailed = release.CodeAttestationFailed

	runNegCases(t, s, []negCase{
		{name: "debug policy", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.Debug = true }), status: 400, code: attFailed, inner: snp.CodePolicyDebug},
		{name: "/app/key debug policy", path: "/app/key", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.Debug = true }), status: 400, code: attFailed, inner: snp.CodePolicyDebug},
		{name: "TCB lower than the VCEK's", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.ReportedTCB = &lower }), status: 400, code: attFailed, inner: snp.CodeTCBMismatch},
		{name: "VMPL too high", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.VMPL = 1 }), status: 400, code: attFailed, inner: snp.CodeVMPLTooHigh},
		{name: "launch measurement of another UVM", body: bundle(func(o *simsnp.ACIBundleOptions) { o.UVMMeasurement = otherUVM }), status: 400, code: attFailed, inner: "UVM_MEASUREMENT_MISMATCH"},
		{name: "UVM SVN below minimum", body: bundle(func(o *simsnp.ACIBundleOptions) { o.UVMSVN = "49" }), status: 400, code: attFailed, inner: "UVM_SVN_TOO_LOW"},
		{name: "UVM SVN at minimum (released)", body: bundle(func(o *simsnp.ACIBundleOptions) { o.UVMSVN = "50" }), status: 200},
		{name: "UVM endorsement signature flipped", body: att(flipAt(t, good, "uvm_endorsements", func(n int) int { return n - 10 })), status: 400, code: attFailed, inner: "UVM_SIGNATURE_INVALID"},
		{name: "UVM endorsement of the second trusted endorser (released)", body: att(withUVM(t, good, tc, tc.DID, uvmTestFeed, 100)), status: 200},
		{name: "UVM endorsement wrong feed", body: att(withUVM(t, good, tc, tc.DID, "ContainerPlat-AMD-UVM", 100)), status: 400, code: attFailed, inner: "UVM_UNTRUSTED"},
		{name: "UVM endorsement DID of another root", body: att(withUVM(t, good, tc, simDID, simFeed, 100)), status: 400, code: attFailed, inner: "UVM_DID_MISMATCH"},
		{name: "UVM endorsement DID with an EKU the leaf lacks", body: att(withUVM(t, good, tc, strings.TrimSuffix(tc.DID, "1.2")+"1.5", uvmTestFeed, 100)), status: 400, code: attFailed, inner: "UVM_DID_MISMATCH"},
		{name: "UVM endorsement by an untrusted DID", body: att(withUVM(t, good, tc2, tc2.DID, uvmTestFeed, 100)), status: 400, code: attFailed, inner: "UVM_UNTRUSTED"},
		{name: "policy denies the host data", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.HostData = otherHost[:] }), status: 400, code: release.CodePolicyDenied},
		{name: "report data of another wrapping key", body: bundle(func(o *simsnp.ACIBundleOptions) { o.Report.ReportData = make([]byte, 32) }), status: 400, code: release.CodeWrappingKeyMismatch},
		{name: "real evidence (Microsoft UVM feed not trusted here)", body: func() []byte {
			e, _ := os.ReadFile("../attest/snp/testdata/aci_snp.json")
			return s.withAttestation(e)
		}, status: 400, code: attFailed, inner: "UVM_UNTRUSTED"},
	})

	// Simulated evidence where it is not trusted: production trust, and
	// the simulated roots without the explicit flag.
	for _, o := range []struct {
		name  string
		opts  relOptions
		code  string
		inner string
	}{
		{"production trust", relOptions{}, release.CodeAttestationFailed, snp.CodeCertChainInvalid},
		{"simulated roots without the flag", relOptions{roots: roots, uvmTrusted: append(uvm.DefaultTrusted(), uvm.Endorser{DID: simDID, Feed: simFeed})}, release.CodeSimulatedNotPermitted, ""},
	} {
		t.Run(o.name, func(t *testing.T) {
			o.opts.evidence = good
			strict := newRelServer(t, o.opts)
			for _, path := range []string{"/app/unwrapKey", "/app/key"} {
				resp, out := strict.post(path, strict.token(nil), strict.body(nil))
				wantError(t, resp, out, 400, o.code)
				var eb errorBody
				json.Unmarshal(out, &eb)
				if o.inner != "" && !strings.HasPrefix(eb.Error.Message, o.inner+": ") {
					t.Fatalf("%s: message %q, want %s first", path, eb.Error.Message, o.inner)
				}
			}
			if n := strict.releases(); n != 0 {
				t.Fatalf("%d releases of simulated evidence", n)
			}
			// The server keeps serving: real evidence is released.
			strict.good, _ = os.ReadFile("../attest/snp/testdata/aci_snp.json")
			strict.stillServes()
		})
	}
}
