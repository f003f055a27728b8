package policy_test

import (
	"fmt"

	"github.com/tkms-dev/tkms/internal/policy"
)

func ExampleEvaluate() {
	p, err := policy.Parse([]byte(`{"claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-is-debuggable":false},
		"gte":{"x-ms-sevsnpvm-guestsvn":3}}`))
	if err != nil {
		panic(err)
	}
	claims := map[string]any{"x-ms-ver": "2", "x-ms-sevsnpvm-is-debuggable": true, "x-ms-sevsnpvm-guestsvn": 2}
	fmt.Println(policy.Evaluate(p, claims))
	fmt.Printf("%s\n", policy.Marshal(p))
	// Output:
	// policy: denied: claims: claim "x-ms-sevsnpvm-is-debuggable" is true, want false; gte: claim "x-ms-sevsnpvm-guestsvn" is 2, want >= 3
	// {"claims":{"x-ms-sevsnpvm-is-debuggable":[false],"x-ms-ver":["2","3"]},"gte":{"x-ms-sevsnpvm-guestsvn":3}}
}
