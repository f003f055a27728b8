package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/tlscert/tlscerttest"
)

func TestConfigValidateTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlscerttest.NewCA(t)
	goodCert, goodKey := tlscerttest.WritePair(t, dir, "good", ca.Issue(t, tlscerttest.Leaf{}))
	otherCert, otherKey := tlscerttest.WritePair(t, dir, "other", ca.Issue(t, tlscerttest.Leaf{Serial: 3}))
	expCert, expKey := tlscerttest.WritePair(t, dir, "expired", ca.Issue(t, tlscerttest.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	futCert, futKey := tlscerttest.WritePair(t, dir, "future", ca.Issue(t, tlscerttest.Leaf{NotBefore: time.Now().Add(time.Hour)}))
	cliCert, cliKey := tlscerttest.WritePair(t, dir, "client", ca.Issue(t, tlscerttest.Leaf{EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))
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
