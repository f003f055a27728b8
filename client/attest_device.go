package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-sev-guest/abi"
)

// A ReportDevice obtains SEV-SNP attestation reports from the hardware: it
// is the boundary between this package and the TEE. GetReport returns the
// 1184-byte ATTESTATION_REPORT (AMD SEV-SNP firmware ABI specification
// 56860) with REPORT_DATA reportData and, when the host supplies one, the
// certificate table of an extended report (the GHCB specification's GUID
// table, holding the VCEK or VLEK chain); certTable is empty otherwise.
type ReportDevice interface {
	GetReport(ctx context.Context, reportData [64]byte) (report, certTable []byte, err error)
}

// DefaultReportDevice returns the configfs-tsm report interface when the
// kernel offers it (Linux 6.7 and later), else /dev/sev-guest (the order in
// which go-sev-guest's client.GetQuoteProvider tries them), else, when only
// it exists, the legacy /dev/sev of the 5.x kernels of older ACI utility
// VMs (LegacySEVDevice).
func DefaultReportDevice() ReportDevice {
	return chooseReportDevice(func(path string) (fs.FileInfo, error) { return os.Stat(path) })
}

// chooseReportDevice is DefaultReportDevice with the file system's stat.
func chooseReportDevice(stat func(string) (fs.FileInfo, error)) ReportDevice {
	if fi, err := stat(filepath.Join(defaultTSMRoot, "report")); err == nil && fi.IsDir() {
		return &ConfigFSDevice{}
	}
	if _, err := stat(defaultSEVGuestPath); err != nil {
		if _, err := stat(defaultLegacySEVPath); err == nil {
			return &LegacySEVDevice{}
		}
	}
	return &SEVGuestDevice{}
}

// The device files of the sev-guest driver and of the legacy SEV driver.
const (
	defaultSEVGuestPath  = "/dev/sev-guest"
	defaultLegacySEVPath = "/dev/sev"
)

// LegacySEVDevice obtains reports through /dev/sev, the interface that
// the Linux 5.x kernels of older ACI utility VMs expose (AMD's SEV-SNP
// guest patches before the sev-guest driver was merged): one
// SEV_SNP_GUEST_MSG_REPORT ioctl carrying a struct sev_snp_guest_request
// that points at a MSG_REPORT_REQ and a MSG_REPORT_RSP (SEV-SNP firmware
// ABI, tables 20 and 23), as Microsoft's confidential-sidecar-containers
// do on those kernels. The host gives no certificate table this way; on
// ACI the certificates come from THIM. It works on Linux only.
type LegacySEVDevice struct {
	// Path is the device; "" means /dev/sev.
	Path string
}

var _ ReportDevice = (*LegacySEVDevice)(nil)

// GetReport implements [ReportDevice].
func (d *LegacySEVDevice) GetReport(ctx context.Context, reportData [64]byte) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	path := d.Path
	if path == "" {
		path = defaultLegacySEVPath
	}
	report, err := legacySEVReport(path, reportData)
	return report, nil, err
}

// The legacy interface's sizes and ioctl number.
const (
	legacyReportReqLen = 96   // MSG_REPORT_REQ: REPORT_DATA(64) VMPL(4) reserved(28)
	legacyReportRspLen = 1280 // MSG_REPORT_RSP: STATUS(4) REPORT_SIZE(4) reserved(24) REPORT(1184) padding
	legacyRequestLen   = 40   // struct sev_snp_guest_request on x86-64
	// iocLegacySNPReport is _IOWR('S', 0x1, struct sev_snp_guest_request).
	iocLegacySNPReport uintptr = 3<<30 | legacyRequestLen<<16 | 'S'<<8 | 0x1
	legacyReportOffset         = 32
	msgReportReq               = 5 // SEV-SNP firmware ABI, table 100
	msgReportRsp               = 6
)

