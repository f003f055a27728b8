package main

// The release side of TestKillNineRecovery: loops that obtain keys from a
// tkms dev through both release APIs while it is killed at random moments,
// and the checks, after every restart, that every release (and refresh)
// whose answer arrived is in the restarted log, under receipts that verify.

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// ack is a write tkms acknowledged with a log receipt: a refresh (its
// key.created entry) or a release (its key.released entry).
type ack struct {
	n       int         // position in the ackLog
	what    string      // for messages, e.g. "v1/release of [kid]"
	typ     ledger.Type // the entry the receipt must prove
	receipt []byte
	// match returns an error unless an entry body of typ is the one this
	// write made.
	match func(body []byte) error
	// sent is when the write's request was sent (zero if unknown), at
	// when its answer was read.
	sent, at time.Time
}

// refreshAck is the ack of a refresh answered with a.
func refreshAck(a refreshed) ack {
	return ack{what: "refresh of " + a.Kid, typ: ledger.TypeKeyCreated, receipt: []byte(a.Receipt), match: func(body []byte) error {
		var kc struct {
			Kid       string `json:"kid"`
			PublicKey []byte `json:"public_key"`
		}
		if err := json.Unmarshal(body, &kc); err != nil {
			return err
		}
		if kc.Kid != a.Kid || base64.RawURLEncoding.EncodeToString(kc.PublicKey) != a.X {
			return fmt.Errorf("the entry creates %s %x", kc.Kid, kc.PublicKey)
		}
		return nil
	}}
}

