package snp

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// wrappingTable is a certificate table whose one entry starts right after
// the header (offset 48) and claims 2^32-32 bytes: offset+length wraps to 16
// in uint32, inside the table's 64 bytes.
func wrappingTable() []byte {
	b := make([]byte, 64)
	copy(b[0:16], []byte("vcek-guid-000000"))
	binary.LittleEndian.PutUint32(b[16:], 48)
	binary.LittleEndian.PutUint32(b[20:], 0xffffffe0)
	return b // entry 1 (bytes 24-47) is the all-zero terminator
}

// TestParseCertTableWrappingEntry is the regression test of the crash
// FuzzConfigFSReport found (client/testdata/fuzz/FuzzConfigFSReport/
// b602a4c14a6a4768): go-sev-guest's abi.CertTable.Unmarshal accepts an
// entry whose offset+length wraps in uint32, allocates its length (up to 4
// GiB) and panics slicing the table. A client sends such a table as the
// cert_table of raw snp evidence, so the KMS must refuse it as malformed.
func TestParseCertTableWrappingEntry(t *testing.T) {
	if _, err := ParseCertTable(wrappingTable()); err == nil || !strings.Contains(err.Error(), "outside the table") {
		t.Fatalf("ParseCertTable: %v", err)
	}
	v := newVerifier(t, Options{})
	_, err := v.VerifyExtendedReport(context.Background(), read(t, "trustee_test-report.bin"), wrappingTable())
	if Code(err) != CodeReportMalformed {
		t.Fatalf("VerifyExtendedReport: %v (code %s), want %s", err, Code(err), CodeReportMalformed)
	}
	_, err = v.VerifyRaw(context.Background(), read(t, "trustee_test-report.bin"), nil, wrappingTable())
	if Code(err) != CodeReportMalformed {
		t.Fatalf("VerifyRaw: %v", err)
	}
}

// TestParseCertTable: well-formed tables parse to their entries, as
// abi.CertTable.Unmarshal gives them; malformed ones are errors.
func TestParseCertTable(t *testing.T) {
	good := abi.CertsFromProto(&spb.CertificateChain{VcekCert: []byte("vcek"), AskCert: []byte("ask"), ArkCert: []byte("ark")}).Marshal()
	tab, err := ParseCertTable(good)
	if err != nil {
		t.Fatal(err)
	}
	if p := tab.Proto(); string(p.VcekCert) != "vcek" || string(p.AskCert) != "ask" || string(p.ArkCert) != "ark" {
		t.Fatalf("parsed %+v", p)
	}
	_, aws := eternisai(t, "aws")
	if _, err := ParseCertTable(aws); err != nil {
		t.Fatalf("EternisAI AWS table: %v", err)
	}
	for name, b := range map[string][]byte{
		"no end": good[:24],
		"cut":    good[:len(good)-1],
		"wrap":   wrappingTable(),
		"past the end": func() []byte {
			b := wrappingTable()
			binary.LittleEndian.PutUint32(b[20:], 17)
			return b
		}(),
	} {
		if _, err := ParseCertTable(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestCertTableDuplicateVCEK: a table with two VCEK entries is refused with
// its own code, whichever comes last. go-sev-guest keeps the last one, so
// before this check a table whose last VCEK entry was the real one verified
// whatever the first entry held, and one whose last entry was another
// chip's VCEK failed with a misleading code.
func TestCertTableDuplicateVCEK(t *testing.T) {
	report, table := eternisai(t, "gcp")
	real, err := ParseCertTable(table)
	if err != nil {
		t.Fatal(err)
	}
	vcek := real.Proto().GetVcekCert()
	other := read(t, "trustee_test-vcek.der")
	v := newVerifier(t, Options{Now: fixedNow(time.Date(2026, 3, 25, 22, 20, 6, 0, time.UTC))})
	if _, err := v.VerifyExtendedReport(context.Background(), report, table); err != nil {
		t.Fatalf("the table as captured: %v", err)
	}
	for name, certs := range map[string][][]byte{
		"real VCEK last":  {other, vcek},
		"real VCEK first": {vcek, other},
		"same VCEK twice": {vcek, vcek},
	} {
		t.Run(name, func(t *testing.T) {
			var tab abi.CertTable
			for _, c := range certs {
				tab.Entries = append(tab.Entries, abi.CertsFromProto(&spb.CertificateChain{VcekCert: c}).Entries...)
			}
			dup := tab.Marshal()
			if _, err := ParseCertTable(dup); Code(err) != CodeCertTableDuplicate {
				t.Fatalf("ParseCertTable: %v (code %s), want %s", err, Code(err), CodeCertTableDuplicate)
			}
			_, err := v.VerifyExtendedReport(context.Background(), report, dup)
			if Code(err) != CodeCertTableDuplicate || !strings.Contains(err.Error(), "VCEK") {
				t.Fatalf("VerifyExtendedReport: %v (code %s), want %s", err, Code(err), CodeCertTableDuplicate)
			}
			if _, err := v.VerifyRaw(context.Background(), report, nil, dup); Code(err) != CodeCertTableDuplicate {
				t.Fatalf("VerifyRaw: %v (code %s)", err, Code(err))
			}
		})
	}
}