// legacyRequest encodes struct sev_snp_guest_request (x86-64 layout):
//
//	u8 req_msg_type, u8 rsp_msg_type, u8 msg_version, pad,
//	u16 request_len, pad(2), u64 request_uaddr,
//	u16 response_len, pad(6), u64 response_uaddr,
//	u32 error, pad(4)
func legacyRequest(reqAddr, rspAddr uint64) [legacyRequestLen]byte {
	var b [legacyRequestLen]byte
	b[0], b[1], b[2] = msgReportReq, msgReportRsp, 1
	binary.LittleEndian.PutUint16(b[4:], legacyReportReqLen)
	binary.LittleEndian.PutUint64(b[8:], reqAddr)
	binary.LittleEndian.PutUint16(b[16:], legacyReportRspLen)
	binary.LittleEndian.PutUint64(b[24:], rspAddr)
	return b
}

// parseLegacyResponse returns the report of a MSG_REPORT_RSP, whose STATUS
// must be 0 and REPORT_SIZE 1184.
func parseLegacyResponse(rsp []byte, fwErr uint32) ([]byte, error) {
	if len(rsp) != legacyReportRspLen {
		return nil, fmt.Errorf("MSG_REPORT_RSP of %d bytes", len(rsp))
	}
	if status := binary.LittleEndian.Uint32(rsp[0:4]); status != 0 || fwErr != 0 {
		return nil, fmt.Errorf("the firmware refused the report: status 0x%x, firmware error 0x%x", status, fwErr)
	}
	if n := binary.LittleEndian.Uint32(rsp[4:8]); n != abi.ReportSize {
		return nil, fmt.Errorf("MSG_REPORT_RSP gives a report of %d bytes, want %d", n, abi.ReportSize)
	}
	return bytes.Clone(rsp[legacyReportOffset : legacyReportOffset+abi.ReportSize]), nil
}

// SEVGuestDevice obtains reports through the Linux sev-guest driver's
// ioctls (include/uapi/linux/sev-guest.h), as go-sev-guest's
// LinuxIoctlQuoteProvider does: SNP_GET_EXT_REPORT when the host has
// certificates for the guest, SNP_GET_REPORT otherwise. (It does not use
// go-sev-guest's client package itself: that would add
// github.com/google/go-configfs-tsm to go.mod; the ABI structures come from
// go-sev-guest's client/linuxabi.) It works on Linux only.
type SEVGuestDevice struct {
	// Path is the device; "" means /dev/sev-guest.
	Path string
}

var _ ReportDevice = (*SEVGuestDevice)(nil)

// GetReport implements [ReportDevice].
func (d *SEVGuestDevice) GetReport(ctx context.Context, reportData [64]byte) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	path := d.Path
	if path == "" {
		path = defaultSEVGuestPath
	}
	return sevGuestReport(path, reportData)
}

// defaultTSMRoot is where Linux mounts the configfs-tsm subsystem.
const defaultTSMRoot = "/sys/kernel/config/tsm"

// ConfigFSDevice obtains reports through the Linux configfs-tsm report
// interface (Documentation/ABI/testing/configfs-tsm): it creates an entry
// directory under ROOT/report, writes REPORT_DATA to its inblob, reads
// provider, outblob and auxblob, checks that generation counted exactly its
// own writes (no other process wrote the entry meanwhile), and removes the
// entry. The protocol is that of github.com/google/go-configfs-tsm's
// report package, implemented here on the file system so that ROOT can be
// chosen (that module is not a requirement of tkms's go.mod).
type ConfigFSDevice struct {
	// Root is the configfs-tsm directory; "" means /sys/kernel/config/tsm.
	Root string
	// Privilege, when not nil, is written to privlevel: the VMPL the
	// report is requested at (0 to 3).
	Privilege *uint
	// Provider is the report provider the entry must name; "" means
	// "sev_guest" (SEV-SNP), "tdx_guest" (TDX) for a [TDXAttester].
	Provider string

	fs tsmFS // nil means the operating system's file system
}

var _ ReportDevice = (*ConfigFSDevice)(nil)

// tsmFS is the part of the file system that ConfigFSDevice uses. configfs
// attributes exist as soon as their directory does and removing an entry
// is one rmdir; tests give a temporary directory that behaves so.
type tsmFS interface {
	MkdirTemp(dir, pattern string) (string, error)
	ReadFile(name string) ([]byte, error)
	WriteFile(name string, data []byte) error
	Remove(name string) error
}

