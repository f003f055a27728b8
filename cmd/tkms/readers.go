package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// loadReaders reads the certificates of the readers setting: each file
// holds one or more PEM CERTIFICATE blocks. A TLS client presenting one
// of them is a reader ("user_cert" at GET /app/auth, as the deployed DEPA
// KMS's CCF users); readers need TLS, since only TLS carries client
// certificates.
func (c *Config) loadReaders() ([]*x509.Certificate, error) {
	if len(c.Readers) == 0 {
		return nil, nil
	}
	if !c.tlsEnabled() {
		return nil, errors.New("readers: client certificates need TLS (tls_cert_file, tls_key_file)")
	}
	var out []*x509.Certificate
	for _, f := range c.Readers {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("readers: %w", err)
		}
		n := 0
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("readers: %s: PEM type %q: want CERTIFICATE", f, block.Type)
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("readers: %s: %w", f, err)
			}
			out = append(out, cert)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("readers: %s: no PEM CERTIFICATE", f)
		}
	}
	return out, nil
}
