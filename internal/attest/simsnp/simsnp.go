// Package simsnp is a SIMULATED AMD SEV-SNP TEE for development and tests.
//
// IT IS NOT A TEE. IT PROTECTS NOTHING. Whoever can read the chain file (or
// run this code) can produce "attestation evidence" for any measurement,
// host data and report data they like. A KMS that trusts these roots releases
// keys to anybody.
//
// What it does: it keeps a fake AMD certificate chain for the Milan product
// line (an ARK, an ASK and a VCEK shaped like AMD's, see [Chain]) and a fake
// Microsoft-like UVM endorsement chain, and signs SEV-SNP attestation reports
// (SEV-SNP ABI spec 56860, ATTESTATION_REPORT v2) and ACI attestation bundles
// (docs/spec/azure-compat.md, "The attestation object") with them, so that
// the real verifiers run exactly the same code path as for real hardware once
// they have been given these roots (docs/spec/attestation.md, "Simulated").
// tkms trusts the simulated roots only when the operator starts it with an
// explicit insecure flag.
//
// The certificates say SIMULATED wherever go-sev-guest's verifier lets them:
// every AMD-shaped subject carries the street address
// "SIMULATED - NOT AMD - NOT A TEE" (the common names, organisation and
// locality must stay AMD's exact strings or go-sev-guest rejects the chain),
// and the UVM chain's subjects say SIMULATED in every common name.
package simsnp

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
)

// ProductLine is the AMD product line of the simulated chain, the key of
// go-sev-guest's verify.Options.TrustedRoots.
const ProductLine = "Milan"

// ProductName is the VCEK's product name extension (1.3.6.1.4.1.3704.1.2),
// as on real Milan VCEKs.
const ProductName = "Milan-B0"

// simulatedMarker is the street address of every AMD-shaped subject.
const simulatedMarker = "SIMULATED - NOT AMD - NOT A TEE"

// A Chain is a simulated AMD SEV-SNP platform: the fake AMD ARK, ASK and
// VCEK with the VCEK's private key, and the fake UVM endorsement chain with
// its signing key. Load or create one with [LoadOrCreate]. A Chain is
// immutable and safe for concurrent use.
type Chain struct {
	ark, ask, vcek *x509.Certificate
	arkKey, askKey *rsa.PrivateKey
	vcekKey        *ecdsa.PrivateKey

	// The UVM endorsement chain, leaf first.
	uvmLeaf, uvmCA, uvmRoot *x509.Certificate
	uvmRootKey, uvmCAKey    *rsa.PrivateKey
	uvmLeafKey              *rsa.PrivateKey

	tcb    uint64   // the VCEK's TCB_VERSION, as the report holds it
	chipID [64]byte // the VCEK's HWID
}

// Roots returns the simulated AMD root key (ARK, self-signed) and AMD signing
// key (ASK) certificates. A verifier given them as trusted Milan roots
// accepts this chain's reports: only ever do that behind an explicit
// insecure option.
func (c *Chain) Roots() (ark, ask *x509.Certificate) {
	return c.ark, c.ask
}

// VCEK returns the simulated VCEK certificate that signs the reports.
func (c *Chain) VCEK() *x509.Certificate {
	return c.vcek
}

// TCB returns the VCEK's TCB_VERSION (bootloader, TEE, SNP and microcode
// SPLs) as the 64-bit little-endian value a report holds at REPORTED_TCB.
func (c *Chain) TCB() uint64 {
	return c.tcb
}