// osFS is tsmFS on the operating system's file system.
type osFS struct{}

func (osFS) MkdirTemp(dir, pattern string) (string, error) { return os.MkdirTemp(dir, pattern) }
func (osFS) ReadFile(name string) ([]byte, error)          { return os.ReadFile(name) }
func (osFS) Remove(name string) error                      { return os.Remove(name) }

// WriteFile writes an existing attribute: configfs attributes are never
// created by writing.
func (osFS) WriteFile(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err1 := f.Close(); err == nil {
		err = err1
	}
	return err
}

// tsmProviderSEV is the provider attribute of the SEV-SNP guest driver.
const tsmProviderSEV = "sev_guest"

// tsmProviderTDX is the provider attribute of the TDX guest driver.
const tsmProviderTDX = "tdx_guest"

// GetReport implements [ReportDevice].
func (d *ConfigFSDevice) GetReport(ctx context.Context, reportData [64]byte) (report, certTable []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	fsys := d.fs
	if fsys == nil {
		fsys = osFS{}
	}
	root := d.Root
	if root == "" {
		root = defaultTSMRoot
	}
	entry, err := fsys.MkdirTemp(filepath.Join(root, "report"), "tkms-")
	if err != nil {
		return nil, nil, fmt.Errorf("configfs-tsm: creating a report entry: %w", err)
	}
	defer func() {
		if rerr := fsys.Remove(entry); rerr != nil && err == nil {
			err = fmt.Errorf("configfs-tsm: removing the report entry: %w", rerr)
		}
	}()
	attr := func(name string) string { return filepath.Join(entry, name) }
	readGeneration := func() (uint64, error) {
		b, err := fsys.ReadFile(attr("generation"))
		if err != nil {
			return 0, fmt.Errorf("configfs-tsm: %w", err)
		}
		g, err := strconv.ParseUint(strings.TrimRight(string(b), "\n"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("configfs-tsm: generation %q is not a number", truncate(string(b), 32))
		}
		return g, nil
	}
	want, err := readGeneration()
	if err != nil {
		return nil, nil, err
	}
	write := func(name string, data []byte) error {
		if err := fsys.WriteFile(attr(name), data); err != nil {
			return fmt.Errorf("configfs-tsm: writing %s: %w", name, err)
		}
		want++
		return nil
	}
	// read reads an attribute and then checks the generation, as
	// go-configfs-tsm's OpenReport.ReadOption does.
	read := func(name string) ([]byte, error) {
		b, err := fsys.ReadFile(attr(name))
		if err != nil {
			return nil, fmt.Errorf("configfs-tsm: reading %s: %w", name, err)
		}
		got, err := readGeneration()
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("configfs-tsm: the report entry changed while reading %s (generation %d, want %d): another writer", name, got, want)
		}
		return b, nil
	}
	if err := write("inblob", reportData[:]); err != nil {
		return nil, nil, err
	}
	if d.Privilege != nil {
		if *d.Privilege > 3 {
			return nil, nil, fmt.Errorf("configfs-tsm: privilege level %d, want 0 to 3", *d.Privilege)
		}
		if err := write("privlevel", []byte(strconv.FormatUint(uint64(*d.Privilege), 10))); err != nil {
			return nil, nil, err
		}
	}
	provider, err := read("provider")
	if err != nil {
		return nil, nil, err
	}
	wantProvider, guest := d.Provider, "SEV-SNP"
	if wantProvider == "" {
		wantProvider = tsmProviderSEV
	} else if wantProvider == tsmProviderTDX {
		guest = "TDX"
	}
	if p := string(bytes.TrimRight(provider, "\n")); p != wantProvider {
		return nil, nil, fmt.Errorf("configfs-tsm: the report provider is %q, not %q: this is not a %s guest", truncate(p, 32), wantProvider, guest)
	}
	if report, err = read("outblob"); err != nil {
		return nil, nil, err
	}
	if certTable, err = read("auxblob"); err != nil {
		if !errors.Is(err, fs.ErrNotExist) { // kernels before auxblob
			return nil, nil, err
		}
		certTable = nil
	}
	return report, certTable, nil
}
