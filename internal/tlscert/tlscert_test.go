package tlscert_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/tlscert"
	"github.com/tkms-dev/tkms/internal/tlscert/tlscerttest"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCertReloader drives the reloader with its own clock over a real
// loopback TLS listener: a rotated pair is served once the check interval
// has passed (not before), a broken pair keeps the one in use and is
// logged once, a good pair after it is taken, and the expiry of the pair
// in use is logged once.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	ca := tlscerttest.NewCA(t)
	certFile, keyFile := tlscerttest.WritePair(t, dir, "tls", ca.Issue(t, tlscerttest.Leaf{Serial: 10}))
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	r, err := tlscert.NewReloader(certFile, keyFile, log, now)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlscert.ServerConfig(r.GetCertificate))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	serial := func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	// Files replaced by rename get a new modification time; set it
	// explicitly so a coarse file system clock cannot hide the change.
	touch := func(step int) {
		for _, f := range []string{certFile, keyFile} {
			mt := time.Now().Add(time.Duration(step) * time.Second)
			if err := os.Chtimes(f, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}

	if got := serial(); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}
	tlscerttest.WritePair(t, dir, "tls", ca.Issue(t, tlscerttest.Leaf{Serial: 11}))
	touch(1)
	if got := serial(); got != 10 {
		t.Fatalf("before the check interval: serial %d, want 10 (files are checked at most every %v)", got, tlscert.CheckEvery)
	}
	advance(tlscert.CheckEvery)
	if got := serial(); got != 11 {
		t.Fatalf("after rotation: serial %d, want 11", got)
	}

	// A certificate whose key is not in the key file: kept out.
	if err := tlscerttest.WriteFile(certFile, ca.Issue(t, tlscerttest.Leaf{Serial: 12}).Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(2)
	for range 3 {
		advance(tlscert.CheckEvery)
		if got := serial(); got != 11 {
			t.Fatalf("after a broken rotation: serial %d, want 11 (the pair in use)", got)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("the broken pair was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "does not hold the private key") {
		t.Errorf("the log does not say why the pair did not load:\n%s", logs.String())
	}

	tlscerttest.WritePair(t, dir, "tls", ca.Issue(t, tlscerttest.Leaf{Serial: 13}))
	touch(3)
	advance(tlscert.CheckEvery)
	if got := serial(); got != 13 {
		t.Fatalf("after a good rotation: serial %d, want 13", got)
	}
	if n := strings.Count(logs.String(), "tls certificate reloaded"); n != 2 {
		t.Errorf("%d reloads logged, want 2:\n%s", n, logs.String())
	}

	// The pair in use expires (by the reloader's clock): logged once.
	for range 2 {
		advance(48 * time.Hour)
		serial()
	}
	if n := strings.Count(logs.String(), "has expired"); n != 1 {
		t.Errorf("the expiry was logged %d times, want once:\n%s", n, logs.String())
	}
}
