package tdx_test

import (
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// FuzzVerify: no input makes the verifier panic, and every refusal
// carries one of the package's codes.
func FuzzVerify(f *testing.F) {
	for _, name := range []string{"tdx_quote_6.dat", "tdx_quote_5.dat", "az_td_quote.bin"} {
		f.Add(read(f, name))
	}
	f.Add(simQuote(f, simtdx.QuoteOptions{}))
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	v := tdx.New(tdx.Options{Now: at("2026-01-01T00:00:00Z")})
	f.Fuzz(func(t *testing.T, quote []byte) {
		_, err := v.Verify(quote)
		if err != nil && tdx.Code(err) == tdx.CodeInternal {
			t.Fatalf("uncoded error: %v", err)
		}
	})
}
