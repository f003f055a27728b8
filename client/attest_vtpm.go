//go:build !windows

package client

import (
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// The vTPM's fixed handles on Azure confidential VMs.
const (
	vtpmHCLReportIndex = 0x01400001
	vtpmAKHandle       = 0x81000003
	defaultTPMPath     = "/dev/tpmrm0"
	nvChunk            = 1024
)

// OpenVTPM opens the TPM device at path ("" means /dev/tpmrm0) as an
// Azure confidential VM's vTPM (github.com/google/go-tpm). Close it after
// use.
func OpenVTPM(path string) (*DeviceVTPM, error) {
	if path == "" {
		path = defaultTPMPath
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client: opening the vTPM: %w", err)
	}
	return &DeviceVTPM{tpm: t}, nil
}

// DeviceVTPM is a [VTPM] on a TPM device.
type DeviceVTPM struct {
	tpm transport.TPMCloser
}

var _ VTPM = (*DeviceVTPM)(nil)

// Close closes the device.
func (d *DeviceVTPM) Close() error { return d.tpm.Close() }

// HCLReport implements [VTPM]: it reads NV index 0x01400001 (owner-less,
// password authorisation with an empty password, as Azure defines it).
func (d *DeviceVTPM) HCLReport(ctx context.Context) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(vtpmHCLReportIndex)}.Execute(d.tpm)
	if err != nil {
		return nil, err
	}
	info, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(vtpmHCLReportIndex), Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	var out []byte
	for off := 0; off < int(info.DataSize); off += nvChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(nvChunk, int(info.DataSize)-off)
		rsp, err := tpm2.NVRead{AuthHandle: auth, NVIndex: tpm2.NamedHandle{Handle: tpm2.TPMHandle(vtpmHCLReportIndex), Name: pub.NVName}, Size: uint16(n), Offset: uint16(off)}.Execute(d.tpm)
		if err != nil {
			return nil, err
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// Quote implements [VTPM].
func (d *DeviceVTPM) Quote(ctx context.Context, nonce []byte) (attest, signature []byte, pcrs [][]byte, err error) {
	key, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(vtpmAKHandle)}.Execute(d.tpm)
	if err != nil {
		return nil, nil, nil, err
	}
	all := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0xff}}}}
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: tpm2.TPMHandle(vtpmAKHandle), Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      all,
	}.Execute(d.tpm)
	if err != nil {
		return nil, nil, nil, err
	}
	rsa, err := q.Signature.Signature.RSASSA()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the attestation key's signature is not RSASSA: %w", err)
	}
	// PCR_Read returns at most 8 digests per call.
	for first := 0; first < 24; first += 8 {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		sel := make([]byte, 3)
		sel[first/8] = 0xff
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: sel}}}}.Execute(d.tpm)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, dg := range rsp.PCRValues.Digests {
			pcrs = append(pcrs, dg.Buffer)
		}
	}
	if len(pcrs) != 24 {
		return nil, nil, nil, fmt.Errorf("the vTPM returned %d PCR values, want 24", len(pcrs))
	}
	return q.Quoted.Bytes(), rsa.Sig.Buffer, pcrs, nil
}
