// Package uvm verifies ACI UVM endorsements: COSE_Sign1 messages (RFC 9052)
// in which Microsoft endorses the launch measurement and security version of a
// utility VM image, as described in docs/spec/attestation.md ("SEV-SNP, ACI
// bundle", step 6).
//
// An endorsement is authentic when its signature verifies with the leaf of its
// x5chain header (RFC 9360), the x5chain is a valid certification path at the
// endorsement's signing time, and its did:x509 issuer resolves against that
// path. It is allowed when its (issuer, feed) pair is trusted, its SVN is at
// least the configured minimum and its launch measurement equals the SNP
// report's MEASUREMENT.
package uvm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"
	"strconv"
	"sync"
	"time"

	cose "github.com/veraison/go-cose"
)

// Errors returned by [Verifier.Verify], each with the stable code that [Code]
// returns for it. Returned errors wrap one of these with details.
var (
	// ErrMalformed (UVM_MALFORMED): not a COSE_Sign1 endorsement we can read:
	// bad CBOR, missing or ill-typed headers, unsupported algorithm, bad
	// payload JSON.
	ErrMalformed = errors.New("uvm: malformed endorsement")
	// ErrSignatureInvalid (UVM_SIGNATURE_INVALID): the signature does not
	// verify with the leaf certificate's key.
	ErrSignatureInvalid = errors.New("uvm: endorsement signature invalid")
	// ErrChainInvalid (UVM_CHAIN_INVALID): x5chain is not a valid
	// certification path at the signing time, or x5t does not match its leaf.
	ErrChainInvalid = errors.New("uvm: endorsement certificate chain invalid")
	// ErrDIDMismatch (UVM_DID_MISMATCH): the did:x509 issuer is not of the
	// supported form or does not resolve against the certificate chain.
	ErrDIDMismatch = errors.New("uvm: endorsement issuer does not match its certificate chain")
	// ErrUntrusted (UVM_UNTRUSTED): the (issuer, feed) pair is not trusted.
	ErrUntrusted = errors.New("uvm: endorsement issuer and feed not trusted")
	// ErrMeasurementMismatch (UVM_MEASUREMENT_MISMATCH): the endorsed launch
	// measurement differs from the report's MEASUREMENT.
	ErrMeasurementMismatch = errors.New("uvm: launch measurement does not match the endorsement")
	// ErrSVNTooLow (UVM_SVN_TOO_LOW): the endorsed SVN is below the minimum.
	ErrSVNTooLow = errors.New("uvm: endorsement svn below minimum")
)

var codes = []struct {
	err  error
	code string
}{
	{ErrMalformed, "UVM_MALFORMED"},
	{ErrSignatureInvalid, "UVM_SIGNATURE_INVALID"},
	{ErrChainInvalid, "UVM_CHAIN_INVALID"},
	{ErrDIDMismatch, "UVM_DID_MISMATCH"},
	{ErrUntrusted, "UVM_UNTRUSTED"},
	{ErrMeasurementMismatch, "UVM_MEASUREMENT_MISMATCH"},
	{ErrSVNTooLow, "UVM_SVN_TOO_LOW"},
}

// Code returns the stable error code of an error returned by this package
// (for example "UVM_SIGNATURE_INVALID"), or "" when err is nil or not one of
// ours. When err joins several (an SVN and a measurement failure), the code of
// the first in the order listed under [ErrMalformed] ... [ErrSVNTooLow] wins.
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// Endorser is a trusted source of UVM endorsements: a did:x509 issuer and a
// feed name, both compared exactly.
type Endorser struct {
	DID  string
	Feed string
}

// DefaultTrusted returns the endorsers Azure trusts by default: Microsoft's
// ACI UVM feed and its Confidential AKS UVM feed, both issued under the
// "Microsoft Supply Chain RSA Root CA 2022".
func DefaultTrusted() []Endorser {
	return []Endorser{
		{
			DID:  "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.2",
			Feed: "ContainerPlat-AMD-UVM",
		},
		{
			DID:  "did:x509:0:sha256:I__iuL25oXEVFdTP_aBLx_eT1RPHbCQ_ECBQfYZpt9s::eku:1.3.6.1.4.1.311.76.59.1.5",
			Feed: "ConfAKS-AMD-UVM",
		},
	}
}

