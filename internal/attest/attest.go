// Package attest is the one door through which evidence enters tkms: an
// attestation object of any supported format, as a release request carries
// it (docs/spec/attestation.md), goes to [Verifier.Verify], which tells the
// format apart, verifies it with the format's verifier and returns its
// [Evidence]: the claims a release policy is evaluated on and the fields a
// release records. Release, the sidecar, the benchmark floor and
// `tkms attest inspect` use only this package; none reaches into the
// format verifiers.
//
// Formats (see formats in format.go, the one place they are told apart):
//
//   - "snp": a raw SEV-SNP report with its VCEK or VLEK, or an extended
//     report's certificate table (api.RawSNP), verified by attest/snp
//     against the pinned AMD roots; no UVM endorsement, so no uvm_* claims.
//   - "snp-aci": the ACI attestation object (api.ACI): the report and its
//     VCEK by attest/snp, then its UVM endorsement by attest/uvm against the
//     report's MEASUREMENT.
//   - "tdx": an Intel TDX quote v4 (api.TDX), verified by attest/tdx
//     against the pinned Intel SGX root; a debug TD is refused.
//   - "maa": a Microsoft Azure Attestation token (api.MAA), verified by
//     attest/maa against the configured MAA instances' keys.
//   - "az-snp-vtpm", "az-tdx-vtpm": Azure confidential VM evidence, the
//     hardware report verified as "snp" or "tdx" evidence is, then the
//     HCL runtime data, the vTPM attestation key and quote by attest/azcvm.
//
// Evidence of tkms's simulated TEE (attest/simsnp) is either format signed
// by a chain the operator told the verifier to trust (Config.SNP.Roots,
// Config.SimulatedEndorsers); [Verify] refuses it unless Config.Simulated.
//
// A new format is a subpackage that verifies it and one entry in formats.
//
// This package checks authenticity only ("is it authentic?"); whether the
// evidence may have a key is for package policy.
package attest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/policy"
)

// Evidence types, as requests, the ledger and GET /v1/attestation name them.
const (
	TypeSNP = "snp"     // a raw SEV-SNP report (api.RawSNP)
	TypeACI = "snp-aci" // the ACI attestation object (api.ACI)
	TypeTDX = "tdx"     // an Intel TDX quote (api.TDX)
	TypeMAA = "maa"     // an Azure Attestation token (api.MAA)
	// Azure confidential VM evidence (HCL report, vTPM quote and the
	// VCEK or TD quote), SEV-SNP and TDX flavours.
	TypeAzSNP = "az-snp-vtpm"
	TypeAzTDX = "az-tdx-vtpm"
)

// Error codes of this package. Every other failure carries the code of the
// format verifier that refused the evidence (snp's REPORT_MALFORMED,
// CERT_CHAIN_INVALID, ...; uvm's UVM_MALFORMED, ...).
const (
	// CodeSimulatedNotTrusted: the evidence chains to a root that is not
	// AMD's (the simulated TEE's) and Config.Simulated is not set.
	CodeSimulatedNotTrusted = "SIMULATED_TEE_NOT_TRUSTED"
	// CodeInternal: a failure that is not the evidence's fault.
	CodeInternal = snp.CodeInternal
)

// ErrSimulatedNotTrusted is the cause of a [CodeSimulatedNotTrusted] error.
var ErrSimulatedNotTrusted = errors.New("the evidence chains to a simulated TEE, which this server does not trust")

