package bench

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/internal/wrap"
)

var selfPID = os.Getpid()

// maxAnswer bounds the answers read.
const maxAnswer = 8 << 20

// publishedKey is a key of GET /v1/keys?all=true.
type publishedKey struct {
	Kid       string `json:"kid"`
	Suite     string `json:"suite"`
	PublicKey []byte `json:"public_key"`
	State     string `json:"state"`
}

// scenario is a scenario ready to run: its request bodies and what the
// answers must hold.
type scenario struct {
	name      string
	published map[string]publishedKey // releasable keys by kid
	keysInKMS int
	verifier  note.Verifier // nil without Config.LogKey

	token string // "Bearer ..."

	// release-app
	appKeyBody []byte
	appPEM     string
	rsaKey     *rsa.PrivateKey
	appEv      json.RawMessage

	// release-v1, release-batch
	v1Path    string
	v1Name    string // v1Path with {kid}
	v1Body    []byte
	v1Kids    []string // expected kids (batch: every releasable key)
	hpkeSK    hpke.PrivateKey
	keysPerOp int

	releases      bool // every operation is a release
	mixedReleases bool
	seq           atomic.Uint64 // mixed: operation counter

	verified  int // answers verified in setup
	flood     *flood
	floor     *floorInputs
	floorPlan floorPlan
}