// Options configures a [Verifier].
type Options struct {
	// Trusted lists the accepted (issuer, feed) pairs. When empty,
	// DefaultTrusted() is used.
	Trusted []Endorser
	// MinSVN is the lowest accepted endorsement SVN (default 0).
	MinSVN uint64
	// Simulated lists endorsers trusted in addition to Trusted whose
	// endorsements are simulated (the simulated TEE's UVM key,
	// internal/attest/simsnp): their results have Result.Simulated set, so
	// that a release on them is marked simulated even when the SNP report
	// chains to AMD. Pass them only when the operator asked to trust
	// simulated evidence.
	Simulated []Endorser
}

// Validate reports whether every trusted DID is of the supported did:x509
// form and every feed is non-empty. An empty Trusted is valid: [New] then
// uses DefaultTrusted().
func (o Options) Validate() error {
	for _, e := range slices.Concat(o.Trusted, o.Simulated) {
		if _, err := parseDID(e.DID); err != nil {
			return fmt.Errorf("uvm: trusted endorser %q: %w", e.DID, err)
		}
		if e.Feed == "" {
			return fmt.Errorf("uvm: trusted endorser %q: empty feed", e.DID)
		}
	}
	return nil
}

// maxCached bounds the result cache. Only authentic endorsements from trusted
// issuers are cached, so in practice it holds a handful of entries.
const maxCached = 1024

// Verifier verifies UVM endorsements. It is safe for concurrent use.
type Verifier struct {
	trusted map[Endorser]bool // endorser -> simulated
	minSVN  uint64

	mu    sync.Mutex
	cache map[[sha256.Size]byte]*Result
}

// New returns a Verifier for opts.
func New(opts Options) (*Verifier, error) {
	if len(opts.Trusted) == 0 {
		opts.Trusted = DefaultTrusted()
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		trusted: make(map[Endorser]bool, len(opts.Trusted)),
		minSVN:  opts.MinSVN,
		cache:   make(map[[sha256.Size]byte]*Result),
	}
	for _, e := range opts.Trusted {
		v.trusted[e] = false
	}
	for _, e := range opts.Simulated {
		if _, dup := v.trusted[e]; dup {
			return nil, fmt.Errorf("uvm: endorser %q, feed %q listed as trusted and as simulated", e.DID, e.Feed)
		}
		v.trusted[e] = true
	}
	return v, nil
}

// Result is a verified UVM endorsement.
type Result struct {
	DID               string    // the did:x509 issuer ("iss")
	Feed              string    // the feed ("feed")
	SVN               uint64    // the endorsed UVM security version
	LaunchMeasurement []byte    // the endorsed 48-byte SNP launch measurement
	SigningTime       time.Time // the protected "signingtime"
	// Simulated is true when the endorser is one of Options.Simulated.
	Simulated bool

	// bound is set when LaunchMeasurement was compared with a report.
	bound bool
}

// Claims returns the claims a policy may name: uvm_endorsements-did,
// uvm_endorsements-feed, uvm_endorsements-svn (a number) and, for results of
// [Verifier.Verify] (measurement compared), x-ms-compliance-status
// "azure-compliant-uvm".
func (r *Result) Claims() map[string]any {
	c := map[string]any{
		"uvm_endorsements-did":  r.DID,
		"uvm_endorsements-feed": r.Feed,
		"uvm_endorsements-svn":  r.SVN,
	}
	if r.bound {
		c["x-ms-compliance-status"] = "azure-compliant-uvm"
	}
	return c
}

func (r *Result) clone() *Result {
	c := *r
	c.LaunchMeasurement = bytes.Clone(r.LaunchMeasurement)
	return &c
}

