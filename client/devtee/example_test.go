package devtee_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/tkms-dev/tkms/client/devtee"
)

// A service in development attests with the simulated TEE of a tkms dev
// data directory: REPORT_DATA[0:32] binds its wrapping key.
func ExampleNewAttester() {
	dataDir, err := os.MkdirTemp("", "tkms-dev-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)

	attester, err := devtee.NewAttester(dataDir, devtee.AttesterOptions{Create: true}) // tkms dev --data creates it
	if err != nil {
		log.Fatal(err)
	}
	var reportData [64]byte
	wrappingKey := sha256.Sum256([]byte("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"))
	copy(reportData[:], wrappingKey[:])
	ev, err := attester.Attest(context.Background(), reportData)
	if err != nil {
		log.Fatal(err)
	}
	var obj map[string]string
	if err := json.Unmarshal(ev.Attestation, &obj); err != nil {
		log.Fatal(err)
	}
	fmt.Println("type:", ev.Type)
	fmt.Println("simulated:", ev.Simulated)
	fmt.Println("endorsed_tcb:", obj["endorsed_tcb"])
	// Output:
	// type: snp-aci
	// simulated: true
	// endorsed_tcb: 0300000000000873
}