// releaseAck is the ack of a release of kids through api ("app/unwrapKey"
// or "v1/release") to the wrapping key whose binding hash is bind.
func releaseAck(api string, kids []string, bind [32]byte, receipt []byte) ack {
	kids = slices.Clone(kids)
	return ack{what: fmt.Sprintf("%s of %v", api, kids), typ: ledger.TypeKeyReleased, receipt: receipt, match: func(body []byte) error {
		var kr struct {
			Kids              []string `json:"kids"`
			API               string   `json:"api"`
			WrappingKeySHA256 string   `json:"wrapping_key_sha256"`
			Simulated         bool     `json:"simulated"`
		}
		if err := json.Unmarshal(body, &kr); err != nil {
			return err
		}
		if !sameSet(kr.Kids, kids) || kr.API != api || kr.WrappingKeySHA256 != hex.EncodeToString(bind[:]) || !kr.Simulated {
			return fmt.Errorf("the entry records the %s release of %v to wrapping key %s (simulated %v)", kr.API, kr.Kids, kr.WrappingKeySHA256, kr.Simulated)
		}
		return nil
	}}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// ackLog collects the acks of all loops, in the order they arrived.
type ackLog struct {
	mu   sync.Mutex
	acks []ack
}

func (l *ackLog) add(a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a.n = len(l.acks)
	if a.at.IsZero() {
		a.at = time.Now()
	}
	l.acks = append(l.acks, a)
}

func (l *ackLog) all() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// receiptChecker checks acks against a log, restart after restart.
type receiptChecker struct {
	v    note.Verifier // the log key pinned at the first start
	done int           // acks checked by earlier calls of checkNew
	last translog.Signed
	// leaves maps each leaf index a receipt proved to the ack (its n):
	// two acknowledged writes never share an entry (the releases of one
	// key to one wrapping key have equal bodies, so this is what tells
	// them apart).
	leaves map[int64]int
}

func newReceiptChecker(t *testing.T, logKey string) *receiptChecker {
	t.Helper()
	vkey, err := os.ReadFile(strings.TrimPrefix(logKey, "@"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := translog.NewVerifier(string(vkey))
	if err != nil {
		t.Fatal(err)
	}
	return &receiptChecker{v: v, leaves: map[int64]int{}}
}

// checkNew checks the acks not checked yet (acks is every ack so far) and
// that the log is consistent with the one of the previous call.
func (rc *receiptChecker) checkNew(t *testing.T, what, base string, acks []ack) {
	t.Helper()
	rc.check(t, what, base, acks[rc.done:])
	rc.done = len(acks)
}

// check verifies, for each ack, its receipt against the pinned log key;
// that the entry the restarted server serves at the receipt's index is
// the very leaf of the receipt, and the entry of that write; and that the
// current checkpoint is consistent with the checkpoint of the receipt (and
// with the one of the previous check): nothing acknowledged was rolled
// back or rewritten.
func (rc *receiptChecker) check(t *testing.T, what, base string, acks []ack) {
	t.Helper()
	_, body := do(t, http.MethodGet, base+"/log/checkpoint", nil)
	now, err := translog.Verify(body, rc.v)
	if err != nil {
		t.Fatalf("%s: checkpoint: %v", what, err)
	}
	if rc.last.Size > 0 {
		rc.consistent(t, what+": the log since the previous restart", base, rc.last, now)
	}
	proven := map[int64]bool{}
	for _, a := range acks {
		r, err := translog.ParseReceipt(a.receipt)
		if err != nil {
			t.Fatalf("%s: %s: %v", what, a.what, err)
		}
		leaf, cp, err := r.Verify(rc.v)
		if err != nil {
			t.Fatalf("%s: %s: %v", what, a.what, err)
		}
		if leaf.Type != a.typ {
			t.Fatalf("%s: the receipt of the %s proves a %s entry", what, a.what, leaf.Type)
		}
		if err := a.match(leaf.Body); err != nil {
			t.Fatalf("%s: the receipt of the %s proves another entry: %v", what, a.what, err)
		}
		if n, ok := rc.leaves[r.Index]; ok && n != a.n {
			t.Fatalf("%s: the %s and an earlier write (ack %d) were acknowledged with the receipt of one entry, leaf %d", what, a.what, n, r.Index)
		}
		rc.leaves[r.Index] = a.n
		resp, body := do(t, http.MethodGet, fmt.Sprintf("%s/v1/log/entries/%d", base, r.Index), nil)
		var e struct {
			Index    int64       `json:"index"`
			Seq      uint64      `json:"seq"`
			Type     ledger.Type `json:"type"`
			LeafHash tlog.Hash   `json:"leaf_hash"`
			Leaf     []byte      `json:"leaf"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &e) != nil {
			t.Fatalf("%s: %s: GET /v1/log/entries/%d: %s %s", what, a.what, r.Index, resp.Status, body)
		}
		if e.Index != r.Index || e.Seq != leaf.Seq || e.Type != a.typ || e.LeafHash != r.LeafHash || !bytes.Equal(e.Leaf, r.Leaf) {
			t.Fatalf("%s: %s was acknowledged as leaf %d (seq %d, %s); the log now holds there seq %d, %s, leaf hash %v",
				what, a.what, r.Index, leaf.Seq, a.typ, e.Seq, e.Type, e.LeafHash)
		}
		if !proven[cp.Size] {
			proven[cp.Size] = true
			rc.consistent(t, fmt.Sprintf("%s: the checkpoint the %s was acknowledged under", what, a.what), base, cp, now)
		}
	}
	rc.last = now
}

// consistent checks, with a proof the server gives, that the log of
// checkpoint to extends the log of checkpoint from.
func (rc *receiptChecker) consistent(t *testing.T, what, base string, from, to translog.Signed) {
	t.Helper()
	switch {
	case from.Size > to.Size:
		t.Fatalf("%s: the log shrank from %d to %d entries", what, from.Size, to.Size)
	case from.Size == to.Size:
		if from.Root != to.Root {
			t.Fatalf("%s: two roots for %d entries", what, from.Size)
		}
		return
	}
	var proof struct {
		Proof tlog.TreeProof `json:"proof"`
	}
	resp, body := do(t, http.MethodGet, fmt.Sprintf("%s/v1/log/proof/consistency?from=%d&to=%d", base, from.Size, to.Size), nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &proof) != nil {
		t.Fatalf("%s: consistency proof from %d to %d: %s %s", what, from.Size, to.Size, resp.Status, body)
	}
	if err := tlog.CheckTree(proof.Proof, to.Size, to.Root, from.Size, from.Root); err != nil {
		t.Fatalf("%s: the log of %d entries is not consistent with the checkpoint of %d: %v", what, to.Size, from.Size, err)
	}
}

// releaser drives attested releases against a tkms dev with the simulated
// TEE of its data directory and its dev workload token: two-step /app
// releases (POST /app/key, then /app/unwrapKey) wrapped to an RSA key, and
// /v1 releases (one kid, a batch, or all_valid) wrapped to an HPKE key.
// The evidence of each wrapping key is made once. Every 200 answer is
// unwrapped and checked against the published public key; its receipt
// goes to the ack log.
type releaser struct {
	acks *ackLog

	appPEM  string // the /app wrapping key, PEM text as sent and hashed
	appPriv *rsa.PrivateKey
	appEv   json.RawMessage
	appBind [32]byte

	v1Priv hpke.PrivateKey
	v1Pub  []byte
	v1Ev   json.RawMessage
	v1Bind [32]byte

	noAnswer atomic.Int64 // release requests that got no (whole) answer: the kill
	// retryFor, if set, makes the releaser a client that retries a write
	// answered 503 (or not answered) for up to that long (send).
	retryFor time.Duration
	retried  atomic.Int64 // tries again after a 503 or no answer

	mu       sync.Mutex
	statuses map[string]int    // "app/unwrapKey 410" -> count
	acked    map[string]int    // "app", "v1" -> acknowledged releases
	checked  int               // keys unwrapped and checked
	released map[string][]byte // kid -> public key of the private key released
	failures []string          // kept for the test's goroutine
}

// newReleaser makes the wrapping keys and their evidence with the
// simulated TEE of data (which tkms dev created at its first start).
func newReleaser(t *testing.T, data string, acks *ackLog) *releaser {
	t.Helper()
	d := &releaser{acks: acks, statuses: map[string]int{}, acked: map[string]int{}, released: map[string][]byte{}}
	att, err := devtee.NewAttester(data, devtee.AttesterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evidence := func(bind [32]byte) json.RawMessage {
		var rd [64]byte
		copy(rd[:], bind[:])
		ev, err := att.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		return ev.Attestation
	}

	// /app: the published RSA-4096 test key pair (no key generation).
	d.appPEM = string(readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem"))
	blk, _ := pem.Decode(readFile(t, "../../internal/wrap/testdata/privateWrapKey.pem"))
	if blk == nil {
		t.Fatal("privateWrapKey.pem: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	d.appPriv = k.(*rsa.PrivateKey)
	d.appBind = wrap.AppBindingHash(d.appPEM)
	d.appEv = evidence(d.appBind)

	// /v1: a fresh X25519 HPKE key.
	kem, err := hpke.NewKEM(keys.KEMX25519HKDFSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if d.v1Priv, err = kem.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	d.v1Pub = d.v1Priv.PublicKey().Bytes()
	d.v1Bind = wrap.V1BindingHash(wrap.CanonicalHPKE(keys.KEMX25519HKDFSHA256, d.v1Pub))
	d.v1Ev = evidence(d.v1Bind)
	return d
}

// failf records a failure seen by a loop; report hands them to the test.
func (d *releaser) failf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures = append(d.failures, fmt.Sprintf(format, args...))
}

// report fails the test with the failures the loops recorded.
func (d *releaser) report(t *testing.T, what string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, f := range d.failures {
		if i == 10 {
			t.Errorf("%s: and %d more release failures", what, len(d.failures)-i)
			break
		}
		t.Errorf("%s: %s", what, f)
	}
	d.failures = nil
}

// loop releases keys until ctx ends: api is "app" or "v1". Busy loops
// pause 5-15 ms between releases, calm ones 40-120 ms. A releaser that
// retries (retryFor) finishes the release under way when ctx ends.
func (d *releaser) loop(stop context.Context, hc *http.Client, base, token string, r *rand.Rand, busy bool, api string) {
	ctx := stop
	if d.retryFor > 0 {
		ctx = context.WithoutCancel(stop)
	}
	for {
		pause := time.Duration(5+r.IntN(10)) * time.Millisecond
		if !busy {
			pause = time.Duration(40+r.IntN(80)) * time.Millisecond
		}
		select {
		case <-stop.Done():
			return
		case <-time.After(pause):
		}
		list, ok := d.releasable(ctx, hc, base)
		if !ok || len(list) == 0 {
			continue
		}
		if api == "app" {
			d.app(ctx, hc, base, token, list[r.IntN(len(list))])
			continue
		}
		switch n := r.IntN(10); {
		case n < 5:
			d.v1(ctx, hc, base, token, list, []wireKey{list[r.IntN(len(list))]}, false)
		case n < 8:
			r.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
			d.v1(ctx, hc, base, token, list, list[:min(len(list), 2+r.IntN(3))], true)
		default:
			d.v1(ctx, hc, base, token, list, nil, true)
		}
	}
}

// releaseOnce releases a key through api ("app" or "v1") on a server that
// is not being killed, trying again while the rotation expires the key
// picked before its release (410): every run then acknowledges releases
// through both APIs, however few the loops got in before the kills.
func (d *releaser) releaseOnce(t *testing.T, base, token, api string) {
	t.Helper()
	acked := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.acked[api]
	}
	before := acked()
	for range 20 {
		list, ok := d.releasable(context.Background(), httpClient, base)
		if !ok || len(list) == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		newest := list[len(list)-1]
		if api == "app" {
			d.app(context.Background(), httpClient, base, token, newest)
		} else {
			d.v1(context.Background(), httpClient, base, token, list, []wireKey{newest}, false)
		}
		if acked() > before {
			return
		}
	}
	d.report(t, "release after the last restart")
	t.Fatalf("no %s release acknowledged in 20 tries after the last restart: answers %v", api, d.statuses)
}

// releasable returns the keys GET /v1/keys?all=true lists in a phase the
// KMS releases in. (The rotation may move them on before the release.)
func (d *releaser) releasable(ctx context.Context, hc *http.Client, base string) ([]wireKey, bool) {
	status, body, ok := d.send(ctx, hc, http.MethodGet, base+"/v1/keys?all=true", "", nil, "")
	if !ok || status != http.StatusOK {
		return nil, false
	}
	var list wireKeys
	if err := json.Unmarshal(body, &list); err != nil {
		d.failf("GET /v1/keys?all=true: %v", err)
		return nil, false
	}
	var out []wireKey
	for _, k := range list.Keys {
		switch k.State {
		case "created", "published", "primary", "retired":
			out = append(out, k)
		}
	}
	return out, true
}

// send makes one request and reads its answer. ok is false when no whole
// answer arrived. When endpoint is set, the status is counted under it,
// and any but 200, 404, 410 and 503 is a failure. With retryFor set, a
// write that gets 503 or no answer is sent again after the answer's
// Retry-After (as the client package does) until it gets another answer,
// and giving up after retryFor is a failure: the releases of a client that
// retries must not fail.
func (d *releaser) send(ctx context.Context, hc *http.Client, method, url, token string, body []byte, endpoint string) (status int, b []byte, ok bool) {
	start := time.Now()
	for try := 1; ; try++ {
		var wait time.Duration
		status, b, wait, ok = d.send1(ctx, hc, method, url, token, body, endpoint)
		if d.retryFor == 0 || endpoint == "" || (ok && status != http.StatusServiceUnavailable) {
			return status, b, ok
		}
		if time.Since(start)+wait > d.retryFor || ctx.Err() != nil {
			d.failf("%s: %d tries in %s, the last answered %d (0: none): a client that retries on 503 failed", endpoint, try, time.Since(start).Round(time.Millisecond), status)
			return status, b, ok
		}
		d.retried.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// send1 makes one try of send; wait is the answer's Retry-After (at least
// 100 ms).
func (d *releaser) send1(ctx context.Context, hc *http.Client, method, url, token string, body []byte, endpoint string) (status int, b []byte, wait time.Duration, ok bool) {
	wait = 100 * time.Millisecond
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		d.failf("%s %s: %v", method, url, err)
		return 0, nil, wait, false
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if s, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
	}
	switch {
	case err != nil && endpoint != "":
		d.noAnswer.Add(1)
		return 0, nil, wait, false
	case err != nil:
		return 0, nil, wait, false
	case endpoint == "":
		return resp.StatusCode, b, wait, true
	}
	d.mu.Lock()
	d.statuses[fmt.Sprintf("%s %d", endpoint, resp.StatusCode)]++
	d.mu.Unlock()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNotFound, http.StatusGone, http.StatusServiceUnavailable:
	default:
		d.failf("%s answered %s (%s): %s", endpoint, resp.Status, resp.Header.Get("x-ms-kms-error-code"), b)
	}
	return resp.StatusCode, b, wait, true
}

// app releases k as the Azure API does: POST /app/key (attestation, key
// metadata), then POST /app/unwrapKey, whose payload is the key item with
// its private key, RSA-OAEP-256 wrapped.
func (d *releaser) app(ctx context.Context, hc *http.Client, base, token string, k wireKey) {
	body, _ := json.Marshal(map[string]any{"attestation": d.appEv, "wrappingKey": d.appPEM})
	status, b, ok := d.send(ctx, hc, http.MethodPost, base+"/app/key?fmt=jwk&kid="+url.QueryEscape(k.Kid), token, body, "app/key")
	if !ok || status != http.StatusOK {
		return
	}
	var meta struct {
		WrappedKid string `json:"wrappedKid"`
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.WrappedKid != k.Kid {
		d.failf("/app/key for %s answered %s", k.Kid, b)
		return
	}
	body, _ = json.Marshal(map[string]any{"wrapped": "", "wrappedKid": k.Kid, "attestation": d.appEv, "wrappingKey": d.appPEM})
	sent := time.Now()
	status, b, ok = d.send(ctx, hc, http.MethodPost, base+"/app/unwrapKey?fmt=jwk", token, body, "app/unwrapKey")
	if !ok || status != http.StatusOK {
		return
	}
	var resp struct {
		Wrapped []byte `json:"wrapped"`
		Receipt string `json:"receipt"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || resp.Receipt == "" {
		d.failf("/app/unwrapKey of %s: 200 without a wrapped key and a receipt (%v): %s", k.Kid, err, b)
		return
	}
	a := releaseAck("app/unwrapKey", []string{k.Kid}, d.appBind, []byte(resp.Receipt))
	a.sent = sent
	d.acked1("app", a)
	payload, err := rsa.DecryptOAEP(sha256.New(), nil, d.appPriv, resp.Wrapped, nil)
	if err != nil {
		d.failf("/app/unwrapKey of %s: the wrapped key does not unwrap: %v", k.Kid, err)
		return
	}
	var item struct {
		Kid string `json:"kid"`
		D   string `json:"d"`
	}
	if err := json.Unmarshal(payload, &item); err != nil || item.Kid != k.Kid {
		d.failf("/app/unwrapKey of %s: the payload is not the key item of %s (%v)", k.Kid, k.Kid, err)
		return
	}
	priv, err := base64.RawURLEncoding.DecodeString(item.D)
	if err != nil {
		d.failf("/app/unwrapKey of %s: d: %v", k.Kid, err)
		return
	}
	d.released1(k.Kid, k.Suite, k.PublicKey, priv)
}

// v1 releases want (one kid at POST /v1/keys/{kid}/release unless batch),
// or with a nil want and batch every valid key (all_valid), wrapped to the
// HPKE key. list is the key list the kids were picked from.
func (d *releaser) v1(ctx context.Context, hc *http.Client, base, token string, list, want []wireKey, batch bool) {
	req := map[string]any{"attestation": d.v1Ev, "wrapping_key": map[string]any{
		"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(d.v1Pub)}}
	kids := make([]string, len(want))
	for i, k := range want {
		kids[i] = k.Kid
	}
	target := base + "/v1/release"
	switch {
	case !batch:
		target = base + "/v1/keys/" + url.PathEscape(kids[0]) + "/release"
	case want == nil:
		req["all_valid"] = true
	default:
		req["kids"] = kids
	}
	body, _ := json.Marshal(req)
	sent := time.Now()
	status, b, ok := d.send(ctx, hc, http.MethodPost, target, token, body, "v1/release")
	if !ok || status != http.StatusOK {
		return
	}
	var resp struct {
		Keys []struct {
			Kid       string `json:"kid"`
			Suite     string `json:"suite"`
			PublicKey []byte `json:"public_key"`
			Wrapped   []byte `json:"wrapped"`
		} `json:"keys"`
		Receipt json.RawMessage `json:"receipt"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || len(resp.Receipt) == 0 || len(resp.Keys) == 0 {
		d.failf("%s: 200 without keys and a receipt (%v): %s", target, err, b)
		return
	}
	got := make([]string, len(resp.Keys))
	for i, rk := range resp.Keys {
		got[i] = rk.Kid
	}
	a := releaseAck("v1/release", got, d.v1Bind, resp.Receipt)
	a.sent = sent
	d.acked1("v1", a)
	if want != nil && !sameSet(got, kids) {
		d.failf("%s: asked for %v, released %v", target, kids, got)
		return
	}
	listed := map[string]wireKey{}
	for _, k := range list {
		listed[k.Kid] = k
	}
	for _, rk := range resp.Keys {
		if l, ok := listed[rk.Kid]; ok && !bytes.Equal(l.PublicKey, rk.PublicKey) {
			d.failf("%s: released %s with public key %x; it is listed with %x", target, rk.Kid, rk.PublicKey, l.PublicKey)
			return
		}
		priv, err := hpke.Open(d.v1Priv, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(rk.Kid), rk.Wrapped)
		if err != nil {
			d.failf("%s: the wrapped key %s does not unwrap: %v", target, rk.Kid, err)
			return
		}
		d.released1(rk.Kid, rk.Suite, rk.PublicKey, priv)
	}
}

// acked1 records an acknowledged release through api ("app" or "v1").
func (d *releaser) acked1(api string, a ack) {
	d.acks.add(a)
	d.mu.Lock()
	d.acked[api]++
	d.mu.Unlock()
}

// released1 checks that priv, released as key kid of suite, is the private
// key of pub and that pub is the key kid names.
func (d *releaser) released1(kid, suite string, pub, priv []byte) {
	s, err := keys.ParseSuite(suite)
	if err != nil {
		d.failf("released %s: %v", kid, err)
		return
	}
	sk, err := s.PrivateKey(priv)
	clear(priv)
	if err != nil {
		d.failf("released %s: not a %s private key: %v", kid, suite, err)
		return
	}
	n, _ := keys.ParseKIDNumber(kid)
	pemText, err := keys.PublicPEM(s, pub)
	if err != nil || keys.KID(pemText, n) != kid {
		d.failf("released %s: the kid does not name the public key %x (%v)", kid, pub, err)
		return
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		d.failf("released %s: the private key does not match the published public key", kid)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checked++
	if prev, ok := d.released[kid]; ok && !bytes.Equal(prev, pub) {
		d.failures = append(d.failures, fmt.Sprintf("released %s with public key %x, earlier with %x", kid, pub, prev))
	}
	d.released[kid] = bytes.Clone(pub)
}

// checkKeys fails the test unless every key released so far is in list
// with the public key it was released with.
func (d *releaser) checkKeys(t *testing.T, what string, list []wireKey) {
	t.Helper()
	byKid := make(map[string]wireKey, len(list))
	for _, k := range list {
		byKid[k.Kid] = k
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for kid, pub := range d.released {
		k, ok := byKid[kid]
		if !ok {
			t.Errorf("%s: released key %s is lost", what, kid)
		} else if !bytes.Equal(k.PublicKey, pub) {
			t.Errorf("%s: key %s was released with public key %x; the ledger has %x", what, kid, pub, k.PublicKey)
		}
	}
}