// Verify verifies endorsement (the COSE_Sign1 bytes) and checks that it
// endorses measurement, the SNP report's 48-byte MEASUREMENT (verify the
// report first). It makes every check of [Verifier.VerifyEndorsement] and
// compares the measurements; an SVN and a measurement failure are reported
// together (errors.Join).
func (v *Verifier) Verify(endorsement, measurement []byte) (*Result, error) {
	r, err := v.verify(endorsement)
	if err != nil {
		return nil, err
	}
	var errs []error
	if r.SVN < v.minSVN {
		errs = append(errs, fmt.Errorf("%w: svn %d, minimum %d", ErrSVNTooLow, r.SVN, v.minSVN))
	}
	if !bytes.Equal(r.LaunchMeasurement, measurement) {
		errs = append(errs, fmt.Errorf("%w: endorsed %x, report %x", ErrMeasurementMismatch, r.LaunchMeasurement, measurement))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r.bound = true
	return r, nil
}

// VerifyEndorsement verifies endorsement on its own: signature, chain at the
// signing time, did:x509 resolution, trust in (issuer, feed), payload and
// minimum SVN. It does not bind the endorsement to any report: use
// [Verifier.Verify] for evidence.
func (v *Verifier) VerifyEndorsement(endorsement []byte) (*Result, error) {
	r, err := v.verify(endorsement)
	if err != nil {
		return nil, err
	}
	if r.SVN < v.minSVN {
		return nil, fmt.Errorf("%w: svn %d, minimum %d", ErrSVNTooLow, r.SVN, v.minSVN)
	}
	return r, nil
}

// verify returns a fresh copy of the (possibly cached) result of
// verifyUncached. The cache is keyed by the SHA-256 of the exact bytes and
// holds only successes; the trust list is fixed at New, so a hit is as good as
// a verification.
func (v *Verifier) verify(endorsement []byte) (*Result, error) {
	key := sha256.Sum256(endorsement)
	v.mu.Lock()
	r, ok := v.cache[key]
	v.mu.Unlock()
	if ok {
		return r.clone(), nil
	}
	r, err := v.verifyUncached(endorsement)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.cache) >= maxCached {
		clear(v.cache)
	}
	v.cache[key] = r
	v.mu.Unlock()
	return r.clone(), nil
}

// maxEndorsementSize bounds the input; real endorsements are about 11 KiB.
const maxEndorsementSize = 1 << 20

func (v *Verifier) verifyUncached(endorsement []byte) (*Result, error) {
	if len(endorsement) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(endorsement) > maxEndorsementSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(endorsement), maxEndorsementSize)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(endorsement); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	h, err := parseHeader(msg.Headers.Protected)
	if err != nil {
		return nil, err
	}
	leaf := h.chain[0]

	// Is it authentic? Signature, chain at signing time, issuer.
	if err := verifySignature(&msg, h.alg, leaf); err != nil {
		return nil, err
	}
	if err := verifyChain(h, h.signingTime); err != nil {
		return nil, err
	}
	if err := resolveDID(h.iss, h.chain); err != nil {
		return nil, err
	}

	// Is it allowed? Trust in (issuer, feed) here; the SVN minimum and the
	// measurement are checked on every call, cached or not.
	simulated, ok := v.trusted[Endorser{DID: h.iss, Feed: h.feed}]
	if !ok {
		return nil, fmt.Errorf("%w: issuer %q, feed %q", ErrUntrusted, h.iss, h.feed)
	}
	p, err := parsePayload(msg.Payload)
	if err != nil {
		return nil, err
	}
	return &Result{
		DID:               h.iss,
		Feed:              h.feed,
		SVN:               p.svn,
		LaunchMeasurement: p.measurement,
		SigningTime:       h.signingTime,
		Simulated:         simulated,
	}, nil
}

// COSE header labels: RFC 9052 section 3.1 (alg, crit, content type), RFC
// 9360 (x5chain, x5t), and the text labels of Microsoft's UVM endorsements.
const (
	labelAlg         = int64(1)
	labelCrit        = int64(2)
	labelContentType = int64(3)
	labelX5Chain     = int64(33)
	labelX5T         = int64(34)
	labelIss         = "iss"
	labelFeed        = "feed"
	labelSigningTime = "signingtime"
)

// understood lists the protected labels we process, for "crit".
var understood = map[any]bool{
	labelAlg: true, labelCrit: true, labelContentType: true, labelX5Chain: true,
	labelX5T: true, labelIss: true, labelFeed: true, labelSigningTime: true,
}

