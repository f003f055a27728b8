package uvm_test

import (
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/tkms-dev/tkms/internal/attest/uvm"
)

// Verify the UVM endorsement of a real ACI evidence bundle against the
// MEASUREMENT of the bundle's SNP report.
func ExampleVerifier_Verify() {
	b, err := os.ReadFile("testdata/aci-snp.json")
	if err != nil {
		log.Fatal(err)
	}
	var bundle struct {
		Evidence        []byte `json:"evidence"`         // the SNP report
		UVMEndorsements []byte `json:"uvm_endorsements"` // the COSE_Sign1
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		log.Fatal(err)
	}
	measurement := bundle.Evidence[0x90 : 0x90+48] // MEASUREMENT; verify the report first

	v, err := uvm.New(uvm.Options{Trusted: uvm.DefaultTrusted(), MinSVN: 100})
	if err != nil {
		log.Fatal(err)
	}
	r, err := v.Verify(bundle.UVMEndorsements, measurement)
	if err != nil {
		log.Fatalf("%s: %v", uvm.Code(err), err)
	}
	fmt.Println(r.Feed, r.SVN, r.SigningTime.Format("2006-01-02"))
	fmt.Println(r.Claims()["x-ms-compliance-status"])

	// Another UVM's measurement is refused.
	measurement[0] ^= 1
	_, err = v.Verify(bundle.UVMEndorsements, measurement)
	fmt.Println(uvm.Code(err))
	// Output:
	// ContainerPlat-AMD-UVM 100 2023-11-14
	// azure-compliant-uvm
	// UVM_MEASUREMENT_MISMATCH
}