// setup prepares cfg.Scenario against the KMS and makes one verified
// sample release.
func setup(ctx context.Context, r *runner, cfg Config) (*scenario, error) {
	sc := &scenario{name: cfg.Scenario, keysPerOp: 1}
	r.sc = sc
	if err := sc.readKeys(ctx, r); err != nil {
		return nil, err
	}
	if cfg.LogKey != "" {
		v, err := translog.NewVerifier(cfg.LogKey)
		if err != nil {
			return nil, fmt.Errorf("bench: log key: %w", err)
		}
		sc.verifier = v
	}
	if cfg.Scenario == ScenarioPubKeys || cfg.Scenario == ScenarioFlood {
		w := newWorker()
		if err := sc.pubkeys(ctx, r, w, 0, false); err != nil {
			return nil, fmt.Errorf("bench: sample request: %w", err)
		}
		if cfg.Scenario == ScenarioFlood {
			return sc, setupFlood(ctx, r, cfg, sc)
		}
		return sc, nil
	}
	if cfg.Scenario == ScenarioReleaseBatch && sc.keysInKMS < BatchKeys {
		if cfg.MemberKey == "" {
			r.progressf("the KMS has %d valid keys, fewer than %d, and no member key to rotate: releasing %d", sc.keysInKMS, BatchKeys, sc.keysInKMS)
		} else {
			r.progressf("rotating: %d valid keys, want %d", sc.keysInKMS, BatchKeys)
			for sc.keysInKMS < BatchKeys {
				if err := rotate(ctx, r, cfg.MemberKey); err != nil {
					return nil, err
				}
				if err := sc.readKeys(ctx, r); err != nil {
					return nil, err
				}
			}
		}
	}

	att, err := devtee.NewAttester(cfg.DataDir, devtee.AttesterOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	ts, err := devtee.NewTokenSource(cfg.DataDir, devtee.TokenOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	tok, err := ts.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	sc.token = "Bearer " + tok
	iss, err := oidcissuer.New(cfg.DataDir, oidcissuer.Options{})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if sc.floor, err = newFloorInputs(tok, iss.PublicKey()); err != nil {
		return nil, err
	}
	sc.floor.kid = sc.primary()
	sc.releases = true

	switch cfg.Scenario {
	case ScenarioReleaseApp, ScenarioMixed:
		r.progressf("generating an RSA-4096 wrapping key and simulated evidence binding it")
		if sc.rsaKey, err = rsa.GenerateKey(rand.Reader, 4096); err != nil {
			return nil, err
		}
		der := wrap.CanonicalRSA(&sc.rsaKey.PublicKey)
		sc.appPEM = string(pemPublicKey(der))
		ev, err := att.Attest(ctx, reportData(wrap.AppBindingHash(sc.appPEM)))
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		sc.appEv = ev.Attestation
		if sc.appKeyBody, err = json.Marshal(map[string]any{"attestation": ev.Attestation, "wrappingKey": sc.appPEM}); err != nil {
			return nil, err
		}
		sc.floor.rsaKey = &sc.rsaKey.PublicKey
		sc.floorPlan = floorPlan{evidence: 2, rsaWraps: 1}
		if cfg.Scenario == ScenarioMixed {
			sc.releases, sc.mixedReleases = false, true
		}
	case ScenarioReleaseV1, ScenarioReleaseBatch:
		r.progressf("generating an X25519 wrapping key and simulated evidence binding it")
		kem, err := hpke.NewKEM(keys.KEMX25519HKDFSHA256)
		if err != nil {
			return nil, err
		}
		if sc.hpkeSK, err = kem.GenerateKey(); err != nil {
			return nil, err
		}
		pub := sc.hpkeSK.PublicKey().Bytes()
		bind := wrap.V1BindingHash(wrap.CanonicalHPKE(keys.KEMX25519HKDFSHA256, pub))
		ev, err := att.Attest(ctx, reportData(bind))
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		req := map[string]any{
			"attestation":  ev.Attestation,
			"wrapping_key": map[string]any{"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(pub)},
		}
		if cfg.Scenario == ScenarioReleaseV1 {
			sc.v1Kids = []string{sc.primary()}
			sc.v1Path = "/v1/keys/" + url.PathEscape(sc.v1Kids[0]) + "/release"
			sc.v1Name = "POST /v1/keys/{kid}/release"
		} else {
			req["all_valid"] = true
			sc.v1Path = "/v1/release"
			sc.v1Name = "POST /v1/release"
			sc.v1Kids = slices.Sorted(func(yield func(string) bool) {
				for kid := range sc.published {
					if !yield(kid) {
						return
					}
				}
			})
			sc.keysPerOp = len(sc.v1Kids)
		}
		if sc.v1Body, err = json.Marshal(req); err != nil {
			return nil, err
		}
		sc.floor.hpkePub = pub
		sc.floorPlan = floorPlan{evidence: 1, hpkeWraps: sc.keysPerOp}
	}

	// One sample release, verified fully (the receipt too, with a log
	// key); it also gives the floor the real payload size.
	w := newWorker()
	w.verified = -1 // not counted as a worker's
	var err2 error
	switch cfg.Scenario {
	case ScenarioReleaseApp, ScenarioMixed:
		err2 = sc.releaseApp(ctx, r, w, false)
	default:
		err2 = sc.releaseV1(ctx, r, w, false)
	}
	if err2 != nil {
		return nil, fmt.Errorf("bench: sample release: %w", err2)
	}
	sc.verified = 1
	return sc, nil
}

// do performs one operation of the scenario.
func (sc *scenario) do(ctx context.Context, r *runner, w *worker, measured bool) error {
	switch sc.name {
	case ScenarioPubKeys, ScenarioFlood:
		return sc.pubkeys(ctx, r, w, sc.seq.Add(1), measured)
	case ScenarioReleaseApp:
		return sc.releaseApp(ctx, r, w, measured)
	case ScenarioReleaseV1, ScenarioReleaseBatch:
		return sc.releaseV1(ctx, r, w, measured)
	case ScenarioMixed:
		n := sc.seq.Add(1)
		if n%100 == 0 {
			return sc.releaseApp(ctx, r, w, measured)
		}
		return sc.pubkeys(ctx, r, w, n, measured)
	}
	return fmt.Errorf("bench: scenario %q", sc.name)
}

func reportData(bind [32]byte) [64]byte {
	var rd [64]byte
	copy(rd[:], bind[:])
	return rd
}

func pemPublicKey(der []byte) []byte {
	var b bytes.Buffer
	b.WriteString("-----BEGIN PUBLIC KEY-----\n")
	s := base64.StdEncoding.EncodeToString(der)
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s + "\n-----END PUBLIC KEY-----\n")
	return b.Bytes()
}

// primary returns the kid of the primary key (else the newest listed).
func (sc *scenario) primary() string {
	var last string
	for kid, k := range sc.published {
		if k.State == "primary" {
			return kid
		}
		last = max(last, kid)
	}
	return last
}

// readKeys reads the KMS's releasable keys.
func (sc *scenario) readKeys(ctx context.Context, r *runner) error {
	w := newWorker()
	b, err := r.call(ctx, w, false, http.MethodGet, "", "/v1/keys?all=true", nil, "")
	if err != nil {
		return fmt.Errorf("bench: GET /v1/keys: %w", err)
	}
	var list struct {
		Keys []publishedKey `json:"keys"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("bench: GET /v1/keys: %w", err)
	}
	sc.published = map[string]publishedKey{}
	for _, k := range list.Keys {
		switch k.State {
		case "created", "published", "primary", "retired":
			sc.published[k.Kid] = k
		}
	}
	sc.keysInKMS = len(sc.published)
	if sc.keysInKMS == 0 {
		return errors.New("bench: the KMS lists no releasable key")
	}
	return nil
}

// rotate makes the KMS create a key now: a rotate_key_now proposal signed
// by the dev member, posted to /app/refresh (as `tkms keys rotate`).
func rotate(ctx context.Context, r *runner, keyFile string) error {
	pemBytes, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("bench: member key: %w", err)
	}
	s, err := gov.NewFileSigner(pemBytes)
	if err != nil {
		return fmt.Errorf("bench: member key %s: %w", filepath.Base(keyFile), err)
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	args, _ := json.Marshal(gov.RotateArgs{Reason: "tkms bench " + hex.EncodeToString(nonce[:])})
	msg, err := s.SignProposal([]gov.Action{{Name: "rotate_key_now", Args: args}}, time.Now())
	if err != nil {
		return fmt.Errorf("bench: rotate proposal: %w", err)
	}
	if _, err := r.call(ctx, newWorker(), false, http.MethodPost, "", "/app/refresh", msg, "application/cose"); err != nil {
		return fmt.Errorf("bench: rotate (POST /app/refresh): %w", err)
	}
	return nil
}

// call sends one request and returns the body of a 200 answer. With
// measured it records the request's latency under endpoint and counts
// it; any other answer is a *codeError.
func (r *runner) call(ctx context.Context, w *worker, measured bool, method, endpoint, path string, body []byte, contentType string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if r.sc != nil && r.sc.token != "" && method == http.MethodPost && contentType == "application/json" {
		req.Header.Set("Authorization", r.sc.token)
	}
	start := time.Now()
	w.requests++
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, &codeError{code: "transport", msg: err.Error()}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return nil, &codeError{code: "transport", msg: err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		code := resp.Header.Get("x-ms-kms-error-code")
		if code == "" {
			code = fmt.Sprintf("HTTP %d", resp.StatusCode)
		}
		return nil, &codeError{code: code, msg: fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, truncate(strings.TrimSpace(string(b)), 300))}
	}
	if measured && endpoint != "" {
		h := w.endpoints[endpoint]
		if h == nil {
			h = NewHistogram()
			w.endpoints[endpoint] = h
		}
		h.Record(time.Since(start))
	}
	return b, nil
}

// pubkeys reads the public keys: /app/listpubkeys for odd n, /v1/keys
// for even n.
func (sc *scenario) pubkeys(ctx context.Context, r *runner, w *worker, n uint64, measured bool) error {
	path := "/app/listpubkeys"
	if n%2 == 0 {
		path = "/v1/keys"
	}
	b, err := r.call(ctx, w, measured, http.MethodGet, "GET "+path, path, nil, "")
	if err != nil {
		return err
	}
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: GET %s is not a JSON object", errAnswer, path)
	}
	return nil
}

// releaseApp is the Azure-compatible two-step release: POST /app/key
// names the key, POST /app/unwrapKey?fmt=jwk releases it wrapped to the
// RSA-4096 key.
func (sc *scenario) releaseApp(ctx context.Context, r *runner, w *worker, measured bool) error {
	b, err := r.call(ctx, w, measured, http.MethodPost, "POST /app/key", "/app/key?fmt=jwk", sc.appKeyBody, "application/json")
	if err != nil {
		return err
	}
	var meta struct {
		WrappedKid string `json:"wrappedKid"`
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.WrappedKid == "" {
		return fmt.Errorf("%w: POST /app/key names no wrappedKid", errAnswer)
	}
	body := w.cache[meta.WrappedKid]
	if body == nil {
		if body, err = json.Marshal(map[string]any{"attestation": sc.appEv, "wrappingKey": sc.appPEM, "wrappedKid": meta.WrappedKid, "wrapped": ""}); err != nil {
			return err
		}
		w.cache[meta.WrappedKid] = body
	}
	if b, err = r.call(ctx, w, measured, http.MethodPost, "POST /app/unwrapKey", "/app/unwrapKey?fmt=jwk", body, "application/json"); err != nil {
		return err
	}
	var ans struct {
		Wrapped string          `json:"wrapped"`
		Receipt json.RawMessage `json:"receipt"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return fmt.Errorf("%w: POST /app/unwrapKey: %v", errAnswer, err)
	}
	ct, err := base64.StdEncoding.DecodeString(ans.Wrapped)
	if err != nil || len(ct) != sc.rsaKey.Size() {
		return fmt.Errorf("%w: POST /app/unwrapKey: wrapped is not an RSA-4096 ciphertext", errAnswer)
	}
	w.keys++
	if w.verified > 0 {
		return nil
	}
	// The first answer of each worker (and the sample) is checked fully.
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, sc.rsaKey, ct, nil)
	if err != nil {
		return fmt.Errorf("%w: the wrapped key does not decrypt", errAnswer)
	}
	var it keys.Item
	if err := json.Unmarshal(pt, &it); err != nil || it.Kid != meta.WrappedKid {
		return fmt.Errorf("%w: the unwrapped payload is not the key item of %s", errAnswer, meta.WrappedKid)
	}
	d, err := base64.RawURLEncoding.DecodeString(it.D)
	if err != nil {
		return fmt.Errorf("%w: key item d", errAnswer)
	}
	if err := sc.checkPrivate(it.Kid, d); err != nil {
		return err
	}
	if err := sc.checkReceipt(ans.Receipt, []string{it.Kid}, wrap.AppBindingHash(sc.appPEM)); err != nil {
		return err
	}
	if sc.floor != nil && sc.floor.payload == nil {
		sc.floor.payload = samePayloadSize(len(pt))
	}
	w.verified++
	return nil
}

// releaseV1 is POST /v1/keys/{kid}/release or /v1/release, HPKE-wrapped.
func (sc *scenario) releaseV1(ctx context.Context, r *runner, w *worker, measured bool) error {
	b, err := r.call(ctx, w, measured, http.MethodPost, sc.v1Name, sc.v1Path, sc.v1Body, "application/json")
	if err != nil {
		return err
	}
	var ans struct {
		Keys []struct {
			Kid       string `json:"kid"`
			PublicKey []byte `json:"public_key"`
			Wrapped   []byte `json:"wrapped"`
		} `json:"keys"`
		Receipt json.RawMessage `json:"receipt"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return fmt.Errorf("%w: %s: %v", errAnswer, sc.v1Path, err)
	}
	if len(ans.Keys) != len(sc.v1Kids) {
		return fmt.Errorf("%w: %s released %d keys, want %d", errAnswer, sc.v1Path, len(ans.Keys), len(sc.v1Kids))
	}
	kids := make([]string, len(ans.Keys))
	for i, k := range ans.Keys {
		kids[i] = k.Kid
		if len(k.Wrapped) <= 32 {
			return fmt.Errorf("%w: key %s: wrapped is too short", errAnswer, k.Kid)
		}
	}
	slices.Sort(kids)
	if !slices.Equal(kids, sc.v1Kids) {
		return fmt.Errorf("%w: released %v, want %v", errAnswer, kids, sc.v1Kids)
	}
	w.keys += uint64(len(ans.Keys))
	if w.verified > 0 {
		return nil
	}
	var size int
	for _, k := range ans.Keys {
		priv, err := hpke.Open(sc.hpkeSK, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(k.Kid), k.Wrapped)
		if err != nil {
			return fmt.Errorf("%w: the wrapped key %s does not decrypt", errAnswer, k.Kid)
		}
		if !bytes.Equal(k.PublicKey, sc.published[k.Kid].PublicKey) {
			return fmt.Errorf("%w: the answer gives %s another public key than the KMS lists", errAnswer, k.Kid)
		}
		if err := sc.checkPrivate(k.Kid, priv); err != nil {
			return err
		}
		size = len(priv)
	}
	bind := wrap.V1BindingHash(wrap.CanonicalHPKE(keys.KEMX25519HKDFSHA256, sc.hpkeSK.PublicKey().Bytes()))
	if err := sc.checkReceipt(ans.Receipt, kids, bind); err != nil {
		return err
	}
	if sc.floor != nil && sc.floor.payload == nil {
		sc.floor.payload = samePayloadSize(size)
	}
	w.verified++
	return nil
}

// checkPrivate checks that priv is the private key of the published key
// kid.
func (sc *scenario) checkPrivate(kid string, priv []byte) error {
	pk, ok := sc.published[kid]
	if !ok {
		return fmt.Errorf("%w: released key %s is not listed", errAnswer, kid)
	}
	s, err := keys.ParseSuite(pk.Suite)
	if err != nil {
		return fmt.Errorf("%w: key %s: %v", errAnswer, kid, err)
	}
	sk, err := s.PrivateKey(priv)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), pk.PublicKey) {
		return fmt.Errorf("%w: the released private key of %s does not match its published public key", errAnswer, kid)
	}
	return nil
}

// checkReceipt verifies a release's log receipt when a log key is known:
// a key.released entry of exactly kids to the wrapping key bind.
func (sc *scenario) checkReceipt(raw json.RawMessage, kids []string, bind [32]byte) error {
	if sc.verifier == nil {
		return nil
	}
	rc, err := translog.ParseReceipt(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", errAnswer, err)
	}
	leaf, _, err := rc.Verify(sc.verifier)
	if err != nil {
		return fmt.Errorf("%w: receipt: %v", errAnswer, err)
	}
	var body struct {
		Kids              []string `json:"kids"`
		WrappingKeySHA256 string   `json:"wrapping_key_sha256"`
	}
	if leaf.Type != ledger.TypeKeyReleased || json.Unmarshal(leaf.Body, &body) != nil {
		return fmt.Errorf("%w: the receipt proves a %s entry", errAnswer, leaf.Type)
	}
	slices.Sort(body.Kids)
	want := slices.Sorted(slices.Values(kids))
	if !slices.Equal(body.Kids, want) || body.WrappingKeySHA256 != hex.EncodeToString(bind[:]) {
		return fmt.Errorf("%w: the receipt records another release", errAnswer)
	}
	return nil
}
