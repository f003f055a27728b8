package snp

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// Claims are the policy claims of spec/azure-compat.md "Claims produced for policies" that come
// from the report itself. Values are string (hex is lowercase), bool, or int64 for numbers.
// The UVM endorsement claims (x-ms-compliance-status, uvm_endorsements-*) are added by the
// caller after verifying the endorsement.
type Claims map[string]any

// Claim names produced by this package.
const (
	ClaimAttestationType   = "x-ms-attestation-type" // "sevsnpvm"
	ClaimVersion           = "x-ms-ver"              // report version, a decimal string
	ClaimGuestSVN          = "x-ms-sevsnpvm-guestsvn"
	ClaimSMTAllowed        = "x-ms-sevsnpvm-smt-allowed"
	ClaimIsDebuggable      = "x-ms-sevsnpvm-is-debuggable"
	ClaimMigrationAllowed  = "x-ms-sevsnpvm-migration-allowed"
	ClaimFamilyID          = "x-ms-sevsnpvm-familyId"
	ClaimImageID           = "x-ms-sevsnpvm-imageId"
	ClaimVMPL              = "x-ms-sevsnpvm-vmpl"
	ClaimReportData        = "x-ms-sevsnpvm-reportdata"
	ClaimLaunchMeasurement = "x-ms-sevsnpvm-launchmeasurement"
	ClaimHostData          = "x-ms-sevsnpvm-hostdata"
	ClaimIDKeyDigest       = "x-ms-sevsnpvm-idkeydigest"
	ClaimAuthorKeyDigest   = "x-ms-sevsnpvm-authorkeydigest"
	ClaimReportID          = "x-ms-sevsnpvm-reportid"
	ClaimBootloaderSVN     = "x-ms-sevsnpvm-bootloader-svn"
	ClaimTEESVN            = "x-ms-sevsnpvm-tee-svn"
	ClaimSNPFirmwareSVN    = "x-ms-sevsnpvm-snpfw-svn"
	ClaimMicrocodeSVN      = "x-ms-sevsnpvm-microcode-svn"
	// ClaimProductLine is tkms's own claim: the AMD product line of the signing key ("Milan",
	// "Genoa", "Turin"), as the certificate chain decided; the attestation settings keep a
	// minimum REPORTED_TCB per product line (internal/policy, Attestation).
	ClaimProductLine = "tkms-snp-product-line"
)

// AttestationTypeSEVSNP is the value of [ClaimAttestationType].
const AttestationTypeSEVSNP = "sevsnpvm"

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// newResult fills a Result from a report that was verified and validated.
func newResult(r *spb.Report, raw []byte) *Result {
	pol, _ := abi.ParseSnpPolicy(r.GetPolicy()) // already parsed by validate
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(r.GetReportedTcb()))
	res := &Result{
		Version:          r.GetVersion(),
		GuestSVN:         r.GetGuestSvn(),
		Policy:           r.GetPolicy(),
		FamilyID:         clone(r.GetFamilyId()),
		ImageID:          clone(r.GetImageId()),
		VMPL:             r.GetVmpl(),
		ReportData:       clone(r.GetReportData()),
		Measurement:      clone(r.GetMeasurement()),
		HostData:         clone(r.GetHostData()),
		IDKeyDigest:      clone(r.GetIdKeyDigest()),
		AuthorKeyDigest:  clone(r.GetAuthorKeyDigest()),
		ReportID:         clone(r.GetReportId()),
		ChipID:           clone(r.GetChipId()),
		ReportedTCB:      r.GetReportedTcb(),
		TCB:              TCB{Bootloader: tcb.BlSpl, TEE: tcb.TeeSpl, SNP: tcb.SnpSpl, Microcode: tcb.UcodeSpl},
		Debug:            pol.Debug,
		MigrationAllowed: pol.MigrateMA,
		SMTAllowed:       pol.SMT,
		ReportSHA256:     sha256.Sum256(abi.SignedComponent(raw)),
	}
	res.Claims = Claims{
		ClaimAttestationType:   AttestationTypeSEVSNP,
		ClaimVersion:           strconv.FormatUint(uint64(res.Version), 10),
		ClaimGuestSVN:          int64(res.GuestSVN),
		ClaimSMTAllowed:        res.SMTAllowed,
		ClaimIsDebuggable:      res.Debug,
		ClaimMigrationAllowed:  res.MigrationAllowed,
		ClaimFamilyID:          hex.EncodeToString(res.FamilyID),
		ClaimImageID:           hex.EncodeToString(res.ImageID),
		ClaimVMPL:              int64(res.VMPL),
		ClaimReportData:        hex.EncodeToString(res.ReportData),
		ClaimLaunchMeasurement: hex.EncodeToString(res.Measurement),
		ClaimHostData:          hex.EncodeToString(res.HostData),
		ClaimIDKeyDigest:       hex.EncodeToString(res.IDKeyDigest),
		ClaimAuthorKeyDigest:   hex.EncodeToString(res.AuthorKeyDigest),
		ClaimReportID:          hex.EncodeToString(res.ReportID),
		ClaimBootloaderSVN:     int64(res.TCB.Bootloader),
		ClaimTEESVN:            int64(res.TCB.TEE),
		ClaimSNPFirmwareSVN:    int64(res.TCB.SNP),
		ClaimMicrocodeSVN:      int64(res.TCB.Microcode),
	}
	return res
}
