package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-sev-guest/abi"
	cose "github.com/veraison/go-cose"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/certtable"
)

// The ACI security context (docs/spec/azure-compat.md, "The attestation
// object"): the directory ACI mounts into a confidential container group and
// names in $UVM_SECURITY_CONTEXT_DIR, and the environment variables that
// older ACI deployments set instead. The names are those of
// microsoft/confidential-sidecar-containers pkg/common/info.go (which takes
// them from hcsshim pkg/securitypolicy).
const (
	envSecurityContextDir = "UVM_SECURITY_CONTEXT_DIR"
	envHostAMDCertificate = "UVM_HOST_AMD_CERTIFICATE"
	envSecurityPolicy     = "UVM_SECURITY_POLICY"
	envReferenceInfo      = "UVM_REFERENCE_INFO"

	hostAMDCertFile    = "host-amd-cert-base64"
	referenceInfoFile  = "reference-info-base64"
	securityPolicyFile = "security-policy-base64"
)

// THIMCerts is the host's AMD certificate JSON that ACI takes from THIM
// (the Trusted Hardware Identity Management cache) and puts, base64
// encoded, in host-amd-cert-base64: the VCEK of the chip and TCB the
// container group runs on, the ASK and ARK, and the TCB the VCEK is for
// (field names as confidential-sidecar-containers' common.THIMCerts).
type THIMCerts struct {
	VCEKCert         string `json:"vcekCert"`         // PEM
	CertificateChain string `json:"certificateChain"` // PEM ASK then ARK
	// TCBM is the VCEK's TCB_VERSION as 16 hex digits, the big-endian
	// form of the report's little-endian REPORTED_TCB ("7308000000000003"
	// for the report bytes 03 00 00 00 00 00 08 73).
	TCBM         string `json:"tcbm"`
	CacheControl string `json:"cacheControl"` // seconds, as THIM's Cache-Control max-age
}

// SecurityContext is what ACI tells a confidential container about itself
// (see [LoadSecurityContext]).
type SecurityContext struct {
	// HostAMDCert is the decoded host-amd-cert-base64; nil when ACI gave
	// none (an empty file or unset variable, which the sidecar allows).
	HostAMDCert *THIMCerts
	// ReferenceInfo is the decoded reference-info-base64: the UVM
	// endorsement, a COSE_Sign1 (RFC 9052) signed by Microsoft over the
	// launch measurement of the utility VM.
	ReferenceInfo []byte
	// SecurityPolicy is the decoded security-policy-base64: the container
	// group's confidential computing enforcement policy (Rego text). Its
	// SHA-256 is the report's HOST_DATA.
	SecurityPolicy []byte
}

// HostData returns the SHA-256 of the security policy, which the SEV-SNP
// reports of this container group carry in HOST_DATA, and which key
// release policies name as x-ms-sevsnpvm-hostdata.
func (sc *SecurityContext) HostData() [32]byte {
	return sha256.Sum256(sc.SecurityPolicy)
}

// LoadSecurityContext reads the ACI security context as the ACI SKR sidecar
// does (microsoft/confidential-sidecar-containers pkg/common/info.go,
// GetUvmInformation, at commit 076e78e84ba393da99e94d9bf8e57514c2c270fa): from the directory dir, or, when dir is "", from the
// directory named by $UVM_SECURITY_CONTEXT_DIR; and when that is unset too,
// from the variables $UVM_HOST_AMD_CERTIFICATE, $UVM_SECURITY_POLICY and
// $UVM_REFERENCE_INFO. In a directory, the three files must exist (the
// host certificate file may be empty); each holds standard base64. Unlike
// the sidecar, LoadSecurityContext also checks what it decodes: the
// certificates must parse, tcbm must be 16 hex digits and the reference
// info must be a COSE_Sign1.
func LoadSecurityContext(dir string) (*SecurityContext, error) {
	if dir == "" {
		dir = os.Getenv(envSecurityContextDir)
	}
	if dir == "" {
		return parseSecurityContext(os.Getenv(envHostAMDCertificate), os.Getenv(envReferenceInfo), os.Getenv(envSecurityPolicy))
	}
	var files [3]string
	for i, name := range []string{hostAMDCertFile, referenceInfoFile, securityPolicyFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("client: reading the ACI security context: %w", err)
		}
		files[i] = string(b)
	}
	sc, err := parseSecurityContext(files[0], files[1], files[2])
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, dir)
	}
	return sc, nil
}

