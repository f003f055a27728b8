package client_test

import (
	"bytes"
	"context"
	"crypto/hpke"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/wrap"
	"github.com/tkms-dev/tkms/ohttp"
)

// keysHostData is the HOST_DATA of the simulated reports, which the test
// KMS's release policy names.
var keysHostData = bytes.Repeat([]byte{0x6b}, 32)

const keysAudience = "api://tkms-client-test"

// keysEnv is a real tkms (kms.Service on a temporary directory, the HTTP
// API, a release service trusting a real OIDC issuer on loopback and the
// simulated TEE) behind a proxy that counts requests and can answer in the
// KMS's place.
type keysEnv struct {
	t      *testing.T
	svc    *kms.Service
	chain  *simsnp.Chain
	at     time.Time // when the simulated chain is valid
	issuer *oidcissuer.Issuer
	api    http.Handler
	proxy  *httptest.Server

	mu        sync.Mutex
	count     map[string]int // requests by path
	intercept func(w http.ResponseWriter, r *http.Request, body []byte) bool
}

type keysEnvOptions struct {
	suite         string // KMS key suite; default x25519
	requireNonce  bool
	identityLimit *limit.Keyed // the release service's per-identity rate limit
}

func newKeysEnv(t *testing.T, o keysEnvOptions) *keysEnv {
	t.Helper()
	e := &keysEnv{t: t, count: map[string]int{}}
	log := slog.New(slog.DiscardHandler)
	fixture, err := os.ReadFile("../internal/attest/simsnp/testdata/" + simsnp.ChainFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	if e.chain, err = simsnp.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	e.at = e.chain.VCEK().NotBefore.Add(24 * time.Hour)
	e.issuer = releasetest.Issuer(t)

	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-hostdata": []string{hex.EncodeToString(keysHostData)}, "x-ms-sevsnpvm-is-debuggable": false,
	}})
	rp := state.DefaultRotationPolicy()
	if o.suite != "" {
		rp.Suite = o.suite
	}
	e.svc = releasetest.KMS(t, kms.Config{ReleasePolicy: pol, RotationPolicy: rp})
	auth := releasetest.Auth(t, e.issuer, keysAudience)
	ark, ask := e.chain.Roots()
	did, feed := e.chain.UVMTrust()
	av, err := attest.New(attest.Config{SNP: snp.Options{Now: func() time.Time { return e.at }, Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}}, SimulatedEndorsers: []uvm.Endorser{{DID: did, Feed: feed}}, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := release.New(release.Config{KMS: e.svc, Auth: auth, Attest: av, RequireNonce: o.requireNonce, IdentityLimit: o.identityLimit, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.api = httpapi.New(e.svc, httpapi.Options{Logger: log, Release: rel})
	e.proxy = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.proxy.Close)
	return e
}

func (e *keysEnv) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	e.mu.Lock()
	e.count[r.URL.Path]++
	f := e.intercept
	e.mu.Unlock()
	if f != nil && f(w, r, body) {
		return
	}
	e.api.ServeHTTP(w, r)
}

// setIntercept installs f, which answers a request in the KMS's place when
// it returns true.
func (e *keysEnv) setIntercept(f func(w http.ResponseWriter, r *http.Request, body []byte) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.intercept = f
}

// releases returns how many release requests reached the proxy.
func (e *keysEnv) releases() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for p, c := range e.count {
		if isRelease(p) {
			n += c
		}
	}
	return n
}

func isRelease(path string) bool {
	return path == "/v1/release" || path == "/app/unwrapKey" || strings.HasSuffix(path, "/release")
}

// real answers r with the real KMS and returns the recorded answer.
func (e *keysEnv) real(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, r)
	return rec
}

// keysAttester is a test Attester: simulated ACI evidence signed by the
// simulated TEE's VCEK (internal/attest/simsnp).
type keysAttester struct {
	e     *keysEnv
	calls atomic.Int64
}

func (a *keysAttester) Attest(ctx context.Context, rd [64]byte) (*client.Evidence, error) {
	a.calls.Add(1)
	b, err := a.e.chain.ACIBundle(simsnp.ACIBundleOptions{
		Report: simsnp.ReportOptions{ReportData: rd[:], HostData: keysHostData}, SigningTime: a.e.at})
	if err != nil {
		return nil, err
	}
	return &client.Evidence{Type: client.EvidenceACI, Attestation: b, Simulated: true}, nil
}

