package release

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"

	hpkepb "github.com/tink-crypto/tink-go/v2/proto/hpke_go_proto"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
)

// The real ACI evidence (a production ACI report, AMD-signed, with its
// Microsoft-signed UVM endorsement) and the RSA-4096 wrapping key pair whose
// public PEM's SHA-256 is its REPORT_DATA[0:32]. See the PROVENANCE.md files
// beside them.
const (
	aciSample      = "../attest/snp/testdata/aci_snp.json"
	wrapPublicPEM  = "../wrap/testdata/publicWrapKey.pem"
	wrapPrivatePEM = "../wrap/testdata/privateWrapKey.pem"
	aciHostData    = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
	audience       = "api://tkms-test"
	principal      = "11111111-2222-3333-4444-555555555555"
)

func depaPolicy(hostData ...string) []byte {
	b, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-ver": []string{"2", "3"}, "x-ms-sevsnpvm-smt-allowed": true,
		"x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-hostdata": hostData,
	}})
	return b
}

type env struct {
	t        *testing.T
	issuer   *oidcissuer.Issuer
	kms      *kms.Service
	rel      *Service
	evidence []byte
	pubPEM   string
	priv     *rsa.PrivateKey
}

func newEnv(t *testing.T, releasePolicy []byte) *env { return newEnvAt(t, releasePolicy, nil) }

