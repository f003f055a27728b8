package snp_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/snp"
)

func ExampleVerifier_VerifyACI() {
	js, err := os.ReadFile("testdata/aci_snp.json") // an ACI attestation object
	if err != nil {
		panic(err)
	}
	bundle, err := snp.DecodeACI(js)
	if err != nil {
		fmt.Println(snp.Code(err), err)
		return
	}
	v, err := snp.New(snp.Options{Now: func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		panic(err)
	}
	res, err := v.VerifyACI(context.Background(), bundle)
	if err != nil {
		fmt.Println(snp.Code(err), err) // e.g. REPORT_SIGNATURE_INVALID
		return
	}
	fmt.Println(res.Signer, res.ProductLine, res.Pinned)
	fmt.Println(res.Claims[snp.ClaimHostData])
	fmt.Printf("%.8s\n", res.Claims[snp.ClaimLaunchMeasurement])

	// The same report with one byte of MEASUREMENT changed.
	bundle.Report[0x90] ^= 1
	_, err = v.VerifyACI(context.Background(), bundle)
	fmt.Println(snp.Code(err))
	// Output:
	// VCEK Milan true
	// 73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20
	// 02c3b0d5
	// REPORT_SIGNATURE_INVALID
}
