package release

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// simHostData is the HOST_DATA of the simulated reports of these tests,
// which their release policy names.
var simHostData = bytes.Repeat([]byte{0x5a}, 32)

// simFixture is the simulated TEE's chain kept in simsnp's testdata, so
// that tests need not generate RSA-4096 keys.
const simFixture = "../attest/simsnp/testdata/" + simsnp.ChainFile

// testClock is the KMS clock of a test: it decides key phases and nonce
// expiry.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// simEnv is a release service whose SNP and UVM verifiers trust the
// simulated TEE's chain (pinned to a time inside its validity).
type simEnv struct {
	*env
	chain *simsnp.Chain
	at    time.Time // when the simulated chain is valid
	clock *testClock
}

// loadSimChain loads a copy of the simulated chain fixture.
func loadSimChain(t testing.TB) *simsnp.Chain {
	t.Helper()
	b, err := os.ReadFile(simFixture)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := simsnp.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSimEnv(t *testing.T, configure func(*Config, *attest.Config)) *simEnv {
	t.Helper()
	return newSimEnvKMS(t, configure, nil)
}

// newSimEnvKMS is newSimEnv with the KMS's configuration edited by
// configureKMS (nil: unchanged).
func newSimEnvKMS(t *testing.T, configure func(*Config, *attest.Config), configureKMS func(*kms.Config)) *simEnv {
	t.Helper()
	e := &simEnv{env: &env{t: t}, chain: loadSimChain(t), clock: &testClock{t: time.Now()}}
	e.at = e.chain.VCEK().NotBefore.Add(24 * time.Hour)
	var err error
	e.issuer = releasetest.Issuer(t)
	log := slog.New(slog.DiscardHandler)
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-hostdata": []string{hex.EncodeToString(simHostData)}, "x-ms-sevsnpvm-is-debuggable": false,
	}})
	kc := kms.Config{ReleasePolicy: pol, Now: e.clock.Now}
	if configureKMS != nil {
		configureKMS(&kc)
	}
	e.kms = releasetest.KMS(t, kc)
	auth := releasetest.Auth(t, e.issuer, audience)
	ark, ask := e.chain.Roots()
	did, feed := e.chain.UVMTrust()
	ac := attest.Config{SNP: snp.Options{Now: func() time.Time { return e.at }, Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}}, SimulatedEndorsers: []uvm.Endorser{{DID: did, Feed: feed}}, Simulated: true}
	cfg := Config{KMS: e.kms, Auth: auth, Logger: log}
	if configure != nil {
		configure(&cfg, &ac)
	}
	if cfg.Attest, err = attest.New(ac); err != nil {
		t.Fatal(err)
	}
	if e.rel, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// attest returns simulated ACI evidence with the given REPORT_DATA.
func (e *simEnv) attest(reportData []byte) json.RawMessage {
	e.t.Helper()
	b, err := e.chain.ACIBundle(simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{ReportData: reportData, HostData: simHostData}, SigningTime: e.at})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// v1Body is a /v1 release body whose evidence binds wk (and nonce, if any).
