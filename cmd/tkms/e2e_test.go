package main

// Black-box tests of the tkms binary: real processes, real signals, real
// loopback HTTP and real data directories. TestMain (e2e_helpers_test.go)
// builds the binary once.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	bolt "go.etcd.io/bbolt"
)

// kidPattern is the Azure-compatible kid: base64url (no padding) of a
// SHA-256, "_", the key number.
var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}_([1-9][0-9]*)$`)

// kidNumber returns the N after the last '_' of a kid.
func kidNumber(kid string) (int, bool) {
	i := strings.LastIndexByte(kid, '_')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(kid[i+1:])
	return n, err == nil && n > 0
}

// wantError checks the JSON error shape and headers of an error response.
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %s, want %d; body %s", what, resp.Status, status, body)
	}
	if got := resp.Header.Get("x-ms-kms-error-code"); got != code {
		t.Errorf("%s: x-ms-kms-error-code %q, want %q", what, got, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: content-type %q, want application/json", what, ct)
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("%s: body %s, want {\"error\":{\"code\":%q,\"message\":...}} (%v)", what, body, code, err)
	}
	if resp.Header.Get("x-ms-kms-request-id") == "" {
		t.Errorf("%s: no x-ms-kms-request-id", what)
	}
}

// wantOK checks a 200 response and its request id.
func wantOK(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s: %s", what, resp.Status, body)
	}
	if resp.Header.Get("x-ms-kms-request-id") == "" {
		t.Errorf("%s: no x-ms-kms-request-id", what)
	}
}

// wantCacheHeaders checks the date and cache-control headers that DEPA's
// key fetcher requires.
func wantCacheHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		t.Errorf("%s: date header %q: %v", what, resp.Header.Get("Date"), err)
	}
	cc := resp.Header.Get("Cache-Control")
	m := regexp.MustCompile(`(?:^|[ ,])max-age=([0-9]+)(?:$|[ ,])`).FindStringSubmatch(cc)
	if m == nil {
		t.Errorf("%s: cache-control %q has no max-age=<seconds>", what, cc)
	}
}

func TestDevStartsAndServes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startDev(t, data)

	// Files and permissions.
	if got := perm(t, data); got != 0o700 {
		t.Errorf("data dir mode %v, want 0700", got)
	}
	for _, name := range []string{"dev.json", "master.key", "operator.token"} {
		if got := perm(t, filepath.Join(data, name)); got != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, got)
		}
	}
	var info map[string]any
	raw, _ := os.ReadFile(filepath.Join(data, "dev.json"))
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("dev.json: %v", err)
	}
	if info["data_dir"] != data {
		t.Errorf("dev.json data_dir %v, want %s", info["data_dir"], data)
	}
	tok, _ := os.ReadFile(filepath.Join(data, "operator.token"))
	if strings.TrimSpace(string(tok)) != p.Token {
		t.Errorf("dev.json operator_token differs from operator.token")
	}
	mk, _ := os.ReadFile(filepath.Join(data, "master.key"))
	if b, err := hex.DecodeString(strings.TrimSpace(string(mk))); err != nil || len(b) != 32 {
		t.Errorf("master.key is not 64 hex characters")
	}

	// GET /app/heartbeat.
	resp, body := do(t, "GET", p.URL+"/app/heartbeat", nil)
	wantOK(t, "heartbeat", resp, body)
	if string(body) != `{"status":"Service is running"}` {
		t.Errorf("heartbeat body %s", body)
	}

	// GET /app/listpubkeys: one key, cache headers, the caller's request id.
	resp, body = do(t, "GET", p.URL+"/app/listpubkeys", http.Header{"X-Request-Id": {"e2e-request-42"}})
	wantOK(t, "listpubkeys", resp, body)
	wantCacheHeaders(t, "listpubkeys", resp)
	if got := resp.Header.Get("x-ms-kms-request-id"); got != "e2e-request-42" {
		t.Errorf("listpubkeys: x-ms-kms-request-id %q, want the x-request-id sent", got)
	}
	var lp struct {
		Keys []struct{ ID, Key string } `json:"keys"`
	}
	if err := json.Unmarshal(body, &lp); err != nil || len(lp.Keys) != 1 {
		t.Fatalf("listpubkeys: want one key, got %s (%v)", body, err)
	}
	lpPub, err := base64.StdEncoding.DecodeString(lp.Keys[0].Key)
	if err != nil || len(lpPub) != 32 {
		t.Errorf("listpubkeys key %q: want standard base64 of 32 bytes", lp.Keys[0].Key)
	}

	// GET /v1/keys: the same key, primary, with an ETag.
	resp, body = do(t, "GET", p.URL+"/v1/keys", nil)
	wantOK(t, "v1/keys", resp, body)
	wantCacheHeaders(t, "v1/keys", resp)
	var v1 wireKeys
	if err := json.Unmarshal(body, &v1); err != nil || len(v1.Keys) != 1 {
		t.Fatalf("v1/keys: want one key, got %s (%v)", body, err)
	}
	k := v1.Keys[0]
	if m := kidPattern.FindStringSubmatch(k.Kid); m == nil || m[1] != "1" {
		t.Errorf("v1/keys kid %q: want <43 base64url chars>_1", k.Kid)
	}
	if k.State != "primary" || k.Reason != "scheduled" || k.Suite != "x25519" || k.KEM != 0x20 || k.KDF != 1 || k.AEAD != 2 {
		t.Errorf("v1/keys: %+v", k)
	}
	if strconv.Itoa(k.ID) != lp.Keys[0].ID || !bytes.Equal(k.PublicKey, lpPub) {
		t.Errorf("v1/keys key (id %d) differs from listpubkeys (id %s)", k.ID, lp.Keys[0].ID)
	}
	if k.ID < 10 || k.ID > 99 {
		t.Errorf("id %d out of 10..99", k.ID)
	}
	if want, _ := strconv.ParseUint(strconv.Itoa(k.ID), 16, 8); k.OHTTPKeyID != int(want) {
		t.Errorf("ohttp_key_id %d, want %d (the id's digits read as hex)", k.OHTTPKeyID, want)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Errorf("v1/keys: no ETag")
	} else {
		resp, body = do(t, "GET", p.URL+"/v1/keys", http.Header{"If-None-Match": {etag}})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("v1/keys with If-None-Match: %s %q, want 304 and no body", resp.Status, body)
		}
	}

	// GET /v1/keys/ohttp: one RFC 9458 key configuration.
	resp, body = do(t, "GET", p.URL+"/v1/keys/ohttp", nil)
	wantOK(t, "v1/keys/ohttp", resp, body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/ohttp-keys" {
		t.Errorf("v1/keys/ohttp content-type %q", ct)
	}
	if len(body) < 2 || int(binary.BigEndian.Uint16(body)) != len(body)-2 {
		t.Fatalf("v1/keys/ohttp: want one length-prefixed configuration, got %x", body)
	}
	cfg := body[2:]
	want := []byte{byte(k.OHTTPKeyID), 0x00, 0x20}
	want = append(want, k.PublicKey...)
	want = append(want, 0, 4, 0, 1, 0, 2)
	if !bytes.Equal(cfg, want) {
		t.Errorf("v1/keys/ohttp config\n got %x\nwant %x", cfg, want)
	}

	// GET /app/pubkey, jwk (explicit and default) and tink.
	for _, q := range []string{"?kid=" + k.Kid + "&fmt=jwk", "?kid=" + k.Kid, ""} {
		resp, body = do(t, "GET", p.URL+"/app/pubkey"+q, nil)
		wantOK(t, "pubkey"+q, resp, body)
		wantCacheHeaders(t, "pubkey"+q, resp)
		var item struct {
			Kty, Crv, X, Kid, D string
			ID                  int
			Timestamp           int64
			Receipt             *string
		}
		if err := json.Unmarshal(body, &item); err != nil {
			t.Fatalf("pubkey%s: %v: %s", q, err, body)
		}
		if item.Kty != "OKP" || item.Crv != "X25519" || item.Kid != k.Kid || item.ID != k.ID || item.D != "" ||
			item.X != base64.RawURLEncoding.EncodeToString(k.PublicKey) || item.Receipt == nil || item.Timestamp != k.Created.UnixMilli() {
			t.Errorf("pubkey%s: %s", q, body)
		}
	}
	resp, body = do(t, "GET", p.URL+"/app/pubkey?kid="+k.Kid+"&fmt=tink", nil)
	wantOK(t, "pubkey tink", resp, body)
	wantCacheHeaders(t, "pubkey tink", resp)
	var tink struct {
		PrimaryKeyID int `json:"primaryKeyId"`
		Key          []struct {
			KeyData          struct{ TypeURL, Value, KeyMaterialType string } `json:"keyData"`
			Status           string
			KeyID            int `json:"keyId"`
			OutputPrefixType string
		} `json:"key"`
	}
	if err := json.Unmarshal(body, &tink); err != nil || len(tink.Key) != 1 {
		t.Fatalf("pubkey tink: %s (%v)", body, err)
	}
	if tk := tink.Key[0]; tink.PrimaryKeyID != k.ID || tk.KeyID != k.ID || tk.Status != "ENABLED" || tk.OutputPrefixType != "RAW" ||
		tk.KeyData.TypeURL != "https://schema.org/PublicKey/Azure/HpkePublicKey" || tk.KeyData.KeyMaterialType != "ASYMMETRIC_PUBLIC" ||
		tk.KeyData.Value != base64.StdEncoding.EncodeToString(k.PublicKey) {
		t.Errorf("pubkey tink: %s", body)
	}

	// Errors.
	resp, body = do(t, "GET", p.URL+"/app/pubkey?kid=nosuchkey_7", nil)
	wantError(t, "unknown kid", resp, body, http.StatusNotFound, "KEY_NOT_FOUND")
	resp, body = do(t, "GET", p.URL+"/app/pubkey?kid="+k.Kid+"&fmt=bad", nil)
	wantError(t, "fmt=bad", resp, body, http.StatusBadRequest, "INVALID_FMT_PARAMETER")

	// POST /app/refresh: tkms dev is governed, so only a member's signed
	// proposal rotates; the operator token no longer does.
	resp, body = do(t, "POST", p.URL+"/app/refresh", nil)
	wantError(t, "refresh without a proposal", resp, body, http.StatusForbidden, "GOV_REQUIRED")
	resp, body = do(t, "POST", p.URL+"/app/refresh", http.Header{"Authorization": {"Bearer " + p.Token}})
	wantError(t, "refresh with the operator token", resp, body, http.StatusForbidden, "GOV_REQUIRED")
	stranger, _ := newTestMember(t)
	resp, body = postCOSETest(t, p.URL+"/app/refresh", signRotate(t, stranger))
	wantError(t, "refresh proposed by a non-member", resp, body, http.StatusUnauthorized, "GOV_NOT_A_MEMBER")
	if n := len(allKeys(t, p.URL)); n != 1 {
		t.Fatalf("refused refreshes created keys: %d keys", n)
	}
	r := refresh(t, p.URL, p.Token)
	if n, _ := kidNumber(r.Kid); n != 2 {
		t.Errorf("refresh created kid %s, want number 2", r.Kid)
	}
	all := allKeys(t, p.URL)
	if len(all) != 2 || all[1].Kid != r.Kid || !forcedReason(all[1].Reason) || all[1].ID != r.ID || all[1].ID == all[0].ID {
		t.Errorf("after refresh: %+v", all)
	}

	p.stopClean(syscall.SIGINT)
}

func TestRestartKeepsKeys(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startDev(t, data)
	r1 := refresh(t, p.URL, p.Token)
	r2 := refresh(t, p.URL, p.Token)
	// tkms dev is governed: the operator token no longer rotates, its
	// member's key does.
	out, errOut, code := runTkms(t, "keys", "rotate", "--url", p.URL, "--token-file", filepath.Join(data, "operator.token"))
	if code == 0 || !strings.Contains(errOut, "GOV_REQUIRED") || !strings.Contains(errOut, "--key") {
		t.Fatalf("tkms keys rotate --token-file on a governed KMS: exit %d: %s%s; want a refusal that says to sign with --key", code, out, errOut)
	}
	out, errOut, code = runTkms(t, "keys", "rotate", "--url", p.URL, "--key", filepath.Join(data, "member.key"))
	if code != 0 || !strings.HasPrefix(out, "created key ") {
		t.Fatalf("tkms keys rotate: exit %d: %s%s", code, out, errOut)
	}
	before := allKeys(t, p.URL)
	if len(before) != 4 {
		t.Fatalf("%d keys, want 4: %+v", len(before), before)
	}
	for i, k := range before {
		want := "governance:<proposal id>"
		if i == 0 {
			want = "scheduled"
		}
		if n, _ := kidNumber(k.Kid); n != i+1 || (i == 0 && k.Reason != want) || (i > 0 && !forcedReason(k.Reason)) {
			t.Errorf("key %d: kid %s reason %s, want number %d, reason %s", i+1, k.Kid, k.Reason, i+1, want)
		}
	}
	_, lp1 := do(t, "GET", p.URL+"/app/listpubkeys", nil)

	// While it runs, the data directory is locked: the CLI says to use --kms.
	_, errOut, code = runTkms(t, "keys", "list", "--data", data)
	if code == 0 || !strings.Contains(errOut, "--kms") {
		t.Errorf("keys list --data on a running instance: exit %d, stderr %q; want a failure that says to use --kms", code, errOut)
	}
	out, errOut, code = runTkms(t, "keys", "list", "--url", p.URL, "--json")
	if code != 0 {
		t.Fatalf("keys list --url: exit %d: %s", code, errOut)
	}
	var viaURL wireKeys
	if err := json.Unmarshal([]byte(out), &viaURL); err != nil {
		t.Fatal(err)
	}
	sameKeys(t, "keys list --url", viaURL.Keys, before)
	p.stopClean(syscall.SIGTERM)

	sameKeys(t, "keys list --data (stopped)", keysListData(t, data), before)
	out, errOut, code = runTkms(t, "keys", "list", "--data", data)
	if code != 0 {
		t.Fatalf("keys list --data: exit %d: %s", code, errOut)
	}
	for _, k := range before {
		if !strings.Contains(out, k.Kid) {
			t.Errorf("keys list table lacks %s:\n%s", k.Kid, out)
		}
	}

	p2 := startDev(t, data)
	if p2.Token != p.Token {
		t.Errorf("operator token changed across restart")
	}
	sameKeys(t, "after restart", allKeys(t, p2.URL), before)
	for _, r := range []refreshed{r1, r2} {
		k := before[slices.IndexFunc(before, func(k wireKey) bool { return k.Kid == r.Kid })]
		if k.ID != r.ID || base64.RawURLEncoding.EncodeToString(k.PublicKey) != r.X {
			t.Errorf("refresh answered %+v, the ledger holds %+v", r, k)
		}
	}
	if _, lp2 := do(t, "GET", p2.URL+"/app/listpubkeys", nil); !bytes.Equal(lp1, lp2) {
		t.Errorf("listpubkeys changed across restart:\n%s\n%s", lp1, lp2)
	}
	p2.stopClean(syscall.SIGTERM)
}

// rotation is the fast policy of TestKillNineRecovery. Every value is
// exactly representable as float seconds and nanoseconds, so the server's
// durations equal these.
type rotation struct {
	Interval, Grace, PublishDelay, Retention time.Duration
}

func (r rotation) config() map[string]any {
	return map[string]any{
		"rotation_interval_seconds": r.Interval.Seconds(),
		"grace_period_seconds":      r.Grace.Seconds(),
		"publish_delay_seconds":     r.PublishDelay.Seconds(),
		"retention_seconds":         r.Retention.Seconds(),
		"suite":                     "x25519",
	}
}

var knownStates = map[string]bool{"created": true, "published": true, "primary": true, "retired": true, "expired": true, "destroyed": true}

// forcedReason reports whether a key.created reason is that of a forced
// rotation: refresh (a KMS without governance, with the operator token) or
// governance:<proposal id> (a member's accepted rotate_key_now, as
// POST /app/refresh on tkms dev makes it).
func forcedReason(reason string) bool {
	if id, ok := strings.CutPrefix(reason, "governance:"); ok {
		return len(id) == 64 && strings.Trim(id, "0123456789abcdef") == ""
	}
	return reason == "refresh"
}

// checkLedger checks the invariants that must hold after any crash:
// nothing acknowledged is lost, key numbers are dense, numeric ids are not
// shared by keys alive at once, and no rotation slot got two scheduled
// keys.
func checkLedger(t *testing.T, what string, list []wireKey, acked map[string]refreshed, pol rotation) {
	t.Helper()
	byKid := map[string]wireKey{}
	for i, k := range list {
		if n, ok := kidNumber(k.Kid); !ok || n != i+1 || !kidPattern.MatchString(k.Kid) {
			t.Errorf("%s: key at position %d has kid %s: numbers must be exactly 1..K", what, i+1, k.Kid)
		}
		if _, dup := byKid[k.Kid]; dup {
			t.Errorf("%s: kid %s twice", what, k.Kid)
		}
		byKid[k.Kid] = k
		if k.Reason != "scheduled" && !forcedReason(k.Reason) {
			t.Errorf("%s: key %s has reason %q", what, k.Kid, k.Reason)
		}
		if !knownStates[k.State] {
			t.Errorf("%s: key %s has state %q", what, k.Kid, k.State)
		}
		if k.NotBefore.Before(k.Created) || k.NotAfter.Before(k.NotBefore) || k.ReleaseUntil.Before(k.NotAfter) || k.DestroyAfter.Before(k.ReleaseUntil) {
			t.Errorf("%s: key %s: lifecycle times out of order: %+v", what, k.Kid, k)
		}
	}
	for kid, a := range acked {
		k, ok := byKid[kid]
		if !ok {
			t.Errorf("%s: acknowledged key %s (id %d) is lost", what, kid, a.ID)
			continue
		}
		if k.ID != a.ID || base64.RawURLEncoding.EncodeToString(k.PublicKey) != a.X {
			t.Errorf("%s: acknowledged key %s was id %d x %s; the ledger has id %d x %s", what, kid, a.ID, a.X, k.ID, base64.RawURLEncoding.EncodeToString(k.PublicKey))
		}
	}
	for j, b := range list {
		for _, a := range list[:j] {
			if a.ID == b.ID && b.Created.Before(a.ReleaseUntil) {
				t.Errorf("%s: id %d held by %s (until %v) was given to %s (created %v)", what, a.ID, a.Kid, a.ReleaseUntil, b.Kid, b.Created)
			}
		}
		if j == 0 || b.Reason != "scheduled" {
			continue
		}
		prev := list[j-1]
		due := prev.Created.Add(pol.Interval)
		if t2 := prev.NotAfter.Add(-pol.PublishDelay); t2.Before(due) {
			due = t2
		}
		if b.Created.Before(due) {
			t.Errorf("%s: scheduled key %s created %v, before its slot opened at %v (after %s): two keys for one slot",
				what, b.Kid, b.Created, due, prev.Kid)
		}
	}
}

// TestKillNineRecovery kills a loaded tkms dev with SIGKILL at random
// moments, restarts it and checks, after every restart and at the end:
// every refresh and every release whose answer arrived is in the log under
// its receipt, and the log extends the checkpoints they were given under
// (crash_release_test.go); no acknowledged key is lost and no slot has two
// keys (checkLedger); `tkms audit` passes, consistent with what it saw
// before the kill (its state file); destroyed keys leave no data key.
func TestKillNineRecovery(t *testing.T) {
	cycles := 20
	if testing.Short() {
		cycles = 6
	}
	// Per cycle: governed rotations, two-step /app releases, /v1 releases
	// (single, batch, all_valid), and the scheduler.
	const refreshers, appReleasers, v1Releasers = 3, 1, 2
	start := time.Now()
	pol := rotation{Interval: 250 * time.Millisecond, PublishDelay: 100 * time.Millisecond, Grace: 150 * time.Millisecond, Retention: 200 * time.Millisecond}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TKMS_E2E_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (TKMS_E2E_SEED repeats the kill delays)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "tkms.json")
	// Small snapshot_every, so that restarts also load snapshots written
	// just before a kill.
	// No rate limits: the loops send as fast as one address and one
	// identity can, which is what this test is about, not admission.
	writeJSONFile(t, cfgPath, map[string]any{"key_rotation_policy": pol.config(), "snapshot_every": 16,
		"limits": map[string]any{"per_address_rate": 0, "per_identity_rate": 0}})

	var (
		mu        sync.Mutex
		acked     = map[string]refreshed{}
		statuses  = map[int]int{} // non-200 answers to refresh
		transport atomic.Int64    // requests that got no answer (the kill)
		badBodies atomic.Int64
		acks      ackLog // refreshes and releases acknowledged with a receipt
		rel       *releaser
		receipts  *receiptChecker
	)
	snapshotAcked := func() map[string]refreshed {
		mu.Lock()
		defer mu.Unlock()
		c := make(map[string]refreshed, len(acked))
		for k, v := range acked {
			c[k] = v
		}
		return c
	}
	// refreshLoop sends refreshes until ctx ends. Busy loops pause 20-60 ms
	// between them; calm loops 300-900 ms, which leaves the newest key a
	// rotation interval old now and then, so that the scheduler also
	// creates keys (and gets killed doing so).
	var member *gov.Signer // the dev member, who signs the rotations
	refreshLoop := func(ctx context.Context, client *http.Client, p *proc, r *rand.Rand, busy bool) {
		for {
			pause := time.Duration(20+r.IntN(40)) * time.Millisecond
			if !busy {
				pause = time.Duration(300+r.IntN(600)) * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			msg, err := rotateMsg(member)
			if err != nil {
				badBodies.Add(1) // reported at the end, from the test's goroutine
				continue
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/app/refresh", bytes.NewReader(msg))
			req.Header.Set("Content-Type", "application/cose")
			resp, err := client.Do(req)
			if err != nil {
				transport.Add(1)
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			var a refreshed
			switch {
			case err != nil:
				transport.Add(1)
			case resp.StatusCode != http.StatusOK:
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			case json.Unmarshal(body, &a) != nil || a.Kid == "":
				badBodies.Add(1)
			default:
				mu.Lock()
				acked[a.Kid] = a
				mu.Unlock()
				acks.add(refreshAck(a))
			}
		}
	}

	busyCycles := 0
	// After every restart the log must audit clean and be consistent with
	// the checkpoint the audit verified before the crash (the state file),
	// with the log key pinned at the first start.
	auditState := filepath.Join(dir, "audit.json")
	var logKey string
	for c := range cycles {
		p := startDev(t, data, "--config", cfgPath)
		what := fmt.Sprintf("restart %d", c)
		list := allKeys(t, p.URL)
		checkLedger(t, what, list, snapshotAcked(), pol)
		if logKey == "" {
			logKey = logKeyArg(t, p.URL)
			member = devSigner(t, p)
			rel = newReleaser(t, data, &acks)
			receipts = newReceiptChecker(t, logKey)
		}
		rel.checkKeys(t, what, list)
		if t.Failed() {
			t.Fatalf("invariants broken after restart %d; stderr of this run:\n%s", c, p.stderr)
		}
		receipts.checkNew(t, what, p.URL, acks.all())
		runAudit(t, 0, "--kms", p.URL, "--log-key", logKey, "--state", auditState, "--quiet")
		token := readDevJSON(t, data).WorkloadToken

		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var wg sync.WaitGroup
		busy := rng.IntN(5) < 2
		if busy {
			busyCycles++
		}
		for g := range refreshers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				refreshLoop(ctx, client, p, rand.New(rand.NewPCG(seed, uint64(c*refreshers+g+1))), busy)
			}()
		}
		for g := range appReleasers + v1Releasers {
			api := "app"
			if g >= appReleasers {
				api = "v1"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rel.loop(ctx, client, p.URL, token, rand.New(rand.NewPCG(seed, uint64(1000+c*(appReleasers+v1Releasers)+g))), busy, api)
			}()
		}
		// The kill comes 100-600 ms into the load (not after the start:
		// the checks above take longer than that under -race, which left
		// the loops almost no time).
		loaded := time.Now()
		delay := 100*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond)))
		time.Sleep(time.Until(loaded.Add(delay)))
		select {
		case <-p.exited:
			t.Fatalf("cycle %d: tkms exited by itself with code %d\nstderr:\n%s", c, p.code, p.stderr)
		default:
		}
		p.stop(syscall.SIGKILL)
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		p.checkLogs()
		rel.report(t, fmt.Sprintf("cycle %d", c))
		if t.Failed() {
			t.Fatalf("cycle %d failed; stderr of this run:\n%s", c, p.stderr)
		}
	}

	// A last restart: the invariants hold, the lifecycle catches up with
	// the time spent down (every key past destroy_after is destroyed), and
	// the scheduler goes on rotating.
	p := startDev(t, data, "--config", cfgPath)
	final := snapshotAcked()
	list := allKeys(t, p.URL)
	checkLedger(t, "final restart", list, final, pol)
	scheduled := func(list []wireKey) int {
		n := 0
		for _, k := range list {
			if k.Reason == "scheduled" {
				n++
			}
		}
		return n
	}
	atRestart := scheduled(list)
	deadline := time.Now().Add(exitDeadline)
	for {
		asked := time.Now()
		list = allKeys(t, p.URL)
		lagging, destroyed := 0, 0
		for _, k := range list {
			if k.DestroyAfter.Before(asked.Add(-50*time.Millisecond)) && k.State != "destroyed" {
				lagging++
			}
			if k.State == "destroyed" {
				destroyed++
			}
		}
		if lagging == 0 && destroyed > 0 && scheduled(list) > atRestart {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the last restart: %d keys past destroy_after are not destroyed, %d destroyed in all, %d scheduled keys since the restart",
				exitDeadline, lagging, destroyed, scheduled(list)-atRestart)
		}
		time.Sleep(20 * time.Millisecond)
	}
	token := readDevJSON(t, data).WorkloadToken
	rel.releaseOnce(t, p.URL, token, "app")
	rel.releaseOnce(t, p.URL, token, "v1")
	rel.report(t, "after the last restart")
	list = allKeys(t, p.URL)
	checkLedger(t, "final", list, final, pol)
	rel.checkKeys(t, "final", list)
	out, _ := runAudit(t, 0, "--kms", p.URL, "--log-key", logKey, "--state", auditState, "--json")
	var report struct {
		Releases struct {
			Total     int64 `json:"total"`
			Simulated int64 `json:"simulated"`
		} `json:"releases"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("tkms audit --json: %v\n%s", err, out)
	}
	// Every ack, checked once more against the final log.
	allAcks := acks.all()
	receipts.check(t, "final", p.URL, allAcks)
	p.stopClean(syscall.SIGINT)

	offline := keysListData(t, data)
	if len(offline) < len(list) {
		t.Fatalf("keys list --data: %d keys, the server listed %d", len(offline), len(list))
	}
	sameKeys(t, "keys list --data", offline[:len(list)], list)
	checkLedger(t, "keys list --data", offline, final, pol)

	states := map[string]int{}
	reasons := map[string]int{}
	for _, k := range offline {
		states[k.State]++
		reason := k.Reason
		if forcedReason(reason) {
			reason = "forced"
		}
		reasons[reason]++
	}
	if states["destroyed"] == 0 || reasons["scheduled"] < 2 {
		t.Errorf("the fast policy did not run the whole lifecycle: states %v, reasons %v", states, reasons)
	}
	mu.Lock()
	rel.mu.Lock()
	releases := rel.acked["app"] + rel.acked["v1"]
	t.Logf("summary: %d kill -9 cycles (%d busy) in %v; acknowledged: %d refreshes, %d releases (%d app, %d v1; %d keys unwrapped and checked), "+
		"%d receipts verified after every restart and at the end; %d keys in total (%d scheduled, %d refresh; %d destroyed); "+
		"the audit counts %d releases (%d simulated); refresh answers without 200: %v; release answers: %v; requests without an answer: %d refreshes, %d releases",
		cycles, busyCycles, time.Since(start).Round(time.Second), len(final), releases, rel.acked["app"], rel.acked["v1"], rel.checked,
		len(allAcks), len(offline), reasons["scheduled"], reasons["forced"], states["destroyed"],
		report.Releases.Total, report.Releases.Simulated, statuses, rel.statuses, transport.Load(), rel.noAnswer.Load())
	if report.Releases.Total < int64(releases) || report.Releases.Simulated < int64(releases) {
		t.Errorf("tkms audit counts %d releases (%d simulated), fewer than the %d acknowledged", report.Releases.Total, report.Releases.Simulated, releases)
	}
	if releases == 0 || rel.acked["app"] == 0 || rel.acked["v1"] == 0 {
		t.Errorf("acknowledged releases: %v; want some through each API", rel.acked)
	}
	rel.mu.Unlock()
	if n := badBodies.Load(); n > 0 {
		t.Errorf("%d refresh answers had status 200 and no key item", n)
	}
	for code, n := range statuses {
		if code != http.StatusServiceUnavailable {
			t.Errorf("refresh answered %d %d times", code, n)
		}
	}
	mu.Unlock()

	t.Run("destroyed keys leave no data key behind", func(t *testing.T) {
		// A kill between the keyring's temporary file and its rename leaves
		// the temporary file behind; if nothing removed it, it would keep
		// the data keys of keys destroyed later, and so their private keys.
		var destroyed []string
		for _, k := range offline {
			if k.State == "destroyed" {
				destroyed = append(destroyed, k.Kid)
			}
		}
		checkNoDataKeys(t, data, destroyed)
	})
}