// keysTokens mints a managed identity token from the test issuer.
type keysTokens struct{ iss *oidcissuer.Issuer }

func (s keysTokens) Token(ctx context.Context) (string, error) {
	return s.iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: keysAudience, PrincipalID: "svc-1", TenantID: "t1"})
}

// config returns a client configuration for the env, with short backoffs
// and the log key.
func (e *keysEnv) config(api client.API, wrapping client.Wrapping) client.KeysConfig {
	return client.KeysConfig{
		KMS: e.proxy.URL, HTTPClient: e.proxy.Client(),
		Attester: &keysAttester{e: e}, Tokens: keysTokens{e.issuer},
		API: api, Wrapping: wrapping, LogKey: e.svc.LogVerifierKey(),
		Logger:     slog.New(slog.DiscardHandler),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
}

func (e *keysEnv) newKeys(cfg client.KeysConfig) *client.Keys {
	e.t.Helper()
	k, err := client.NewKeys(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// stateKeys returns the KMS's keys.
func (e *keysEnv) stateKeys() []state.Key {
	var ks []state.Key
	e.svc.Read(func(st *state.State) {
		for _, k := range st.Keys {
			ks = append(ks, *k)
		}
	})
	return ks
}

func (e *keysEnv) primary() state.Key {
	e.t.Helper()
	var k state.Key
	e.svc.Read(func(st *state.State) { k = *st.Primary(e.svc.Now()) })
	return k
}

// checkDecrypts seals a message to the KMS's public key of key.Kid and
// opens it with the released private key.
func checkDecrypts(t *testing.T, want state.Key, key *client.Key) {
	t.Helper()
	if key.Kid != want.Kid || key.ID != want.ID || key.OHTTPKeyID != keys.OHTTPKeyID(want.ID) || key.Suite != want.Suite ||
		key.KEM != want.KEM || key.KDF != want.KDF || key.AEAD != want.AEAD || !bytes.Equal(key.PublicKey, want.PublicKey) ||
		!key.NotBefore.Equal(want.NotBefore) || !key.NotAfter.Equal(want.NotAfter) || !key.ReleaseUntil.Equal(want.ReleaseUntil) {
		t.Fatalf("key %+v does not describe the KMS's key %+v", key, want.KeyCreated)
	}
	s, err := keys.ParseSuite(want.Suite)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := s.PublicKey(want.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kdf, _ := hpke.NewKDF(want.KDF)
	aead, _ := hpke.NewAEAD(want.AEAD)
	msg := []byte("a request for " + want.Kid)
	ct, err := hpke.Seal(pk, kdf, aead, []byte("info"), msg)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(key.PrivateKey, kdf, aead, []byte("info"), ct)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("the released key does not open a message sealed to its public key: %v", err)
	}
}

func TestKeysFetch(t *testing.T) {
	for _, tc := range []struct {
		name, suite string
		api         client.API
		wrapping    client.Wrapping
		nonce       bool
	}{
		{name: "v1 x25519", api: client.APIV1, wrapping: client.WrapX25519},
		{name: "v1 mlkem768-x25519", api: client.APIV1, wrapping: client.WrapMLKEM768X25519},
		{name: "v1 rsa-4096", api: client.APIV1, wrapping: client.WrapRSA4096},
		{name: "v1 nonce", api: client.APIV1, wrapping: client.WrapX25519, nonce: true},
		{name: "v1 hybrid keys", api: client.APIV1, wrapping: client.WrapMLKEM768X25519, suite: keys.MLKEM768X25519.Name},
		{name: "app rsa-4096", api: client.APIApp, wrapping: client.WrapRSA4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newKeysEnv(t, keysEnvOptions{suite: tc.suite, requireNonce: tc.nonce})
			ctx := t.Context()
			if _, err := e.svc.Rotate(ctx, kms.ReasonRefresh); err != nil { // a second key, created, not yet published
				t.Fatal(err)
			}
			cfg := e.config(tc.api, tc.wrapping)
			cfg.Nonce = tc.nonce
			k := e.newKeys(cfg)
			p := e.primary()

			key, err := k.ByKID(ctx, p.Kid)
			if err != nil {
				t.Fatal(err)
			}
			checkDecrypts(t, p, key)
			if key.Phase(time.Now()) != "published" {
				t.Errorf("phase %s, want published", key.Phase(time.Now()))
			}
			if again, err := k.ByKID(ctx, p.Kid); err != nil || again != key {
				t.Fatalf("second ByKID: %v, %v (want the cached key)", again, err)
			}
			if n := e.releases(); n != 1 {
				t.Errorf("%d release requests, want 1 (the second ByKID is served from cache)", n)
			}
			byID, err := k.ByOHTTPID(ctx, keys.OHTTPKeyID(p.ID))
			if err != nil || byID != key {
				t.Fatalf("ByOHTTPID(0x%02x) = %v, %v", keys.OHTTPKeyID(p.ID), byID, err)
			}

			all, err := k.All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := e.stateKeys()
			if len(all) != len(want) {
				t.Fatalf("All returned %d keys, want %d", len(all), len(want))
			}
			for i := range want {
				checkDecrypts(t, want[i], all[i])
			}
			if _, err := k.ByOHTTPID(ctx, keys.OHTTPKeyID(want[1].ID)); err != nil {
				t.Fatal(err)
			}

			st := k.State()
			if len(st.Keys) != 2 || st.Keys[1].Phase != "created" || st.Keys[0].Phase != "published" || st.Keys[0].Kid != p.Kid {
				t.Errorf("State().Keys = %+v", st.Keys)
			}
			if st.ReceiptsVerified < 2 || st.Fetches < 2 || st.Failures != 0 || st.LastError != nil || st.LastFetchAt.IsZero() {
				t.Errorf("State() = %+v", st)
			}
			b, _ := json.Marshal(st)
			for _, kk := range all {
				priv, _ := kk.PrivateKey.Bytes()
				for _, enc := range []string{base64.StdEncoding.EncodeToString(priv), base64.RawURLEncoding.EncodeToString(priv), hex.EncodeToString(priv)} {
					if bytes.Contains(b, []byte(enc)) {
						t.Fatal("State() holds key material")
					}
				}
			}
		})
	}
}

// TestKeysOHTTP decrypts an OHTTP request sealed to the KMS's published key
// configuration with a Gateway whose KeySource is Keys.
func TestKeysOHTTP(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	k := e.newKeys(e.config("", ""))
	resp, err := e.proxy.Client().Get(e.proxy.URL + "/v1/keys/ohttp")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cfgs, err := ohttp.ParseKeyConfigs(b)
	if err != nil || len(cfgs) == 0 {
		t.Fatalf("key configs: %v", err)
	}
	msg := []byte("GET /kv?keys=a")
	req, cc, err := ohttp.EncapsulateRequest(cfgs[0], cfgs[0].Suites[0], ohttp.OHTTP, msg)
	if err != nil {
		t.Fatal(err)
	}
	gw := &ohttp.Gateway{Keys: k}
	got, gc, err := gw.DecapsulateRequest(t.Context(), ohttp.OHTTP, req)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("DecapsulateRequest = %q, %v", got, err)
	}
	r, err := gc.EncapsulateResponse([]byte("ok"))
	if err != nil {
		t.Fatal(err)
	}
	if body, err := cc.DecapsulateResponse(r); err != nil || string(body) != "ok" {
		t.Fatalf("response %q, %v", body, err)
	}
	if _, err := k.OHTTPKey(t.Context(), 0x01); !errors.Is(err, client.ErrKeyNotFound) {
		t.Fatalf("OHTTPKey(0x01) = %v, want ErrKeyNotFound", err)
	}
}

// tamper returns an intercept that lets the real KMS answer release
// requests and then edits the answer with edit.
func (e *keysEnv) tamper(edit func(req, resp map[string]any)) func(http.ResponseWriter, *http.Request, []byte) bool {
	return func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if !isRelease(r.URL.Path) {
			return false
		}
		rec := e.real(r)
		var req, resp map[string]any
		json.Unmarshal(body, &req)
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &resp) != nil {
			e.t.Errorf("real KMS answered %d: %s", rec.Code, rec.Body)
			return false
		}
		edit(req, resp)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
		return true
	}
}

