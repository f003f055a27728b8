// Package snp verifies AMD SEV-SNP attestation reports offline, as spec/attestation.md
// ("SEV-SNP, ACI bundle" steps 1-5 and 7, "SEV-SNP, raw report") describes: the VCEK or VLEK
// must chain to AMD roots pinned in this package (or to roots the caller adds explicitly), the
// report signature must verify, REPORTED_TCB and CHIP_ID must match the certificate, and the
// guest policy must forbid debugging and migration agents. The result carries the report's
// fields and the claims of spec/azure-compat.md "Claims produced for policies".
//
// Authenticity is checked with go-sev-guest's verify package and the guest policy with its
// validate package, verify first. Certificates are never fetched: the caller supplies the
// VCEK/VLEK, and ASK/ARK it sends are ignored. The UVM endorsement of an ACI bundle is not checked
// here (see internal/attest/uvm).
package snp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// Options configure a [Verifier]. The zero value is the production setting: AMD's pinned roots
// only, VMPL 0, the system clock.
type Options struct {
	// Now returns the time at which certificates must be valid. nil means time.Now. VLEK
	// certificates last one year, so tests of captured evidence pin it.
	Now func() time.Time
	// MaxVMPL is the highest VMPL a report may come from (0..3). ACI reports are VMPL 0.
	MaxVMPL int
	// Roots are trusted in addition to the pinned AMD roots, for the same product line. This is
	// how the simulated TEE's fake ARK/ASK enter: pass them only when the operator explicitly
	// asked to trust simulated evidence (tkms dev, or an explicit flag), never by default.
	// Results chained to one of them have Result.Pinned false.
	Roots []Root
	// CacheSize bounds the number of verified certificate chains kept (by SHA-256 of the
	// VCEK/VLEK DER). 0 means 1024; negative disables the cache.
	CacheSize int
}

// Verifier verifies SNP reports. It is safe for concurrent use.
type Verifier struct {
	now     func() time.Time
	maxVMPL int
	roots   map[string][]*trust.AMDRootCerts // product line -> pinned roots first, then extra ones
	pinned  map[*trust.AMDRootCerts]bool
	cache   *chainCache
}

// New returns a Verifier trusting the pinned AMD roots and opts.Roots.
func New(opts Options) (*Verifier, error) {
	if opts.MaxVMPL < 0 || opts.MaxVMPL > 3 {
		return nil, fmt.Errorf("snp: MaxVMPL %d out of range 0..3", opts.MaxVMPL)
	}
	v := &Verifier{
		now:     opts.Now,
		maxVMPL: opts.MaxVMPL,
		roots:   map[string][]*trust.AMDRootCerts{},
		pinned:  map[*trust.AMDRootCerts]bool{},
	}
	if v.now == nil {
		v.now = time.Now
	}
	pinned, err := pinnedRoots()
	if err != nil {
		return nil, err
	}
	for _, r := range pinned {
		a := r.amd()
		v.roots[r.ProductLine] = append(v.roots[r.ProductLine], a)
		v.pinned[a] = true
	}
	for _, r := range opts.Roots {
		if err := r.check(); err != nil {
			return nil, err
		}
		v.roots[r.ProductLine] = append(v.roots[r.ProductLine], r.amd())
	}
	size := opts.CacheSize
	if size == 0 {
		size = 1024
	}
	if size > 0 {
		v.cache = &chainCache{max: size, m: map[cacheKey]*chainEntry{}}
	}
	return v, nil
}

// VerifyACI verifies the SNP part of an ACI bundle: report, endorsement key and, when present,
// endorsed_tcb. It does not verify b.UVMEndorsements.
func (v *Verifier) VerifyACI(ctx context.Context, b *ACIBundle) (*Result, error) {
	if b == nil {
		return nil, errorf(CodeReportMalformed, nil, "no attestation bundle")
	}
	return v.verify(ctx, b.Report, b.EndorsementKey, nil, b.EndorsedTCB)
}

// VerifyReport verifies a raw report (exactly 1184 bytes) signed by the VCEK or VLEK whose DER
// (or PEM) certificate is endorsementKey.
func (v *Verifier) VerifyReport(ctx context.Context, report, endorsementKey []byte) (*Result, error) {
	return v.verify(ctx, report, endorsementKey, nil, "")
}

