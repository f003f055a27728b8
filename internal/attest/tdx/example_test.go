package tdx_test

import (
	"fmt"
	"os"
	"time"

	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// Verify a real Intel TDX quote (Azure, 2023) offline at a time inside its
// PCK certificate's validity.
func Example() {
	quote, err := os.ReadFile("testdata/az_td_quote.bin")
	if err != nil {
		panic(err)
	}
	v := tdx.New(tdx.Options{Now: func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }})
	res, err := v.Verify(quote)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Claims[tdx.ClaimFMSPC], res.Claims[tdx.ClaimTDAttributesDebug], res.Pinned)
	// Output: 00806f050000 false true
}