// otherKeySealed is a fresh X25519 private key HPKE-sealed to the
// request's wrapping key as the KMS would seal kid's: what a KMS that
// hands out a key other than the published one sends.
func otherKeySealed(t *testing.T, req map[string]any, kid string) string {
	wk := req["wrapping_key"].(map[string]any)
	pub, _ := base64.StdEncoding.DecodeString(wk["public_key"].(string))
	priv, _, err := keys.X25519.Generate()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := wrap.HPKEWrap(uint16(wk["kem_id"].(float64)), pub, priv, wrap.ReleaseInfo(kid))
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(blob)
}

func TestKeysRejects(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	created, err := e.svc.Receipt(p.Seq) // a receipt that verifies, of the key.created entry
	if err != nil {
		t.Fatal(err)
	}
	firstKey := func(resp map[string]any) map[string]any { return resp["keys"].([]any)[0].(map[string]any) }
	var earlier any // the receipt of an earlier release
	for _, tc := range []struct {
		name, want string
		edit       func(req, resp map[string]any)
		logKey     string // default: the KMS's
	}{
		{name: "key other than the published one", want: "does not match its published public key", edit: func(req, resp map[string]any) {
			firstKey(resp)["wrapped"] = otherKeySealed(t, req, p.Kid)
		}},
		{name: "blob that does not decrypt", want: "does not decrypt", edit: func(req, resp map[string]any) {
			b, _ := base64.StdEncoding.DecodeString(firstKey(resp)["wrapped"].(string))
			b[len(b)-1] ^= 1
			firstKey(resp)["wrapped"] = base64.StdEncoding.EncodeToString(b)
		}},
		{name: "other public key in the answer", want: "another public key", edit: func(req, resp map[string]any) {
			_, pub, _ := keys.X25519.Generate()
			firstKey(resp)["public_key"] = base64.StdEncoding.EncodeToString(pub)
		}},
		{name: "extra key", want: "the answer holds", edit: func(req, resp map[string]any) {
			k2 := map[string]any{}
			for k, v := range firstKey(resp) {
				k2[k] = v
			}
			k2["kid"] = "x_2"
			resp["keys"] = append(resp["keys"].([]any), k2)
		}},
		{name: "no receipt", want: "no log receipt", edit: func(req, resp map[string]any) {
			earlier = resp["receipt"]
			delete(resp, "receipt")
		}},
		{name: "receipt of an earlier release", want: "records another release", edit: func(req, resp map[string]any) {
			resp["receipt"] = earlier
		}},
		{name: "receipt of another entry", want: "proves a key.created entry", edit: func(req, resp map[string]any) {
			resp["receipt"] = json.RawMessage(created.Marshal())
		}},
		{name: "receipt with a bad signature", want: "checkpoint does not verify", edit: func(req, resp map[string]any) {
			r := resp["receipt"].(map[string]any)
			cp := []byte(r["checkpoint"].(string))
			// Well inside the signature's base64: the last character
			// before the padding carries unused bits, and changing
			// those leaves the signature as it was.
			i := len(cp) - 12
			if cp[i] == 'A' {
				cp[i] = 'B'
			} else {
				cp[i] = 'A'
			}
			r["checkpoint"] = string(cp)
		}},
		{name: "receipt with a bad proof", want: "leaf hashes to", edit: func(req, resp map[string]any) {
			r := resp["receipt"].(map[string]any)
			r["leaf_hash"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}},
		{name: "receipt under another log key", want: "no verifiable signatures", edit: func(req, resp map[string]any) {}, logKey: otherLogKey(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.setIntercept(e.tamper(tc.edit))
			defer e.setIntercept(nil)
			cfg := e.config("", "")
			if tc.logKey != "" {
				cfg.LogKey = tc.logKey
			}
			k := e.newKeys(cfg)
			key, err := k.ByKID(t.Context(), p.Kid)
			if !errors.Is(err, client.ErrRejected) {
				t.Fatalf("ByKID = %v, %v; want ErrRejected", key, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ByKID = %v, want an error about %q", err, tc.want)
			}
			if c := k.Cached(); len(c) != 0 {
				t.Fatalf("%d keys cached after a rejected answer", len(c))
			}
			if st := k.State(); st.Failures == 0 || st.LastError == nil || len(st.Keys) != 0 {
				t.Fatalf("State() = %+v", st)
			}
		})
	}

	t.Run("listed public key does not match its kid", func(t *testing.T) {
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if r.URL.Path != "/v1/keys" {
				return false
			}
			var list map[string][]map[string]any
			json.Unmarshal(e.real(r).Body.Bytes(), &list)
			_, pub, _ := keys.X25519.Generate()
			list["keys"][0]["public_key"] = base64.StdEncoding.EncodeToString(pub)
			json.NewEncoder(w).Encode(list)
			return true
		})
		defer e.setIntercept(nil)
		k := e.newKeys(e.config("", ""))
		if _, err := k.ByKID(t.Context(), p.Kid); !errors.Is(err, client.ErrRejected) {
			t.Fatalf("ByKID = %v, want ErrRejected", err)
		}
	})

	t.Run("app key item of another key", func(t *testing.T) {
		// /app: a real release of the second key presented as the first.
		second, err := e.svc.Rotate(t.Context(), kms.ReasonRefresh)
		if err != nil {
			t.Fatal(err)
		}
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if r.URL.Path != "/app/unwrapKey" {
				return false
			}
			var req map[string]any
			json.Unmarshal(body, &req)
			req["wrappedKid"] = second.Kid
			b, _ := json.Marshal(req)
			r2 := httptest.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), bytes.NewReader(b))
			r2.Header = r.Header
			rec := e.real(r2)
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return true
		})
		defer e.setIntercept(nil)
		cfg := e.config(client.APIApp, "")
		cfg.LogKey = "" // the receipt would name the other kid; check the key item itself
		k := e.newKeys(cfg)
		if _, err := k.ByKID(t.Context(), p.Kid); !errors.Is(err, client.ErrRejected) {
			t.Fatalf("ByKID = %v, want ErrRejected", err)
		}
		if len(k.Cached()) != 0 {
			t.Fatal("a rejected key was cached")
		}
	})
}

