package httpapi

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
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

// A connection that fails its TLS handshake (a port scanner, a TCP health
// check, plain HTTP to the TLS port) is logged at debug level, not as a
// warning.
func TestTLSHandshakeErrorsAtDebug(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))
			srv := NewHTTPServer("127.0.0.1:0", http.NotFoundHandler(), log, DefaultLimits())
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.ServeTLS(ln, "", "")
			defer srv.Close()

			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			c.Read(buf) // the server answers 400 and closes
			c.Close()

			deadline := time.Now().Add(5 * time.Second)
			for level == slog.LevelDebug && !strings.Contains(logs.String(), "TLS handshake error") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			out := logs.String()
			if strings.Contains(out, "level=WARN") {
				t.Errorf("a failed handshake was logged as a warning:\n%s", out)
			}
			if level == slog.LevelDebug && !strings.Contains(out, "level=DEBUG") {
				t.Errorf("at debug level the failed handshake is not logged:\n%s", out)
			}
		})
	}
}

// A client that trickles its headers (slowloris) or sends a body slower
// than the limits allow is cut off: the server closes the connection
// instead of holding it open.
func TestSlowClientsCutOff(t *testing.T) {
	l := DefaultLimits()
	l.ReadHeaderTimeout, l.ReadTimeout = 200*time.Millisecond, 400*time.Millisecond
	srv := NewHTTPServer("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return // the body's read deadline passed
		}
		w.Write([]byte("ok"))
	}), slog.New(slog.DiscardHandler), l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	for name, send := range map[string][]string{
		"headers trickled": {"POST / HTTP/1.1\r\n", "Host: x\r\n", "X-A: 1\r\n", "X-B: 2\r\n", "X-C: 3\r\n", "X-D: 4\r\n"},
		"body trickled":    {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", "a", "b", "c", "d", "e", "f"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				io.Copy(io.Discard, c) // returns when the server closes
			}()
			for _, part := range send {
				select {
				case <-closed:
					return // cut off
				case <-time.After(150 * time.Millisecond):
				}
				c.Write([]byte(part))
			}
			select {
			case <-closed:
			case <-time.After(30 * time.Second):
				t.Fatal("the server still holds the connection of a client that trickles its request")
			}
		})
	}
}
