package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
// kernel offers it (Linux 6.7 and later) and /dev/sev-guest otherwise, the
// order in which go-sev-guest's client.GetQuoteProvider tries them.
func DefaultReportDevice() ReportDevice {
	if fi, err := os.Stat(filepath.Join(defaultTSMRoot, "report")); err == nil && fi.IsDir() {
		return &ConfigFSDevice{}
	}
	return &SEVGuestDevice{}
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
		path = "/dev/sev-guest"
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