// parseSecurityContext decodes the three base64 values of a security
// context.
func parseSecurityContext(hostAMDCert, referenceInfo, securityPolicy string) (*SecurityContext, error) {
	sc := &SecurityContext{}
	var err error
	if strings.TrimSpace(hostAMDCert) != "" {
		if sc.HostAMDCert, err = parseTHIMCerts(hostAMDCert); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(referenceInfo) != "" {
		if sc.ReferenceInfo, err = parseReferenceInfo(referenceInfo); err != nil {
			return nil, err
		}
	}
	if sc.SecurityPolicy, err = decodeStdBase64(securityPolicyFile, securityPolicy); err != nil {
		return nil, err
	}
	return sc, nil
}

// decodeStdBase64 decodes standard base64, ignoring surrounding white
// space (a file may end in a newline).
func decodeStdBase64(what, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("client: %s is not standard base64: %w", what, err)
	}
	return b, nil
}

// parseTHIMCerts decodes host-amd-cert-base64 (the sidecar's
// ParseTHIMCertsFromString) and checks its fields: a PEM VCEK certificate,
// at least one PEM certificate in the chain, and a tcbm of 16 hex digits
// (the sidecar parses it with strconv.ParseUint(tcbm, 16, 64)).
func parseTHIMCerts(encoded string) (*THIMCerts, error) {
	raw, err := decodeStdBase64(hostAMDCertFile, encoded)
	if err != nil {
		return nil, err
	}
	var c THIMCerts
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("client: %s is not THIM certificate JSON: %w", hostAMDCertFile, err)
	}
	if n, err := countPEMCerts(c.VCEKCert); err != nil || n != 1 {
		return nil, fmt.Errorf("client: %s: vcekCert must be one PEM certificate (%d found): %v", hostAMDCertFile, n, err)
	}
	if n, err := countPEMCerts(c.CertificateChain); err != nil || n == 0 {
		return nil, fmt.Errorf("client: %s: certificateChain must be PEM certificates (%d found): %v", hostAMDCertFile, n, err)
	}
	if _, err := parseTCBM(c.TCBM); err != nil {
		return nil, fmt.Errorf("client: %s: %w", hostAMDCertFile, err)
	}
	return &c, nil
}

// parseTCBM parses THIM's tcbm: 16 hex digits, the big-endian form of the
// 64-bit TCB_VERSION.
func parseTCBM(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("tcbm must be 16 hex digits, found %q", truncate(s, 32))
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("tcbm must be 16 hex digits, found %q", truncate(s, 32))
	}
	return v, nil
}

// countPEMCerts returns how many PEM CERTIFICATE blocks s holds, each a
// parsable X.509 certificate, with nothing else but white space around.
func countPEMCerts(s string) (int, error) {
	rest := bytes.TrimSpace([]byte(s))
	n := 0
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return n, errors.New("trailing data that is not PEM")
		}
		if b.Type != "CERTIFICATE" {
			return n, fmt.Errorf("PEM block of type %q", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return n, err
		}
		n++
		rest = bytes.TrimSpace(rest)
	}
	return n, nil
}