func (e *simEnv) v1Body(wk *testWrappingKey, nonce []byte, mutate func(map[string]any)) []byte {
	e.t.Helper()
	bind := sha256.Sum256(wk.canonical)
	rd := append(bind[:], nonce...)
	b := map[string]any{"attestation": e.attest(rd), "wrapping_key": wk.json}
	if nonce != nil {
		b["nonce"] = hex.EncodeToString(nonce)
	}
	if mutate != nil {
		mutate(b)
	}
	out, err := json.Marshal(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *simEnv) kids() []string {
	var kids []string
	e.kms.Read(func(st *state.State) {
		for _, k := range st.Keys {
			kids = append(kids, k.Kid)
		}
	})
	return kids
}

func (e *simEnv) releases() uint64 {
	var n uint64
	e.kms.Read(func(st *state.State) { n = st.Releases })
	return n
}

// lastRelease returns the newest ledger entry, which must record a release.
func (e *simEnv) lastRelease() state.KeyReleased {
	e.t.Helper()
	last, err := e.kms.Entry(e.kms.Seq())
	if err != nil {
		e.t.Fatal(err)
	}
	var r state.KeyReleased
	if err := json.Unmarshal(last.Body, &r); err != nil || last.Type != ledger.TypeKeyReleased {
		e.t.Fatalf("newest entry %s: %v", last.Type, err)
	}
	return r
}

// testWrappingKey is a client's wrapping key pair, as a /v1 request sends
// it and as the client unwraps with it.
type testWrappingKey struct {
	name      string
	json      map[string]any
	canonical []byte
	unwrap    func(kid string, wrapped []byte) ([]byte, error)
}

func hpkeWrappingKey(t testing.TB, kemID uint16) *testWrappingKey {
	t.Helper()
	kem, err := hpke.NewKEM(kemID)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := sk.PublicKey().Bytes()
	return &testWrappingKey{
		name:      fmt.Sprintf("hpke-kem-0x%04x", kemID),
		json:      map[string]any{"type": "hpke", "kem_id": kemID, "public_key": base64.StdEncoding.EncodeToString(pub)},
		canonical: wrap.CanonicalHPKE(kemID, pub),
		unwrap: func(kid string, wrapped []byte) ([]byte, error) {
			return hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(kid), wrapped)
		},
	}
}

var rsaWrapping = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		panic(err)
	}
	return k
})

func rsaWrappingKey(t testing.TB) *testWrappingKey {
	t.Helper()
	sk := rsaWrapping()
	der, err := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &testWrappingKey{
		name:      "rsa-3072",
		json:      map[string]any{"type": "rsa", "spki": base64.StdEncoding.EncodeToString(der)},
		canonical: der,
		unwrap: func(_ string, wrapped []byte) ([]byte, error) {
			return rsa.DecryptOAEP(sha256.New(), nil, sk, wrapped, nil)
		},
	}
}

// checkReleased unwraps every released key with wk and checks that it is
// the private key of the published public key, and that the keys are
// exactly wantKids, in order.
func (e *simEnv) checkReleased(resp *api.V1ReleaseResponse, wk *testWrappingKey, wantKids []string) {
	e.t.Helper()
	var got []string
	for _, rk := range resp.Keys {
		got = append(got, rk.Kid)
		var k state.Key
		e.kms.Read(func(st *state.State) { k = *st.Key(rk.Kid) })
		if rk.ID != k.ID || rk.Suite != k.Suite || rk.KEM != k.KEM || rk.KDF != k.KDF || rk.AEAD != k.AEAD ||
			!bytes.Equal(rk.PublicKey, k.PublicKey) || !rk.NotAfter.Equal(k.NotAfter) ||
			!rk.NotBefore.Equal(k.NotBefore) || !rk.ReleaseUntil.Equal(k.ReleaseUntil) {
			e.t.Fatalf("released key %s: description %+v differs from the ledger's", rk.Kid, rk)
		}
		priv, err := wk.unwrap(rk.Kid, rk.Wrapped)
		if err != nil {
			e.t.Fatalf("unwrap %s with the %s wrapping key: %v", rk.Kid, wk.name, err)
		}
		suite, err := keys.ParseSuite(rk.Suite)
		if err != nil {
			e.t.Fatal(err)
		}
		sk, err := suite.PrivateKey(priv)
		if err != nil {
			e.t.Fatalf("released key %s: %v", rk.Kid, err)
		}
		if !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) {
			e.t.Fatalf("released key %s is not the private key of its public key", rk.Kid)
		}
	}
	if !slices.Equal(got, wantKids) {
		e.t.Fatalf("released %v, want %v", got, wantKids)
	}
}

