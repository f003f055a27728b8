// Command tkms-consumer is what a Go inference service that uses tkms
// looks like, as a module of its own: it keeps the keys tkms releases to
// it in a client.Keys (attesting with the ACI attester, authenticating
// with a managed identity token from IMDS) and decrypts its OHTTP
// requests with ohttphttp.Middleware. Its test runs it against the fake KMS
// of package kmstest, through an ohttphttp.Transport.
//
// It is configured by the environment (it registers no flags):
//
//	TKMS_URL       the KMS, e.g. https://kms.example
//	TKMS_LOG_KEY   the KMS log's verifier key (GET /v1/log/key, checked out of band)
//	TKMS_RESOURCE  the audience of the managed identity token
//	LISTEN         the address to serve on (default :8080)
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/ohttp"
	"github.com/tkms-dev/tkms/ohttp/ohttphttp"
)

// newService returns the service's HTTP handler: OHTTP requests at
// /gateway, decrypted with keys, and a readiness probe at /ready.
func newService(keys *client.Keys, log *slog.Logger) http.Handler {
	score := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "scored %q for %s%s", body, r.Host, r.URL.Path)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /gateway", ohttphttp.Middleware(&ohttp.Gateway{Keys: keys}, ohttphttp.MiddlewareOptions{Logger: log})(score))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if !keys.State().Ready(time.Now()) {
			http.Error(w, "no published key yet", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

func main() {
	logger := slog.Default()
	attester, err := client.NewACIAttester(client.ACIOptions{})
	if err != nil {
		log.Fatal(err)
	}
	tokens, err := client.NewIMDSTokenSource(client.IMDSOptions{Resource: os.Getenv("TKMS_RESOURCE")})
	if err != nil {
		log.Fatal(err)
	}
	keys, err := client.NewKeys(client.KeysConfig{
		KMS: os.Getenv("TKMS_URL"), LogKey: os.Getenv("TKMS_LOG_KEY"),
		Attester: attester, Tokens: tokens,
		PrefetchedOnly: true, // requests never reach the KMS; Run keeps the cache
	})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go keys.Run(ctx)

	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	srv := &http.Server{Addr: addr, Handler: newService(keys, logger), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
