// Package tdx verifies Intel TDX quotes (version 4, ECDSA-256 attestation
// key) offline with github.com/google/go-tdx-guest: the quote's signature
// by its attestation key, the QE report that binds that key, signed by the
// PCK certificate, and the PCK chain (leaf, Intel SGX PCK Platform or
// Processor CA, root) carried in the quote, which must end at the pinned
// Intel SGX Root CA (or at a root given in [Options.Roots]: the simulated
// TEE's, internal/attest/simtdx) at the verification time. No network is
// used.
//
// Beyond what the library checks, it refuses a debug TD (TD_ATTRIBUTES
// bit 0, which neither go-tdx-guest's verify nor validate refuses) and
// quotes of other versions (v5, TDX 1.5, which the library cannot parse)
// with their own codes. Bytes after the signed quote are not signed and
// are ignored. With Intel's collateral (TCB info, QE identity, CRLs, as
// PCS serves them; carried in the request or configured per platform) the
// TCB status is evaluated offline too and must be UpToDate; without, the
// claim [ClaimTCBStatus] says "NotEvaluated".
//
// The claims use the names Microsoft Azure Attestation gives TDX claims
// (tdx_mrtd, tdx_rtmr0, ...), so that a release policy can name them.
package tdx

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/tkms-dev/tkms/internal/attest/attesterr"
)

// Stable error codes.
const (
	// CodeQuoteMalformed: the bytes are not a well-formed TDX quote v4
	// (size, header, TEE type, signed data, certification data).
	CodeQuoteMalformed = "TDX_QUOTE_MALFORMED"
	// CodeVersionUnsupported: a quote version other than 4 (v5 of TDX 1.5
	// among them), which this verifier cannot check.
	CodeVersionUnsupported = "TDX_QUOTE_VERSION_UNSUPPORTED"
	// CodePCKChainInvalid: the PCK certificate chain in the quote is
	// malformed, expired, not Intel-shaped, or does not end at a trusted
	// root at the verification time.
	CodePCKChainInvalid = "TDX_PCK_CHAIN_INVALID"
	// CodeQuoteSignatureInvalid: the header and TD quote body do not
	// verify under the quote's attestation key.
	CodeQuoteSignatureInvalid = "TDX_QUOTE_SIGNATURE_INVALID"
	// CodeQEReportInvalid: the QE report is not signed by the PCK key, or
	// does not bind the attestation key and QE authentication data.
	CodeQEReportInvalid = "TDX_QE_REPORT_INVALID"
	// CodeDebug: the TD is debuggable (TD_ATTRIBUTES bit 0).
	CodeDebug = "TDX_DEBUG"
	// CodeInternal is what [Code] returns for an error that is not an
	// [*Error]: a bug, not the evidence's fault.
	CodeInternal = attesterr.CodeInternal
)

// Claim names (the names Azure Attestation uses for TDX evidence).
const (
	ClaimAttestationType    = "x-ms-attestation-type" // "tdxvm"
	ClaimVersion            = "x-ms-ver"              // quote version, "4"
	ClaimMRTD               = "tdx_mrtd"
	ClaimRTMR0              = "tdx_rtmr0"
	ClaimRTMR1              = "tdx_rtmr1"
	ClaimRTMR2              = "tdx_rtmr2"
	ClaimRTMR3              = "tdx_rtmr3"
	ClaimMRConfigID         = "tdx_mrconfigid"
	ClaimMROwner            = "tdx_mrowner"
	ClaimMROwnerConfig      = "tdx_mrownerconfig"
	ClaimMRSeam             = "tdx_mrseam"
	ClaimMRSignerSeam       = "tdx_mrsignerseam"
	ClaimReportData         = "tdx_report_data"
	ClaimTDAttributes       = "tdx_td_attributes" // 16 hex digits, the u64 as stored (little-endian)
	ClaimTDAttributesDebug  = "tdx_td_attributes_debug"
	ClaimSeamAttributes     = "tdx_seam_attributes"
	ClaimXFAM               = "tdx_xfam"
	ClaimTEETCBSVN          = "tdx_tee_tcb_svn" // 32 hex digits
	ClaimFMSPC              = "tdx_fmspc"       // 12 hex digits, from the PCK certificate
	ClaimPCESVN             = "tdx_pce_svn"     // number
	ClaimQESVN              = "tdx_qe_svn"      // number
	ClaimTCBStatus          = "tdx_tcb_status"  // "UpToDate" with collateral, else "NotEvaluated"
	AttestationTypeTDX      = "tdxvm"
	TCBStatusNotEvaluated   = "NotEvaluated"
	quoteVersion4           = 4
	quoteSignedDataSizeEnd  = 0x27C
	tdAttributesDebugBit    = 0x01
	certificationDataQEType = 6
)