// Error is evidence that did not verify: the stable code of the check that
// failed and its cause, whose message says what was expected and found
// (reports and certificates are public; no secret is ever in it).
type Error struct {
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Code + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Code returns the code of the first [*Error] in err's tree, "" for nil and
// [CodeInternal] for any other error.
func Code(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func snpError(err error) *Error { return &Error{Code: snp.Code(err), Err: err} }

func uvmError(err error) *Error {
	code := uvm.Code(err)
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Err: err}
}

// Config configures a [Verifier].
type Config struct {
	// SNP configures the SEV-SNP report verifier: the clock certificates
	// are checked at, the highest VMPL, and roots trusted besides AMD's
	// (the simulated TEE's).
	SNP snp.Options
	// UVM configures the UVM endorsement verifier. An empty Trusted means
	// uvm.DefaultTrusted().
	UVM uvm.Options
	// SimulatedEndorsers are UVM endorsers of the simulated TEE: trusted
	// besides UVM.Trusted (or its default), and marked on the evidence they
	// endorse (Evidence.UVMSimulated).
	SimulatedEndorsers []uvm.Endorser
	// TDX configures the TDX quote verifier: roots trusted besides Intel's
	// (the simulated TEE's). A nil TDX.Now means SNP.Now.
	TDX tdx.Options
	// MAA lists the trusted Azure Attestation instances (none: "maa"
	// evidence is refused). A nil MAA.Now means SNP.Now.
	MAA maa.Options
	// Simulated permits evidence whose SNP chain ends at one of SNP.Roots
	// (or whose PCK chain at one of TDX.Roots) rather than a pinned AMD
	// (Intel) root. Only ever set when the operator asked for it explicitly.
	Simulated bool
}

// Verifier verifies attestation objects. It is safe for concurrent use.
type Verifier struct {
	snp       *snp.Verifier
	uvm       *uvm.Verifier
	tdx       *tdx.Verifier
	maa       maaHolder // the MAA verifier in use (maa_follow.go)
	simTDX    bool      // TDX roots besides Intel's are trusted
	simulated bool
	trusted   []uvm.Endorser // every UVM endorser trusted, for Trust
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	sv, err := snp.New(cfg.SNP)
	if err != nil {
		return nil, err
	}
	uo := cfg.UVM
	uo.Simulated = append(slices.Clip(uo.Simulated), cfg.SimulatedEndorsers...)
	uv, err := uvm.New(uo)
	if err != nil {
		return nil, err
	}
	trusted := uo.Trusted
	if len(trusted) == 0 {
		trusted = uvm.DefaultTrusted()
	}
	to, mo := cfg.TDX, cfg.MAA
	if to.Now == nil {
		to.Now = cfg.SNP.Now
	}
	if mo.Now == nil {
		mo.Now = cfg.SNP.Now
	}
	// Remote MAA key sets that cannot be fetched now are retried later.
	mv, err := maa.New(context.Background(), mo)
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		snp: sv, uvm: uv, tdx: tdx.New(to), simTDX: len(to.Roots) > 0, simulated: cfg.Simulated,
		trusted: slices.Concat(trusted, uo.Simulated),
	}
	v.maa.init(mv, mo)
	return v, nil
}

func (v *Verifier) maaRoots() []string {
	var out []string
	for _, iss := range v.maa.get().Issuers() {
		out = append(out, "MAA instance "+iss)
	}
	return out
}

// Close stops the background refreshes of MAA instances' keys.
func (v *Verifier) Close() { v.maa.close() }

// Evidence is verified evidence: its claims, and what a release records.
type Evidence struct {
	Type string // one of the Type* constants
	// Simulated is true when any part of the evidence is simulated: the
	// SNP chain ends at a root that is not a pinned AMD root (the simulated
	// TEE's), or the UVM endorsement comes from one of
	// Config.SimulatedEndorsers (UVMSimulated). A real AMD-signed report
	// with a simulated UVM endorsement proves nothing about its UVM.
	Simulated bool
	// UVMSimulated is true when the UVM endorsement comes from one of
	// Config.SimulatedEndorsers.
	UVMSimulated bool
	// Claims are the claims a release policy may name: the report's and,
	// for TypeACI, the UVM endorsement's.
	Claims      map[string]any
	ReportData  []byte // 64 bytes
	Measurement []byte // 48 bytes: MEASUREMENT, or a TD's MRTD
	HostData    []byte // 32 bytes; none for TypeTDX
	// ReportSHA256 is SHA-256 of the report (of the signed quote for
	// TypeTDX).
	ReportSHA256 [32]byte
	// Signer is "VCEK" or "VLEK"; "PCK" for TypeTDX; the MAA instance
	// (its issuer) for TypeMAA.
	Signer      string
	ProductLine string // "Milan", "Genoa" or "Turin"; "TDX" for TypeTDX; "MAA" for TypeMAA
	// UVMSigningTime is the UVM endorsement's signing time (TypeACI only).
	UVMSigningTime time.Time
}

// Verify verifies an attestation object of any supported format and
// returns its evidence. Errors are [*Error] with the code of the failed
// check. It does not apply any release policy.
func (v *Verifier) Verify(ctx context.Context, raw []byte) (*Evidence, error) {
	ev, err := v.verify(ctx, raw, false)
	if err != nil {
		return nil, err // partial evidence is for InspectUnpinned only
	}
	return ev, nil
}

// InspectUnpinned verifies raw as Verify does, for `tkms attest inspect`,
// with two differences: evidence that chains to a root that is not AMD's
// is not refused (Evidence.Simulated says so), and when a later step fails
// (the UVM endorsement) the evidence of the steps that passed is returned
// with the error, so that a denied release can be explained. A caller must
// not act on evidence returned with an error.
func (v *Verifier) InspectUnpinned(ctx context.Context, raw []byte) (*Evidence, error) {
	return v.verify(ctx, raw, true)
}

func (v *Verifier) verify(ctx context.Context, raw []byte, inspect bool) (*Evidence, error) {
	f := detect(raw)
	ev := &Evidence{Type: f.typ}
	err := f.verify(ctx, v, raw, ev, inspect)
	typeClaim(ev)
	return ev, err
}