// maxChain bounds x5chain; the real ones have three certificates.
const maxChain = 8

// header holds the protected header parameters of an endorsement.
type header struct {
	alg         cose.Algorithm
	chain       []*x509.Certificate // leaf first
	hasX5T      bool
	x5tAlg      int64
	x5tHash     []byte
	iss, feed   string
	signingTime time.Time
}

func parseHeader(p cose.ProtectedHeader) (*header, error) {
	malformed := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	h := &header{}

	alg, err := p.Algorithm()
	if err != nil {
		return nil, malformed("alg: %v", err)
	}
	switch alg {
	case cose.AlgorithmPS256, cose.AlgorithmPS384, cose.AlgorithmPS512, cose.AlgorithmES384:
		h.alg = alg
	default:
		return nil, malformed("unsupported alg %v", alg)
	}

	if crit, ok := p[labelCrit]; ok {
		labels, ok := crit.([]any)
		if !ok {
			return nil, malformed("crit is not an array")
		}
		for _, l := range labels {
			switch l.(type) {
			case int64, string: // hashable label types; go-cose checks this too
			default:
				return nil, malformed("critical header label %T", l)
			}
			if !understood[l] {
				return nil, malformed("unknown critical header %v", l)
			}
		}
	}

	if ct, ok := p[labelContentType]; ok {
		s, ok := ct.(string)
		if !ok {
			return nil, malformed("content type %v is not text", ct)
		}
		mt, _, err := mime.ParseMediaType(s)
		if err != nil || mt != "application/json" {
			return nil, malformed("content type %q is not application/json", s)
		}
	}

	var ders [][]byte
	switch x := p[labelX5Chain].(type) {
	case []byte:
		ders = [][]byte{x}
	case []any:
		for _, e := range x {
			der, ok := e.([]byte)
			if !ok {
				return nil, malformed("x5chain element is not a byte string")
			}
			ders = append(ders, der)
		}
	case nil:
		return nil, malformed("missing x5chain")
	default:
		return nil, malformed("x5chain is not a byte string or an array")
	}
	if len(ders) == 0 || len(ders) > maxChain {
		return nil, malformed("x5chain holds %d certificates", len(ders))
	}
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, malformed("x5chain[%d]: %v", i, err)
		}
		h.chain = append(h.chain, c)
	}

	if t, ok := p[labelX5T]; ok {
		a, ok := t.([]any)
		if !ok || len(a) != 2 {
			return nil, malformed("x5t is not [alg, hash]")
		}
		h.hasX5T = true
		h.x5tAlg, ok = a[0].(int64)
		if !ok {
			return nil, malformed("x5t algorithm is not an integer")
		}
		h.x5tHash, ok = a[1].([]byte)
		if !ok {
			return nil, malformed("x5t hash is not a byte string")
		}
	}

	var ok bool
	if h.iss, ok = p[labelIss].(string); !ok || h.iss == "" {
		return nil, malformed("missing or non-text iss")
	}
	if h.feed, ok = p[labelFeed].(string); !ok || h.feed == "" {
		return nil, malformed("missing or non-text feed")
	}
	switch t := p[labelSigningTime].(type) {
	case time.Time: // CBOR tag 1 (epoch) or 0 (RFC 3339)
		h.signingTime = t.UTC()
	case int64:
		h.signingTime = time.Unix(t, 0).UTC()
	case nil:
		return nil, malformed("missing signingtime")
	default:
		return nil, malformed("signingtime is %T, not a time", t)
	}
	return h, nil
}

// verifySignature verifies the COSE signature with the leaf's public key.
func verifySignature(msg *cose.Sign1Message, alg cose.Algorithm, leaf *x509.Certificate) error {
	if alg == cose.AlgorithmES384 {
		k, ok := leaf.PublicKey.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ES384 needs a P-384 leaf key", ErrSignatureInvalid)
		}
	}
	verifier, err := cose.NewVerifier(alg, leaf.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: leaf key unusable for %v: %v", ErrSignatureInvalid, alg, err)
	}
	if err := msg.Verify(nil, verifier); err != nil {
		return ErrSignatureInvalid
	}
	return nil
}