// TestV1ReleaseSingle releases the first key to each kind of wrapping key
// and unwraps it as the client would; each release is one ledger entry
// marked simulated, bound to the wrapping key's canonical hash.
func TestV1ReleaseSingle(t *testing.T) {
	e := newSimEnv(t, nil)
	kid := e.kids()[0]
	for i, wk := range []*testWrappingKey{
		hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256),
		hpkeWrappingKey(t, keys.KEMMLKEM768X25519),
		rsaWrappingKey(t),
	} {
		t.Run(wk.name, func(t *testing.T) {
			resp, err := e.rel.V1Release(context.Background(), e.token(nil), kid, e.v1Body(wk, nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			e.checkReleased(resp, wk, []string{kid})
			if n := e.releases(); n != uint64(i+1) {
				t.Fatalf("%d releases in the ledger, want %d", n, i+1)
			}
			r := e.lastRelease()
			bind := sha256.Sum256(wk.canonical)
			if !slices.Equal(r.Kids, []string{kid}) || r.API != "v1/release" || !r.Simulated || r.Identity != principal ||
				r.EvidenceType != "snp-aci" || r.HostData != hex.EncodeToString(simHostData) ||
				r.WrappingKeySHA256 != hex.EncodeToString(bind[:]) || r.PolicySeq == 0 {
				t.Fatalf("release record %+v", r)
			}
			last, err := e.kms.Entry(e.kms.Seq())
			if err != nil {
				t.Fatal(err)
			}
			checkReceipt(t, e.kms, string(resp.Receipt), last)
		})
	}
}

// TestV1ReleaseBatch releases four keys on one piece of evidence, by kids
// and by all_valid, each batch one ledger entry naming every kid.
func TestV1ReleaseBatch(t *testing.T) {
	e := newSimEnv(t, nil)
	for range 3 {
		if _, err := e.kms.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
			t.Fatal(err)
		}
	}
	kids := e.kids()
	if len(kids) != 4 {
		t.Fatalf("%d keys", len(kids))
	}
	wk := hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256)
	order := []string{kids[2], kids[0], kids[3], kids[1]}
	resp, err := e.rel.V1ReleaseBatch(context.Background(), e.token(nil), e.v1Body(wk, nil, func(b map[string]any) { b["kids"] = order }))
	if err != nil {
		t.Fatal(err)
	}
	e.checkReleased(resp, wk, order)
	if n := e.releases(); n != 1 {
		t.Fatalf("%d ledger releases for one batch", n)
	}
	if r := e.lastRelease(); !slices.Equal(r.Kids, order) || r.API != "v1/release" || !r.Simulated {
		t.Fatalf("batch record %+v", r)
	}

	rw := rsaWrappingKey(t)
	resp, err = e.rel.V1ReleaseBatch(context.Background(), e.token(nil), e.v1Body(rw, nil, func(b map[string]any) { b["all_valid"] = true }))
	if err != nil {
		t.Fatal(err)
	}
	e.checkReleased(resp, rw, kids)
	if r := e.lastRelease(); e.releases() != 2 || !slices.Equal(r.Kids, kids) {
		t.Fatalf("all_valid record %+v", r)
	}

	// The first key expires: all_valid leaves it out; naming it fails the
	// whole batch with 410, and nothing is released.
	var k0 state.Key
	e.kms.Read(func(st *state.State) { k0 = *st.Key(kids[0]) })
	e.clock.Add(k0.ReleaseUntil.Sub(e.clock.Now()))
	resp, err = e.rel.V1ReleaseBatch(context.Background(), e.token(nil), e.v1Body(wk, nil, func(b map[string]any) { b["all_valid"] = true }))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, kid := range kids {
		var k state.Key
		e.kms.Read(func(st *state.State) { k = *st.Key(kid) })
		if k.Phase(e.clock.Now()) < state.Expired {
			want = append(want, kid)
		}
	}
	if len(want) == len(kids) {
		t.Fatal("no key expired")
	}
	e.checkReleased(resp, wk, want)
	_, err = e.rel.V1ReleaseBatch(context.Background(), e.token(nil), e.v1Body(wk, nil, func(b map[string]any) { b["kids"] = kids }))
	wantErr(t, err, KindGone, CodeKeyExpired)
	_, err = e.rel.V1Release(context.Background(), e.token(nil), kids[0], e.v1Body(wk, nil, nil))
	wantErr(t, err, KindGone, CodeKeyExpired)
	if n := e.releases(); n != 3 {
		t.Fatalf("%d releases, want 3", n)
	}
}

