package client_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tkms-dev/tkms/client"
)

// A TD obtains TDX evidence from configfs-tsm (provider tdx_guest); the
// quote's REPORT_DATA is the report data the release asks for.
func ExampleNewTDXAttester() {
	var a client.Attester = client.NewTDXAttester(client.TDXOptions{}) // /sys/kernel/config/tsm
	_ = a                                                              // give it to client.KeysConfig.Attester
	fmt.Println(client.EvidenceTDX)
	// Output: tdx
}

// A service that attests through Microsoft Azure Attestation gives the
// MAA attester a token source: on an Azure confidential VM, the guest
// attestation library's call with the client payload
// {"tkms-report-data": base64 of the report data}.
func ExampleNewMAAAttester() {
	src := client.MAATokenFunc(func(ctx context.Context, reportData [64]byte) (string, error) {
		return "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", nil // the token MAA returned
	})
	ev, err := client.NewMAAAttester(src).Attest(context.Background(), [64]byte{})
	if err != nil {
		panic(err)
	}
	var obj struct{ Type string }
	json.Unmarshal(ev.Attestation, &obj)
	fmt.Println(ev.Type, obj.Type)
	// Output: maa maa
}