// checkNoDataKeys fails if any file in dir that authenticates as a keyring
// under the master key holds a data key of one of kids.
func checkNoDataKeys(t *testing.T, dir string, kids []string) {
	t.Helper()
	sealer := loadSealer(t, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var leftovers []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), keyring.FileName) {
			continue
		}
		if e.Name() != keyring.FileName {
			leftovers = append(leftovers, e.Name())
		}
		scratch := t.TempDir()
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(scratch, keyring.FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		kr, err := keyring.Open(scratch, sealer)
		if err != nil {
			continue // torn or foreign: holds nothing readable
		}
		for _, kid := range kids {
			if _, err := kr.Get(kid); err == nil {
				t.Errorf("%s holds the data key of destroyed key %s", e.Name(), kid)
			}
		}
	}
	if len(leftovers) > 0 {
		t.Logf("leftover files in the data directory: %v", leftovers)
	}
}

func loadSealer(t *testing.T, dir string) *seal.AESGCM {
	t.Helper()
	s, err := seal.LoadFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServeRequiresMasterKey(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": data})

	t.Run("missing", func(t *testing.T) {
		_, errOut, code := runTkms(t, "serve", "--config", cfgPath)
		t.Logf("exit %d: %s", code, errOut)
		if code == 0 || !strings.Contains(strings.ToLower(errOut), "master key") {
			t.Errorf("exit %d, stderr %q; want a failure that mentions the master key", code, errOut)
		}
		for _, name := range []string{"master.key", "ledger.db"} {
			if _, err := os.Stat(filepath.Join(data, name)); err == nil {
				t.Errorf("serve created %s", name)
			}
		}
	})

	mkPath := filepath.Join(data, "master.key")
	if err := os.WriteFile(mkPath, []byte(hex.EncodeToString(seal.NewKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("too open", func(t *testing.T) {
		if err := os.Chmod(mkPath, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(mkPath, 0o600)
		_, errOut, code := runTkms(t, "serve", "--config", cfgPath)
		t.Logf("exit %d: %s", code, errOut)
		if code == 0 || !strings.Contains(errOut, "master key") || !strings.Contains(errOut, "too open") {
			t.Errorf("exit %d, stderr %q; want a refusal of the 0644 master key", code, errOut)
		}
	})

	t.Run("unknown field", func(t *testing.T) {
		bad := filepath.Join(dir, "typo.json")
		writeJSONFile(t, bad, map[string]any{"listen": "127.0.0.1:0", "data_dir": data, "rotation_interval_seconds": 60})
		_, errOut, code := runTkms(t, "serve", "--config", bad)
		t.Logf("exit %d: %s", code, errOut)
		if code == 0 || !strings.Contains(errOut, "unknown field") || !strings.Contains(errOut, "rotation_interval_seconds") {
			t.Errorf("exit %d, stderr %q; want a refusal naming the unknown field", code, errOut)
		}
	})

	// The control: the same config with a good master key serves.
	t.Run("valid", func(t *testing.T) {
		p := startServe(t, cfgPath)
		resp, body := do(t, "GET", p.URL+"/app/listpubkeys", nil)
		wantOK(t, "listpubkeys", resp, body)
		resp, body = do(t, "POST", p.URL+"/app/refresh", http.Header{"Authorization": {"Bearer x"}})
		wantError(t, "refresh without a configured token", resp, body, http.StatusForbidden, "REFRESH_DISABLED")
		if !strings.Contains(string(body), "not needed") || !strings.Contains(string(body), "tkms keys rotate") {
			t.Fatalf("the refresh cron is not told what to do instead: %s", body)
		}
		p.stopClean(syscall.SIGTERM)
	})
}

// ledgerEntries returns the number of records in the entries bucket.
func ledgerEntries(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// updateLedger changes a stopped instance's ledger file directly.
func updateLedger(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig")
	p := startDev(t, orig)
	refresh(t, p.URL, p.Token)
	refresh(t, p.URL, p.Token)
	p.stopClean(syscall.SIGINT)

	t.Run("format 2", func(t *testing.T) {
		data := filepath.Join(dir, "format2")
		copyDir(t, orig, data)
		db := filepath.Join(data, "ledger.db")
		n := ledgerEntries(t, db)
		updateLedger(t, db, func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte{2}) })

		p := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", data)
		if code := p.wait(); code == 0 {
			t.Fatalf("tkms dev started on a format 2 ledger")
		}
		errOut := p.stderr.String()
		t.Logf("exit %d: ...%s", p.code, errOut[strings.LastIndex(strings.TrimSpace(errOut), "\n")+1:])
		if !strings.Contains(errOut, "newer tkms") || !strings.Contains(errOut, "format") {
			t.Errorf("stderr %q; want a message that says a newer tkms (format) wrote the data", errOut)
		}
		_, errOut, code := runTkms(t, "keys", "list", "--data", data)
		if code == 0 || !strings.Contains(errOut, "newer tkms") {
			t.Errorf("keys list --data on a format 2 ledger: exit %d, stderr %q", code, errOut)
		}
		if got := ledgerEntries(t, db); got != n {
			t.Errorf("%d entries after the refused start, want %d", got, n)
		}
		dbh, err := bolt.Open(db, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer dbh.Close()
		dbh.View(func(tx *bolt.Tx) error {
			if f := tx.Bucket([]byte("meta")).Get([]byte("format")); !bytes.Equal(f, []byte{2}) {
				t.Errorf("format is %v after the refused start, want [2]", f)
			}
			return nil
		})
	})

	t.Run("flipped byte", func(t *testing.T) {
		data := filepath.Join(dir, "flipped")
		copyDir(t, orig, data)
		db := filepath.Join(data, "ledger.db")
		n := ledgerEntries(t, db)
		seq := uint64(n/2 + 1)
		var corrupt []byte
		updateLedger(t, db, func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("entries"))
			k := binary.BigEndian.AppendUint64(nil, seq)
			corrupt = bytes.Clone(b.Get(k))
			corrupt[len(corrupt)/2] ^= 0x20
			return b.Put(k, corrupt)
		})

		for _, args := range [][]string{{"dev", "--listen", "127.0.0.1:0", "--data", data}, {"keys", "list", "--data", data}} {
			_, errOut, code := runTkms(t, args...)
			t.Logf("tkms %s: exit %d: ...%s", args[0], code, errOut[strings.LastIndex(strings.TrimSpace(errOut), "\n")+1:])
			if code == 0 {
				t.Errorf("tkms %s: exit 0 on a corrupt ledger", args[0])
			}
			if !strings.Contains(errOut, fmt.Sprintf("entry %d", seq)) || !strings.Contains(errOut, "corrupt") {
				t.Errorf("tkms %s: stderr %q; want a message that names entry %d as corrupt", args[0], errOut, seq)
			}
		}
		if got := ledgerEntries(t, db); got != n {
			t.Errorf("%d entries after the refused start, want %d: the ledger was truncated", got, n)
		}
		dbh, err := bolt.Open(db, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer dbh.Close()
		dbh.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket([]byte("entries")).Get(binary.BigEndian.AppendUint64(nil, seq)); !bytes.Equal(v, corrupt) {
				t.Errorf("entry %d was rewritten by the refused start", seq)
			}
			return nil
		})
	})
}

// recoverPrivateKeys opens every key's private key from a stopped data
// directory with its master key and keyring, and checks it against the
// public key. It knows the sealing layout of internal/kms.
func recoverPrivateKeys(t *testing.T, data string) map[string][]byte {
	t.Helper()
	sealer := loadSealer(t, data)
	kr, err := keyring.Open(data, sealer)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(data, "ledger.db"), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).ForEach(func(k, v []byte) error {
			e, err := ledger.UnmarshalRecord(v)
			if err != nil {
				return err
			}
			if e.Type != ledger.TypeKeyCreated {
				return nil
			}
			var body struct {
				Kid       string `json:"kid"`
				Suite     string `json:"suite"`
				PublicKey []byte `json:"public_key"`
			}
			if err := json.Unmarshal(e.Body, &body); err != nil {
				return err
			}
			inner, err := sealer.Open(e.Sealed, ledger.SealAD(e.Seq, e.Type))
			if err != nil {
				return fmt.Errorf("entry %d: %w", e.Seq, err)
			}
			dek, err := kr.Get(body.Kid)
			if err != nil {
				return fmt.Errorf("%s: %w", body.Kid, err)
			}
			a, err := seal.New(dek)
			if err != nil {
				return err
			}
			priv, err := a.Open(inner, []byte("tkms/key/v1\x00"+body.Kid))
			if err != nil {
				return fmt.Errorf("%s: %w", body.Kid, err)
			}
			suite, err := keys.ParseSuite(body.Suite)
			if err != nil {
				return err
			}
			sk, err := suite.PrivateKey(priv)
			if err != nil {
				return err
			}
			if !bytes.Equal(sk.PublicKey().Bytes(), body.PublicKey) {
				return fmt.Errorf("%s: the recovered private key does not match the public key", body.Kid)
			}
			out[body.Kid] = priv
			return nil
		})
	})
	if err != nil {
		t.Fatalf("recovering private keys: %v", err)
	}
	return out
}

