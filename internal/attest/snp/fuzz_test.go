package snp

import (
	"context"
	"testing"
)

func FuzzDecodeACI(f *testing.F) {
	f.Add(read(f, "aci_snp.json"))
	f.Add([]byte(`{"evidence":"AAAA","endorsements":"AAAA"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	v := newVerifier(f, Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeACI(data)
		if err != nil {
			if Code(err) != CodeReportMalformed {
				t.Fatalf("code %s: %v", Code(err), err)
			}
			return
		}
		if len(b.Report) != 1184 || len(b.EndorsementKey) == 0 {
			t.Fatalf("decoded report %d bytes, endorsement key %d bytes", len(b.Report), len(b.EndorsementKey))
		}
		if _, err := v.VerifyACI(context.Background(), b); err != nil && Code(err) == CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

// FuzzVerifyReport feeds arbitrary report bytes with a fixed real VCEK (its chain cached after the
// first call): no panic, and every failure is typed.
func FuzzVerifyReport(f *testing.F) {
	f.Add(read(f, "trustee_test-report.bin"))
	f.Add(aciSample(f).Report)
	f.Add(read(f, "trustee_test-vlek-report.bin"))
	f.Add(read(f, "gosevguest_attestation.bin"))
	f.Add([]byte{})
	vcek := read(f, "trustee_test-vcek.der")
	v := newVerifier(f, Options{})
	f.Fuzz(func(t *testing.T, report []byte) {
		_, err := v.VerifyReport(context.Background(), report, vcek)
		if err != nil && Code(err) == CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
