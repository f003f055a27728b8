package main

// Black-box tests of TLS: the real tkms binary serving HTTPS with a
// certificate of a CA made by the test, real TLS clients of each version,
// the CLI clients with --kms-ca, and the refusals of plain HTTP off
// loopback.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/tlscert"
	"github.com/tkms-dev/tkms/internal/tlscert/tlscerttest"
)

// tlsFixture is a CA, its PEM file and a server pair written for tkms.
type tlsFixture struct {
	ca                        *tlscerttest.CA
	dir                       string
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{ca: tlscerttest.NewCA(t), dir: filepath.Join(t.TempDir(), "tls")}
	if err := os.Mkdir(f.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.caFile = filepath.Join(f.dir, "ca.pem")
	if err := os.WriteFile(f.caFile, f.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	f.certFile, f.keyFile = tlscerttest.WritePair(t, f.dir, "server", f.ca.Issue(t, tlscerttest.Leaf{Serial: 100}))
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.ca.Cert)
	return f
}

// httpsClient is an HTTP client that trusts the fixture's CA and speaks
// TLS between min and max with, if not nil, only the TLS 1.2 suites given.
func (f *tlsFixture) httpsClient(min, max uint16, suites []uint16) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: f.roots, MinVersion: min, MaxVersion: max, CipherSuites: suites},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// serial handshakes with addr on a new connection and returns the serial
// number of the certificate served.
func (f *tlsFixture) serial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// newServeData creates a data directory with a master key for tkms serve.
func newServeData(t *testing.T) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	if _, err := seal.CreateFile(filepath.Join(data, "master.key")); err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServeTLS runs `tkms serve` with a certificate and key: it speaks
// HTTPS only, TLS 1.3 and 1.2 with ECDHE-AEAD suites (HTTP/2 offered),
// refuses TLS 1.1 and CBC suites, answers plain HTTP with an error, follows
// a rotation of its certificate files without a restart (and keeps its
// certificate when a rotation is broken), and `tkms audit --kms-ca` audits
// it over HTTPS.
func TestServeTLS(t *testing.T) {
	f := newTLSFixture(t)
	data := newServeData(t)
	cfgPath := filepath.Join(t.TempDir(), "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{
		"listen": "127.0.0.1:0", "data_dir": data,
		"tls_cert_file": f.certFile, "tls_key_file": f.keyFile,
	})
	p := startServe(t, cfgPath)
	addr := strings.TrimPrefix(p.URL, "http://")
	base := "https://" + addr
	if !strings.Contains(p.stderr.String(), `"tls":true`) {
		t.Errorf("the listening line does not say tls: true:\n%s", p.stderr)
	}

	get := func(t *testing.T, hc *http.Client) (*http.Response, error) {
		t.Helper()
		resp, err := hc.Get(base + "/app/listpubkeys")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"key"`) {
			t.Fatalf("GET /app/listpubkeys over TLS: %s: %s", resp.Status, body)
		}
		return resp, nil
	}

	t.Run("TLS 1.3", func(t *testing.T) {
		resp, err := get(t, f.httpsClient(tls.VersionTLS13, tls.VersionTLS13, nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("version %s, want TLS 1.3", tls.VersionName(resp.TLS.Version))
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2", resp.Proto)
		}
	})
	t.Run("TLS 1.2", func(t *testing.T) {
		resp, err := get(t, f.httpsClient(tls.VersionTLS12, tls.VersionTLS12, nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.TLS.Version != tls.VersionTLS12 || !slices.Contains(tlscert.CipherSuites, resp.TLS.CipherSuite) {
			t.Errorf("%s with %s, want TLS 1.2 with an ECDHE-AEAD suite", tls.VersionName(resp.TLS.Version), tls.CipherSuiteName(resp.TLS.CipherSuite))
		}
	})
	t.Run("TLS 1.2 ChaCha20-Poly1305", func(t *testing.T) {
		resp, err := get(t, f.httpsClient(tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.TLS.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
			t.Errorf("suite %s", tls.CipherSuiteName(resp.TLS.CipherSuite))
		}
	})
	for _, tc := range []struct {
		name     string
		min, max uint16
		suites   []uint16
		want     string
	}{
		{"TLS 1.1 at most", tls.VersionTLS10, tls.VersionTLS11, nil, "protocol version"},
		{"TLS 1.2 CBC suites only", tls.VersionTLS12, tls.VersionTLS12, []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		}, "handshake failure"},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			_, err := f.httpsClient(tc.min, tc.max, tc.suites).Get(base + "/app/listpubkeys")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GET over %s: err %v; want a refused handshake (%q)", tc.name, err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("untrusted without the CA", func(t *testing.T) {
		_, err := (&http.Client{Timeout: 20 * time.Second}).Get(base + "/app/listpubkeys")
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) {
			t.Fatalf("GET without the CA: %v; want an unknown authority", err)
		}
	})
	t.Run("plain HTTP to the TLS port", func(t *testing.T) {
		resp, body := do(t, "GET", "http://"+addr+"/app/listpubkeys", nil)
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), `"key"`) {
			t.Fatalf("plain HTTP GET: %s: %s; want 400 and no keys", resp.Status, body)
		}
	})

	t.Run("audit --kms-ca", func(t *testing.T) {
		resp, err := f.httpsClient(0, 0, nil).Get(base + "/v1/log/key")
		if err != nil {
			t.Fatal(err)
		}
		key, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out, errOut, code := runTkms(t, "audit", "--kms", base, "--kms-ca", f.caFile, "--log-key", strings.TrimSpace(string(key)))
		if code != 0 {
			t.Fatalf("tkms audit --kms %s --kms-ca: exit %d\n%s%s", base, code, out, errOut)
		}
		out, errOut, code = runTkms(t, "audit", "--kms", base, "--log-key", strings.TrimSpace(string(key)))
		if code != 2 || !strings.Contains(errOut, "certificate") {
			t.Fatalf("tkms audit without --kms-ca: exit %d\n%s%s; want 2 and a certificate error", code, out, errOut)
		}
		_, errOut, code = runTkms(t, "audit", "--kms", "http://"+addr, "--kms-ca", f.caFile, "--log-key", strings.TrimSpace(string(key)))
		if code != 2 || !strings.Contains(errOut, "https://") {
			t.Fatalf("tkms audit --kms http://... --kms-ca: exit %d, %s; want 2 and a message that it applies to https://", code, errOut)
		}
	})

	t.Run("keys list --kms-ca", func(t *testing.T) {
		out, errOut, code := runTkms(t, "keys", "list", "--url", base, "--kms-ca", f.caFile, "--json")
		var list struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Keys) == 0 {
			t.Fatalf("tkms keys list --url %s --kms-ca: exit %d\n%s%s", base, code, out, errOut)
		}
		if _, errOut, code := runTkms(t, "keys", "list", "--url", base); code == 0 || !strings.Contains(errOut, "certificate") {
			t.Fatalf("tkms keys list without --kms-ca: exit %d, %s; want a certificate error", code, errOut)
		}
	})

	t.Run("bench --kms-ca", func(t *testing.T) {
		args := []string{"bench", "--url", base, "--kms-ca", f.caFile, "--json", "--duration", "300ms", "--warmup", "0", "--workers", "2", "--floor-iterations", "1"}
		out, errOut, code := runTkms(t, args...)
		var rep struct {
			Operations, Errors uint64
		}
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Operations == 0 || rep.Errors != 0 {
			t.Fatalf("tkms %s: exit %d, report %+v\n%s", strings.Join(args, " "), code, rep, errOut)
		}
	})

	// Rotation: the files are replaced (by rename, as cert-manager or
	// certbot do); new connections see the new certificate once the
	// server has looked at the files again (at most every few seconds).
	t.Run("rotation", func(t *testing.T) {
		if got := f.serial(t, addr); got != 100 {
			t.Fatalf("serial %d, want 100", got)
		}
		tlscerttest.WritePair(t, f.dir, "server", f.ca.Issue(t, tlscerttest.Leaf{Serial: 101}))
		waitFor(t, "the rotated certificate", func() bool { return f.serial(t, addr) == 101 })

		// A broken rotation (a certificate whose key is not in the key
		// file) is logged and the certificate in use stays.
		if err := writeFileAtomic(f.certFile, f.ca.Issue(t, tlscerttest.Leaf{Serial: 102}).Cert, 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the error about the broken pair", func() bool {
			f.serial(t, addr)
			return strings.Contains(p.stderr.String(), "do not load")
		})
		if got := f.serial(t, addr); got != 101 {
			t.Fatalf("after a broken rotation: serial %d, want 101", got)
		}
		if _, err := get(t, f.httpsClient(0, 0, nil)); err != nil {
			t.Fatalf("after a broken rotation: %v", err)
		}
		tlscerttest.WritePair(t, f.dir, "server", f.ca.Issue(t, tlscerttest.Leaf{Serial: 103}))
		waitFor(t, "the repaired certificate", func() bool { return f.serial(t, addr) == 103 })
	})
	p.stopClean(syscall.SIGTERM)
}

// waitFor polls cond until it holds; the deadline only bounds a broken
// build.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(startDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, startDeadline)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeTLSConfigErrors: serve refuses to start on a broken pair, with
// an error that names the file.
func TestServeTLSConfigErrors(t *testing.T) {
	f := newTLSFixture(t)
	data := newServeData(t)
	_, otherKey := tlscerttest.WritePair(t, f.dir, "other", f.ca.Issue(t, tlscerttest.Leaf{Serial: 7}))
	expCert, expKey := tlscerttest.WritePair(t, f.dir, "expired", f.ca.Issue(t, tlscerttest.Leaf{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	for _, tc := range []struct {
		name       string
		cert, key  string
		want, file string
	}{
		{"mismatched key", f.certFile, otherKey, "does not hold the private key", otherKey},
		{"expired", expCert, expKey, "expired", expCert},
		{"cert only", f.certFile, "", "give both or neither", "tls_key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgPath := filepath.Join(t.TempDir(), "tkms.json")
			writeJSONFile(t, cfgPath, map[string]any{"listen": "127.0.0.1:0", "data_dir": data, "tls_cert_file": tc.cert, "tls_key_file": tc.key})
			_, errOut, code := runTkms(t, "serve", "--config", cfgPath)
			if code == 0 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, tc.file) {
				t.Fatalf("exit %d, stderr %q; want a refusal containing %q and %q", code, errOut, tc.want, tc.file)
			}
		})
	}
}

// TestPlainHTTPLoopbackOnly: without TLS, serve refuses an address that is
// not loopback unless plain_http is set, and dev refuses one always.
func TestPlainHTTPLoopbackOnly(t *testing.T) {
	data := newServeData(t)
	cfgPath := filepath.Join(t.TempDir(), "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"listen": "0.0.0.0:0", "data_dir": data})
	_, errOut, code := runTkms(t, "serve", "--allow-ungoverned", "--config", cfgPath)
	for _, want := range []string{"listen 0.0.0.0:0 is not a loopback address", "tls_cert_file and tls_key_file", `"plain_http": true`, "TLS-terminating proxy"} {
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("serve on 0.0.0.0 without TLS: exit %d, stderr %q; want a refusal containing %q", code, errOut, want)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "ledger.db")); err == nil {
		t.Errorf("the refused serve created a ledger")
	}

	// plain_http: true is the operator saying a proxy terminates TLS.
	writeJSONFile(t, cfgPath, map[string]any{"listen": "0.0.0.0:0", "data_dir": data, "plain_http": true})
	p := startServe(t, cfgPath)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(p.URL, "http://"))
	resp, body := do(t, "GET", "http://127.0.0.1:"+port+"/app/listpubkeys", nil)
	wantOK(t, "listpubkeys over plain_http", resp, body)
	p.stopClean(syscall.SIGTERM)

	dev := filepath.Join(t.TempDir(), "dev")
	for _, args := range [][]string{
		{"dev", "--listen", "0.0.0.0:0", "--data", dev},
		{"dev", "--listen", ":0", "--data", dev, "--config", cfgPath}, // plain_http does not apply to dev
	} {
		_, errOut, code = runTkms(t, args...)
		if code != 2 || !strings.Contains(errOut, "loopback only") || !strings.Contains(errOut, "127.0.0.1") {
			t.Errorf("tkms %s: exit %d, stderr %q; want 2 and a refusal that says loopback only", strings.Join(args, " "), code, errOut)
		}
	}
	if _, err := os.Stat(dev); err == nil {
		t.Errorf("the refused dev created its data directory")
	}
}

var devListeningTLS = regexp.MustCompile(`tkms dev: listening on (https://\S+)\n`)

// TestDevTLSClients runs tkms dev with TLS files from --config and the CLI
// clients against it with --kms-ca: fetch (the client package over HTTPS:
// nonce, release, receipts), gov propose and gov list.
func TestDevTLSClients(t *testing.T) {
	f := newTLSFixture(t)
	data := filepath.Join(t.TempDir(), "dev")
	cfgPath := filepath.Join(t.TempDir(), "dev.json")
	writeJSONFile(t, cfgPath, map[string]any{"tls_cert_file": f.certFile, "tls_key_file": f.keyFile})
	p := startProc(t, "dev", "--listen", "127.0.0.1:0", "--data", data, "--config", cfgPath)
	m := p.waitOutput(p.stdout, devListeningTLS)
	base := m[1]
	var info DevInfo
	if err := json.Unmarshal(readFile(t, filepath.Join(data, "dev.json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.KMSURL != base || !strings.HasPrefix(info.IssuerURL, "https://") {
		t.Fatalf("dev.json kms_url %s, issuer_url %s; want %s and https", info.KMSURL, info.IssuerURL, base)
	}

	out, errOut, code := runTkms(t, "fetch", "--data", data, "--kms-ca", f.caFile)
	if code != 0 || !strings.Contains(out, "release receipts verified against the log key: 1") {
		t.Fatalf("tkms fetch --kms-ca: exit %d\n%s\n%s", code, out, errOut)
	}
	_, errOut, code = runTkms(t, "fetch", "--data", data)
	if code == 0 || !strings.Contains(errOut+out, "certificate") {
		t.Errorf("tkms fetch without --kms-ca: exit %d, %s; want a certificate error", code, errOut)
	}

	actions := filepath.Join(t.TempDir(), "rotate.json")
	writeJSONFile(t, actions, map[string]any{"name": "rotate_key_now", "args": map[string]string{"reason": "tls e2e"}})
	out, errOut, code = runTkms(t, "gov", "propose", "--data", data, "--kms-ca", f.caFile, actions)
	if code != 0 || !strings.Contains(out, "accepted") {
		t.Fatalf("tkms gov propose --kms-ca: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runTkms(t, "gov", "list", "--data", data, "--kms-ca", f.caFile)
	if code != 0 || !strings.Contains(out, "rotate_key_now") {
		t.Fatalf("tkms gov list --kms-ca: exit %d\n%s%s", code, out, errOut)
	}
	p.stopClean(syscall.SIGTERM)
}
