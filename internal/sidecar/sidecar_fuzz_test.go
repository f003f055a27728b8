package sidecar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
	"github.com/tkms-dev/tkms/ohttp"
)

// fuzzKMS is a loopback KMS of one x25519 key that releases it to any
// wrapping key (it does not check evidence): enough for the sidecar's key
// cache to fill, so that /decrypt and /encrypt-response reach their
// success paths.
type fuzzKMS struct {
	kid  string
	id   int
	pub  []byte
	priv []byte
	now  time.Time
}

func (k *fuzzKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/keys" {
		s := keys.X25519
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]any{{
			"kid": k.kid, "id": k.id, "ohttp_key_id": keys.OHTTPKeyID(k.id), "suite": s.Name, "kem_id": s.KEM, "kdf_id": s.KDF, "aead_id": s.AEAD,
			"public_key": k.pub, "not_before": k.now.Add(-time.Hour), "not_after": k.now.Add(time.Hour), "release_until": k.now.Add(24 * time.Hour), "state": "primary",
		}}})
		return
	}
	var req struct {
		WrappingKey struct {
			KEMID     uint16 `json:"kem_id"`
			PublicKey []byte `json:"public_key"`
		} `json:"wrapping_key"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	wrapped, err := wrap.HPKEWrap(req.WrappingKey.KEMID, req.WrappingKey.PublicKey, k.priv, wrap.ReleaseInfo(k.kid))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]any{{"kid": k.kid, "public_key": k.pub, "wrapped": wrapped}}})
}

// FuzzSidecarRequest sends arbitrary requests (method, path and query,
// Content-Type, body) to the sidecar handler, whose key cache is filled from
// a loopback KMS and whose attester is the simulated one. When a /decrypt
// succeeds, follow is sent as the body of its /encrypt-response. Nothing may
// panic; no answer is a 500; every failure is the sidecar's JSON error
// shape with its code header; a /decrypt that succeeds opens a request
// encapsulated here to the plaintext encapsulated; and its response opens
// to follow at the client. Seeds: requests encapsulated to the cached key
// in each variant, attestation requests, and malformed variants.
func FuzzSidecarRequest(f *testing.F) {
	now := time.Now()
	priv, pub, err := keys.X25519.Generate()
	if err != nil {
		f.Fatal(err)
	}
	pemText, err := keys.PublicPEM(keys.X25519, pub)
	if err != nil {
		f.Fatal(err)
	}
	k := &fuzzKMS{kid: keys.KID(pemText, 1), id: keys.MinID, pub: pub, priv: priv, now: now}
	kmsSrv := httptest.NewServer(k)
	f.Cleanup(kmsSrv.Close)

	dir := f.TempDir()
	chain, err := os.ReadFile("../attest/simsnp/testdata/" + simsnp.ChainFile)
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), chain, 0o600); err != nil {
		f.Fatal(err)
	}
	att, err := devtee.NewAttester(dir, devtee.AttesterOptions{})
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cache, err := client.NewKeys(client.KeysConfig{KMS: kmsSrv.URL, Attester: att, Tokens: client.StaticTokenSource("t"), Logger: log, MaxAttempts: 1})
	if err != nil {
		f.Fatal(err)
	}
	sc := New(&Config{Variant: "ohttp", HandleTTL: time.Second, MaxHandles: 64, MaxBody: 1 << 16, FetchWait: 5 * time.Second}, cache, att, log)

	cfg, err := ohttp.ParseKeyConfig(keys.OHTTPConfig(keys.OHTTPKeyID(k.id), keys.X25519, pub))
	if err != nil {
		f.Fatal(err)
	}
	type sent struct {
		plaintext string
		cc        *ohttp.ClientContext
	}
	var mu sync.Mutex
	sentMsgs := map[string]sent{}
	for name, v := range Variants {
		pt := "fuzz request " + name
		msg, cc, err := ohttp.EncapsulateRequest(cfg, cfg.Suites[0], v, []byte(pt))
		if err != nil {
			f.Fatal(err)
		}
		sentMsgs[name+"\x00"+string(msg)] = sent{pt, cc}
		f.Add("POST", "/decrypt?variant="+name, "application/ohttp-req", msg, []byte("fuzz response"))
		f.Add("POST", "/decrypt?variant="+name, "", msg[:len(msg)-1], []byte{})
	}
	f.Add("POST", "/attest/raw", "application/json", []byte(`{"runtime_data":"aGVsbG8"}`), []byte{})
	f.Add("POST", "/attest/combined", "", []byte(`{"runtime_data":"aGVsbG8="}`), []byte{})
	f.Add("POST", "/attest/raw", "", []byte(`{"runtime_data":null}`), []byte{})
	f.Add("POST", "/encrypt-response", "", []byte(`{"handle":"x","body":"AA"}`), []byte{})
	f.Add("GET", "/status", "", []byte{}, []byte{})
	f.Add("GET", "/keys", "", []byte{}, []byte{})
	f.Add("GET", "/keys/"+k.kid+"/private", "", []byte{}, []byte{})
	f.Add("DELETE", "/decrypt", "text/plain", []byte("x"), []byte{})

	f.Fuzz(func(t *testing.T, method, target, contentType string, body, follow []byte) {
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") {
			return
		}
		r, err := http.NewRequestWithContext(t.Context(), method, "http://127.0.0.1"+target, bytes.NewReader(body))
		if err != nil || !strings.HasPrefix(target, "/") {
			return
		}
		if contentType != "" && !strings.ContainsAny(contentType, "\r\n\x00") {
			r.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		sc.ServeHTTP(w, r)
		checkSidecarAnswer(t, method+" "+target, w)
		if w.Code != http.StatusOK || r.URL.Path != "/decrypt" || method != http.MethodPost {
			return
		}
		var d decrypted
		if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil || d.Handle == "" {
			t.Fatalf("decrypt answered %q", w.Body)
		}
		mu.Lock()
		s, known := sentMsgs[d.Variant+"\x00"+string(body)]
		mu.Unlock()
		if known && string(d.Plaintext) != s.plaintext {
			t.Fatalf("request opened to %q, %q was sent", d.Plaintext, s.plaintext)
		}
		eb, _ := json.Marshal(encryptRequest{Handle: d.Handle, Body: fuzzPtr(base64.StdEncoding.EncodeToString(follow))})
		r2 := httptest.NewRequest(http.MethodPost, "/encrypt-response", bytes.NewReader(eb))
		w2 := httptest.NewRecorder()
		sc.ServeHTTP(w2, r2)
		if w2.Code != http.StatusOK {
			t.Fatalf("encrypt-response of a fresh handle: %d %s", w2.Code, w2.Body)
		}
		if known {
			got, err := s.cc.DecapsulateResponse(w2.Body.Bytes())
			if err != nil || !bytes.Equal(got, follow) {
				t.Fatalf("the response opens to %q, %v", got, err)
			}
		}
	})
}

func fuzzPtr[T any](v T) *T { return &v }

// checkSidecarAnswer checks the status and error shape of a sidecar answer.
func checkSidecarAnswer(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s: status %d: %s", what, w.Code, w.Body)
	}
	if w.Code < 400 {
		return
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || w.Header().Get("x-ms-kms-error-code") != eb.Error.Code {
		t.Fatalf("%s: status %d with body %q", what, w.Code, w.Body)
	}
}