func wantErr(t *testing.T, err error, kind Kind, code string) {
	t.Helper()
	var re *Error
	if !errors.As(err, &re) || re.Kind != kind || re.Code != code {
		t.Fatalf("got %v, want kind %d %s", err, kind, code)
	}
}

// TestV1ReleaseDenials: each failure a caller can cause has its status and
// code, nothing is released, and the service goes on serving.
func TestV1ReleaseDenials(t *testing.T) {
	e := newSimEnv(t, nil)
	kid := e.kids()[0]
	x := hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256)
	other := hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	p256 := hpkeWrappingKey(t, keys.KEMP256HKDFSHA256)
	good := e.v1Body(x, nil, nil)
	withWK := func(wk map[string]any) []byte {
		return e.v1Body(x, nil, func(b map[string]any) { b["wrapping_key"] = wk })
	}
	for _, tc := range []struct {
		name string
		auth string
		kid  string // "" for the batch endpoint
		body []byte
		kind Kind
		code string
	}{
		{"not json", e.token(nil), kid, []byte("{"), KindRefused, CodeInvalidRequest},
		{"unknown field", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) { b["wrappedKid"] = kid }), KindRefused, CodeInvalidRequest},
		{"trailing data", e.token(nil), kid, append(bytes.Clone(good), "{}"...), KindRefused, CodeInvalidRequest},
		{"no attestation", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) { delete(b, "attestation") }), KindRefused, CodeInvalidRequest},
		{"no token", "", kid, good, KindUnauthenticated, "JWT_MISSING"},
		{"kids on the single endpoint", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) { b["kids"] = []string{kid} }), KindRefused, CodeInvalidRequest},
		{"batch without kids", e.token(nil), "", good, KindRefused, CodeInvalidRequest},
		{"batch with kids and all_valid", e.token(nil), "", e.v1Body(x, nil, func(b map[string]any) { b["kids"] = []string{kid}; b["all_valid"] = true }), KindRefused, CodeInvalidRequest},
		{"batch with duplicate kids", e.token(nil), "", e.v1Body(x, nil, func(b map[string]any) { b["kids"] = []string{kid, kid} }), KindRefused, CodeInvalidRequest},
		{"no wrapping_key", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) { delete(b, "wrapping_key") }), KindRefused, CodeWrappingKeyError},
		{"wrapping_key type unknown", e.token(nil), kid, withWK(map[string]any{"type": "ec", "public_key": x.json["public_key"]}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key bad base64", e.token(nil), kid, withWK(map[string]any{"type": "hpke", "kem_id": 32, "public_key": "not base64!"}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key spki bad base64", e.token(nil), kid, withWK(map[string]any{"type": "rsa", "spki": "@@@"}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key spki not a key", e.token(nil), kid, withWK(map[string]any{"type": "rsa", "spki": "AAAA"}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key RSA too small", e.token(nil), kid, withWK(map[string]any{"type": "rsa", "spki": base64.StdEncoding.EncodeToString(smallDER)}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key unsupported kem", e.token(nil), kid, withWK(p256.json), KindRefused, CodeWrappingKeyError},
		{"wrapping_key wrong length", e.token(nil), kid, withWK(map[string]any{"type": "hpke", "kem_id": 32, "public_key": "AAAA"}), KindRefused, CodeWrappingKeyError},
		{"wrapping_key mixes types", e.token(nil), kid, withWK(map[string]any{"type": "hpke", "kem_id": 32, "public_key": x.json["public_key"], "spki": "AAAA"}), KindRefused, CodeWrappingKeyError},
		{"binding mismatch", e.token(nil), kid, e.v1Body(other, nil, func(b map[string]any) { b["wrapping_key"] = x.json }), KindRefused, CodeWrappingKeyMismatch},
		{"nonce not hex", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) { b["nonce"] = "xyz" }), KindRefused, CodeNonceInvalid},
		{"unknown kid", e.token(nil), "AAAA_42", good, KindNotFound, CodeKeyNotFound},
		{"batch with an unknown kid", e.token(nil), "", e.v1Body(x, nil, func(b map[string]any) { b["kids"] = []string{kid, "AAAA_42"} }), KindNotFound, CodeKeyNotFound},
		{"attestation tampered", e.token(nil), kid, e.v1Body(x, nil, func(b map[string]any) {
			var m map[string]string
			json.Unmarshal(b["attestation"].(json.RawMessage), &m)
			r, _ := base64.StdEncoding.DecodeString(m["evidence"])
			r[0x50] ^= 1 // REPORT_DATA
			m["evidence"] = base64.StdEncoding.EncodeToString(r)
			b["attestation"], _ = json.Marshal(m)
		}), KindRefused, CodeAttestationFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.kid != "" {
				_, err = e.rel.V1Release(context.Background(), tc.auth, tc.kid, tc.body)
			} else {
				_, err = e.rel.V1ReleaseBatch(context.Background(), tc.auth, tc.body)
			}
			wantErr(t, err, tc.kind, tc.code)
		})
	}
	if n := e.releases(); n != 0 {
		t.Fatalf("%d releases after denials", n)
	}
	if _, err := e.rel.V1Release(context.Background(), e.token(nil), kid, good); err != nil {
		t.Fatalf("service stopped serving after denials: %v", err)
	}
}