// typeClaim names the evidence's type in its claims: every format's claims
// do, so that a release policy admits evidence other than ACI only by
// naming it (policy.Admit), whichever verifier produced the claims.
func typeClaim(ev *Evidence) {
	if ev.Claims != nil {
		ev.Claims[policy.ClaimEvidenceType] = ev.Type
	}
}

// Type returns the evidence type of an attestation object, as Verify tells
// it apart (without verifying anything).
func Type(raw []byte) string { return detect(raw).typ }

// checkSimulated refuses evidence chained to a root that is not pinned,
// unless the verifier trusts the simulated TEE (or inspects).
func (v *Verifier) checkSimulated(res *snp.Result, inspect bool) error {
	return v.checkPinned(res.Pinned, inspect)
}

// checkPinned refuses evidence whose chain does not end at a pinned root,
// unless the verifier trusts the simulated TEE (or inspects).
func (v *Verifier) checkPinned(pinned, inspect bool) error {
	if !pinned && !v.simulated && !inspect {
		return &Error{Code: CodeSimulatedNotTrusted, Err: ErrSimulatedNotTrusted}
	}
	return nil
}

// setReport fills ev from a verified report. The claims are the report's;
// verify adds the evidence type (policy.ClaimEvidenceType), which a release
// policy must name to admit evidence other than ACI.
func setReport(ev *Evidence, res *snp.Result) {
	ev.Simulated = !res.Pinned
	ev.Claims = make(map[string]any, len(res.Claims)+5)
	for k, c := range res.Claims {
		ev.Claims[k] = c
	}
	ev.ReportData, ev.Measurement, ev.HostData = res.ReportData, res.Measurement, res.HostData
	ev.ReportSHA256, ev.Signer, ev.ProductLine = res.ReportSHA256, res.Signer, res.ProductLine
}

// Trust describes what a verifier accepts as evidence, for
// GET /v1/attestation: an auditor or operator checks there whether a
// simulated TEE is trusted.
type Trust struct {
	EvidenceTypes []string       `json:"evidence_types"`
	AMDRoots      []string       `json:"amd_roots"` // pinned product lines
	SimulatedTEE  bool           `json:"simulated_tee_trusted"`
	UVMEndorsers  []uvm.Endorser `json:"uvm_endorsers"`
	// Formats says, per evidence type, what its evidence must chain to.
	Formats []FormatTrust `json:"formats"`
}

// FormatTrust is what one evidence type is verified against.
type FormatTrust struct {
	Type string `json:"type"`
	// Roots name the pinned roots the evidence must chain to.
	Roots []string `json:"roots"`
	// Simulated is true when evidence of the type from the simulated TEE
	// is accepted too.
	Simulated bool `json:"simulated_tee_trusted"`
	// Refused lists what is refused even when authentic.
	Refused []string `json:"refused,omitempty"`
}

// Trust returns what the verifier accepts.
func (v *Verifier) Trust() Trust {
	amd := []string{"AMD ARK Milan", "AMD ARK Genoa", "AMD ARK Turin"}
	intel := tdx.IntelRoot()
	tdxRoots := []string{fmt.Sprintf("%s (SHA-256 %x)", intel.Subject.CommonName, sha256.Sum256(intel.Raw))}
	return Trust{
		EvidenceTypes: []string{TypeACI, TypeSNP, TypeTDX, TypeMAA, TypeAzSNP, TypeAzTDX},
		AMDRoots:      []string{"Milan", "Genoa", "Turin"},
		SimulatedTEE:  v.simulated,
		UVMEndorsers:  slices.Clone(v.trusted),
		Formats: []FormatTrust{
			{Type: TypeACI, Roots: amd, Simulated: v.simulated, Refused: []string{"debug guest policy", "migration agent", "UVM endorsement not from a trusted (did, feed)"}},
			{Type: TypeSNP, Roots: amd, Simulated: v.simulated, Refused: []string{"debug guest policy", "migration agent"}},
			{Type: TypeTDX, Roots: tdxRoots,
				Simulated: v.simulated && v.simTDX, Refused: []string{"debug TD (TD_ATTRIBUTES bit 0)", "quote versions other than 4"}},
			{Type: TypeMAA, Roots: v.maaRoots(), Simulated: v.simulated && v.maa.get().HasSimulated(), Refused: []string{"tokens of a debuggable TEE"}},
			{Type: TypeAzSNP, Roots: amd, Simulated: v.simulated, Refused: []string{"debug guest policy", "migration agent", "a vTPM quote not bound to the report"}},
			{Type: TypeAzTDX, Roots: tdxRoots, Simulated: v.simulated && v.simTDX, Refused: []string{"debug TD (TD_ATTRIBUTES bit 0)", "a vTPM quote not bound to the quote"}},
		},
	}
}
