package simsnp_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
)

// A development server keeps its simulated chain in a directory and answers
// with ACI-shaped attestation bundles that bind a wrapping key.
func Example() {
	dir, err := os.MkdirTemp("", "simsnp-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	chain, err := simsnp.LoadOrCreate(dir) // the same chain on every restart
	if err != nil {
		log.Fatal(err)
	}
	wrappingKey := sha256.Sum256([]byte("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"))
	b, err := chain.ACIBundle(simsnp.ACIBundleOptions{
		Report: simsnp.ReportOptions{ReportData: wrappingKey[:]},
	})
	if err != nil {
		log.Fatal(err)
	}
	var bundle map[string]string
	if err := json.Unmarshal(b, &bundle); err != nil {
		log.Fatal(err)
	}
	ark, _ := chain.Roots()
	_, feed := chain.UVMTrust()
	fmt.Println("ARK:", ark.Subject.CommonName, "-", ark.Subject.StreetAddress[0])
	fmt.Println("endorsed_tcb:", bundle["endorsed_tcb"])
	fmt.Println("UVM feed:", feed)
	// Output:
	// ARK: ARK-Milan - SIMULATED - NOT AMD - NOT A TEE
	// endorsed_tcb: 0300000000000873
	// UVM feed: SIMULATED-AMD-UVM
}
