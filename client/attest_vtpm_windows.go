package client

import (
	"context"
	"errors"
)

// DeviceVTPM is a [VTPM] on a TPM device; on Windows there is none.
type DeviceVTPM struct{}

var errNoVTPM = errors.New("client: the vTPM device is read on Linux only")

// OpenVTPM returns an error on Windows: Azure confidential VMs running
// tkms's client are Linux guests.
func OpenVTPM(string) (*DeviceVTPM, error) { return nil, errNoVTPM }

// Close implements io.Closer.
func (*DeviceVTPM) Close() error { return nil }

// HCLReport implements [VTPM].
func (*DeviceVTPM) HCLReport(context.Context) ([]byte, error) { return nil, errNoVTPM }

// Quote implements [VTPM].
func (*DeviceVTPM) Quote(context.Context, []byte) ([]byte, []byte, [][]byte, error) {
	return nil, nil, nil, errNoVTPM
}
