package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
)

// TestLegacySEVABI checks the legacy /dev/sev request against the layout
// of struct sev_snp_guest_request and the ioctl number the ACI SKR
// sidecar uses on 5.x kernels (3223868161).
func TestLegacySEVABI(t *testing.T) {
	if iocLegacySNPReport != 3223868161 {
		t.Fatalf("ioctl number %d, want 3223868161 (0xc0285301)", iocLegacySNPReport)
	}
	b := legacyRequest(0x1122334455667788, 0x99aabbccddeeff00)
	want := make([]byte, 40)
	want[0], want[1], want[2] = 5, 6, 1
	binary.LittleEndian.PutUint16(want[4:], 96)
	binary.LittleEndian.PutUint64(want[8:], 0x1122334455667788)
	binary.LittleEndian.PutUint16(want[16:], 1280)
	binary.LittleEndian.PutUint64(want[24:], 0x99aabbccddeeff00)
	if !bytes.Equal(b[:], want) {
		t.Fatalf("request\n%x, want\n%x", b, want)
	}

	report := bytes.Repeat([]byte{0xab}, abi.ReportSize)
	rsp := func(status, size uint32) []byte {
		r := make([]byte, legacyReportRspLen)
		binary.LittleEndian.PutUint32(r[0:], status)
		binary.LittleEndian.PutUint32(r[4:], size)
		copy(r[32:], report)
		return r
	}
	for _, tc := range []struct {
		name  string
		rsp   []byte
		fwErr uint32
		want  string // error substring; "" for success
	}{
		{"ok", rsp(0, abi.ReportSize), 0, ""},
		{"status", rsp(0x16, abi.ReportSize), 0, "status 0x16"},
		{"firmware error", rsp(0, abi.ReportSize), 7, "firmware error 0x7"},
		{"report size", rsp(0, 1000), 0, "1000 bytes"},
		{"short", make([]byte, 100), 0, "100 bytes"},
	} {
		got, err := parseLegacyResponse(tc.rsp, tc.fwErr)
		switch {
		case tc.want == "" && (err != nil || !bytes.Equal(got, report)):
			t.Errorf("%s: %x..., %v", tc.name, got[:4], err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

type fakeInfo struct{ dir bool }

func (f fakeInfo) Name() string       { return "x" }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return map[bool]fs.FileMode{true: fs.ModeDir}[f.dir] }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.dir }
func (f fakeInfo) Sys() any           { return nil }

// TestChooseReportDevice: configfs-tsm, else /dev/sev-guest, else the
// legacy /dev/sev.
func TestChooseReportDevice(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]bool // path -> is a directory
		want  ReportDevice
	}{
		{"configfs-tsm", map[string]bool{"/sys/kernel/config/tsm/report": true, "/dev/sev-guest": false, "/dev/sev": false}, &ConfigFSDevice{}},
		{"sev-guest", map[string]bool{"/dev/sev-guest": false, "/dev/sev": false}, &SEVGuestDevice{}},
		{"legacy sev", map[string]bool{"/dev/sev": false}, &LegacySEVDevice{}},
		{"nothing", map[string]bool{}, &SEVGuestDevice{}},
	} {
		got := chooseReportDevice(func(p string) (fs.FileInfo, error) {
			if dir, ok := tc.files[filepath.ToSlash(p)]; ok {
				return fakeInfo{dir}, nil
			}
			return nil, fs.ErrNotExist
		})
		if gt, wt := typeName(got), typeName(tc.want); gt != wt {
			t.Errorf("%s: %s, want %s", tc.name, gt, wt)
		}
	}
}

func typeName(d ReportDevice) string {
	switch d.(type) {
	case *ConfigFSDevice:
		return "configfs"
	case *SEVGuestDevice:
		return "sev-guest"
	case *LegacySEVDevice:
		return "legacy"
	}
	return "?"
}

// On this (non-SEV) machine the legacy device fails cleanly.
func TestLegacySEVDeviceAbsent(t *testing.T) {
	_, _, err := (&LegacySEVDevice{Path: filepath.Join(t.TempDir(), "sev")}).GetReport(context.Background(), [64]byte{})
	if err == nil || !strings.Contains(err.Error(), "legacy SEV device") {
		t.Fatalf("a report from a device that does not exist: %v", err)
	}
}
