package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tlsExpiryCollector reports the expiry of the certificate the server
// presents now (reloaded certificates included), or nothing without TLS.
func tlsExpiryCollector(tc *tls.Config) []prometheus.Collector {
	if tc == nil || tc.GetCertificate == nil {
		return nil
	}
	return []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tkms_tls_cert_not_after_seconds",
		Help: "Expiry (Unix time) of the TLS certificate served now; alert well before it (docs/operations.md).",
	}, func() float64 {
		c, err := tc.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil || c == nil || len(c.Certificate) == 0 {
			return 0
		}
		leaf := c.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return 0
			}
		}
		return float64(leaf.NotAfter.Unix())
	})}
}

// serveMetrics serves h (the metrics) on addr (metrics_listen), in plain
// HTTP, until ctx ends. A scraper on another host reaches it only if addr
// is not loopback: keep it on a private network.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shCtx)
		<-done
	}, nil
}
