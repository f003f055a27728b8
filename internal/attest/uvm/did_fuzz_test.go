package uvm

import (
	"crypto"
	"encoding/base64"
	"testing"
)

// FuzzParseDID feeds arbitrary did:x509 issuers (the iss of a UVM
// endorsement's COSE header, which names the CA that must be in its
// x5chain) to parseDID. Nothing may panic, and parsing is canonical: an
// accepted DID is exactly the rendering of what was parsed (one spelling
// per CA fingerprint and EKU, so a DID allow-list cannot be bypassed by
// another spelling), with a fingerprint of its hash's size. Seeds: the
// Microsoft UVM endorser DIDs and malformed variants.
func FuzzParseDID(f *testing.F) {
	for _, s := range []string{
		"did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2",
		"did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.5",
		"did:x509:0:sha384:" + base64.RawURLEncoding.EncodeToString(make([]byte, 48)) + "::eku:1.2",
		"did:x509:0:sha512:" + base64.RawURLEncoding.EncodeToString(make([]byte, 64)) + "::eku:2.5.29.37.0",
		"did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.02",
		"did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::subject:CN:x",
		"did:x509:0::eku:1.2.3", "did:x509:0:sha1:", "",
	} {
		f.Add(s)
	}
	names := map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDID(s)
		if err != nil {
			if d != nil {
				t.Fatal("a DID with an error")
			}
			return
		}
		name, ok := names[d.hash]
		if !ok || len(d.fingerprint) != d.hash.Size() || !isOID(d.eku) {
			t.Fatalf("accepted %q as %+v", s, d)
		}
		if again := "did:x509:0:" + name + ":" + base64.RawURLEncoding.EncodeToString(d.fingerprint) + "::eku:" + d.eku; again != s {
			t.Fatalf("accepted %q, which renders as %q", s, again)
		}
	})
}