// VerifyRaw verifies the raw "snp" evidence form: a report with exactly one
// of its VCEK/VLEK certificate (DER or PEM) and an extended report's
// certificate table.
func (v *Verifier) VerifyRaw(ctx context.Context, report, endorsementKey, certTable []byte) (*Result, error) {
	switch {
	case len(endorsementKey) > 0 && len(certTable) == 0:
		return v.VerifyReport(ctx, report, endorsementKey)
	case len(certTable) > 0 && len(endorsementKey) == 0:
		return v.VerifyExtendedReport(ctx, report, certTable)
	}
	return nil, &Error{Code: CodeReportMalformed, Msg: "snp evidence needs exactly one of a VCEK/VLEK certificate and a certificate table"}
}

// VerifyExtendedReport verifies a report together with the GUID certificate table of the
// SNP_GET_EXT_REPORT ABI, which must hold the VCEK or VLEK. Other entries (ASK, ARK, ...) are
// ignored.
func (v *Verifier) VerifyExtendedReport(ctx context.Context, report, certTable []byte) (*Result, error) {
	if err := checkReportSize(report); err != nil {
		return nil, err
	}
	t, err := ParseCertTable(certTable)
	var coded *Error
	if errors.As(err, &coded) {
		return nil, err
	}
	if err != nil {
		return nil, errorf(CodeReportMalformed, err, "certificate table")
	}
	return v.verify(ctx, report, nil, t.Proto(), "")
}

// Result is what a verified report says. All byte slices are copies owned by the Result.
type Result struct {
	Version         uint32
	GuestSVN        uint32
	Policy          uint64 // GUEST_POLICY bits
	FamilyID        []byte // 16 bytes
	ImageID         []byte // 16 bytes
	VMPL            uint32
	ReportData      []byte // 64 bytes
	Measurement     []byte // 48 bytes
	HostData        []byte // 32 bytes
	IDKeyDigest     []byte // 48 bytes
	AuthorKeyDigest []byte // 48 bytes
	ReportID        []byte // 32 bytes
	ChipID          []byte // 64 bytes, all zero when masked
	ReportedTCB     uint64 // REPORTED_TCB as the little-endian u64 of the report
	TCB             TCB    // REPORTED_TCB's components

	Debug            bool
	MigrationAllowed bool
	SMTAllowed       bool

	// Signer is "VCEK" or "VLEK".
	Signer string
	// ProductLine is "Milan", "Genoa" or "Turin", as decided by the certificate chain.
	ProductLine string
	// Pinned is true when the chain ends at a pinned AMD root, false when at an Options.Roots
	// root (simulated evidence).
	Pinned bool
	// ReportSHA256 is the SHA-256 of the report's signed part (bytes 0x000..0x29F,
	// abi.SignedComponent), the report's identity in the ledger. The signature is left out: an
	// ECDSA signature (r, s) verifies as (r, n-s) too, so a hash over all 1184 bytes would give
	// one report two identities.
	ReportSHA256 [32]byte

	// Claims are the x-ms-* claims derived from the report (see [Claims]).
	Claims Claims
}

// TCB holds the security patch levels of a TCB_VERSION (Milan/Genoa layout).
type TCB struct {
	Bootloader, TEE, SNP, Microcode uint8
}

func (v *Verifier) verify(ctx context.Context, raw, ekDER []byte, table *spb.CertificateChain, endorsedTCB string) (*Result, error) {
	if err := checkReportSize(raw); err != nil {
		return nil, err
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, errorf(CodeReportMalformed, err, "report")
	}
	// Verification below hands go-sev-guest the proto, which it serialises again; make sure that
	// is the byte string the caller sent.
	if again, err := abi.ReportToAbiBytes(report); err != nil || !bytes.Equal(again, raw) {
		return nil, errorf(CodeReportMalformed, err, "report does not round-trip through its ABI form")
	}
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, errorf(CodeReportMalformed, err, "report")
	}
	if algo := abi.SignatureAlgo(raw); algo != abi.SignEcdsaP384Sha384 {
		return nil, errorf(CodeReportMalformed, nil, "report signature algorithm is %d, want %d (ECDSA P-384 SHA-384)", algo, abi.SignEcdsaP384Sha384)
	}
	info, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return nil, errorf(CodeReportMalformed, err, "report SIGNER_INFO")
	}
	if info.SigningKey != abi.VcekReportSigner && info.SigningKey != abi.VlekReportSigner {
		return nil, errorf(CodeReportMalformed, nil, "report signing key is %v, want VCEK or VLEK", info.SigningKey)
	}
	chain := &spb.CertificateChain{}
	if table != nil {
		switch info.SigningKey {
		case abi.VcekReportSigner:
			ekDER = table.GetVcekCert()
		case abi.VlekReportSigner:
			ekDER = table.GetVlekCert()
		}
	}
	if len(ekDER) == 0 {
		return nil, errorf(CodeCertChainInvalid, nil, "no %v certificate for a %v-signed report", info.SigningKey, info.SigningKey)
	}
	if d, err := decodePEMCerts(ekDER); err == nil {
		ekDER = d[0] // accept a PEM certificate too
	}
	switch info.SigningKey {
	case abi.VcekReportSigner:
		chain.VcekCert = ekDER
	case abi.VlekReportSigner:
		chain.VlekCert = ekDER
	}
	att := &spb.Attestation{Report: report, CertificateChain: chain}
	now := v.now()

	// Authenticity (spec steps 2-4).
	ek, err := v.endorsementKey(ctx, att, raw, info.SigningKey, now)
	if err != nil {
		return nil, err
	}
	if endorsedTCB != "" {
		if err := checkEndorsedTCB(endorsedTCB, report.GetReportedTcb(), raw); err != nil {
			return nil, err
		}
	}

	// Guest policy (spec step 5).
	if err := v.validate(att, info.SigningKey); err != nil {
		return nil, err
	}
	res := newResult(report, raw)
	res.Signer = info.SigningKey.String()
	res.ProductLine = ek.productLine
	res.Claims[ClaimProductLine] = ek.productLine
	res.Pinned = ek.pinned
	return res, nil
}

