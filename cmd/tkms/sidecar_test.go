package main

// Black-box tests of `tkms sidecar`: a real `tkms dev` and a real sidecar
// process that obtains its keys from it, talked to over loopback HTTP as a
// service not written in Go would.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/ohttp"
	"golang.org/x/mod/sumdb/note"
)

var sidecarListening = regexp.MustCompile(`tkms sidecar: listening on (http://\S+)\n`)

// startSidecar starts `tkms sidecar` against the tkms dev instance dev
// (data directory dataDir) with the simulated attester and dev tokens of
// that directory and the log key dev serves, and waits until it listens.
func startSidecar(t *testing.T, dev *proc, dataDir string, extra ...string) *proc {
	t.Helper()
	args := []string{"sidecar", "--listen", "127.0.0.1:0", "--kms", dev.URL,
		"--attester", "simulated", "--token-source", "dev", "--data", dataDir,
		"--log-key", logKeyArg(t, dev.URL)}
	p := startProc(t, append(args, extra...)...)
	m := p.waitOutput(p.stdout, sidecarListening)
	p.URL, p.Listened = m[1], time.Now()
	return p
}

// sidecarStatusWire is GET /status as a caller reads it.
type sidecarStatusWire struct {
	Message string `json:"message"`
	Ready   bool   `json:"ready"`
	Keys    []struct {
		Kid        string `json:"kid"`
		OHTTPKeyID int    `json:"ohttp_key_id"`
		Phase      string `json:"phase"`
	} `json:"keys"`
	LastError        string `json:"last_error"`
	ReceiptsVerified int    `json:"receipts_verified"`
	Handles          int    `json:"handles"`
}

// scStatus returns GET /status and its HTTP status.
func scStatus(t *testing.T, p *proc) (sidecarStatusWire, int) {
	t.Helper()
	resp, body := do(t, http.MethodGet, p.URL+"/status", nil)
	var st sidecarStatusWire
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /status: %s: %v\n%s", resp.Status, err, body)
	}
	return st, resp.StatusCode
}

