package sidecar

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/ohttp"
)

// blankAttester attests nothing: the KMS of the test refuses every release
// before it would look at evidence.
type blankAttester struct{}

func (blankAttester) Attest(context.Context, [64]byte) (*client.Evidence, error) {
	return &client.Evidence{Type: client.EvidenceACI, Attestation: []byte("{}")}, nil
}

// TestDecryptStormLogsOnce: under a KMS that refuses the release of its
// key (401), a storm of /decrypt requests for that key asks the KMS once,
// each request gets the KMS's status and code, and the failure is in the
// log once (the cache's line): the sidecar's own lines for the requests
// that meet the remembered failure are debug lines.
func TestDecryptStormLogsOnce(t *testing.T) {
	priv, pub, err := keys.X25519.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pemText, err := keys.PublicPEM(keys.X25519, pub)
	if err != nil {
		t.Fatal(err)
	}
	k := &fuzzKMS{kid: keys.KID(pemText, 1), id: keys.MinID, pub: pub, priv: priv, now: time.Now()}
	var releases atomic.Int32
	kms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			releases.Add(1)
			apierror.Write(w, http.StatusUnauthorized, "UNAUTHORIZED", "the token is not valid")
			return
		}
		k.ServeHTTP(w, r) // GET /v1/keys
	}))
	defer kms.Close()

	logFile, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil)) // info and above
	cache, err := client.NewKeys(client.KeysConfig{KMS: kms.URL, Attester: blankAttester{}, Tokens: client.StaticTokenSource("t"), Logger: log, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	sc := New(&Config{Variant: "ohttp", HandleTTL: time.Second, MaxHandles: 64, MaxBody: 1 << 16, FetchWait: 5 * time.Second}, cache, blankAttester{}, log)
	cfg, err := ohttp.ParseKeyConfig(keys.OHTTPConfig(keys.OHTTPKeyID(k.id), keys.X25519, pub))
	if err != nil {
		t.Fatal(err)
	}
	msg, _, err := ohttp.EncapsulateRequest(cfg, cfg.Suites[0], ohttp.OHTTP, []byte("a request"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		w := httptest.NewRecorder()
		sc.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/decrypt", bytes.NewReader(msg)))
		if w.Code != http.StatusUnauthorized || w.Header().Get("x-ms-kms-error-code") != "UNAUTHORIZED" {
			t.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
	}
	if r := releases.Load(); r != 1 {
		t.Fatalf("%d releases for %d requests, want 1", r, n)
	}
	logs, err := os.ReadFile(logFile.Name())
	if out := string(logs); err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, "KMS request failed") {
		t.Fatalf("the log of one failure met by %d requests:\n%s", n, out)
	}
}
