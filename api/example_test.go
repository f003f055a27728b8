package api_test

import (
	"encoding/json"
	"fmt"

	"github.com/tkms-dev/tkms/api"
)

// A client decodes a /v1 release answer into the server's own type; byte
// fields arrive as standard base64 and decode to bytes.
func ExampleV1ReleaseResponse() {
	body := []byte(`{"keys":[{"kid":"k_1","id":11,"suite":"x25519","kem_id":32,"kdf_id":1,"aead_id":2,
		"public_key":"AQID","not_before":"2026-01-01T00:00:00Z","not_after":"2026-01-08T00:00:00Z",
		"release_until":"2026-01-09T00:00:00Z","wrapped":"BAUG"}]}`)
	var resp api.V1ReleaseResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		panic(err)
	}
	k := resp.Keys[0]
	fmt.Println(k.Kid, k.PublicKey, k.Wrapped, len(resp.Receipt))
	// Output: k_1 [1 2 3] [4 5 6] 0
}