// newEnvAt is newEnv with the KMS on an injected clock (nil: time.Now).
func newEnvAt(t *testing.T, releasePolicy []byte, now func() time.Time) *env {
	t.Helper()
	e := &env{t: t}
	var err error
	e.issuer = releasetest.Issuer(t)
	log := slog.New(slog.DiscardHandler)
	e.kms = releasetest.KMS(t, kms.Config{ReleasePolicy: releasePolicy, Now: now})
	auth := releasetest.Auth(t, e.issuer, audience)
	av, err := attest.New(attest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.rel, err = New(Config{KMS: e.kms, Auth: auth, Attest: av, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if e.evidence, err = os.ReadFile(aciSample); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(wrapPublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	e.pubPEM = string(pub)
	privPEM, _ := os.ReadFile(wrapPrivatePEM)
	blk, _ := pem.Decode(privPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		rk, err2 := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err2 != nil {
			t.Fatal(err)
		}
		k = rk
	}
	e.priv = k.(*rsa.PrivateKey)
	return e
}

func (e *env) token(mutate func(map[string]any)) string {
	e.t.Helper()
	c := e.issuer.ManagedIdentityClaims(oidcissuer.ManagedIdentity{Audience: audience, PrincipalID: principal, TenantID: "t"})
	if mutate != nil {
		mutate(c)
	}
	tok, err := e.issuer.Mint(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return "Bearer " + tok
}

func (e *env) body(mutate func(map[string]any)) []byte {
	b := map[string]any{"attestation": json.RawMessage(e.evidence), "wrappingKey": e.pubPEM, "wrappedKid": e.kid(), "wrapped": ""}
	if mutate != nil {
		mutate(b)
	}
	out, _ := json.Marshal(b)
	return out
}

func (e *env) kid() string {
	var kid string
	e.kms.Read(func(st *state.State) { kid = st.Keys[0].Kid })
	return kid
}

func (e *env) unwrap(wrapped string) []byte {
	e.t.Helper()
	ct, err := base64.StdEncoding.DecodeString(wrapped)
	if err != nil {
		e.t.Fatal(err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, e.priv, ct, nil)
	if err != nil {
		e.t.Fatalf("unwrap with the test's private key: %v", err)
	}
	return pt
}

// TestAppUnwrapRealEvidence releases the first key to the real ACI evidence,
// in both formats, and checks that what the service unwraps is the private
// key of the published public key, and that each release is in the ledger.
func TestAppUnwrapRealEvidence(t *testing.T) {
	e := newEnv(t, depaPolicy(aciHostData))
	var k state.Key
	e.kms.Read(func(st *state.State) { k = *st.Keys[0] })

	resp, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), "jwk")
	if err != nil {
		t.Fatal(err)
	}
	var item keys.Item
	if err := json.Unmarshal(e.unwrap(resp.Wrapped), &item); err != nil {
		t.Fatal(err)
	}
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) || item.Kid != k.Kid {
		t.Fatalf("released jwk does not hold the key's private key (%v)", err)
	}

	resp, err = e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), "tink")
	if err != nil {
		t.Fatal(err)
	}
	var ks tinkpb.Keyset
	if err := proto.Unmarshal(e.unwrap(resp.Wrapped), &ks); err != nil {
		t.Fatal(err)
	}
	var hk hpkepb.HpkePrivateKey
	if err := proto.Unmarshal(ks.GetKey()[0].GetKeyData().GetValue(), &hk); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hk.GetPrivateKey(), d) || !bytes.Equal(hk.GetPublicKey().GetPublicKey(), k.PublicKey) {
		t.Fatal("tink keyset does not hold the key pair")
	}

	var n uint64
	e.kms.Read(func(st *state.State) { n = st.Releases })
	if n != 2 {
		t.Fatalf("%d releases in the ledger, want 2", n)
	}

	// The newest entry records the tink release: who, on what evidence,
	// under which policy, and no key material.
	last, err := e.kms.Entry(e.kms.Seq())
	if err != nil {
		t.Fatal(err)
	}
	var r state.KeyReleased
	if err := json.Unmarshal(last.Body, &r); err != nil || last.Type != ledger.TypeKeyReleased {
		t.Fatalf("newest entry %s: %v", last.Type, err)
	}
	bind := sha256.Sum256([]byte(e.pubPEM))
	if len(r.Kids) != 1 || r.Kids[0] != k.Kid || r.API != "app/unwrapKey" || r.Format != "tink" ||
		r.Identity != principal || r.EvidenceType != "snp-aci" || r.Simulated || r.HostData != aciHostData ||
		r.WrappingKeySHA256 != hex.EncodeToString(bind[:]) || r.PolicySeq == 0 || len(r.PolicySHA256) != 64 || len(r.ReportSHA256) != 64 {
		t.Fatalf("release record %+v", r)
	}
	if bytes.Contains(last.Body, d) || bytes.Contains(last.Body, []byte(item.D)) || last.Sealed != nil {
		t.Fatal("the release record holds key material")
	}
	// It carries the claims the policy was evaluated on, and the policy
	// in force still allows them: what an auditor re-checks.
	if r.Claims["x-ms-sevsnpvm-hostdata"] != aciHostData {
		t.Fatalf("recorded claims %v lack the host data", r.Claims)
	}
	var pol []byte
	e.kms.Read(func(st *state.State) { pol = st.ReleasePolicy })
	p, err := policy.Parse(pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.Evaluate(p, r.Claims); err != nil {
		t.Fatalf("the policy denies the recorded claims: %v", err)
	}
	// The answer's receipt proves that very entry is in the log.
	checkReceipt(t, e.kms, resp.Receipt, last)
}

// checkReceipt verifies a receipt against the service's log key and that
// it is the receipt of entry want.
func checkReceipt(t *testing.T, svc *kms.Service, receipt string, want *ledger.Entry) {
	t.Helper()
	rc, err := translog.ParseReceipt([]byte(receipt))
	if err != nil {
		t.Fatal(err)
	}
	v, err := translog.NewVerifier(svc.LogVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := rc.Verify(v)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Seq != want.Seq || leaf.Type != want.Type || !bytes.Equal(leaf.Body, want.Body) {
		t.Fatalf("receipt of seq %d %s, want seq %d %s", leaf.Seq, leaf.Type, want.Seq, want.Type)
	}
}

// TestAppUnwrapDenials: each failure a caller can cause has its status and
// code, nothing is released, and the service goes on serving.
func TestAppUnwrapDenials(t *testing.T) {
	e := newEnv(t, depaPolicy(aciHostData))
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	var evidence map[string]string
	json.Unmarshal(e.evidence, &evidence)
	tamper := func(field string, f func([]byte)) json.RawMessage {
		c := map[string]string{}
		for k, v := range evidence {
			c[k] = v
		}
		raw, _ := base64.StdEncoding.DecodeString(c[field])
		f(raw)
		c[field] = base64.StdEncoding.EncodeToString(raw)
		out, _ := json.Marshal(c)
		return out
	}
	now := time.Now()
	for _, tc := range []struct {
		name   string
		auth   string
		body   []byte
		format string
		kind   Kind
		code   string
	}{
		{"not json", e.token(nil), []byte("{"), "", KindRefused, CodeInvalidRequest},
		{"no attestation", e.token(nil), e.body(func(b map[string]any) { delete(b, "attestation") }), "", KindRefused, CodeInvalidRequest},
		{"no token", "", e.body(nil), "", KindUnauthenticated, "JWT_MISSING"},
		{"expired token", e.token(func(c map[string]any) {
			c["exp"] = now.Add(-time.Hour).Unix()
			c["nbf"] = now.Add(-2 * time.Hour).Unix()
		}), e.body(nil), "", KindUnauthenticated, "JWT_EXPIRED"},
		{"wrong audience", e.token(func(c map[string]any) { c["aud"] = "api://other" }), e.body(nil), "", KindUnauthenticated, "JWT_AUDIENCE"},
		{"jwt policy mismatch", e.token(func(c map[string]any) { c["idtyp"] = "user" }), e.body(nil), "", KindUnauthenticated, "JWT_POLICY_MISMATCH"},
		{"no wrappedKid", e.token(nil), e.body(func(b map[string]any) { delete(b, "wrappedKid") }), "", KindRefused, CodeMissingWrappedKid},
		{"empty wrappedKid", e.token(nil), e.body(func(b map[string]any) { b["wrappedKid"] = "" }), "", KindNotFound, CodeKeyNotFound},
		{"no wrappingKey", e.token(nil), e.body(func(b map[string]any) { delete(b, "wrappingKey") }), "", KindRefused, CodeInvalidPEMFormat},
		{"wrappingKey not PEM", e.token(nil), e.body(func(b map[string]any) { b["wrappingKey"] = "hello" }), "", KindRefused, CodeInvalidPEMFormat},
		{"wrappingKey too small", e.token(nil), e.body(func(b map[string]any) { b["wrappingKey"] = smallPEM }), "", KindRefused, CodeWrappingKeyError},
		{"bad fmt", e.token(nil), e.body(nil), "pem", KindRefused, CodeInvalidFmtParameter},
		{"report signature flipped", e.token(nil), e.body(func(b map[string]any) {
			b["attestation"] = tamper("evidence", func(r []byte) { r[0x2A0+5] ^= 1 })
		}), "", KindRefused, CodeAttestationFailed},
		{"measurement flipped", e.token(nil), e.body(func(b map[string]any) {
			b["attestation"] = tamper("evidence", func(r []byte) { r[0x90] ^= 1 })
		}), "", KindRefused, CodeAttestationFailed},
		{"report truncated", e.token(nil), e.body(func(b map[string]any) {
			b["attestation"] = tamper("evidence", func(r []byte) {})
			var m map[string]string
			json.Unmarshal(b["attestation"].(json.RawMessage), &m)
			m["evidence"] = m["evidence"][:100]
			b["attestation"], _ = json.Marshal(m)
		}), "", KindRefused, CodeAttestationFailed},
		{"uvm endorsement flipped", e.token(nil), e.body(func(b map[string]any) {
			b["attestation"] = tamper("uvm_endorsements", func(r []byte) { r[len(r)-10] ^= 1 })
		}), "", KindRefused, CodeAttestationFailed},
		{"endorsed_tcb mismatch", e.token(nil), e.body(func(b map[string]any) {
			c := map[string]string{}
			for k, v := range evidence {
				c[k] = v
			}
			c["endorsed_tcb"] = "0000000000000000"
			b["attestation"], _ = json.Marshal(c)
		}), "", KindRefused, CodeAttestationFailed},
		{"binding: PEM without trailing newline", e.token(nil), e.body(func(b map[string]any) {
			b["wrappingKey"] = strings.TrimSuffix(e.pubPEM, "\n")
		}), "", KindRefused, CodeWrappingKeyMismatch},
		{"unknown kid", e.token(nil), e.body(func(b map[string]any) { b["wrappedKid"] = "AAAA_42" }), "", KindNotFound, CodeKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.rel.AppUnwrap(context.Background(), tc.auth, tc.body, tc.format)
			var re *Error
			if !errors.As(err, &re) || re.Kind != tc.kind || re.Code != tc.code {
				t.Fatalf("got %v, want kind %d %s", err, tc.kind, tc.code)
			}
		})
	}
	var n uint64
	e.kms.Read(func(st *state.State) { n = st.Releases })
	if n != 0 {
		t.Fatalf("%d releases after denials", n)
	}
	if _, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), ""); err != nil {
		t.Fatalf("service stopped serving after denials: %v", err)
	}
}