// endorsementKey returns the verified VCEK/VLEK of att after checking, in this order: that it
// chains to a trusted root (cached), that REPORTED_TCB and CHIP_ID match it, and that the report
// signature verifies under it (every time).
func (v *Verifier) endorsementKey(ctx context.Context, att *spb.Attestation, raw []byte, signer abi.ReportSigner, now time.Time) (*chainEntry, error) {
	der := att.GetCertificateChain().GetVcekCert()
	if signer == abi.VlekReportSigner {
		der = att.GetCertificateChain().GetVlekCert()
	}
	var knownProductLine string
	if fms := att.GetReport().GetCpuid1EaxFms(); fms != 0 {
		knownProductLine = kds.ProductLineFromFms(fms)
	}
	key := cacheKey{der: sha256.Sum256(der), signer: signer, productLine: knownProductLine}
	if e := v.cache.get(key, now); e != nil {
		if err := checkTCBAndChip(att.GetReport(), e.exts, signer); err != nil {
			return nil, err
		}
		if err := verify.SnpReportSignature(raw, e.cert); err != nil {
			return nil, signatureError(signer, err)
		}
		return e, nil
	}

	e, err := v.verifyChain(der, signer, knownProductLine, now)
	if err != nil {
		return nil, err
	}
	if err := checkTCBAndChip(att.GetReport(), e.exts, signer); err != nil {
		return nil, err
	}
	// The chain verified above; now the whole of go-sev-guest's verification (its stricter
	// checks of the certificate's names and algorithms, and the report signature) against the
	// one root that matched.
	opts := &verify.Options{
		DisableCertFetching: true,
		Now:                 now,
		TrustedRoots:        map[string][]*trust.AMDRootCerts{e.productLine: {e.root}},
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		if sigErr := verify.SnpReportSignature(raw, e.cert); sigErr != nil {
			return nil, signatureError(signer, sigErr)
		}
		return nil, errorf(CodeCertChainInvalid, err, "%v certificate rejected", signer)
	}
	v.cache.put(key, e)
	return e, nil
}

func signatureError(signer abi.ReportSigner, cause error) error {
	return errorf(CodeReportSignatureInvalid, cause, "report signature does not verify under the %v", signer)
}

// verifyChain parses the VCEK/VLEK and finds the trusted root it chains to at now.
func (v *Verifier) verifyChain(der []byte, signer abi.ReportSigner, knownProductLine string, now time.Time) (*chainEntry, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errorf(CodeCertChainInvalid, err, "cannot parse the %v certificate", signer)
	}
	exts, err := kds.CertificateExtensions(cert, signer)
	if err != nil {
		return nil, errorf(CodeCertChainInvalid, err, "%v certificate lacks valid AMD extensions", signer)
	}
	productLine := knownProductLine
	if productLine == "" {
		// Report version 2 has no CPUID: take the product line from the certificate.
		product, err := kds.ParseProductName(exts.ProductName, signer)
		if err != nil {
			return nil, errorf(CodeCertChainInvalid, err, "%v certificate product name %q", signer, exts.ProductName)
		}
		productLine = kds.ProductLine(product)
	}
	roots := v.roots[productLine]
	if len(roots) == 0 {
		return nil, errorf(CodeCertChainInvalid, nil, "no trusted AMD roots for product line %q", productLine)
	}
	var errs []error
	for _, root := range roots {
		vo := root.X509Options(now, signer)
		if vo == nil {
			continue
		}
		chains, err := cert.Verify(*vo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e := &chainEntry{cert: cert, exts: exts, productLine: productLine, root: root, pinned: v.pinned[root]}
		e.notBefore, e.notAfter = validity(chains[0])
		return e, nil
	}
	return nil, errorf(CodeCertChainInvalid, errors.Join(errs...),
		"%v certificate (issuer %q, valid %s..%s) does not chain to a trusted AMD %s root at %s",
		signer, cert.Issuer.CommonName, cert.NotBefore.UTC().Format(time.DateOnly),
		cert.NotAfter.UTC().Format(time.DateOnly), productLine, now.UTC().Format(time.RFC3339))
}

