package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A testCA is a private CA made by a test, as an operator's would be.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte // the CA certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tkms test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leafOpts shape a server certificate; zero values mean a certificate for
// 127.0.0.1 and localhost, valid from an hour ago for a day.
type leafOpts struct {
	serial              int64
	notBefore, notAfter time.Time
	eku                 []x509.ExtKeyUsage
}

// A pemPair is a certificate and its private key, in PEM.
type pemPair struct{ cert, key []byte }

// issue returns a server certificate signed by the CA and its key
// (PKCS #8).
func (ca *testCA) issue(t testing.TB, o leafOpts) pemPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.serial == 0 {
		o.serial = 2
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(o.serial),
		Subject:      pkix.Name{CommonName: "tkms test server"},
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  o.eku,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})}
}

// writePair writes a certificate and key to dir/name.crt and dir/name.key
// by renaming temporary files over them, as a rotation tool does.
func writePair(t testing.TB, dir, name string, p pemPair) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writeFileAtomic(certFile, p.cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(keyFile, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestConfigValidateTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	goodCert, goodKey := writePair(t, dir, "good", ca.issue(t, leafOpts{}))
	otherCert, otherKey := writePair(t, dir, "other", ca.issue(t, leafOpts{serial: 3}))
	expCert, expKey := writePair(t, dir, "expired", ca.issue(t, leafOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}))
	futCert, futKey := writePair(t, dir, "future", ca.issue(t, leafOpts{notBefore: time.Now().Add(time.Hour)}))
	cliCert, cliKey := writePair(t, dir, "client", ca.issue(t, leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not PEM at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name       string
		listen     string
		cert, key  string
		plain      bool
		want       string // substring of the error; "" for none
		wantAlsoIn string // a second substring (a file name)
	}{
		{name: "loopback plain", listen: "127.0.0.1:8000"},
		{name: "loopback v6 plain", listen: "[::1]:0"},
		{name: "localhost plain", listen: "localhost:8000"},
		{name: "any address plain", listen: "0.0.0.0:8000", want: "not a loopback address and TLS is not configured", wantAlsoIn: "plain_http"},
		{name: "empty host plain", listen: ":8000", want: "not a loopback address"},
		{name: "v6 any plain", listen: "[::]:8000", want: "not a loopback address"},
		{name: "host name plain", listen: "kms.example:8000", want: "tls_cert_file and tls_key_file"},
		{name: "any address plain_http", listen: "0.0.0.0:8000", plain: true},
		{name: "any address tls", listen: "0.0.0.0:8443", cert: goodCert, key: goodKey},
		{name: "cert without key", listen: "127.0.0.1:0", cert: goodCert, want: "tls_cert_file is set without tls_key_file"},
		{name: "key without cert", listen: "127.0.0.1:0", key: goodKey, want: "tls_key_file is set without tls_cert_file"},
		{name: "tls and plain_http", listen: "127.0.0.1:0", cert: goodCert, key: goodKey, plain: true, want: "plain_http is true"},
		{name: "cert file missing", listen: "127.0.0.1:0", cert: missing, key: goodKey, want: "tls_cert_file", wantAlsoIn: missing},
		{name: "key file missing", listen: "127.0.0.1:0", cert: goodCert, key: missing, want: "tls_key_file", wantAlsoIn: missing},
		{name: "cert not PEM", listen: "127.0.0.1:0", cert: junk, key: goodKey, want: "no PEM CERTIFICATE block", wantAlsoIn: "tls_cert_file " + junk},
		{name: "key not PEM", listen: "127.0.0.1:0", cert: goodCert, key: junk, want: "no PEM private key block", wantAlsoIn: "tls_key_file " + junk},
		{name: "key is a certificate", listen: "127.0.0.1:0", cert: goodCert, key: goodCert, want: "no PEM private key block", wantAlsoIn: goodCert},
		{name: "key of another certificate", listen: "127.0.0.1:0", cert: goodCert, key: otherKey, want: "does not hold the private key of the certificate", wantAlsoIn: otherKey},
		{name: "expired", listen: "127.0.0.1:0", cert: expCert, key: expKey, want: "expired", wantAlsoIn: expCert},
		{name: "not yet valid", listen: "127.0.0.1:0", cert: futCert, key: futKey, want: "not valid before", wantAlsoIn: futCert},
		{name: "client certificate", listen: "127.0.0.1:0", cert: cliCert, key: cliKey, want: "lacks serverAuth", wantAlsoIn: cliCert},
		{name: "other good pair", listen: "127.0.0.1:0", cert: otherCert, key: otherKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Listen: tc.listen, DataDir: dir, TLSCertFile: tc.cert, TLSKeyFile: tc.key, PlainHTTP: tc.plain}
			c.applyDefaults("json")
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v; want nil", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("Validate: nil; want an error containing %q", tc.want)
			case !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.wantAlsoIn):
				t.Fatalf("Validate: %v; want an error containing %q and %q", err, tc.want, tc.wantAlsoIn)
			}
			if err != nil {
				t.Logf("%v", err)
			}
		})
	}
}

// TestCheckDevListen: tkms dev serves plain HTTP on loopback only, whatever
// plain_http says, and any address with TLS.
func TestCheckDevListen(t *testing.T) {
	for _, tc := range []struct {
		listen string
		plain  bool
		tls    bool
		ok     bool
	}{
		{"127.0.0.1:0", false, false, true},
		{"[::1]:8000", false, false, true},
		{"localhost:8000", false, false, true},
		{"0.0.0.0:0", false, false, false},
		{"0.0.0.0:0", true, false, false},
		{":8000", false, false, false},
		{"10.1.2.3:8000", false, false, false},
		{"0.0.0.0:0", false, true, true},
	} {
		c := &Config{Listen: tc.listen, PlainHTTP: tc.plain}
		if tc.tls {
			c.TLSCertFile, c.TLSKeyFile = "c.pem", "k.pem"
		}
		err := checkDevListen(c)
		if (err == nil) != tc.ok {
			t.Errorf("checkDevListen(%s, plain_http %v, tls %v) = %v; want ok %v", tc.listen, tc.plain, tc.tls, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "loopback only") {
			t.Errorf("checkDevListen(%s): %v; want it to say loopback only", tc.listen, err)
		}
	}
}

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
	ca := newTestCA(t)
	certFile, keyFile := writePair(t, dir, "tls", ca.issue(t, leafOpts{serial: 10}))
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	r, err := newCertReloader(certFile, keyFile, log, now)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLSConfig(r.GetCertificate))
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
	roots.AddCert(ca.cert)
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
	writePair(t, dir, "tls", ca.issue(t, leafOpts{serial: 11}))
	touch(1)
	if got := serial(); got != 10 {
		t.Fatalf("before the check interval: serial %d, want 10 (files are checked at most every %v)", got, certCheckEvery)
	}
	advance(certCheckEvery)
	if got := serial(); got != 11 {
		t.Fatalf("after rotation: serial %d, want 11", got)
	}

	// A certificate whose key is not in the key file: kept out.
	if err := writeFileAtomic(certFile, ca.issue(t, leafOpts{serial: 12}).cert, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(2)
	for range 3 {
		advance(certCheckEvery)
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

	writePair(t, dir, "tls", ca.issue(t, leafOpts{serial: 13}))
	touch(3)
	advance(certCheckEvery)
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
