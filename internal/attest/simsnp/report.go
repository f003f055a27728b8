package simsnp

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"fmt"
	"math/big"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// DefaultMeasurement is the MEASUREMENT (48 bytes, these ASCII characters)
// of reports whose [ReportOptions] give none: recognisable in hex dumps and
// logs, and never the launch digest of a real guest.
const DefaultMeasurement = "SIMULATED-SNP-MEASUREMENT-NOT-A-TEE--tkms-dev---"

var _ [abi.MeasurementSize]byte = [len(DefaultMeasurement)]byte{}

// Report field values that no option changes. They follow the shared ACI
// sample (docs/spec/attestation.md) where that has a value.
const (
	// PolicyACI is the guest policy of ACI reports and of simulated ones:
	// ABI 0.31, SMT allowed, the reserved bit 17 set, migration agent and
	// debugging off.
	PolicyACI = 0x3001f
	// policyDebug is the guest policy's DEBUG bit (bit 19).
	policyDebug = 1 << 19
	// GuestSVN is the GUEST_SVN of simulated reports (2, as ACI's).
	GuestSVN = 2

	platformInfo = 0x1 // SMT enabled
	fwBuild      = 4   // firmware 1.52 build 4
	fwMinor      = 52
	fwMajor      = 1
)

// ReportOptions are the caller-chosen fields of a simulated report.
type ReportOptions struct {
	// ReportData is REPORT_DATA: at most 64 bytes, zero-padded on the right
	// (ACI guests put a SHA-256 in the first 32).
	ReportData []byte
	// Measurement is MEASUREMENT: nil for [DefaultMeasurement], otherwise
	// exactly 48 bytes.
	Measurement []byte
	// HostData is HOST_DATA: nil for zeros, otherwise exactly 32 bytes (ACI
	// puts the SHA-256 of the container security policy there).
	HostData []byte
	// Debug sets the guest policy's DEBUG bit, which any sane verifier
	// policy denies.
	Debug bool
	// ReportedTCB, if not nil, replaces REPORTED_TCB (the 64-bit TCB_VERSION,
	// as [Chain.TCB] returns it), for tests of verifiers that must reject a
	// report whose TCB differs from its VCEK's. CURRENT_TCB, COMMITTED_TCB
	// and LAUNCH_TCB stay the VCEK's.
	ReportedTCB *uint64
	// VMPL is the VMPL field (0x030): the Virtual Machine Privilege Level
	// the report was requested from, 0 (ACI's) to 3; a report from any
	// VMPL above 0 lets tests check that verifiers enforce their maximum.
	VMPL uint32
}

// Report returns a signed SEV-SNP ATTESTATION_REPORT, version 2, 1184 bytes
// (AMD SEV-SNP firmware ABI specification 56860, ATTESTATION_REPORT
// structure; go-sev-guest's abi package lays it out): VMPL opts.VMPL (0
// unless set), guest policy [PolicyACI] (with DEBUG if opts.Debug),
// GUEST_SVN [GuestSVN], REPORTED_TCB, CURRENT_TCB, COMMITTED_TCB and
// LAUNCH_TCB the VCEK's TCB, CHIP_ID the VCEK's HWID,
// SIGNER_INFO "VCEK", and the ECDSA P-384 SHA-384 signature by the VCEK over
// bytes 0x000-0x29F, R and S little-endian, 72 bytes each.
func (c *Chain) Report(opts ReportOptions) ([]byte, error) {
	r, err := c.reportProto(opts)
	if err != nil {
		return nil, err
	}
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	digest := sha512.Sum384(abi.SignedComponent(raw))
	der, err := ecdsa.SignASN1(rand.Reader, c.vcekKey, digest[:])
	if err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	if err := abi.SetSignature(sig.R, sig.S, raw); err != nil {
		return nil, fmt.Errorf("simsnp: %w", err)
	}
	return raw, nil
}

func (c *Chain) reportProto(opts ReportOptions) (*spb.Report, error) {
	if len(opts.ReportData) > abi.ReportDataSize {
		return nil, fmt.Errorf("simsnp: report data is %d bytes, at most %d allowed", len(opts.ReportData), abi.ReportDataSize)
	}
	reportData := make([]byte, abi.ReportDataSize)
	copy(reportData, opts.ReportData)

	measurement := []byte(DefaultMeasurement)
	if opts.Measurement != nil {
		if len(opts.Measurement) != abi.MeasurementSize {
			return nil, fmt.Errorf("simsnp: measurement is %d bytes, want %d", len(opts.Measurement), abi.MeasurementSize)
		}
		measurement = append([]byte(nil), opts.Measurement...)
	}
	hostData := make([]byte, abi.HostDataSize)
	if opts.HostData != nil {
		if len(opts.HostData) != abi.HostDataSize {
			return nil, fmt.Errorf("simsnp: host data is %d bytes, want %d", len(opts.HostData), abi.HostDataSize)
		}
		copy(hostData, opts.HostData)
	}
	if opts.VMPL > 3 {
		return nil, fmt.Errorf("simsnp: VMPL is %d, must be 0 to 3", opts.VMPL)
	}
	policy := uint64(PolicyACI)
	if opts.Debug {
		policy |= policyDebug
	}
	reported := c.tcb
	if opts.ReportedTCB != nil {
		reported = *opts.ReportedTCB
	}

	// A guest's REPORT_ID is fixed for its life: derive one from what
	// identifies the simulated guest. REPORT_ID_MA is all ones (no migration
	// agent), as in ACI reports.
	h := sha256.New()
	h.Write([]byte("tkms simsnp REPORT_ID\x00"))
	h.Write(c.chipID[:])
	h.Write(measurement)
	h.Write(hostData)
	reportID := h.Sum(nil)
	reportIDMA := make([]byte, abi.ReportIDMASize)
	for i := range reportIDMA {
		reportIDMA[i] = 0xff
	}
	familyID := make([]byte, abi.FamilyIDSize)
	familyID[0] = 1
	imageID := make([]byte, abi.ImageIDSize)
	imageID[0] = 2

	return &spb.Report{
		Version:         abi.ReportVersion2,
		GuestSvn:        GuestSVN,
		Policy:          policy,
		FamilyId:        familyID,
		ImageId:         imageID,
		Vmpl:            opts.VMPL,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		CurrentTcb:      c.tcb,
		PlatformInfo:    platformInfo,
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportData:      reportData,
		Measurement:     measurement,
		HostData:        hostData,
		IdKeyDigest:     make([]byte, abi.IDKeyDigestSize),
		AuthorKeyDigest: make([]byte, abi.AuthorKeyDigestSize),
		ReportId:        reportID,
		ReportIdMa:      reportIDMA,
		ReportedTcb:     reported,
		ChipId:          c.chipID[:],
		CommittedTcb:    c.tcb,
		CurrentBuild:    fwBuild,
		CurrentMinor:    fwMinor,
		CurrentMajor:    fwMajor,
		CommittedBuild:  fwBuild,
		CommittedMinor:  fwMinor,
		CommittedMajor:  fwMajor,
		LaunchTcb:       c.tcb,
		Signature:       make([]byte, abi.SignatureSize),
	}, nil
}