// TestNumericIDsUnderPressure: forced rotations stop at the ids reserved
// for the scheduler (409 KEY_LIMIT_REACHED); the scheduler then takes the
// reserved ids until all 90 are held; and a tkms whose due rotation finds
// no free id still starts and serves.
func TestNumericIDsUnderPressure(t *testing.T) {
	// About 40 keys alive from the scheduler alone, within the policy limit.
	pol := rotation{Interval: 500 * time.Millisecond, Grace: 19500 * time.Millisecond}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"key_rotation_policy": pol.config()})
	p := startDev(t, data, "--config", cfgPath)

	acked := map[string]refreshed{}
	var resp *http.Response
	var body []byte
	for range 100 {
		resp, body = postCOSETest(t, p.URL+"/app/refresh", rotateProposal(t, p.URL))
		if resp.StatusCode != http.StatusOK {
			break
		}
		var r refreshed
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		acked[r.Kid] = r
	}
	wantError(t, "refresh into the reserved ids", resp, body, http.StatusConflict, "KEY_LIMIT_REACHED")
	list := allKeys(t, p.URL)
	checkLedger(t, "refresh limit", list, acked, pol)

	// The scheduler takes the reserved ids, one per interval.
	deadline := time.Now().Add(15 * time.Second)
	for len(list) < 90 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		list = allKeys(t, p.URL)
	}
	held := map[int]string{}
	now := time.Now()
	for _, k := range list {
		if now.Before(k.ReleaseUntil) {
			if prev, ok := held[k.ID]; ok {
				t.Fatalf("id %d held by %s and %s at once", k.ID, prev, k.Kid)
			}
			held[k.ID] = k.Kid
		}
	}
	if len(list) != 90 {
		t.Fatalf("%d keys after the scheduler used the reserve, want 90", len(list))
	}
	resp, body = do(t, "GET", p.URL+"/app/listpubkeys", nil)
	wantOK(t, "listpubkeys with every id held", resp, body)

	t.Run("restart with every id held", func(t *testing.T) {
		p.stopClean(syscall.SIGTERM)
		p2 := startDev(t, data, "--config", cfgPath)
		sameKeys(t, "after restart", allKeys(t, p2.URL)[:len(list)], list)
		resp, body := do(t, "GET", p2.URL+"/app/listpubkeys", nil)
		wantOK(t, "listpubkeys after restart", resp, body)
		p2.stopClean(syscall.SIGTERM)
	})
	if !p.stopped() {
		p.stopClean(syscall.SIGTERM)
	}
}
