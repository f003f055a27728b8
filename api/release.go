package api

import (
	"encoding/json"
	"time"
)

// V1Request is the body of POST /v1/keys/{kid}/release and POST
// /v1/release:
//
//	{"kids":["<kid>",...] | "all_valid":true,      (batch only)
//	 "attestation":<attestation object>,
//	 "wrapping_key":{"type":"rsa","spki":"<std base64 DER SubjectPublicKeyInfo>"}
//	             | {"type":"hpke","kem_id":32|25722,"public_key":"<std base64>"},
//	 "nonce":"<64 hex digits from GET /v1/nonce>"}  (optional)
//
// The server rejects unknown fields.
type V1Request struct {
	Kids        []string        `json:"kids,omitempty"`
	AllValid    bool            `json:"all_valid,omitempty"`
	Attestation json.RawMessage `json:"attestation"`
	WrappingKey *V1WrappingKey  `json:"wrapping_key"`
	Nonce       string          `json:"nonce,omitempty"`
}

// V1WrappingKey is the key a /v1 release is wrapped to.
type V1WrappingKey struct {
	Type      string `json:"type"`                 // "rsa" or "hpke"
	SPKI      string `json:"spki,omitempty"`       // rsa: standard base64 of the DER SubjectPublicKeyInfo
	KEMID     uint16 `json:"kem_id,omitempty"`     // hpke: 0x0020 or 0x647a
	PublicKey string `json:"public_key,omitempty"` // hpke: standard base64 of RFC 9180 SerializePublicKey
}

// V1ReleasedKey is one released key: its public description and the private
// key wrapped to the request's wrapping key.
type V1ReleasedKey struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	Suite        string    `json:"suite"`
	KEM          uint16    `json:"kem_id"`
	KDF          uint16    `json:"kdf_id"`
	AEAD         uint16    `json:"aead_id"`
	PublicKey    []byte    `json:"public_key"` // SerializePublicKey
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	// Wrapped is the private key (RFC 9180 SerializePrivateKey) encrypted
	// to the wrapping key: RSA-OAEP-256 with an empty label, or HPKE base
	// mode enc || ciphertext with info "tkms/v1 key release" || 0x00 || kid
	// (wrap.ReleaseInfo), HKDF-SHA256 and AES-256-GCM.
	Wrapped []byte `json:"wrapped"`
}

// V1ReleaseResponse is the answer of a /v1 release.
type V1ReleaseResponse struct {
	Keys []V1ReleasedKey `json:"keys"`
	// Receipt is the log receipt (JSON, docs/transparency.md) of the
	// key.released entry that records this release.
	Receipt json.RawMessage `json:"receipt,omitempty"`
}

// NonceResponse is the body of GET /v1/nonce.
type NonceResponse struct {
	Nonce   string `json:"nonce"`   // 64 hex digits
	Expires string `json:"expires"` // RFC 3339, UTC
}

// AppRequest is the body of POST /app/key and /app/unwrapKey
// (docs/spec/azure-compat.md).
type AppRequest struct {
	Attestation json.RawMessage `json:"attestation"`
	WrappingKey string          `json:"wrappingKey"`
	WrappedKid  string          `json:"wrappedKid"`
	Wrapped     json.RawMessage `json:"wrapped,omitempty"` // ignored, as by the originals
}

// AppUnwrapResponse is the answer of POST /app/unwrapKey.
type AppUnwrapResponse struct {
	Wrapped string `json:"wrapped"` // standard base64 of RSA-OAEP-256(payload)
	// Receipt is the log receipt (JSON, as a string) of the key.released
	// entry that records this release.
	Receipt string `json:"receipt"`
}

// AppKeyResponse is the answer of POST /app/key.
type AppKeyResponse struct {
	WrappedKid string `json:"wrappedKid"`
	Wrapped    string `json:"wrapped"`
	// Receipt is the log receipt (JSON, as a string) of the key.created
	// entry of WrappedKid: no key is released by this call, and the
	// receipt proves which public key the kid names.
	Receipt string `json:"receipt"`
}