// verifyChain checks x5t against the leaf, then that x5chain, in order, is a
// certification path from the leaf to its last certificate (the anchor) valid
// at the signing time. Expired leaves are expected: Microsoft's last about a
// year, endorsements are used for longer.
func verifyChain(h *header, at time.Time) error {
	leaf := h.chain[0]
	if h.hasX5T {
		var sum []byte
		switch h.x5tAlg {
		case -16: // SHA-256
			s := sha256.Sum256(leaf.Raw)
			sum = s[:]
		case -43: // SHA-384
			s := sha512.Sum384(leaf.Raw)
			sum = s[:]
		case -44: // SHA-512
			s := sha512.Sum512(leaf.Raw)
			sum = s[:]
		default:
			return fmt.Errorf("%w: unsupported x5t hash algorithm %d", ErrChainInvalid, h.x5tAlg)
		}
		if !bytes.Equal(sum, h.x5tHash) {
			return fmt.Errorf("%w: x5t does not match the x5chain leaf", ErrChainInvalid)
		}
	}
	if len(h.chain) < 2 {
		return fmt.Errorf("%w: x5chain holds only the leaf", ErrChainInvalid)
	}
	roots := x509.NewCertPool()
	roots.AddCert(h.chain[len(h.chain)-1])
	inter := x509.NewCertPool()
	for _, c := range h.chain[1 : len(h.chain)-1] {
		inter.AddCert(c)
	}
	paths, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%w: at signing time %s: %v", ErrChainInvalid, at.Format(time.RFC3339), err)
	}
	// The did:x509 fingerprint may name any non-leaf certificate of x5chain,
	// so every one of them must be on the verified path.
	for _, p := range paths {
		if samePath(p, h.chain) {
			return nil
		}
	}
	return fmt.Errorf("%w: x5chain is not an ordered certification path", ErrChainInvalid)
}

func samePath(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// payload is the endorsed content.
type payload struct {
	svn         uint64
	measurement []byte
}

// parsePayload reads the JSON payload leniently: unknown fields are ignored,
// the SVN may be a decimal string or a number, and either of
// x-ms-sevsnpvm-guestsvn and x-ms-sevsnpvm-guestsvn-int may carry it (they
// must agree when both do).
func parsePayload(b []byte) (*payload, error) {
	var raw struct {
		SVN         json.RawMessage `json:"x-ms-sevsnpvm-guestsvn"`
		SVNInt      json.RawMessage `json:"x-ms-sevsnpvm-guestsvn-int"`
		Measurement *string         `json:"x-ms-sevsnpvm-launchmeasurement"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	p := &payload{}
	var have bool
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"x-ms-sevsnpvm-guestsvn", raw.SVN}, {"x-ms-sevsnpvm-guestsvn-int", raw.SVNInt}} {
		if f.raw == nil {
			continue
		}
		n, err := parseSVN(f.raw)
		if err != nil {
			return nil, fmt.Errorf("%w: payload: %s: %v", ErrMalformed, f.name, err)
		}
		if have && n != p.svn {
			return nil, fmt.Errorf("%w: payload: svn fields disagree: %d and %d", ErrMalformed, p.svn, n)
		}
		p.svn, have = n, true
	}
	if !have {
		return nil, fmt.Errorf("%w: payload: no x-ms-sevsnpvm-guestsvn", ErrMalformed)
	}
	if raw.Measurement == nil {
		return nil, fmt.Errorf("%w: payload: no x-ms-sevsnpvm-launchmeasurement", ErrMalformed)
	}
	m, err := hex.DecodeString(*raw.Measurement)
	if err != nil || len(m) != 48 {
		return nil, fmt.Errorf("%w: payload: launch measurement %q is not 48 hex bytes", ErrMalformed, *raw.Measurement)
	}
	p.measurement = m
	return p, nil
}

// parseSVN reads a decimal string ("100") or a JSON integer (100).
func parseSVN(raw json.RawMessage) (uint64, error) {
	s := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
	}
	return strconv.ParseUint(s, 10, 64)
}