// validity is the intersection of the validity periods of a chain's certificates.
func validity(chain []*x509.Certificate) (notBefore, notAfter time.Time) {
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(notBefore) {
			notBefore = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return notBefore, notAfter
}

// checkTCBAndChip implements spec step 4 against the certificate's extensions: an unmasked CHIP_ID
// must equal a VCEK's HWID (checked first: a VCEK of another chip is the likelier mistake), and
// REPORTED_TCB must equal the certificate's TCB. These compare report fields with the
// certificate before the signature is checked; the signature is checked right after, so a
// tampered field fails either way, only the code differs.
func checkTCBAndChip(r *spb.Report, exts *kds.Extensions, signer abi.ReportSigner) error {
	if signer == abi.VcekReportSigner && !allZero(r.GetChipId()) && !bytes.Equal(r.GetChipId(), exts.HWID) {
		return errorf(CodeChipIDMismatch, nil, "CHIP_ID is %s, the VCEK's HWID is %s (a VCEK of another chip?)",
			hexPrefix(r.GetChipId()), hexPrefix(exts.HWID))
	}
	if got, want := r.GetReportedTcb(), uint64(exts.TCBVersion); got != want {
		return errorf(CodeTCBMismatch, nil, "REPORTED_TCB is %s, the %v certificate is for TCB %s",
			describeTCB(got), signer, describeTCB(want))
	}
	return nil
}

func describeTCB(t uint64) string {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(t))
	return fmt.Sprintf("0x%016x (bootloader %d, tee %d, snp %d, microcode %d)", t, p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl)
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// validate implements spec step 5 after verification: debug off, migration agent off, VMPL at
// most the maximum (all reported together), then go-sev-guest's validate with SMT allowed and
// provisional firmware permitted.
func (v *Verifier) validate(att *spb.Attestation, signer abi.ReportSigner) error {
	r := att.GetReport()
	pol, err := abi.ParseSnpPolicy(r.GetPolicy())
	if err != nil {
		return errorf(CodePolicyViolation, err, "guest policy 0x%x", r.GetPolicy())
	}
	var errs []error
	if pol.Debug {
		errs = append(errs, errorf(CodePolicyDebug, nil, "guest policy 0x%x allows debugging, want debug off", r.GetPolicy()))
	}
	if pol.MigrateMA {
		errs = append(errs, errorf(CodePolicyMigration, nil, "guest policy 0x%x allows a migration agent, want none", r.GetPolicy()))
	}
	if r.GetVmpl() > uint32(v.maxVMPL) {
		errs = append(errs, errorf(CodeVMPLTooHigh, nil, "report VMPL is %d, want at most %d", r.GetVmpl(), v.maxVMPL))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	opts := &validate.Options{
		GuestPolicy:               abi.SnpPolicy{SMT: true},
		PermitProvisionalFirmware: true,
	}
	if err := validate.SnpAttestation(att, opts); err != nil {
		return errorf(CodePolicyViolation, err, "%v-signed report fails validation", signer)
	}
	return nil
}

// chainCache keeps verified VCEK/VLEK chains. An entry is used only within the validity period
// of its chain, so a pinned clock in the past or future still sees expiry.
type chainCache struct {
	mu  sync.Mutex
	max int
	m   map[cacheKey]*chainEntry
}

type cacheKey struct {
	der         [32]byte // SHA-256 of the VCEK/VLEK DER
	signer      abi.ReportSigner
	productLine string // from the report's CPUID, "" for version 2 reports
}

type chainEntry struct {
	cert                *x509.Certificate
	exts                *kds.Extensions
	productLine         string
	root                *trust.AMDRootCerts
	pinned              bool
	notBefore, notAfter time.Time
}

func (c *chainCache) get(k cacheKey, now time.Time) *chainEntry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	e := c.m[k]
	c.mu.Unlock()
	if e == nil || now.Before(e.notBefore) || now.After(e.notAfter) {
		return nil
	}
	return e
}

func (c *chainCache) put(k cacheKey, e *chainEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[k] = e
}
