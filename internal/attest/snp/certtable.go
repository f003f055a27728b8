package snp

import (
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// ParseCertTable parses the GUID certificate table of an extended report
// (SNP_GET_EXT_REPORT, configfs-tsm auxblob). It checks every entry's byte
// range in 64-bit arithmetic before go-sev-guest's abi.CertTable.Unmarshal
// copies it: Unmarshal (v0.15.0) adds offset and length in uint32, so an
// entry whose sum wraps past 2^32 passed its bounds check, made Unmarshal
// allocate up to 4 GiB and then panic slicing the table (found by
// FuzzConfigFSReport; regression test TestParseCertTableWrappingEntry).
//
// A GUID may appear once: go-sev-guest keeps the last of two VCEK (or VLEK,
// ASK, ARK) entries without a word, so a table holding two certificates for
// one role is ambiguous and refused with an [*Error] of
// [CodeCertTableDuplicate]. Other errors are plain.
func ParseCertTable(b []byte) (*abi.CertTable, error) {
	entries, err := abi.ParseSnpCertTableHeader(b)
	if err != nil {
		return nil, err
	}
	first := make(map[[abi.GUIDSize]byte]int, len(entries))
	for i, e := range entries {
		if uint64(e.Offset)+uint64(e.Length) > uint64(len(b)) {
			return nil, fmt.Errorf("cert table entry %d: bytes %d to %d+%d are outside the table's %d bytes", i, e.Offset, e.Offset, e.Length, len(b))
		}
		if j, dup := first[e.GUID]; dup {
			return nil, errorf(CodeCertTableDuplicate, nil, "certificate table entries %d and %d both have GUID %s (%s): one certificate per role", j, i, e.GUID, guidRole(e.GUID.String()))
		}
		first[e.GUID] = i
	}
	var t abi.CertTable
	if err := t.Unmarshal(b); err != nil {
		return nil, err
	}
	return &t, nil
}

// guidRole names the certificate role of a table GUID.
func guidRole(guid string) string {
	switch guid {
	case abi.VcekGUID:
		return "VCEK"
	case abi.VlekGUID:
		return "VLEK"
	case abi.AskGUID:
		return "ASK"
	case abi.ArkGUID:
		return "ARK"
	}
	return "other"
}
