package maa_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/maa"
)

// Verify a real Azure Attestation token offline, with the instance's
// signing keys given as a static JWK Set, at a time inside its validity.
func Example() {
	jwks, _ := os.ReadFile("testdata/maa-shared-rsa-keys.scrtlabs.jwks.json")
	token, _ := os.ReadFile("testdata/sharedweu_L138.jwt")
	v, err := maa.New(context.Background(), maa.Options{
		Instances: []maa.Instance{{Issuer: "https://sharedweu.weu.attest.azure.net", JWKS: jwks}},
		Now:       func() time.Time { return time.Date(2023, 3, 30, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	res, err := v.Verify(context.Background(), string(token))
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Claims["x-ms-isolation-tee.x-ms-compliance-status"])
	// Output: azure-compliant-cvm
}