// RawSNP is the attestation object of the raw "snp" evidence type: an SNP
// report with the certificate of the key that signed it (VCEK or VLEK, DER
// or PEM), or an extended report's certificate table.
type RawSNP struct {
	Type      string `json:"type"` // "snp"
	Report    []byte `json:"report"`
	VCEK      []byte `json:"vcek,omitempty"`
	CertTable []byte `json:"cert_table,omitempty"`
}

// TDX is the attestation object of the "tdx" evidence type: an Intel TDX
// quote v4 as the quoting enclave returns it (configfs-tsm's outblob), with
// its PCK certificate chain inside. REPORT_DATA binds the wrapping key and
// the nonce exactly as an SNP report's does.
type TDX struct {
	Type  string `json:"type"` // "tdx"
	Quote []byte `json:"quote"`
	// Collateral, when present, is Intel's collateral for the quote's
	// platform (as Intel PCS serves it), so that its TCB status is
	// evaluated offline.
	Collateral *TDXCollateral `json:"collateral,omitempty"`
}

// TDXCollateral is Intel PCS collateral for a TDX platform (one FMSPC):
// each response body as PCS serves it, with the issuer chain PCS sends in
// a header (PEM, signing certificate then root).
type TDXCollateral struct {
	TCBInfo               json.RawMessage `json:"tcb_info"` // GET /tdx/certification/v4/tcb?fmspc=
	TCBInfoIssuerChain    string          `json:"tcb_info_issuer_chain"`
	QEIdentity            json.RawMessage `json:"qe_identity"` // GET /tdx/certification/v4/qe/identity
	QEIdentityIssuerChain string          `json:"qe_identity_issuer_chain"`
	PCKCRL                []byte          `json:"pck_crl"` // DER, GET /sgx/certification/v4/pckcrl?ca=
	PCKCRLIssuerChain     string          `json:"pck_crl_issuer_chain"`
	RootCACRL             []byte          `json:"root_ca_crl"` // DER, Intel SGX Root CA CRL
}

// MAA is the attestation object of the "maa" evidence type: a Microsoft
// Azure Attestation token (the compact JWT) of a trusted MAA instance,
// whose x-ms-runtime.client-payload carries "tkms-report-data", the 64
// bytes that bind the wrapping key as REPORT_DATA does.
type MAA struct {
	Type  string `json:"type"` // "maa"
	Token string `json:"token"`
}

// KeyReleased is the public body of a key.released ledger entry: what was
// released to whom, on which evidence, under which policy. It holds hashes
// and identities, never key material or tokens. A client checks a
// release's receipt against Kids and WrappingKeySHA256.
type KeyReleased struct {
	Kids              []string `json:"kids"`
	API               string   `json:"api"`              // e.g. "app/unwrapKey"
	Format            string   `json:"format,omitempty"` // jwk or tink for /app
	Issuer            string   `json:"iss"`
	Identity          string   `json:"oid"` // oid, or sub when there is none
	EvidenceType      string   `json:"evidence_type"`
	Simulated         bool     `json:"simulated"` // evidence chained to the simulated TEE
	Measurement       string   `json:"measurement"`
	HostData          string   `json:"host_data"`
	ReportSHA256      string   `json:"report_sha256"`
	WrappingKeySHA256 string   `json:"wrapping_key_sha256"`
	PolicySeq         uint64   `json:"policy_seq"`
	PolicySHA256      string   `json:"policy_sha256"`
	// Claims are the claims the key release policy was evaluated on (the
	// verified evidence's x-ms-* claims), so that an auditor can evaluate
	// the policy in force again. Absent in entries of tkms before the
	// transparency log.
	Claims map[string]any `json:"claims,omitempty"`
}

// ACI is the attestation object of the Azure-compatible API
// (docs/spec/azure-compat.md, "The attestation object"), in the field order
// of the spec, as the ACI SKR sidecar's /attest/combined returns it
// (its CombinedAttestationData has the same JSON names).
type ACI struct {
	Evidence        string `json:"evidence"`         // the SNP report, standard base64
	Endorsements    string `json:"endorsements"`     // standard base64 of PEM VCEK (or VLEK), ASK, ARK
	UVMEndorsements string `json:"uvm_endorsements"` // standard base64 of the COSE_Sign1 UVM endorsement
	EndorsedTCB     string `json:"endorsed_tcb"`     // 16 hex digits
}