// TestV1SimulatedNotTrusted: evidence from the simulated TEE, which the SNP
// verifier was given as roots, is still refused unless the release service
// itself was told to trust simulated evidence.
func TestV1SimulatedNotTrusted(t *testing.T) {
	e := newSimEnv(t, func(_ *Config, ac *attest.Config) { ac.Simulated = false })
	_, err := e.rel.V1Release(context.Background(), e.token(nil), e.kids()[0], e.v1Body(hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256), nil, nil))
	wantErr(t, err, KindRefused, CodeSimulatedNotPermitted)
	if e.releases() != 0 {
		t.Fatal("released to simulated evidence")
	}
}

// TestV1Nonce: with RequireNonce, a release needs a nonce this server
// issued, unexpired, and held in REPORT_DATA[32:64].
func TestV1Nonce(t *testing.T) {
	e := newSimEnv(t, func(c *Config, _ *attest.Config) { c.RequireNonce = true })
	kid := e.kids()[0]
	wk := hpkeWrappingKey(t, keys.KEMX25519HKDFSHA256)
	fresh := func() []byte {
		nr := e.rel.Nonce()
		n, err := hex.DecodeString(nr.Nonce)
		if err != nil || len(n) != NonceSize {
			t.Fatalf("nonce %q", nr.Nonce)
		}
		exp, err := time.Parse(time.RFC3339, nr.Expires)
		if err != nil || exp.Sub(e.clock.Now()) > NonceTTL || exp.Sub(e.clock.Now()) < NonceTTL-time.Second {
			t.Fatalf("expires %q at %v", nr.Expires, e.clock.Now())
		}
		return n
	}
	release := func(body []byte) error {
		_, err := e.rel.V1Release(context.Background(), e.token(nil), kid, body)
		return err
	}

	wantErr(t, release(e.v1Body(wk, nil, nil)), KindRefused, CodeNonceRequired)

	n := fresh()
	if err := release(e.v1Body(wk, n, nil)); err != nil {
		t.Fatalf("fresh nonce: %v", err)
	}

	flipped := bytes.Clone(n)
	flipped[NonceSize-1] ^= 1
	wantErr(t, release(e.v1Body(wk, flipped, nil)), KindRefused, CodeNonceInvalid)

	// The evidence holds another nonce than the request names.
	n2 := fresh()
	wantErr(t, release(e.v1Body(wk, n2, func(b map[string]any) { b["nonce"] = hex.EncodeToString(n) })), KindRefused, CodeNonceInvalid)

	e.clock.Add(NonceTTL + time.Second)
	wantErr(t, release(e.v1Body(wk, n, nil)), KindRefused, CodeNonceExpired)
	if err := release(e.v1Body(wk, fresh(), nil)); err != nil {
		t.Fatalf("new nonce after expiry: %v", err)
	}
	if n := e.releases(); n != 2 {
		t.Fatalf("%d releases, want 2", n)
	}
}

