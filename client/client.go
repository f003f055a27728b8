// Package client is what a Go inference service imports to obtain private
// keys from tkms (docs/release.md): it produces attestation
// evidence binding a fresh wrapping key (Attester), obtains a token for its
// identity (TokenSource), calls the KMS, unwraps the released keys, checks
// them against the published public keys and keeps them in a cache that
// prefetches and refreshes (Keys). Package ohttp then decrypts requests
// with the cached keys.
//
// Errors say whose fault they are: ErrKeyNotFound and ErrKeyExpired (the
// caller's, 4xx) or ErrUnavailable (the service's, 503), with the KMS's
// *KMSError inside. A failed fetch is remembered for a backoff that Run
// shares, so requests cannot cause a storm of releases. Close stops every
// goroutine of a Keys. Package kmstest starts a KMS in process for the
// tests of a service; docs/ohttp.md puts it all together.
//
// Constructors take what they cannot do without as arguments and
// everything optional in an options struct (KeysConfig, ACIOptions,
// SNPOptions, TDXOptions, AzureCVMOptions, IMDSOptions, ...), whose zero
// value is the default.
//
// The wire formats are those of tkms's /app (Azure-compatible) and /v1
// APIs (docs/spec/azure-compat.md, docs/release.md).
//
// A production KMS is reached over HTTPS (tkms serve with TLS 1.2 or
// later). Keys makes every request through KeysConfig.HTTPClient, so TLS
// is configured there: a KMS certificate from a private CA needs a client
// whose transport trusts that CA (see ExampleKeysConfig_privateCA); the
// `tkms fetch` and `tkms sidecar` commands do the same with --kms-ca FILE.
package client

import (
	"context"
	"encoding/json"
)

// Evidence types, as the KMS names them.
const (
	EvidenceACI = "snp-aci" // the ACI attestation object {evidence, endorsements, uvm_endorsements, endorsed_tcb}
	EvidenceSNP = "snp"     // a raw SEV-SNP report with its VCEK or certificate table
)

// Evidence is attestation evidence in the form the KMS accepts in a
// release request's "attestation" field.
type Evidence struct {
	Type string // EvidenceACI, EvidenceSNP or EvidenceTDX
	// Attestation is the attestation object, sent as is: for EvidenceACI
	// the ACI bundle, for EvidenceSNP {"type":"snp","report":...,"vcek"|"cert_table":...}.
	Attestation json.RawMessage
	// Simulated is true when the evidence comes from tkms's simulated TEE
	// (development only; a KMS trusts it only when told to).
	Simulated bool
}

// An Attester produces evidence whose SEV-SNP REPORT_DATA is reportData.
// The client puts the SHA-256 of its fresh wrapping key in reportData[0:32]
// and, when the KMS asks for freshness, a server nonce in reportData[32:64].
type Attester interface {
	Attest(ctx context.Context, reportData [64]byte) (*Evidence, error)
}

// A TokenSource returns a bearer token for the KMS (the JWT alone, without
// "Bearer "). Implementations cache tokens until shortly before they
// expire.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}
