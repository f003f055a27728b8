// Package certtable parses the GUID certificate table of an SEV-SNP
// extended report. It is its own package so that package client can check
// a device's table without linking the report verifier (go-sev-guest's
// verify, which registers a global flag).
package certtable

import (
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// Parse parses the GUID certificate table of an extended report
// (SNP_GET_EXT_REPORT, configfs-tsm auxblob). It checks every entry's byte
// range in 64-bit arithmetic before go-sev-guest's abi.CertTable.Unmarshal
// copies it: Unmarshal (v0.15.0) adds offset and length in uint32, so an
// entry whose sum wraps past 2^32 passed its bounds check, made Unmarshal
// allocate up to 4 GiB and then panic slicing the table (found by
// FuzzConfigFSReport; regression test snp's TestParseCertTableWrappingEntry).
func Parse(b []byte) (*abi.CertTable, error) {
	entries, err := abi.ParseSnpCertTableHeader(b)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if uint64(e.Offset)+uint64(e.Length) > uint64(len(b)) {
			return nil, fmt.Errorf("cert table entry %d: bytes %d to %d+%d are outside the table's %d bytes", i, e.Offset, e.Offset, e.Length, len(b))
		}
	}
	var t abi.CertTable
	if err := t.Unmarshal(b); err != nil {
		return nil, err
	}
	return &t, nil
}
