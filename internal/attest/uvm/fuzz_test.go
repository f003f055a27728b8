package uvm

import (
	"bytes"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to Verify: it must never panic, and
// anything it accepts must be an authentic, trusted endorsement of the
// measurement given.
func FuzzVerify(f *testing.F) {
	for _, vec := range []vector{aciVector(f), sidecarVector(f), securityContextVector(f)} {
		f.Add(vec.endorsement)
	}
	f.Add([]byte{})
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40})
	aci := aciVector(f)
	v, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := v.Verify(b, aci.measurement)
		if err == nil && !bytes.Equal(r.LaunchMeasurement, aci.measurement) {
			t.Fatalf("accepted %x with result %+v", b, r)
		}
		if err != nil && Code(err) == "" {
			t.Fatalf("error without a code: %v", err)
		}
		r, err = v.VerifyEndorsement(b)
		if (err == nil) != (r != nil) {
			t.Fatalf("VerifyEndorsement: result %v, error %v", r, err)
		}
	})
}
