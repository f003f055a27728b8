package servicecheck_test

import (
	"log"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/servicecheck"
)

// Keys releases nothing until every node GET /v1/service lists is
// endorsed by the log and runs the measurement the integrator expects.
func Example() {
	check, err := servicecheck.New(servicecheck.Config{
		NodePolicy: []byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":false,"x-ms-sevsnpvm-launchmeasurement":["` + "<hex measurement>" + `"]}}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	keys, err := client.NewKeys(client.KeysConfig{
		KMS:     "https://kms.sro.example",
		LogKey:  "<GET /v1/log/key, confirmed out of band>",
		Service: check,
		// Attester, Tokens, ...
	})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
}
