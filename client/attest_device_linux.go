//go:build linux

package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"
)

// sevGuestReport follows go-sev-guest v0.15.0's LinuxIoctlQuoteProvider
// (client/client_linux.go GetRawQuoteAtLevel and client/client.go
// getExtendedReportIn): it asks SNP_GET_EXT_REPORT for the length of the
// host's certificates; when the host has none (the query fails, as on ACI,
// whose certificates come from THIM), it asks SNP_GET_REPORT for the
// report alone.
func sevGuestReport(path string, reportData [64]byte) (report, certTable []byte, err error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the SEV-SNP guest device %s: %w", path, err)
	}
	defer syscall.Close(fd)

	length, err := extendedReport(fd, [64]byte{}, nil)
	if err != nil {
		var rsp labi.SnpReportRespABI
		req := labi.SnpUserGuestRequest{
			ReqData:  &labi.SnpReportReqABI{ReportData: reportData},
			RespData: &rsp,
		}
		if err := guestRequest(fd, labi.IocSnpGetReport, &req); err != nil {
			return nil, nil, fmt.Errorf("%s: SNP_GET_REPORT: %w", path, err)
		}
		return append([]byte(nil), rsp.Data[:abi.ReportSize]...), nil, nil
	}
	certs := make([]byte, length)
	var rsp labi.SnpReportRespABI
	ext := labi.SnpExtendedReportReq{
		Data:        labi.SnpReportReqABI{ReportData: reportData},
		Certs:       certs,
		CertsLength: uint32(len(certs)),
	}
	req := labi.SnpUserGuestRequest{ReqData: &ext, RespData: &rsp}
	if err := guestRequest(fd, labi.IocSnpGetExtendedReport, &req); err != nil {
		return nil, nil, fmt.Errorf("%s: SNP_GET_EXT_REPORT: %w", path, err)
	}
	return append([]byte(nil), rsp.Data[:abi.ReportSize]...), certs[:ext.CertsLength], nil
}

// extendedReport with no certificate buffer returns the length the host's
// certificates need.
func extendedReport(fd int, reportData [64]byte, certs []byte) (uint32, error) {
	var rsp labi.SnpReportRespABI
	ext := labi.SnpExtendedReportReq{
		Data:        labi.SnpReportReqABI{ReportData: reportData},
		Certs:       certs,
		CertsLength: uint32(len(certs)),
	}
	req := labi.SnpUserGuestRequest{ReqData: &ext, RespData: &rsp}
	err := guestRequest(fd, labi.IocSnpGetExtendedReport, &req)
	var fwErr *abi.SevFirmwareErr
	if errors.As(err, &fwErr) && fwErr.Status == abi.GuestRequestInvalidLength {
		return ext.CertsLength, nil
	}
	if err != nil {
		return 0, err
	}
	if ext.CertsLength == 0 {
		return 0, errors.New("the host has no certificates for this guest")
	}
	return ext.CertsLength, nil
}

// guestRequest issues one sev-guest ioctl, as go-sev-guest's
// LinuxDevice.Ioctl and client.message do.
func guestRequest(fd int, command uintptr, req *labi.SnpUserGuestRequest) error {
	conv := req.ABI()
	result, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), command, uintptr(conv.Pointer()))
	if err := conv.Finish(req); err != nil {
		return err
	}
	// The driver leaves fw_err uninitialised on errors other than EIO
	// (go-sev-guest issue #5).
	if errno != syscall.EIO {
		req.FwErr = 0
	}
	if errno != 0 {
		if req.FwErr != 0 {
			return &abi.SevFirmwareErr{Status: abi.SevFirmwareStatus(req.FwErr)}
		}
		return errno
	}
	if result != uintptr(labi.EsOk) {
		return &labi.SevEsErr{Result: labi.EsResult(result)}
	}
	return nil
}

// legacySEVReport issues SEV_SNP_GUEST_MSG_REPORT on the legacy /dev/sev
// (LegacySEVDevice).
func legacySEVReport(path string, reportData [64]byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the legacy SEV device %s: %w", path, err)
	}
	defer syscall.Close(fd)
	req := new([legacyReportReqLen]byte)
	copy(req[:], reportData[:])
	rsp := new([legacyReportRspLen]byte)
	payload := legacyRequest(uint64(uintptr(unsafe.Pointer(req))), uint64(uintptr(unsafe.Pointer(rsp))))
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), iocLegacySNPReport, uintptr(unsafe.Pointer(&payload)))
	runtime.KeepAlive(req)
	runtime.KeepAlive(rsp)
	if errno != 0 {
		return nil, fmt.Errorf("%s: SEV_SNP_GUEST_MSG_REPORT: %w (firmware error 0x%x)", path, errno, binary.LittleEndian.Uint32(payload[32:36]))
	}
	report, err := parseLegacyResponse(rsp[:], binary.LittleEndian.Uint32(payload[32:36]))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return report, nil
}
