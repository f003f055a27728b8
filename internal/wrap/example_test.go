package wrap_test

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/tkms-dev/tkms/internal/wrap"
)

// An /app client hashes its wrapping key's exact PEM text into REPORT_DATA;
// the KMS recomputes the hash from the string it received.
func ExampleAppBindingHash() {
	pemText, err := os.ReadFile("testdata/publicWrapKey.pem")
	if err != nil {
		panic(err)
	}
	if _, err := wrap.ParseAppWrappingKey(string(pemText)); err != nil {
		panic(err)
	}
	h := wrap.AppBindingHash(string(pemText))
	fmt.Println(hex.EncodeToString(h[:]))

	// REPORT_DATA of the ACI report that this key was generated for.
	reportData, _ := hex.DecodeString("36b03dab8e8751b26d9b33fa2fa1296f823a238ef3dd604f758a4aff5b2b41d0" +
		"0000000000000000000000000000000000000000000000000000000000000000")
	fmt.Println(wrap.CheckBinding(reportData, h))
	fmt.Println(wrap.CheckBinding(reportData, wrap.AppBindingHash(string(pemText[:len(pemText)-1]))))
	// Output:
	// 36b03dab8e8751b26d9b33fa2fa1296f823a238ef3dd604f758a4aff5b2b41d0
	// <nil>
	// wrap: report data does not match the wrapping key hash: report data begins 36b03dab8e8751b2, wrapping key hash begins aaee69a225cb633a
}