// Error is a verification failure with a stable code (attesterr.Error).
type Error = attesterr.Error

// Code returns the code of the first [*Error] in err's tree, "" for nil
// and [CodeInternal] for any other error.
func Code(err error) string { return attesterr.Code(err) }

func errorf(code string, cause error, format string, a ...any) *Error {
	return attesterr.New("tdx", code, cause, format, a...)
}

// Options configure a [Verifier].
type Options struct {
	// Now is the clock certificates are checked at; nil means time.Now.
	Now func() time.Time
	// Roots are root certificates trusted besides Intel's pinned SGX Root
	// CA (the simulated TEE's). Evidence chained to one of them verifies
	// with Result.Pinned false.
	Roots []*x509.Certificate
	// Collateral is Intel PCS collateral configured per platform (one
	// per FMSPC), used for quotes that carry none.
	Collateral []Collateral
}

// intelRootPEM is Intel's SGX Root CA (as go-tdx-guest v0.3.1 embeds it),
// valid until 2049: the pinned root of every real PCK chain.
//
//go:embed intel_sgx_root.pem
var intelRootPEM []byte

// IntelRoot returns the pinned Intel SGX Root CA certificate.
func IntelRoot() *x509.Certificate {
	b, _ := pem.Decode(intelRootPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("tdx: the embedded Intel root does not parse: " + err.Error())
	}
	return c
}

// Verifier verifies TDX quotes. It is safe for concurrent use.
type Verifier struct {
	now        func() time.Time
	intel      *x509.CertPool
	roots      []*x509.Certificate
	collateral map[string]*Collateral // by FMSPC
}

// New returns a Verifier for opts.
func New(opts Options) *Verifier {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	intel := x509.NewCertPool()
	intel.AddCert(IntelRoot())
	v := &Verifier{now: now, intel: intel, roots: append([]*x509.Certificate(nil), opts.Roots...), collateral: map[string]*Collateral{}}
	for i := range opts.Collateral {
		c := opts.Collateral[i]
		v.collateral[fmspcOf(&c)] = &c
	}
	return v
}

// Result is a verified quote.
type Result struct {
	// Pinned is true when the PCK chain ends at Intel's pinned root, false
	// when at one of Options.Roots.
	Pinned bool
	// Claims are the policy claims of the quote (see the Claim constants):
	// hex strings (lowercase), bools and int64 numbers.
	Claims map[string]any
	// ReportData is REPORT_DATA (64 bytes); MRTD the TD's measurement (48).
	ReportData, MRTD []byte
	// QuoteSHA256 is SHA-256 over the signed quote (without trailing
	// unsigned bytes).
	QuoteSHA256 [32]byte
	// FMSPC is the platform's FMSPC from the PCK certificate (hex).
	FMSPC string
	// Debug is TD_ATTRIBUTES bit 0 (set only on results returned with a
	// CodeDebug error, for inspection).
	Debug bool
}

// Version returns the version field of a quote (its first two bytes,
// little-endian), or -1 if it is shorter than that.
func Version(quote []byte) int {
	if len(quote) < 2 {
		return -1
	}
	return int(binary.LittleEndian.Uint16(quote))
}

// Verify verifies a TDX quote and returns its claims, with the configured
// collateral of its platform if any (see VerifyCollateral).
func (v *Verifier) Verify(quote []byte) (*Result, error) { return v.VerifyCollateral(quote, nil) }