// waitSidecar polls GET /status until cond holds.
func waitSidecar(t *testing.T, p *proc, what string, cond func(sidecarStatusWire, int) bool) sidecarStatusWire {
	t.Helper()
	deadline := time.Now().Add(startDeadline)
	for {
		st, code := scStatus(t, p)
		if cond(st, code) {
			return st
		}
		if time.Now().After(deadline) || p.stopped() {
			t.Fatalf("sidecar: not %s after %v: status %d %+v\nstderr:\n%s", what, startDeadline, code, st, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitReady(t *testing.T, p *proc) sidecarStatusWire {
	t.Helper()
	return waitSidecar(t, p, "ready", func(st sidecarStatusWire, code int) bool {
		return code == http.StatusOK && st.Ready && st.Message == "Status OK" && len(st.Keys) > 0
	})
}

// post sends body with content type ct.
func post(t *testing.T, url, ct string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("POST %s: reading body: %v", url, err)
	}
	return resp, b.Bytes()
}

// postJSON sends v as JSON.
func postJSON(t *testing.T, url string, v any) (*http.Response, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return post(t, url, "application/json", b)
}

// publishedConfig returns the first key configuration the KMS publishes at
// GET /v1/keys/ohttp, as an OHTTP client fetches it.
func publishedConfig(t *testing.T, kmsURL string) ohttp.KeyConfig {
	t.Helper()
	resp, body := do(t, http.MethodGet, kmsURL+"/v1/keys/ohttp", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/keys/ohttp: %s: %s", resp.Status, body)
	}
	cfgs, err := ohttp.ParseKeyConfigs(body)
	if err != nil || len(cfgs) == 0 {
		t.Fatalf("GET /v1/keys/ohttp: %v (%d configurations)", err, len(cfgs))
	}
	return cfgs[0]
}

// encapsulate encrypts plaintext to cfg as an OHTTP client does.
func encapsulate(t *testing.T, cfg ohttp.KeyConfig, v ohttp.Variant, plaintext []byte) ([]byte, *ohttp.ClientContext) {
	t.Helper()
	msg, cc, err := ohttp.EncapsulateRequest(cfg, cfg.Suites[0], v, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return msg, cc
}

// decryptedWire is POST /decrypt's answer.
type decryptedWire struct {
	Plaintext  []byte `json:"plaintext"`
	Handle     string `json:"handle"`
	OHTTPKeyID int    `json:"ohttp_key_id"`
	Variant    string `json:"variant"`
}

// sidecarDecrypt posts msg to /decrypt (query q, e.g. "?variant=ba") and
// requires a 200.
func sidecarDecrypt(t *testing.T, p *proc, q string, msg []byte) decryptedWire {
	t.Helper()
	resp, body := post(t, p.URL+"/decrypt"+q, "application/ohttp-req", msg)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /decrypt%s: %s: %s", q, resp.Status, body)
	}
	var d decryptedWire
	if err := json.Unmarshal(body, &d); err != nil || d.Handle == "" {
		t.Fatalf("POST /decrypt%s: %v: %s", q, err, body)
	}
	return d
}

// roundTrip sends one request of variant v (named q on /decrypt) through
// the sidecar and its response back, checking both ends.
func roundTrip(t *testing.T, p *proc, cfg ohttp.KeyConfig, v ohttp.Variant, q string) {
	t.Helper()
	req := []byte("GET /bid?round=" + q + " HTTP/1.1")
	msg, cc := encapsulate(t, cfg, v, req)
	d := sidecarDecrypt(t, p, q, msg)
	if !bytes.Equal(d.Plaintext, req) || d.OHTTPKeyID != int(cfg.ID) {
		t.Fatalf("/decrypt%s: plaintext %q key id %d, want %q and %d", q, d.Plaintext, d.OHTTPKeyID, req, cfg.ID)
	}
	answer := []byte("200 OK: the bid for " + q)
	resp, body := postJSON(t, p.URL+"/encrypt-response", map[string]any{"handle": d.Handle, "body": answer})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/encrypt-response%s: %s: %s", q, resp.Status, body)
	}
	got, err := cc.DecapsulateResponse(body)
	if err != nil || !bytes.Equal(got, answer) {
		t.Fatalf("/encrypt-response%s: the client reads %q, %v; want %q", q, got, err, answer)
	}
	// A handle is used once.
	resp, body = postJSON(t, p.URL+"/encrypt-response", map[string]any{"handle": d.Handle, "body": answer})
	wantError(t, "/encrypt-response with a used handle", resp, body, http.StatusNotFound, "HANDLE_NOT_FOUND")
}

// TestSidecar runs a sidecar against tkms dev as a service would use it:
// it becomes ready once it holds the KMS's key (its release receipt
// verified against the log key), decrypts requests clients encrypt to the
// published key configuration and encrypts the answers, serves evidence
// in the ACI sidecar's shapes, refuses garbage with 400s, and keeps
// decrypting with its cached key when the KMS is gone.
func TestSidecar(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tkms-dev")
	dev := startDev(t, dir)
	sc := startSidecar(t, dev, dir)
	st := waitReady(t, sc)
	cfg := publishedConfig(t, dev.URL)
	if st.Keys[0].OHTTPKeyID != int(cfg.ID) || st.Keys[0].Phase != "published" || st.ReceiptsVerified == 0 {
		t.Fatalf("status %+v: want the published key 0x%02x, its receipt verified", st, cfg.ID)
	}
	kid := st.Keys[0].Kid

	t.Run("RoundTrip", func(t *testing.T) {
		roundTrip(t, sc, cfg, ohttp.OHTTP, "")
		roundTrip(t, sc, cfg, ohttp.OHTTP, "?variant=ohttp")
		roundTrip(t, sc, cfg, ohttp.BiddingAuction, "?variant=ba")
		roundTrip(t, sc, cfg, ohttp.TrustedSignals, "?variant=kv")
	})

	t.Run("Garbage", func(t *testing.T) {
		good, _ := encapsulate(t, cfg, ohttp.OHTTP, []byte("hello"))
		flipped := bytes.Clone(good)
		flipped[len(flipped)-1] ^= 1
		otherKey := bytes.Clone(good)
		otherKey[0] ^= 0xff // no key has this id: the sidecar asks the KMS
		for _, tc := range []struct {
			name, q string
			body    []byte
			status  int
			code    string
		}{
			{"empty", "", nil, 400, "MALFORMED_MESSAGE"},
			{"three bytes", "", []byte{1, 2, 3}, 400, "MALFORMED_MESSAGE"},
			{"header only", "", good[:7], 400, "MALFORMED_MESSAGE"},
			{"truncated", "", good[:len(good)-17], 400, "MALFORMED_MESSAGE"},
			{"flipped", "", flipped, 400, "DECRYPTION_FAILED"},
			{"ohttp as ba", "?variant=ba", good, 400, "MALFORMED_MESSAGE"},
			{"wrong labels", "?variant=kv", good, 400, "DECRYPTION_FAILED"},
			{"unknown variant", "?variant=tls", good, 400, "BAD_REQUEST"},
			{"unknown key id", "", otherKey, 404, "KEY_NOT_FOUND"},
			{"random", "", bytes.Repeat([]byte{0x5a}, 300), 400, "UNSUPPORTED_SUITE"}, // the suite is checked before the key is looked up
		} {
			resp, body := post(t, sc.URL+"/decrypt"+tc.q, "application/octet-stream", tc.body)
			wantError(t, "/decrypt "+tc.name, resp, body, tc.status, tc.code)
		}
		resp, body := post(t, sc.URL+"/decrypt", "application/json", good)
		wantError(t, "/decrypt as JSON", resp, body, http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE")
		resp, body = post(t, sc.URL+"/decrypt", "application/ohttp-req", make([]byte, 5<<20))
		wantError(t, "/decrypt of 5 MiB", resp, body, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE")
		resp, body = do(t, http.MethodGet, sc.URL+"/decrypt", nil)
		wantError(t, "GET /decrypt", resp, body, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
		resp, body = do(t, http.MethodGet, sc.URL+"/nope", nil)
		wantError(t, "GET /nope", resp, body, http.StatusNotFound, "NOT_FOUND")
		for _, b := range []string{``, `{`, `[]`, `{"handle":"x"}`, `{"handle":"x","body":"%%%"}`, `{"body":"aGk="}`} {
			resp, body := post(t, sc.URL+"/encrypt-response", "application/json", []byte(b))
			wantError(t, "/encrypt-response "+b, resp, body, http.StatusBadRequest, "BAD_REQUEST")
		}
		resp, body = postJSON(t, sc.URL+"/encrypt-response", map[string]any{"handle": "never-issued", "body": []byte("x")})
		wantError(t, "/encrypt-response with an unknown handle", resp, body, http.StatusNotFound, "HANDLE_NOT_FOUND")
		// A request that failed in its body does not use up its handle.
		d := sidecarDecrypt(t, sc, "", good)
		resp, body = post(t, sc.URL+"/encrypt-response", "application/json", []byte(`{"handle":"`+d.Handle+`","body":"%%%"}`))
		wantError(t, "/encrypt-response with a bad body", resp, body, http.StatusBadRequest, "BAD_REQUEST")
		resp, body = postJSON(t, sc.URL+"/encrypt-response", map[string]any{"handle": d.Handle, "body": []byte("ok")})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ohttp-res" {
			t.Fatalf("/encrypt-response after a bad body: %s %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("Attest", func(t *testing.T) {
		runtime := []byte(`{"pub":"a wrapping key of the service"}`)
		want := make([]byte, 64)
		h := sha256.Sum256(runtime)
		copy(want, h[:])

		resp, body := postJSON(t, sc.URL+"/attest/combined", map[string]string{"runtime_data": base64.StdEncoding.EncodeToString(runtime)})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("x-tkms-simulated") != "true" {
			t.Fatalf("/attest/combined: %s (simulated %q): %s", resp.Status, resp.Header.Get("x-tkms-simulated"), body)
		}
		var bundle map[string]any
		if err := json.Unmarshal(body, &bundle); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"evidence", "endorsements", "uvm_endorsements", "endorsed_tcb"} {
			if s, _ := bundle[f].(string); s == "" {
				t.Errorf("/attest/combined: no %q in %s", f, body)
			}
		}
		r, code := inspectJSON(t, "--data", dir, writeTemp(t, "combined.json", body))
		if code != 0 || !r.Verified || !r.Simulated {
			t.Fatalf("tkms attest inspect of /attest/combined: exit %d %+v", code, r)
		}
		if got := r.Claims["x-ms-sevsnpvm-reportdata"]; got != hex.EncodeToString(want) {
			t.Fatalf("REPORT_DATA %v, want SHA-256(runtime_data) zero-padded: %x", got, want)
		}

		// URL-safe base64, as some callers of the ACI sidecar send.
		resp, body = postJSON(t, sc.URL+"/attest/raw", map[string]string{"runtime_data": base64.RawURLEncoding.EncodeToString(runtime)})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/attest/raw: %s: %s", resp.Status, body)
		}
		var raw struct {
			Report string `json:"report"`
			VCEK   []byte `json:"vcek"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		report, err := hex.DecodeString(raw.Report)
		if err != nil || len(report) != 1184 || len(raw.VCEK) == 0 {
			t.Fatalf("/attest/raw: report of %d bytes (%v), vcek of %d bytes", len(report), err, len(raw.VCEK))
		}
		if !bytes.Equal(report[0x50:0x90], want) {
			t.Fatalf("/attest/raw: REPORT_DATA %x, want %x", report[0x50:0x90], want)
		}
		// The raw report and its VCEK verify as raw SNP evidence.
		reportFile, vcekFile := writeTemp(t, "report.bin", report), writeTemp(t, "vcek.der", raw.VCEK)
		if r, code := inspectJSON(t, "--data", dir, "--report", reportFile, "--vcek", vcekFile); code != 0 || !r.Verified {
			t.Fatalf("tkms attest inspect --report of /attest/raw: exit %d %+v", code, r)
		}

		for _, b := range []string{``, `{}`, `{"runtime_data":"%%%"}`, `{"runtime_data":5}`, `not json`} {
			for _, path := range []string{"/attest/raw", "/attest/combined"} {
				resp, body := post(t, sc.URL+path, "application/json", []byte(b))
				wantError(t, path+" "+b, resp, body, http.StatusBadRequest, "BAD_REQUEST")
			}
		}
	})

	t.Run("Keys", func(t *testing.T) {
		resp, body := do(t, http.MethodGet, sc.URL+"/keys", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"kid":"`+kid+`"`) {
			t.Fatalf("GET /keys: %s: %s", resp.Status, body)
		}
		if strings.Contains(string(body), `"d"`) || strings.Contains(string(body), "private") {
			t.Fatalf("GET /keys shows key material: %s", body)
		}
		resp, body = do(t, http.MethodGet, sc.URL+"/keys/"+kid+"/private", nil)
		wantError(t, "GET /keys/{kid}/private without --allow-key-export", resp, body, http.StatusForbidden, "KEY_EXPORT_DISABLED")
	})

	// The KMS goes away: the cached key keeps decrypting; a key that is
	// not cached cannot be had, and /status says why.
	dev.stopClean(syscall.SIGINT)
	t.Run("KMSDown", func(t *testing.T) {
		roundTrip(t, sc, cfg, ohttp.OHTTP, "")
		msg, _ := encapsulate(t, cfg, ohttp.OHTTP, []byte("hello"))
		msg[0] ^= 0xff
		// The cache answers "no such key" from the key list it read last
		// until that list is stale (a second): then it asks the KMS.
		deadline := time.Now().Add(startDeadline)
		for {
			resp, body := post(t, sc.URL+"/decrypt", "application/ohttp-req", msg)
			if resp.StatusCode == http.StatusNotFound && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			wantError(t, "/decrypt of an uncached key with the KMS down", resp, body, http.StatusServiceUnavailable, "KMS_UNAVAILABLE")
			break
		}
		st, code := scStatus(t, sc)
		if code != http.StatusOK || !st.Ready || st.LastError == "" {
			t.Fatalf("status with the KMS down: %d %+v; want ready with the fetch error", code, st)
		}
	})
	sc.stopClean(syscall.SIGINT)
}

// TestSidecarKeyExport: with --allow-key-export, GET /keys/{kid}/private
// answers the key item with the private key of the key the KMS publishes.
// The sidecar runs as README.md starts it against tkms dev, on --data
// alone (the KMS, its log key, the simulated attester and dev tokens all
// come from the directory), and releases over the /app API.
func TestSidecarKeyExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tkms-dev")
	dev := startDev(t, dir)
	sc := startProc(t, "sidecar", "--listen", "127.0.0.1:0", "--data", dir, "--allow-key-export", "--api", "app",
		"--handle-ttl", "500ms", "--max-handles", "2")
	sc.URL = sc.waitOutput(sc.stdout, sidecarListening)[1]
	st := waitReady(t, sc)
	kid := st.Keys[0].Kid
	if st.ReceiptsVerified == 0 {
		t.Errorf("status %+v: no receipt verified with dev.json's log key", st)
	}
	if !strings.Contains(sc.stderr.String(), "--allow-key-export") {
		t.Errorf("no warning about --allow-key-export:\n%s", sc.stderr)
	}
	resp, body := do(t, http.MethodGet, sc.URL+"/keys/"+kid+"/private", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /keys/%s/private: %s: %s", kid, resp.Status, body)
	}
	var item keys.Item
	if err := json.Unmarshal(body, &item); err != nil || item.Kid != kid || item.D == "" {
		t.Fatalf("GET /keys/%s/private: %v: %s", kid, err, body)
	}
	d, _ := base64.RawURLEncoding.DecodeString(item.D)
	sk, err := keys.X25519.PrivateKey(d)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), allKeys(t, dev.URL)[0].PublicKey) {
		t.Fatalf("the exported key (%v) is not the published key's", err)
	}
	resp, body = do(t, http.MethodGet, sc.URL+"/keys/nosuchkid_7/private", nil)
	wantError(t, "GET /keys/nosuchkid_7/private", resp, body, http.StatusNotFound, "KEY_NOT_FOUND")

	// Handles are bounded in number (503 beyond, until some are used or
	// expire) and in time.
	cfg := publishedConfig(t, dev.URL)
	msg, _ := encapsulate(t, cfg, ohttp.OHTTP, []byte("hello"))
	first := sidecarDecrypt(t, sc, "", msg)
	second := sidecarDecrypt(t, sc, "", msg)
	resp, body = post(t, sc.URL+"/decrypt", "application/ohttp-req", msg)
	wantError(t, "a third pending /decrypt with --max-handles 2", resp, body, http.StatusServiceUnavailable, "TOO_MANY_HANDLES")
	if resp, body := postJSON(t, sc.URL+"/encrypt-response", map[string]any{"handle": second.Handle, "body": []byte("ok")}); resp.StatusCode != http.StatusOK {
		t.Fatalf("/encrypt-response: %s: %s", resp.Status, body)
	}
	sidecarDecrypt(t, sc, "", msg)
	time.Sleep(600 * time.Millisecond)
	resp, body = postJSON(t, sc.URL+"/encrypt-response", map[string]any{"handle": first.Handle, "body": []byte("late")})
	wantError(t, "/encrypt-response after --handle-ttl", resp, body, http.StatusNotFound, "HANDLE_NOT_FOUND")
	sidecarDecrypt(t, sc, "", msg)
	sidecarDecrypt(t, sc, "", msg)
	sc.stopClean(syscall.SIGINT)
	dev.stopClean(syscall.SIGINT)
}

// TestSidecarKMSRefuses: a KMS whose release policy the sidecar's evidence
// does not meet. The sidecar serves, is not ready, says why, and /decrypt
// answers with the KMS's status and error code.
func TestSidecarKMSRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tkms-dev")
	policy := writeTemp(t, "policy.json", []byte(`{"claims":{"x-ms-sevsnpvm-launchmeasurement":["`+strings.Repeat("ab", 48)+`"]}}`))
	dev := startDev(t, dir, "--release-policy", policy)
	sc := startSidecar(t, dev, dir)
	st := waitSidecar(t, sc, "failing", func(st sidecarStatusWire, code int) bool {
		return code == http.StatusServiceUnavailable && !st.Ready && st.LastError != ""
	})
	if st.Message != "Status NOT OK" || len(st.Keys) != 0 {
		t.Fatalf("status %+v", st)
	}
	msg, _ := encapsulate(t, publishedConfig(t, dev.URL), ohttp.OHTTP, []byte("hello"))
	resp, body := post(t, sc.URL+"/decrypt", "application/ohttp-req", msg)
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Fatalf("/decrypt with the KMS refusing: %s: %s", resp.Status, body)
	}
	code := resp.Header.Get("x-ms-kms-error-code")
	t.Logf("/decrypt: %s %s", resp.Status, body)
	if code == "" || !strings.Contains(st.LastError, code) {
		t.Fatalf("/decrypt answered %s %q; the last fetch error is %q", resp.Status, code, st.LastError)
	}
	sc.stopClean(syscall.SIGINT)
	dev.stopClean(syscall.SIGINT)
}