func otherLogKey(t *testing.T) string {
	t.Helper()
	k := releasetest.KMS(t, kms.Config{LogOrigin: "other.example/log"})
	return k.LogVerifierKey()
}

func TestKeysRetries(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()

	t.Run("202 with retry-after", func(t *testing.T) {
		var n atomic.Int64
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if !isRelease(r.URL.Path) || n.Add(1) > 1 {
				return false
			}
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusAccepted)
			return true
		})
		defer e.setIntercept(nil)
		cfg := e.config("", "")
		cfg.MaxBackoff = 5 * time.Second
		k := e.newKeys(cfg)
		start := time.Now()
		key, err := k.ByKID(t.Context(), p.Kid)
		if err != nil {
			t.Fatal(err)
		}
		checkDecrypts(t, p, key)
		if d := time.Since(start); d < time.Second {
			t.Errorf("answered after %v; the 202's retry-after asked for 1s", d)
		}
		if st := k.State(); st.Retries != 1 || n.Load() != 2 {
			t.Errorf("%d retries, %d requests; want 1 and 2", st.Retries, n.Load())
		}
	})

	t.Run("5xx and transport errors retried", func(t *testing.T) {
		var n atomic.Int64
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if !isRelease(r.URL.Path) {
				return false
			}
			switch n.Add(1) {
			case 1:
				w.Header().Set("x-ms-kms-error-code", "SERVICE_UNAVAILABLE")
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			case 2:
				panic(http.ErrAbortHandler) // the connection drops
			}
			return false
		})
		defer e.setIntercept(nil)
		k := e.newKeys(e.config("", ""))
		if _, err := k.ByKID(t.Context(), p.Kid); err != nil {
			t.Fatal(err)
		}
		if st := k.State(); st.Retries != 2 || n.Load() != 3 {
			t.Errorf("%d retries, %d requests; want 2 and 3", st.Retries, n.Load())
		}
	})

	t.Run("5xx gives up after MaxAttempts", func(t *testing.T) {
		var n atomic.Int64
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if !isRelease(r.URL.Path) {
				return false
			}
			n.Add(1)
			w.Header().Set("x-ms-kms-error-code", "SERVICE_UNAVAILABLE")
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		})
		defer e.setIntercept(nil)
		cfg := e.config("", "")
		cfg.MaxAttempts = 3
		k := e.newKeys(cfg)
		_, err := k.ByKID(t.Context(), p.Kid)
		var ke *client.KMSError
		if !errors.As(err, &ke) || ke.Status != 503 || n.Load() != 3 {
			t.Fatalf("ByKID = %v after %d requests; want a 503 KMSError after 3", err, n.Load())
		}
	})

	t.Run("403 denial not retried", func(t *testing.T) {
		var n atomic.Int64
		e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			if !isRelease(r.URL.Path) {
				return false
			}
			n.Add(1)
			w.Header().Set("x-ms-kms-error-code", "FORBIDDEN")
			w.Header().Set("x-ms-kms-request-id", "req-42")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":{"code":"FORBIDDEN","message":"caller not allowed"}}`))
			return true
		})
		defer e.setIntercept(nil)
		k := e.newKeys(e.config("", ""))
		_, err := k.ByKID(t.Context(), p.Kid)
		var ke *client.KMSError
		if !errors.As(err, &ke) || ke.Status != 403 || ke.Code != "FORBIDDEN" || ke.Message != "caller not allowed" || ke.RequestID != "req-42" {
			t.Fatalf("ByKID = %#v", err)
		}
		if n.Load() != 1 || k.State().Retries != 0 {
			t.Errorf("%d requests, want 1", n.Load())
		}
	})

	t.Run("real 400 denial surfaces its code", func(t *testing.T) {
		cfg := e.config("", "")
		cfg.Attester = bindingBreaker{&keysAttester{e: e}}
		k := e.newKeys(cfg)
		before := e.releases()
		_, err := k.ByKID(t.Context(), p.Kid)
		var ke *client.KMSError
		if !errors.As(err, &ke) || ke.Status != 400 || ke.Code != release.CodeWrappingKeyMismatch {
			t.Fatalf("ByKID = %v, want 400 %s", err, release.CodeWrappingKeyMismatch)
		}
		if n := e.releases() - before; n != 1 {
			t.Errorf("%d release requests, want 1", n)
		}
	})

	t.Run("real 401 and 404", func(t *testing.T) {
		cfg := e.config("", "")
		cfg.Tokens = staticToken("not-a-jwt")
		k := e.newKeys(cfg)
		_, err := k.ByKID(t.Context(), p.Kid)
		var ke *client.KMSError
		if !errors.As(err, &ke) || ke.Status != 401 || !strings.HasPrefix(ke.Code, "JWT_") {
			t.Fatalf("ByKID = %v, want 401 JWT_*", err)
		}
		k = e.newKeys(e.config("", ""))
		if _, err := k.ByKID(t.Context(), "nosuchkid_9"); !errors.Is(err, client.ErrKeyNotFound) {
			t.Fatalf("ByKID(unknown) = %v, want ErrKeyNotFound", err)
		}
	})
}