// parseReferenceInfo decodes reference-info-base64 and checks that it is a
// COSE_Sign1 message (tagged, as ACI's are, or untagged). It verifies
// nothing: the KMS does (internal/attest/uvm).
func parseReferenceInfo(encoded string) ([]byte, error) {
	b, err := decodeStdBase64(referenceInfoFile, encoded)
	if err != nil {
		return nil, err
	}
	var tagged cose.Sign1Message
	if err := tagged.UnmarshalCBOR(b); err != nil {
		var untagged cose.UntaggedSign1Message
		if err2 := untagged.UnmarshalCBOR(b); err2 != nil {
			return nil, fmt.Errorf("client: %s is not a COSE_Sign1 message: %w", referenceInfoFile, err)
		}
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ACIOptions configure [NewACIAttester].
type ACIOptions struct {
	// SecurityContextDir is the ACI security context directory. Empty
	// means $UVM_SECURITY_CONTEXT_DIR, or the UVM_* variables when that is
	// unset (see [LoadSecurityContext]).
	SecurityContextDir string
	// Device produces the SEV-SNP reports. nil means [DefaultReportDevice].
	Device ReportDevice
}

// ACIAttester produces ACI attestation objects (EvidenceACI) in an Azure
// Container Instances confidential container group.
type ACIAttester struct {
	sc     *SecurityContext
	device ReportDevice
	tcbm   uint64
	// endorsements is the base64 "endorsements" value, the same for every
	// report.
	endorsements string
}

var _ Attester = (*ACIAttester)(nil)

// NewACIAttester reads the security context once (ACI does not change it
// during the container group's life) and returns an attester that asks
// opts.Device for a report on every Attest. The security context must hold
// the host's AMD certificates and the UVM reference info.
func NewACIAttester(opts ACIOptions) (*ACIAttester, error) {
	sc, err := LoadSecurityContext(opts.SecurityContextDir)
	if err != nil {
		return nil, err
	}
	return newACIAttester(sc, opts.Device)
}

func newACIAttester(sc *SecurityContext, device ReportDevice) (*ACIAttester, error) {
	if sc.HostAMDCert == nil {
		return nil, errors.New("client: the ACI security context has no host AMD certificates (host-amd-cert-base64); outside ACI use NewSNPAttester")
	}
	if len(sc.ReferenceInfo) == 0 {
		return nil, errors.New("client: the ACI security context has no UVM reference info (reference-info-base64)")
	}
	tcbm, err := parseTCBM(sc.HostAMDCert.TCBM)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if device == nil {
		device = DefaultReportDevice()
	}
	// The sidecar concatenates the two PEM strings as they are
	// (VcekCert + CertificateChain); a newline in between keeps the PEM
	// valid should THIM ever omit the VCEK's final one.
	vcek := sc.HostAMDCert.VCEKCert
	if !strings.HasSuffix(vcek, "\n") {
		vcek += "\n"
	}
	return &ACIAttester{
		sc:           sc,
		device:       device,
		tcbm:         tcbm,
		endorsements: base64.StdEncoding.EncodeToString([]byte(vcek + sc.HostAMDCert.CertificateChain)),
	}, nil
}

// SecurityContext returns the security context the attester read.
func (a *ACIAttester) SecurityContext() *SecurityContext { return a.sc }

// Attest obtains a report with REPORT_DATA reportData from the device and
// returns the ACI attestation object that the ACI SKR sidecar's
// /attest/combined endpoint returns (microsoft/confidential-sidecar-containers
// internal/httpginendpoints/httpginendpoints.go, PostCombinedAttest, at
// commit e3e00a1a216a8087a71183f97bae1a1fab9adde2):
//
//   - evidence: the report, standard base64;
//   - endorsements: standard base64 of THIM's vcekCert followed by its
//     certificateChain (PEM VCEK, ASK, ARK);
//   - uvm_endorsements: the reference info (reference-info-base64);
//   - endorsed_tcb: THIM's tcbm as it is (the big-endian form; the Privacy
//     Sandbox C++ client sends the same value in report byte order, and
//     tkms accepts both, docs/spec/attestation.md).
//
// Unlike the sidecar, Attest checks the report before sending it: its
// REPORT_DATA must be reportData, its HOST_DATA the SHA-256 of the security
// policy (when there is one) and its REPORTED_TCB the tcbm of the VCEK.
// Each mismatch means the KMS would refuse the evidence; the error says
// why here rather than there.
func (a *ACIAttester) Attest(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	report, _, err := a.device.GetReport(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining a SEV-SNP report: %w", err)
	}
	if err := checkReport(report, reportData); err != nil {
		return nil, err
	}
	if len(a.sc.SecurityPolicy) > 0 {
		if want := a.sc.HostData(); !bytes.Equal(report[0xC0:0xE0], want[:]) {
			return nil, fmt.Errorf("client: the report's HOST_DATA %x is not the SHA-256 of the security context's policy (%x): the security context is not this container group's", report[0xC0:0xE0], want)
		}
	}
	if reported := binary.LittleEndian.Uint64(report[0x180:0x188]); reported != a.tcbm {
		return nil, fmt.Errorf("client: the report's REPORTED_TCB %016x is not the TCB of the host's VCEK (tcbm %s): the host's THIM certificates are stale, and the KMS would refuse the evidence", reported, a.sc.HostAMDCert.TCBM)
	}
	b, err := json.Marshal(api.ACI{
		Evidence:        base64.StdEncoding.EncodeToString(report),
		Endorsements:    a.endorsements,
		UVMEndorsements: base64.StdEncoding.EncodeToString(a.sc.ReferenceInfo),
		EndorsedTCB:     a.sc.HostAMDCert.TCBM,
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Evidence{Type: EvidenceACI, Attestation: b}, nil
}

// checkReport checks that a device's report has the size of a SEV-SNP
// ATTESTATION_REPORT and carries the REPORT_DATA asked for (offset 0x50).
func checkReport(report []byte, reportData [64]byte) error {
	if len(report) != abi.ReportSize {
		return fmt.Errorf("client: the device returned %d bytes, want a %d-byte SEV-SNP report", len(report), abi.ReportSize)
	}
	if !bytes.Equal(report[0x50:0x90], reportData[:]) {
		return fmt.Errorf("client: the device returned a report with REPORT_DATA %s..., not the %s... asked for", hex.EncodeToString(report[0x50:0x58]), hex.EncodeToString(reportData[:8]))
	}
	return nil
}

// SNPOptions configure [NewSNPAttester].
type SNPOptions struct {
	// Device produces the SEV-SNP reports. nil means [DefaultReportDevice].
	Device ReportDevice
	// VCEK is the DER or PEM certificate of the key that signs the
	// device's reports (VCEK or VLEK), sent as "vcek" instead of the
	// device's certificate table; for hosts that give none (fetch it from
	// AMD KDS once and keep it).
	VCEK []byte
}

// SNPAttester produces raw SEV-SNP evidence (EvidenceSNP).
type SNPAttester struct {
	device ReportDevice
	vcek   []byte
}

var _ Attester = (*SNPAttester)(nil)

// NewSNPAttester returns an attester of raw SEV-SNP evidence: a report from
// opts.Device with the certificate table the device returns (an extended
// report's, which the host fills with the VCEK or VLEK chain) or, when
// opts.VCEK is set, that certificate instead.
func NewSNPAttester(opts SNPOptions) *SNPAttester {
	device := opts.Device
	if device == nil {
		device = DefaultReportDevice()
	}
	return &SNPAttester{device: device, vcek: bytes.Clone(opts.VCEK)}
}

// Attest returns {"type":"snp","report":...,"cert_table"|"vcek":...}
// (docs/release.md, "Evidence types").
func (a *SNPAttester) Attest(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	report, certTable, err := a.device.GetReport(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining a SEV-SNP report: %w", err)
	}
	if err := checkReport(report, reportData); err != nil {
		return nil, err
	}
	obj := api.RawSNP{Type: EvidenceSNP, Report: report}
	switch {
	case len(a.vcek) > 0:
		obj.VCEK = a.vcek
	case len(certTable) > 0:
		if _, err := certtable.Parse(certTable); err != nil {
			return nil, fmt.Errorf("client: the device's certificate table: %w", err)
		}
		obj.CertTable = certTable
	default:
		return nil, errors.New("client: the device returned no certificate table; give SNPOptions.VCEK")
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Evidence{Type: EvidenceSNP, Attestation: b}, nil
}