// VerifyCollateral verifies a TDX quote and returns its claims. With
// collateral (c, else the configured collateral of the quote's FMSPC), the
// quote's TCB status is evaluated too: [ClaimTCBStatus] is "UpToDate", or
// the quote is refused. A debug TD is refused with [CodeDebug] and its
// result (the quote is authentic), for inspection; every other failure
// returns a nil result.
func (v *Verifier) VerifyCollateral(quote []byte, c *Collateral) (*Result, error) {
	if ver := Version(quote); ver != quoteVersion4 {
		if ver < 0 {
			return nil, errorf(CodeQuoteMalformed, nil, "the quote is %d bytes, too short for a header", len(quote))
		}
		return nil, errorf(CodeVersionUnsupported, nil, "quote version %d is not supported (want 4)", ver)
	}
	parsed, err := quoteToProto(quote)
	if err != nil {
		return nil, errorf(CodeQuoteMalformed, err, "the quote does not parse as a TDX quote v4")
	}
	q, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, errorf(CodeVersionUnsupported, nil, "quote of type %T is not supported", parsed)
	}
	if t := q.GetHeader().GetTeeType(); t != abi.TeeTDX {
		return nil, errorf(CodeQuoteMalformed, nil, "TEE type is 0x%x, want 0x%x (TDX)", t, abi.TeeTDX)
	}
	if t := q.GetSignedData().GetCertificationData().GetCertificateDataType(); t != certificationDataQEType {
		return nil, errorf(CodeQuoteMalformed, nil, "certification data type is %d, want %d (QE report certification data)", t, certificationDataQEType)
	}
	chain, err := pckChain(q)
	if err != nil {
		return nil, err
	}
	now := v.now()
	opts := &verify.Options{Now: now, TrustedRoots: v.intel} // TdxQuote writes into its options: one per call
	pinned := true
	if r := v.simulatedRoot(chain[len(chain)-1]); r != nil {
		pool := x509.NewCertPool()
		pool.AddCert(r)
		opts.TrustedRoots, pinned = pool, false
	}
	if err := verify.TdxQuote(q, opts); err != nil {
		return nil, classify(err, chain[0], now)
	}
	ext, err := pcs.PckCertificateExtensions(chain[0])
	if err != nil { // checked by TdxQuote already
		return nil, errorf(CodePCKChainInvalid, err, "the PCK certificate lacks Intel's SGX extensions")
	}
	if c == nil {
		c = v.collateralFor(ext)
	}
	status := TCBStatusNotEvaluated
	if c != nil {
		if !pinned {
			return nil, errorf(CodeCollateralInvalid, nil, "Intel collateral is for quotes chained to Intel's root, not the simulated TEE's")
		}
		if err := v.checkCollateral(q, c, now); err != nil {
			return nil, err
		}
		status = TCBStatusUpToDate
	}
	signed := quoteSignedDataSizeEnd + int(q.GetSignedDataSize())
	res := newResult(q, quote[:signed], ext.FMSPC)
	res.Pinned = pinned
	res.Claims[ClaimTCBStatus] = status
	if res.Debug {
		return res, errorf(CodeDebug, nil, "the TD is debuggable (TD_ATTRIBUTES %s has bit 0 set): its memory is readable by the host", hex.EncodeToString(q.GetTdQuoteBody().GetTdAttributes()))
	}
	return res, nil
}

// pckChain parses the quote's PEM PCK chain (leaf, intermediate, root), so
// that the root can be matched against the trusted ones and chain errors
// get their own code.
func pckChain(q *pb.QuoteV4) ([]*x509.Certificate, error) {
	rest := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, errorf(CodePCKChainInvalid, err, "certificate %d of the PCK chain does not parse", len(chain))
		}
		chain = append(chain, c)
	}
	if len(chain) != 3 {
		return nil, errorf(CodePCKChainInvalid, nil, "the PCK chain holds %d certificates, want 3 (PCK, PCK CA, root)", len(chain))
	}
	return chain, nil
}

// simulatedRoot returns the trusted extra root equal to root, if any.
func (v *Verifier) simulatedRoot(root *x509.Certificate) *x509.Certificate {
	for _, r := range v.roots {
		if bytes.Equal(r.Raw, root.Raw) {
			return r
		}
	}
	return nil
}