func TestPolicyDenialAndUnset(t *testing.T) {
	e := newEnv(t, depaPolicy("00"+aciHostData[2:]))
	_, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), "")
	var re *Error
	if !errors.As(err, &re) || re.Code != CodePolicyDenied || !strings.Contains(re.Message, "x-ms-sevsnpvm-hostdata") {
		t.Fatalf("policy naming another host_data: %v", err)
	}
	e = newEnv(t, nil)
	_, err = e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), "")
	if !errors.As(err, &re) || re.Code != CodePolicyUnset {
		t.Fatalf("unset policy: %v", err)
	}
}

func TestAppKeyTinkAll(t *testing.T) {
	e := newEnv(t, depaPolicy(aciHostData))
	if _, err := e.kms.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	resp, err := e.rel.AppKey(context.Background(), e.token(nil), e.body(nil), "", "tink", true)
	if err != nil {
		t.Fatal(err)
	}
	var tk tinkKeys
	if err := json.Unmarshal([]byte(resp.Wrapped), &tk); err != nil || len(tk.Keys) != 2 {
		t.Fatalf("all=true tink: %s (%v)", resp.Wrapped, err)
	}
	var newest string
	e.kms.Read(func(st *state.State) { newest = st.Newest().Kid })
	// Newest first; the first is the one wrappedKid names.
	for i, want := range []string{newest, e.kid()} {
		if uri := tk.Keys[i].KeyData[0].KeyEncryptionKeyURI; !strings.HasPrefix(uri, "azu-kms://") || uri[10:] != want {
			t.Fatalf("all=true: key %d keyEncryptionKeyUri %q; want %s", i, uri, want)
		}
	}
	if resp.WrappedKid != newest {
		t.Fatalf("all=true: wrappedKid %s; want the newest, %s", resp.WrappedKid, newest)
	}
	// Without a kid: the newest releasable key (the refreshed one, not yet
	// advertised), and with fmt=tink the advertised primary after it.
	resp, err = e.rel.AppKey(context.Background(), e.token(nil), e.body(nil), "", "jwk", false)
	if err != nil || resp.Wrapped != "" || resp.WrappedKid != newest || newest == e.kid() {
		t.Fatalf("jwk: %+v %v; want the newest key %s", resp, err, newest)
	}
	resp, err = e.rel.AppKey(context.Background(), e.token(nil), e.body(nil), "", "tink", false)
	tk = tinkKeys{}
	if err != nil || json.Unmarshal([]byte(resp.Wrapped), &tk) != nil || len(tk.Keys) != 2 || resp.WrappedKid != newest ||
		tk.Keys[0].KeyData[0].KeyEncryptionKeyURI != "azu-kms://"+newest || tk.Keys[1].KeyData[0].KeyEncryptionKeyURI != "azu-kms://"+e.kid() {
		t.Fatalf("tink without kid: %+v %v; want the newest %s, then the primary %s", resp, err, newest, e.kid())
	}
	if _, err := e.rel.AppKey(context.Background(), e.token(nil), e.body(nil), "nope_9", "jwk", false); err == nil {
		t.Fatal("unknown kid accepted")
	}
}

