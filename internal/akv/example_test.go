package akv_test

import (
	"fmt"

	"github.com/tkms-dev/tkms/internal/akv"
)

// The consortium approves one exact release policy: its hash, in tkms's
// canonical form, is what set_auto_recovery_member records, whatever the
// whitespace or member order of the document the vault holds.
func ExamplePolicySHA256() {
	a := `{"version":"1.0.0","anyOf":[{"authority":"https://sharedeus2.eus2.attest.azure.net","allOf":[
	  {"claim":"x-ms-sevsnpvm-hostdata","equals":"4d2f..."},{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}]}`
	b := `{"anyOf":[{"allOf":[{"equals":"4d2f...","claim":"x-ms-sevsnpvm-hostdata"},{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}],
	  "authority":"https://sharedeus2.eus2.attest.azure.net"}],"version":"1.0.0"}`
	ha, _ := akv.PolicySHA256([]byte(a))
	hb, _ := akv.PolicySHA256([]byte(b))
	fmt.Println(ha == hb, len(ha))
	_, err := akv.PolicySHA256([]byte(`{"claims":{"x-ms-sevsnpvm-hostdata":"4d2f..."}}`))
	fmt.Println(err)
	// Output:
	// true 64
	// akv: the release policy is not of the SKR grammar
}