// bindingBreaker attests to REPORT_DATA that binds another wrapping key.
type bindingBreaker struct{ a client.Attester }

func (b bindingBreaker) Attest(ctx context.Context, rd [64]byte) (*client.Evidence, error) {
	rd[0] ^= 1
	return b.a.Attest(ctx, rd)
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// A fleet's replicas that share one identity and restart together hit the
// KMS's per-identity rate limit: the client waits as the 429's Retry-After
// asks and its release then succeeds.
func TestKeysRateLimitedRetried(t *testing.T) {
	lim, err := limit.NewKeyed(limit.KeyedConfig{Rate: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := newKeysEnv(t, keysEnvOptions{identityLimit: lim})
	p := e.primary()
	first := e.newKeys(e.config("", ""))
	if _, err := first.ByKID(t.Context(), p.Kid); err != nil {
		t.Fatal(err)
	}
	// Another replica, at once: its release is refused with 429 and
	// Retry-After: 1, and retried after it.
	cfg := e.config("", "")
	cfg.MaxBackoff = 5 * time.Second
	second := e.newKeys(cfg)
	start := time.Now()
	key, err := second.ByKID(t.Context(), p.Kid)
	if err != nil {
		t.Fatal(err)
	}
	checkDecrypts(t, p, key)
	if d := time.Since(start); d < time.Second {
		t.Errorf("answered after %v; the 429's Retry-After asked for 1s", d)
	}
	if st := second.State(); st.Retries < 1 {
		t.Errorf("%d retries; want at least 1", st.Retries)
	}
	if st := lim.Stats(); st.Limited < 1 {
		t.Errorf("limiter stats %+v: no request was limited", st)
	}

	// Without retries left, the 429 surfaces as a KMSError.
	cfg.MaxAttempts = 1
	third := e.newKeys(cfg)
	_, err = third.ByKID(t.Context(), p.Kid)
	var ke *client.KMSError
	if !errors.As(err, &ke) || ke.Status != http.StatusTooManyRequests || ke.Code != "RATE_LIMITED" {
		t.Fatalf("ByKID with one attempt = %v; want a 429 RATE_LIMITED KMSError", err)
	}
}

func TestKeysSingleflight(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if isRelease(r.URL.Path) {
			time.Sleep(200 * time.Millisecond) // let every caller arrive
		}
		return false
	})
	k := e.newKeys(e.config("", ""))
	const n = 20
	var wg sync.WaitGroup
	got := make([]*client.Key, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { got[i], errs[i] = k.ByKID(t.Context(), p.Kid) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("caller %d: %v, %v", i, got[i], errs[i])
		}
	}
	if r := e.releases(); r != 1 {
		t.Fatalf("%d release requests for %d concurrent callers, want 1", r, n)
	}

	// A caller that gives up does not fail the others.
	p2, err := e.svc.Rotate(t.Context(), kms.ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() { _, err := k.ByKID(t.Context(), p2.Kid); done <- err }()
	if _, err := k.ByKID(ctx, p2.Kid); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
}

func TestKeysRunKMSDown(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	cfg := e.config("", "")
	cfg.RefreshInterval = 20 * time.Millisecond
	cfg.MaxAttempts = 1
	k := e.newKeys(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error)
	go func() { ran <- k.Run(ctx) }()
	waitFor(t, "the primary key cached", func() bool { return len(k.Cached()) == 1 })

	var down atomic.Bool
	down.Store(true)
	var requests atomic.Int64
	e.setIntercept(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if !down.Load() {
			return false
		}
		requests.Add(1)
		panic(http.ErrAbortHandler)
	})
	waitFor(t, "failed refreshes", func() bool { return k.State().Failures >= 3 })
	key, err := k.ByKID(t.Context(), p.Kid)
	if err != nil {
		t.Fatalf("ByKID while the KMS is down: %v", err)
	}
	checkDecrypts(t, p, key)
	if key, err := k.ByOHTTPID(t.Context(), keys.OHTTPKeyID(p.ID)); err != nil || key.Kid != p.Kid {
		t.Fatalf("ByOHTTPID while the KMS is down: %v", err)
	}
	st := k.State()
	if st.LastError == nil || st.LastErrorAt.IsZero() || len(st.Keys) != 1 {
		t.Fatalf("State() while down = %+v", st)
	}
	// Backoff: with MinBackoff 5ms doubling to 50ms, 300ms holds far fewer
	// attempts than a 20ms refresh interval without backoff... and more
	// than one: Run keeps trying.
	n0 := requests.Load()
	time.Sleep(300 * time.Millisecond)
	if d := requests.Load() - n0; d < 2 || d > 40 {
		t.Errorf("%d requests in 300ms while down; want a few (retries with backoff)", d)
	}

	// The KMS comes back with a new key: Run fetches it.
	next, err := e.svc.Rotate(t.Context(), kms.ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	waitFor(t, "the new key after recovery", func() bool { return len(k.Cached()) == 2 })
	if _, err := k.ByKID(t.Context(), next.Kid); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}

// TestKeysPrefetch checks that Run fetches a key as soon as it is created,
// before it is published.
func TestKeysPrefetch(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	cfg := e.config("", "")
	cfg.RefreshInterval = 20 * time.Millisecond
	k := e.newKeys(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go k.Run(ctx)
	waitFor(t, "the primary key cached", func() bool { return len(k.Cached()) == 1 })

	next, err := e.svc.Rotate(t.Context(), kms.ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if ph := next.Phase(e.svc.Now()); ph != state.Created {
		t.Fatalf("the new key is %s, want created", ph)
	}
	waitFor(t, "the created key prefetched", func() bool { return len(k.Cached()) == 2 })
	before := e.releases()
	key, err := k.ByKID(t.Context(), next.Kid)
	if err != nil {
		t.Fatal(err)
	}
	checkDecrypts(t, *next, key)
	if key.Phase(time.Now()) != "created" || e.releases() != before {
		t.Errorf("phase %s, %d more releases; want a created key served from cache", key.Phase(time.Now()), e.releases()-before)
	}
	if ph := next.Phase(e.svc.Now()); ph != state.Created {
		t.Fatalf("the key was published (%s) before the test ended", ph)
	}
	if st := k.State(); st.ReceiptsVerified != 2 {
		t.Errorf("%d receipts verified, want 2", st.ReceiptsVerified)
	}
}

// TestKeysExpiry checks with an injected clock that expired keys are no
// longer served.
func TestKeysExpiry(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	p := e.primary()
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	cfg := e.config("", "")
	cfg.Now = func() time.Time { return *now.Load() }
	k := e.newKeys(cfg)
	if _, err := k.ByKID(t.Context(), p.Kid); err != nil {
		t.Fatal(err)
	}
	later := p.ReleaseUntil.Add(time.Second)
	now.Store(&later)
	if c := k.Cached(); len(c) != 0 {
		t.Fatalf("%d keys cached past release_until", len(c))
	}
	if st := k.State(); len(st.Keys) != 1 || st.Keys[0].Phase != "expired" {
		t.Fatalf("State().Keys = %+v", st.Keys)
	}
	// The KMS, on its own clock, still releases the key; by this client's
	// clock it has expired, so Refresh drops it and fetches nothing, and
	// ByKID refuses it.
	before := e.releases()
	if _, err := k.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := k.State(); len(st.Keys) != 0 || e.releases() != before {
		t.Fatalf("State().Keys = %+v, %d releases", st.Keys, e.releases()-before)
	}
	if _, err := k.ByKID(t.Context(), p.Kid); !errors.Is(err, client.ErrKeyExpired) {
		t.Fatalf("ByKID(expired) = %v, want ErrKeyExpired", err)
	}
	if len(k.Cached()) != 0 {
		t.Fatal("an expired key is served")
	}
}

func TestKeysConfig(t *testing.T) {
	base := client.KeysConfig{KMS: "https://kms.example", Attester: &keysAttester{}, Tokens: staticToken("t")}
	for _, tc := range []struct {
		name string
		edit func(*client.KeysConfig)
	}{
		{"no KMS", func(c *client.KeysConfig) { c.KMS = "" }},
		{"not a URL", func(c *client.KeysConfig) { c.KMS = "kms.example" }},
		{"no attester", func(c *client.KeysConfig) { c.Attester = nil }},
		{"no tokens", func(c *client.KeysConfig) { c.Tokens = nil }},
		{"unknown API", func(c *client.KeysConfig) { c.API = "v2" }},
		{"unknown wrapping", func(c *client.KeysConfig) { c.Wrapping = "rsa-2048" }},
		{"app with HPKE", func(c *client.KeysConfig) { c.API, c.Wrapping = client.APIApp, client.WrapX25519 }},
		{"app with nonce", func(c *client.KeysConfig) { c.API, c.Nonce = client.APIApp, true }},
		{"bad log key", func(c *client.KeysConfig) { c.LogKey = "not a key" }},
	} {
		cfg := base
		tc.edit(&cfg)
		if _, err := client.NewKeys(cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	if _, err := client.NewKeys(base); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// KeysConfig.Service runs before the first release: a refusal releases
// nothing and is ErrRejected wrapping the check's error; once it passes it
// is not asked again.
func TestKeysService(t *testing.T) {
	e := newKeysEnv(t, keysEnvOptions{})
	ctx := t.Context()
	refused := errors.New("the service does not prove itself")
	var calls atomic.Int32
	var fail atomic.Bool
	cfg := e.config(client.APIV1, client.WrapX25519)
	cfg.Service = func(_ context.Context, hc *http.Client, kms, logKey string) error {
		calls.Add(1)
		if hc != cfg.HTTPClient || kms != cfg.KMS || logKey != cfg.LogKey {
			t.Errorf("Service(%v, %q, %q), want the configuration's", hc, kms, logKey)
		}
		if fail.Load() {
			return refused
		}
		return nil
	}
	fail.Store(true)
	k := e.newKeys(cfg)
	p := e.primary()
	if _, err := k.ByKID(ctx, p.Kid); !errors.Is(err, client.ErrRejected) || !errors.Is(err, refused) {
		t.Fatalf("a refused service: %v", err)
	}
	if n := e.releases(); n != 0 {
		t.Fatalf("%d release requests to a refused service", n)
	}
	fail.Store(false)
	waitFor(t, "the release once the service passes (after the remembered failure)", func() bool {
		_, err := k.ByKID(ctx, p.Kid)
		return err == nil
	})
	if _, err := k.All(ctx); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("Service called %d times, want 2 (refused, then passed once)", n)
	}
}
