package snp

import (
	"bytes"
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/verify/trust"
)

// amdroots holds AMD's KDS cert_chain bundles (ASK or ASVK, then ARK), copied byte for byte from
// go-sev-guest v0.15.0 verify/trust (see amdroots/PROVENANCE.md). They are pinned here rather than
// taken from go-sev-guest's package variables so that a dependency update cannot change what tkms
// trusts without a diff in this repository.
//
//go:embed amdroots/*.pem
var amdroots embed.FS

// Root is a root of trust for one AMD product line: an ARK and the intermediates it certified.
// A VCEK must chain ASK -> ARK, a VLEK ASVK -> ARK.
type Root struct {
	ProductLine string            // "Milan", "Genoa" or "Turin"
	ARK         *x509.Certificate // self-signed root
	ASK         *x509.Certificate // signs VCEKs; nil if VCEKs are not trusted under this root
	ASVK        *x509.Certificate // signs VLEKs; nil if VLEKs are not trusted under this root
}

// ParseRoot reads a root of trust for productLine from PEM certificates in any order: the
// self-signed one is the ARK, one whose subject common name starts with "SEV-VLEK-" is the ASVK, any
// other is the ASK. AMD KDS's cert_chain documents (ASK+ARK or ASVK+ARK) have this form, and so
// may a bundle holding all three. Trailing whitespace, including CRLF, is ignored. The
// intermediates must be signed by the ARK.
func ParseRoot(productLine string, pemBundle []byte) (Root, error) {
	r := Root{ProductLine: productLine}
	if err := checkProductLine(productLine); err != nil {
		return r, err
	}
	rest := bytes.TrimSpace(pemBundle)
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil || b.Type != "CERTIFICATE" {
			return r, fmt.Errorf("snp: %s root bundle: expected PEM CERTIFICATE blocks", productLine)
		}
		rest = bytes.TrimSpace(rest)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return r, fmt.Errorf("snp: %s root bundle: %w", productLine, err)
		}
		var slot **x509.Certificate
		switch {
		case bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil:
			slot = &r.ARK
		case strings.HasPrefix(c.Subject.CommonName, "SEV-VLEK-"):
			slot = &r.ASVK
		default:
			slot = &r.ASK
		}
		if *slot != nil && !(*slot).Equal(c) {
			return r, fmt.Errorf("snp: %s root bundle: two different certificates for subject %q",
				productLine, c.Subject.CommonName)
		}
		*slot = c
	}
	if err := r.check(); err != nil {
		return r, err
	}
	return r, nil
}

func (r Root) check() error {
	if err := checkProductLine(r.ProductLine); err != nil {
		return err
	}
	if r.ARK == nil {
		return fmt.Errorf("snp: %s root: no ARK (self-signed certificate)", r.ProductLine)
	}
	if r.ASK == nil && r.ASVK == nil {
		return fmt.Errorf("snp: %s root: no ASK or ASVK", r.ProductLine)
	}
	for _, ica := range []*x509.Certificate{r.ASK, r.ASVK} {
		if ica == nil {
			continue
		}
		if err := ica.CheckSignatureFrom(r.ARK); err != nil {
			return fmt.Errorf("snp: %s root: %q is not signed by the ARK %q: %w",
				r.ProductLine, ica.Subject.CommonName, r.ARK.Subject.CommonName, err)
		}
	}
	return nil
}

func checkProductLine(p string) error {
	switch p {
	case "Milan", "Genoa", "Turin":
		return nil
	}
	return fmt.Errorf("snp: unknown AMD product line %q (want Milan, Genoa or Turin)", p)
}

// pinnedRoots parses the embedded AMD bundles into one Root per product line, with the VCEK and
// VLEK intermediates side by side under the same ARK. (Keeping one root per product line, instead
// of one per bundle as go-sev-guest does, also means a failure reports the right bundle's error.)
func pinnedRoots() ([]Root, error) {
	lines := []struct{ line, vcek, vlek string }{
		{"Milan", "ask_ark_milan.pem", "ask_ark_milan_vlek.pem"},
		{"Genoa", "ask_ark_genoa.pem", "ask_ark_genoa_vlek.pem"},
		{"Turin", "ask_ark_turin_vcek.pem", "ask_ark_turin_vlek.pem"},
	}
	var roots []Root
	for _, l := range lines {
		var all []byte
		for _, name := range []string{l.vcek, l.vlek} {
			b, err := amdroots.ReadFile("amdroots/" + name)
			if err != nil {
				return nil, err
			}
			// The Turin bundles end in CRLF; ParseRoot trims whitespace around each block.
			all = append(append(all, b...), '\n')
		}
		r, err := ParseRoot(l.line, all)
		if err != nil {
			return nil, err
		}
		if r.ASK == nil || r.ASVK == nil {
			return nil, fmt.Errorf("snp: pinned %s roots lack the ASK or the ASVK", l.line)
		}
		roots = append(roots, r)
	}
	return roots, nil
}

func (r Root) amd() *trust.AMDRootCerts {
	a := trust.AMDRootCertsProduct(r.ProductLine)
	a.ProductCerts = &trust.ProductCerts{Ark: r.ARK, Ask: r.ASK, Asvk: r.ASVK}
	return a
}