// TestGraceAndExpiry: a retired key is released until the end of its grace
// period, then answered 410.
func TestGraceAndExpiry(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	e := newEnvAt(t, depaPolicy(aciHostData), now)
	kid := e.kid()
	var k state.Key
	e.kms.Read(func(st *state.State) { k = *st.Keys[0] })

	mu.Lock()
	clock = k.NotAfter.Add(time.Hour) // retired, in grace
	mu.Unlock()
	if _, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), ""); err != nil {
		t.Fatalf("key in grace: %v", err)
	}
	mu.Lock()
	clock = k.ReleaseUntil // grace over
	mu.Unlock()
	_, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(func(b map[string]any) { b["wrappedKid"] = kid }), "")
	var re *Error
	if !errors.As(err, &re) || re.Kind != KindGone || re.Code != CodeKeyExpired {
		t.Fatalf("expired key: %v", err)
	}
}

// TestDenialsRecordedRateLimited: refusals of an authenticated caller are in
// the ledger, one entry per caller and code per DenialInterval with the
// others counted; unauthenticated failures are not recorded.
func TestDenialsRecordedRateLimited(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	e := newEnvAt(t, depaPolicy("00"+aciHostData[2:]), now) // denies the sample
	entries := func(typ ledger.Type) []*ledger.Entry {
		var out []*ledger.Entry
		for seq := uint64(1); seq <= e.kms.Seq(); seq++ {
			en, err := e.kms.Entry(seq)
			if err != nil {
				t.Fatal(err)
			}
			if en.Type == typ {
				out = append(out, en)
			}
		}
		return out
	}
	for range 3 {
		if _, err := e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), ""); err == nil {
			t.Fatal("released under a policy that denies")
		}
	}
	if _, err := e.rel.AppUnwrap(context.Background(), "", e.body(nil), ""); err == nil {
		t.Fatal("released without a token")
	}
	if got := entries(ledger.TypeReleaseDenied); len(got) != 1 {
		t.Fatalf("%d denial entries after 3 refusals in a minute, want 1", len(got))
	}
	mu.Lock()
	clock = clock.Add(DenialInterval)
	mu.Unlock()
	e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(nil), "")
	got := entries(ledger.TypeReleaseDenied)
	if len(got) != 2 {
		t.Fatalf("%d denial entries, want 2", len(got))
	}
	var d state.ReleaseDenied
	json.Unmarshal(got[1].Body, &d)
	if d.Code != CodePolicyDenied || d.Identity != principal || d.API != "app/unwrapKey" || d.Suppressed != 2 {
		t.Fatalf("denial record %+v", d)
	}
	var n uint64
	e.kms.Read(func(st *state.State) { n = st.Denials })
	if n != 4 {
		t.Fatalf("state counts %d denials, want 4", n)
	}
}