// classify maps a go-tdx-guest error to a code. The library wraps with
// %v, so its messages (stable across v0.3.x; tests pin them) are matched
// where no sentinel survives.
func classify(err error, pck *x509.Certificate, now time.Time) *Error {
	msg := err.Error()
	switch {
	case errors.Is(err, verify.ErrHashVerificationFail),
		strings.Contains(msg, "attestation key in the quote is invalid"),
		strings.Contains(msg, "QuoteV4's signature to DER"):
		return errorf(CodeQuoteSignatureInvalid, err, "the quote's signature does not verify under its attestation key")
	case strings.Contains(msg, "QE report signature"), strings.Contains(msg, "QE report's signature"):
		return errorf(CodeQEReportInvalid, err, "the QE report is not signed by the PCK certificate's key")
	case strings.Contains(msg, "QE report data"):
		return errorf(CodeQEReportInvalid, err, "the QE report does not bind the quote's attestation key")
	case strings.Contains(msg, "QuoteV4 invalid"):
		return errorf(CodeQuoteMalformed, err, "the quote is malformed")
	}
	if now.Before(pck.NotBefore) || now.After(pck.NotAfter) {
		return errorf(CodePCKChainInvalid, err, "the PCK certificate is valid %s..%s, not at %s",
			pck.NotBefore.UTC().Format(time.RFC3339), pck.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return errorf(CodePCKChainInvalid, err, "the PCK certificate chain does not verify to a trusted Intel SGX root")
}

func newResult(q *pb.QuoteV4, signed []byte, fmspc string) *Result {
	b := q.GetTdQuoteBody()
	h := q.GetHeader()
	attrs := b.GetTdAttributes()
	res := &Result{
		ReportData:  bytes.Clone(b.GetReportData()),
		MRTD:        bytes.Clone(b.GetMrTd()),
		QuoteSHA256: sha256.Sum256(signed),
		FMSPC:       fmspc,
		Debug:       len(attrs) > 0 && attrs[0]&tdAttributesDebugBit != 0,
	}
	rtmrs := b.GetRtmrs()
	rtmr := func(i int) string {
		if i < len(rtmrs) {
			return hex.EncodeToString(rtmrs[i])
		}
		return ""
	}
	res.Claims = map[string]any{
		ClaimAttestationType:   AttestationTypeTDX,
		ClaimVersion:           strconv.FormatUint(uint64(h.GetVersion()), 10),
		ClaimMRTD:              hex.EncodeToString(b.GetMrTd()),
		ClaimRTMR0:             rtmr(0),
		ClaimRTMR1:             rtmr(1),
		ClaimRTMR2:             rtmr(2),
		ClaimRTMR3:             rtmr(3),
		ClaimMRConfigID:        hex.EncodeToString(b.GetMrConfigId()),
		ClaimMROwner:           hex.EncodeToString(b.GetMrOwner()),
		ClaimMROwnerConfig:     hex.EncodeToString(b.GetMrOwnerConfig()),
		ClaimMRSeam:            hex.EncodeToString(b.GetMrSeam()),
		ClaimMRSignerSeam:      hex.EncodeToString(b.GetMrSignerSeam()),
		ClaimReportData:        hex.EncodeToString(b.GetReportData()),
		ClaimTDAttributes:      hex.EncodeToString(attrs),
		ClaimTDAttributesDebug: res.Debug,
		ClaimSeamAttributes:    hex.EncodeToString(b.GetSeamAttributes()),
		ClaimXFAM:              hex.EncodeToString(b.GetXfam()),
		ClaimTEETCBSVN:         hex.EncodeToString(b.GetTeeTcbSvn()),
		ClaimFMSPC:             fmspc,
		ClaimPCESVN:            int64(le16(h.GetPceSvn())),
		ClaimQESVN:             int64(le16(h.GetQeSvn())),
		ClaimTCBStatus:         TCBStatusNotEvaluated,
	}
	return res
}

func le16(b []byte) uint16 {
	if len(b) < 2 {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

// quoteToProto is abi.QuoteToProto made safe for untrusted bytes:
// go-tdx-guest v0.3.1 slices the nested QE authentication data by lengths
// the quote declares without checking them against what is there, so a
// crafted quote panics inside the library (found by FuzzVerify; the input
// is testdata/fuzz/FuzzVerify/6e288452c2824464). Such a quote is malformed,
// and its panic becomes that error.
func quoteToProto(quote []byte) (parsed any, err error) {
	defer func() {
		if r := recover(); r != nil {
			parsed, err = nil, fmt.Errorf("go-tdx-guest could not parse the quote: %v", r)
		}
	}()
	return abi.QuoteToProto(quote)
}
