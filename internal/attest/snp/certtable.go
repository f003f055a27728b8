package snp

import (
	"github.com/google/go-sev-guest/abi"

	"github.com/tkms-dev/tkms/internal/attest/certtable"
)

// ParseCertTable parses the GUID certificate table of an extended report
// (SNP_GET_EXT_REPORT, configfs-tsm auxblob), checking every entry's byte
// range first (certtable.Parse).
func ParseCertTable(b []byte) (*abi.CertTable, error) { return certtable.Parse(b) }