// TestRawSNPEvidence: a raw SNP report with its VCEK ({"type":"snp"}) goes
// through the same verifier; no UVM endorsement vouches for it, so a policy
// that does not name tkms-evidence-type refuses it (EVIDENCE_TYPE_NOT_ADMITTED)
// even when it names no UVM claim either; under one that admits it, a real
// bare-metal report passes evidence and policy and then fails only the
// binding (its REPORT_DATA is not our wrapping key's hash); the go-sev-guest
// sample with the DEBUG policy is refused.
func TestRawSNPEvidence(t *testing.T) {
	report, _ := os.ReadFile("../attest/snp/testdata/trustee_test-report.bin")
	vcek, _ := os.ReadFile("../attest/snp/testdata/trustee_test-vcek.der")
	raw, _ := json.Marshal(api.RawSNP{Type: "snp", Report: report, VCEK: vcek})
	e := newEnv(t, nil)
	ev, err := e.rel.VerifyEvidence(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "snp" || ev.Claims["x-ms-attestation-type"] != "sevsnpvm" || ev.Claims["uvm_endorsements-feed"] != nil {
		t.Fatalf("raw evidence: %+v", ev)
	}
	if ev.Claims["tkms-evidence-type"] != "snp" || ev.Claims["tkms-snp-product-line"] != "Milan" {
		t.Fatalf("raw evidence claims: %v", ev.Claims)
	}
	measurement := []string{hex.EncodeToString(ev.Measurement)}
	var re *Error
	for _, tc := range []struct {
		name   string
		claims map[string]any
		code   string
	}{
		{"a policy naming its measurement only", map[string]any{"x-ms-sevsnpvm-launchmeasurement": measurement}, "EVIDENCE_TYPE_NOT_ADMITTED"},
		{"the dev policy's shape", map[string]any{"x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-launchmeasurement": measurement}, "EVIDENCE_TYPE_NOT_ADMITTED"},
		{"a policy admitting ACI evidence only", map[string]any{"x-ms-sevsnpvm-launchmeasurement": measurement, "tkms-evidence-type": "snp-aci"}, CodePolicyDenied},
		{"a policy admitting raw evidence", map[string]any{"x-ms-sevsnpvm-launchmeasurement": measurement, "tkms-evidence-type": []string{"snp-aci", "snp"}}, CodeWrappingKeyMismatch},
	} {
		pol, _ := json.Marshal(map[string]any{"claims": tc.claims})
		e = newEnv(t, pol)
		_, err = e.rel.AppUnwrap(context.Background(), e.token(nil), e.body(func(b map[string]any) { b["attestation"] = json.RawMessage(raw) }), "")
		if !errors.As(err, &re) || re.Code != tc.code || re.Kind != KindRefused {
			t.Fatalf("raw evidence under %s: %v, want a refusal %s", tc.name, err, tc.code)
		}
	}

	dbgReport, _ := os.ReadFile("../attest/snp/testdata/gosevguest_attestation.bin")
	dbgVCEK, _ := os.ReadFile("../attest/snp/testdata/gosevguest_vcek.testcer")
	dbg, _ := json.Marshal(api.RawSNP{Type: "snp", Report: dbgReport[:1184], VCEK: dbgVCEK})
	_, err = e.rel.VerifyEvidence(context.Background(), dbg)
	if !errors.As(err, &re) || re.Code != CodeAttestationFailed || !strings.Contains(re.Message, "POLICY_DEBUG") {
		t.Fatalf("debug report: %v", err)
	}
	bad, _ := json.Marshal(api.RawSNP{Type: "snp", Report: report})
	if _, err = e.rel.VerifyEvidence(context.Background(), bad); !errors.As(err, &re) || !strings.Contains(re.Message, "REPORT_MALFORMED") {
		t.Fatalf("raw evidence without a certificate: %v", err)
	}
}
