package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/kmstest"
	"github.com/tkms-dev/tkms/ohttp"
	"github.com/tkms-dev/tkms/ohttp/ohttphttp"
)

// TestService runs the service against the fake KMS and sends it an
// oblivious request through ohttphttp.Transport, as a client would.
func TestService(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	kms, err := kmstest.Start(kmstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer kms.Close()
	cfg := kms.KeysConfig()
	cfg.PrefetchedOnly = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	keys, err := client.NewKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()

	svc := httptest.NewServer(newService(keys, cfg.Logger))
	defer svc.Close()
	resp, err := http.Get(svc.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ready before any key: %s", resp.Status)
	}

	// The key configurations clients encrypt to, as the KMS publishes them.
	resp, err = kms.Client().Get(kms.URL + "/v1/keys/ohttp")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	configs, err := ohttp.ParseKeyConfigs(b)
	if err != nil {
		t.Fatal(err)
	}
	oblivious := &http.Client{Transport: &ohttphttp.Transport{RelayURL: svc.URL + "/gateway", KeyConfig: configs[0]}}

	// Before the keys are prefetched, the service answers 503: its fault.
	if _, err := oblivious.Post("https://score.example/v1/score", "text/plain", strings.NewReader("x")); !errors.Is(err, ohttp.ErrKeyUnavailable) {
		t.Fatalf("before prefetch: %v", err)
	}
	if _, err := keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !keys.State().Ready(time.Now()) {
		t.Fatal("not ready after a refresh")
	}
	resp, err = oblivious.Post("https://score.example/v1/score", "text/plain", strings.NewReader("features"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `scored "features" for score.example/v1/score`; resp.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if n := kms.Releases(); n != 1 {
		t.Fatalf("%d releases, want 1", n)
	}
	svc.Close()
	keys.Close()
	kms.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}