// TestNonceMAC: the nonce format's round trip, every flipped byte, another
// key, and the expiry boundary, on an injected clock.
func TestNonceMAC(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	n, exp := newNonce(key, now)
	if len(n) != NonceSize || !exp.Equal(now.Add(NonceTTL)) {
		t.Fatalf("nonce %x expires %v", n, exp)
	}
	if err := checkNonce(key, n, now); err != nil {
		t.Fatal(err)
	}
	if err := checkNonce(key, n, exp.Add(-time.Nanosecond)); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	if err := checkNonce(key, n, exp); !errors.Is(err, ErrNonceExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	for i := range n {
		f := bytes.Clone(n)
		f[i] ^= 0x80
		if err := checkNonce(key, f, now); !errors.Is(err, ErrNonceInvalid) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	if err := checkNonce(bytes.Repeat([]byte{2}, 32), n, now); !errors.Is(err, ErrNonceInvalid) {
		t.Fatalf("another key: %v", err)
	}
	if err := checkNonce(key, n[:31], now); !errors.Is(err, ErrNonceInvalid) {
		t.Fatalf("short: %v", err)
	}
	if m, _ := newNonce(key, now); bytes.Equal(m, n) {
		t.Fatal("two nonces are equal")
	}
}

// FuzzDecodeV1: the /v1 request decoder never panics, and what it accepts
// survives a re-encoding with the same canonical wrapping key (so the
// binding hash cannot depend on how the request was spelt).
func FuzzDecodeV1(f *testing.F) {
	x := hpkeWrappingKey(f, keys.KEMX25519HKDFSHA256)
	m := hpkeWrappingKey(f, keys.KEMMLKEM768X25519)
	r := rsaWrappingKey(f)
	att := json.RawMessage(`{"evidence":"AA==","endorsements":"","uvm_endorsements":"","endorsed_tcb":""}`)
	for _, b := range []map[string]any{
		{"attestation": att, "wrapping_key": x.json},
		{"attestation": att, "wrapping_key": m.json, "kids": []string{"a_1", "b_2"}},
		{"attestation": att, "wrapping_key": r.json, "all_valid": true, "nonce": hex.EncodeToString(make([]byte, 32))},
		{"attestation": "string", "wrapping_key": map[string]any{"type": "hpke", "kem_id": 16, "public_key": "AA=="}},
	} {
		s, _ := json.Marshal(b)
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Add([]byte(`{"attestation":null}`), true)
	f.Add([]byte(`{"kids":[],"attestation":{}} x`), false)
	f.Fuzz(func(t *testing.T, body []byte, single bool) {
		req, a, err := decodeV1(body)
		if err != nil {
			var re *Error
			if !errors.As(err, &re) || re.Kind != KindRefused {
				t.Fatalf("decode error %v", err)
			}
			return
		}
		p, err := params(req, single, a)
		if err != nil {
			var re *Error
			if !errors.As(err, &re) || re.Kind != KindRefused {
				t.Fatalf("params error %v", err)
			}
			return
		}
		if len(p.wk.canonical) == 0 || (p.wk.rsa == nil) == (p.wk.pub == nil) {
			t.Fatalf("accepted wrapping key without a canonical form: %+v", p.wk)
		}
		if !single && (p.all == (p.kids != nil)) {
			t.Fatalf("batch selection all=%v kids=%v", p.all, p.kids)
		}
		if a.aci != nil {
			// Decoded in one pass (decode.go): the request keeps the
			// attestation's ACI members, not its bytes.
			req.Attestation, _ = json.Marshal(a.aci)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, a2, err := decodeV1(again)
		if err != nil {
			t.Fatalf("re-encoded request rejected: %v\n%s", err, again)
		}
		p2, err := params(req2, single, a2)
		if err != nil {
			t.Fatalf("re-encoded request rejected: %v\n%s", err, again)
		}
		if !bytes.Equal(p.wk.canonical, p2.wk.canonical) || !bytes.Equal(p.nonce, p2.nonce) || !slices.Equal(p.kids, p2.kids) {
			t.Fatal("re-encoding changed the request")
		}
	})
}
