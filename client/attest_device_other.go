//go:build !linux

package client

import (
	"errors"
	"runtime"
)

func sevGuestReport(path string, reportData [64]byte) (report, certTable []byte, err error) {
	return nil, nil, errors.New("the SEV-SNP guest device " + path + " is a Linux interface, not available on " + runtime.GOOS)
}

func legacySEVReport(path string, reportData [64]byte) ([]byte, error) {
	return nil, errors.New("the legacy SEV device " + path + " is a Linux interface, not available on " + runtime.GOOS)
}
