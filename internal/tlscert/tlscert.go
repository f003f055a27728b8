// Package tlscert serves a TLS server's certificate from files and follows
// them: an operator rotates the certificate by replacing the files, without
// a restart. LoadPair checks a pair as a server needs it (the key matches
// the leaf, the leaf is valid now and usable by a TLS server), Reloader
// reloads a changed pair on a handshake (keeping the pair in use when the
// new one does not load), and ServerConfig is the server's crypto/tls
// configuration: TLS 1.2 at least, ECDHE with AEAD suites.
package tlscert

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// CheckEvery is how often, at most, the certificate files are checked for
// a change (their modification time and size), on a handshake.
const CheckEvery = 2 * time.Second

// CipherSuites are the TLS 1.2 suites the server accepts: ECDHE key
// exchange with an AEAD (AES-GCM, ChaCha20-Poly1305). TLS 1.3 suites are
// Go's choice (all AEAD) and not configurable.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// LoadPair reads a PEM certificate chain (leaf first) and its private
// key, and checks that the key matches the leaf, that the leaf is valid at
// now and usable by a TLS server. Its errors name the file at fault.
func LoadPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_key_file: %w", err)
	}
	leaf, err := parseLeaf(certPEM)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file %s: %w", certFile, err)
	}
	if !hasPEMBlock(keyPEM, "PRIVATE KEY") {
		return nil, fmt.Errorf("tls_key_file %s: no PEM private key block", keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if pub, perr := publicKeyOfPEM(keyPEM); perr == nil && !publicKeysEqual(pub, leaf.PublicKey) {
			return nil, fmt.Errorf("tls_key_file %s does not hold the private key of the certificate in tls_cert_file %s", keyFile, certFile)
		}
		return nil, fmt.Errorf("tls_key_file %s: %w", keyFile, err)
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("tls_cert_file %s: the certificate expired at %s (now %s): install a renewed certificate", certFile, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("tls_cert_file %s: the certificate is not valid before %s (now %s)", certFile, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny):
		return nil, fmt.Errorf("tls_cert_file %s: the certificate is not for TLS servers (its extended key usage lacks serverAuth)", certFile)
	}
	pair.Leaf = leaf
	return &pair, nil
}

// parseLeaf parses the first certificate of a PEM chain and checks that
// every CERTIFICATE block parses.
func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		if leaf == nil {
			leaf = c
		}
	}
	if leaf == nil {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return leaf, nil
}

// hasPEMBlock reports whether data holds a PEM block whose type ends in
// suffix ("PRIVATE KEY" matches PKCS #8, PKCS #1 and SEC 1 keys).
func hasPEMBlock(data []byte, suffix string) bool {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if bytes.HasSuffix([]byte(b.Type), []byte(suffix)) {
			return true
		}
	}
}

// publicKeyOfPEM returns the public key of the first private key in keyPEM.
func publicKeyOfPEM(keyPEM []byte) (crypto.PublicKey, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("not a signing key")
		}
		return s.Public(), nil
	}
}

// publicKeysEqual compares two public keys of the standard library's types.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// A Reloader serves the certificate of its files and reloads them
// when they change: on a handshake, at most every CheckEvery, it
// compares the files' modification time and size with the loaded ones.
// A new pair that does not load (a key that does not match, an expired
// certificate, a half-written file) is logged once and the previous pair
// stays in use.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time
	every             time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  [2]fileStamp // of the files of cert
	failed  [2]fileStamp // of the files that last failed to load
	checked time.Time
	expired bool // the expiry of cert was logged
}

// A fileStamp is what tells that a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func (r *Reloader) stamps() ([2]fileStamp, error) {
	c, err := stampOf(r.certFile)
	if err != nil {
		return [2]fileStamp{}, err
	}
	k, err := stampOf(r.keyFile)
	return [2]fileStamp{c, k}, err
}

// NewReloader loads the pair; a pair that does not load is an error. now is
// the clock (the check interval and expiry are by it).
func NewReloader(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, now: now, every: CheckEvery}
	st, err := r.stamps()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cert, err := LoadPair(certFile, keyFile, now())
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded, r.checked = cert, st, now()
	log.Info("tls certificate loaded", "cert_file", certFile, "subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter)
	return r, nil
}

// GetCertificate is the tls.Config hook: it returns the current pair,
// reloading it first if the files changed.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) >= r.every || now.Before(r.checked) {
		r.checked = now
		r.reload(now)
	}
	return r.cert, nil
}

// reload loads the files if they changed since the pair in use was loaded
// (or since they last failed to load), and logs once that the pair in use
// has expired. r.mu is held.
func (r *Reloader) reload(now time.Time) {
	if now.After(r.cert.Leaf.NotAfter) && !r.expired {
		r.expired = true
		r.log.Error("tls certificate in use has expired: replace tls_cert_file and tls_key_file", "cert_file", r.certFile, "serial", r.cert.Leaf.SerialNumber.Text(16), "not_after", r.cert.Leaf.NotAfter)
	}
	st, err := r.stamps()
	if err != nil {
		if st != r.failed {
			r.failed = st
			r.log.Error("tls certificate files unreadable: keeping the certificate in use", "cert_file", r.certFile, "key_file", r.keyFile, "err", err)
		}
		return
	}
	if st == r.loaded || st == r.failed {
		return
	}
	cert, err := LoadPair(r.certFile, r.keyFile, now)
	if err != nil {
		r.failed = st
		r.log.Error("tls certificate files changed but do not load: keeping the certificate in use", "err", err, "serial", r.cert.Leaf.SerialNumber.Text(16), "not_after", r.cert.Leaf.NotAfter)
		return
	}
	r.cert, r.loaded, r.failed, r.expired = cert, st, [2]fileStamp{}, false
	r.log.Info("tls certificate reloaded", "cert_file", r.certFile, "subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter)
}

// ServerConfig is the server's TLS configuration with certificates from
// get: TLS 1.2 at least, ECDHE with AEAD suites for TLS 1.2, TLS 1.3 as Go
// chooses. http.Server.ServeTLS adds HTTP/2. A client may present a
// certificate, which only GET /app/auth reads (members' registered
// certificates and the readers setting, as the deployed DEPA KMS's CCF
// member_cert and user_cert): the handshake proves the client holds its
// key, and no chain is required, as the certificate is matched exactly.
func ServerConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   slices.Clone(CipherSuites),
		GetCertificate: get,
		ClientAuth:     tls.RequestClientCert,
	}
}