// TestSidecarListenRefused: the sidecar refuses to listen anywhere but on
// loopback unless told --allow-remote, and flags that do not hold
// together, before it starts anything; each refusal says what to fix.
func TestSidecarListenRefused(t *testing.T) {
	_, vkey, err := note.GenerateKey(nil, "example.com/log")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeTemp(t, "log.vkey", []byte(vkey+"\n"))
	// A data directory with a simulated chain (devtee refuses one without).
	fixture, err := os.ReadFile(filepath.Join("..", "..", "internal", "attest", "simsnp", "testdata", simsnp.ChainFile))
	if err != nil {
		t.Fatal(err)
	}
	simData := t.TempDir()
	if err := os.WriteFile(filepath.Join(simData, simsnp.ChainFile), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"sidecar", "--kms", "http://127.0.0.1:1", "--attester", "simulated", "--data", simData,
		"--token-source", "file", "--token-file", writeTemp(t, "token", []byte("t")), "--log-key", "@" + keyFile}
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "example.com:8080", "10.1.2.3:8080"} {
		_, errOut, code := runTkms(t, append(base, "--listen", addr)...)
		if code != 2 || !strings.Contains(errOut, "not a loopback address") || !strings.Contains(errOut, "--allow-remote") {
			t.Errorf("--listen %s: exit %d, stderr %q; want 2 and a refusal naming --allow-remote", addr, code, errOut)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--kms", ""}, 2, "--kms"},
		{[]string{"--kms", "ftp://x"}, 2, "ftp://x"},
		{[]string{"--data", ""}, 2, "need --data"},
		{[]string{"--token-file", ""}, 2, "needs --token-file"},
		{[]string{"--token-source", "vault"}, 2, "--token-source"},
		{[]string{"--variant", "tls"}, 2, "--variant"},
		{[]string{"--api", "v2"}, 2, "v2"},
		{[]string{"--attester", "sgx"}, 2, "--attester"},
		{[]string{"--log-key", "bogus"}, 2, "--log-key"},
		{[]string{"--log-key", ""}, 2, "--log-key is required"},
		{[]string{"--log-key", "@/nonexistent/log.vkey"}, 1, "--log-key"},
		{[]string{"--handle-ttl", "0s"}, 2, "must be positive"},
	} {
		_, errOut, code := runTkms(t, append(slices.Clone(base), tc.args...)...)
		if code != tc.code || !strings.HasPrefix(errOut, "tkms sidecar: ") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}
