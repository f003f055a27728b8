package snp

import (
	"github.com/google/go-sev-guest/abi"

	"github.com/tkms-dev/tkms/internal/attest/certtable"
)

// ParseCertTable parses the GUID certificate table of an extended report
// (SNP_GET_EXT_REPORT, configfs-tsm auxblob), checking every entry's byte
// range first (certtable.Parse).
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
		if j, dup := first[e.GUID]; dup {
			return nil, errorf(CodeCertTableDuplicate, nil, "certificate table entries %d and %d both have GUID %s (%s): one certificate per role", j, i, e.GUID, guidRole(e.GUID.String()))
		}
		first[e.GUID] = i
	}
	return certtable.Parse(b)
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
