package simsnp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	cose "github.com/veraison/go-cose"

	"github.com/tkms-dev/tkms/api"
)

// UVMFeed is the feed of the simulated UVM endorsements (ACI's real one is
// "ContainerPlat-AMD-UVM").
const UVMFeed = "SIMULATED-AMD-UVM"

// DefaultUVMSVN is the x-ms-sevsnpvm-guestsvn of simulated UVM endorsements
// (as in the shared ACI sample).
const DefaultUVMSVN = "100"

// ACIBundleOptions choose the contents of a simulated ACI attestation
// bundle.
type ACIBundleOptions struct {
	// Report chooses the report's fields.
	Report ReportOptions
	// SigningTime is the UVM endorsement's signingtime; zero means now.
	SigningTime time.Time
	// UVMSVN is the endorsement's x-ms-sevsnpvm-guestsvn, a decimal string;
	// empty means [DefaultUVMSVN].
	UVMSVN string
	// UVMMeasurement, if not nil, is endorsed instead of the report's
	// MEASUREMENT, for tests of verifiers that must reject the mismatch.
	UVMMeasurement []byte
}

// ACIBundle returns the JSON attestation object of an ACI container
// (docs/spec/azure-compat.md, "The attestation object"):
//
//	{"evidence":"<base64 report>","endorsements":"<base64 of PEM VCEK, ASK, ARK>",
//	 "uvm_endorsements":"<base64 COSE_Sign1>","endorsed_tcb":"<REPORTED_TCB, 16 hex digits, report byte order>"}
//
// The report is [Chain.Report] of opts.Report. The UVM endorsement is a
// COSE_Sign1 (RFC 9052) signed PS384 by the simulated UVM leaf, shaped like
// Microsoft's (docs/spec/attestation.md, step 6): protected headers alg,
// content type "application/json", x5chain (leaf, CA, root), x5t, and the
// text labels iss (see [Chain.UVMTrust]), feed [UVMFeed] and signingtime
// (CBOR tag 1, epoch seconds); the payload is
// {"x-ms-sevsnpvm-guestsvn":"<svn>","x-ms-sevsnpvm-launchmeasurement":"<hex MEASUREMENT>"}.
func (c *Chain) ACIBundle(opts ACIBundleOptions) ([]byte, error) {
	report, err := c.Report(opts.Report)
	if err != nil {
		return nil, err
	}
	measurement := report[0x90:0xC0]
	if opts.UVMMeasurement != nil {
		measurement = opts.UVMMeasurement
	}
	svn := opts.UVMSVN
	if svn == "" {
		svn = DefaultUVMSVN
	}
	signingTime := opts.SigningTime
	if signingTime.IsZero() {
		signingTime = time.Now()
	}
	uvm, err := c.uvmEndorsement(svn, measurement, signingTime)
	if err != nil {
		return nil, err
	}

	var endorsements []byte
	for _, der := range [][]byte{c.vcek.Raw, c.ask.Raw, c.ark.Raw} {
		endorsements = append(endorsements, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	b, err := json.Marshal(api.ACI{
		Evidence:        base64.StdEncoding.EncodeToString(report),
		Endorsements:    base64.StdEncoding.EncodeToString(endorsements),
		UVMEndorsements: base64.StdEncoding.EncodeToString(uvm),
		EndorsedTCB:     hex.EncodeToString(report[0x180:0x188]),
	})
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	return b, nil
}

// UVMTrust returns the (did, feed) pair under which a verifier trusts the
// simulated UVM endorsements: did is
// did:x509:0:sha256:<base64url SHA-256 of the simulated UVM root>::eku:[UVMEKU]
// and feed is [UVMFeed]. Configure it only behind an explicit insecure option.
func (c *Chain) UVMTrust() (did, feed string) {
	fp := sha256.Sum256(c.uvmRoot.Raw)
	return "did:x509:0:sha256:" + base64.RawURLEncoding.EncodeToString(fp[:]) + "::eku:" + UVMEKU, UVMFeed
}

// uvmEndorsement returns a tagged COSE_Sign1 over the endorsement payload.
func (c *Chain) uvmEndorsement(svn string, measurement []byte, signingTime time.Time) ([]byte, error) {
	if signingTime.Unix() < 0 {
		return nil, errors.New("simsnp: signing time before 1970")
	}
	payload, err := json.Marshal(struct {
		SVN         string `json:"x-ms-sevsnpvm-guestsvn"`
		Measurement string `json:"x-ms-sevsnpvm-launchmeasurement"`
	}{svn, hex.EncodeToString(measurement)})
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmPS384, c.uvmLeafKey)
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	did, feed := c.UVMTrust()
	leafHash := sha256.Sum256(c.uvmLeaf.Raw)
	headers := cose.Headers{
		Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmPS384,
			cose.HeaderLabelContentType: "application/json",
			cose.HeaderLabelX5Chain:     []any{c.uvmLeaf.Raw, c.uvmCA.Raw, c.uvmRoot.Raw},
			cose.HeaderLabelX5T:         []any{coseSHA256, leafHash[:]},
			"iss":                       did,
			"feed":                      feed,
			"signingtime":               epochTime(signingTime.Unix()),
		},
	}
	msg, err := cose.Sign1(rand.Reader, signer, headers, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("simsnp: signing the UVM endorsement: %w", err)
	}
	return msg, nil
}

// coseSHA256 is the COSE algorithm identifier of SHA-256 (RFC 9054), the
// hash of x5t.
const coseSHA256 int64 = -16

// epochTime is a CBOR epoch-based date/time (RFC 8949, section 3.4.2): tag 1
// over an unsigned integer of seconds.
type epochTime uint64

// MarshalCBOR implements the CBOR encoder's Marshaler interface.
func (t epochTime) MarshalCBOR() ([]byte, error) {
	b := []byte{0xc1} // tag 1
	switch v := uint64(t); {
	case v < 24:
		return append(b, byte(v)), nil
	case v <= 0xff:
		return append(b, 0x18, byte(v)), nil
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0x19), uint16(v)), nil
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0x1a), uint32(v)), nil
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x1b), v), nil
	}
}
