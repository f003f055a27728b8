package maa_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
)

// FuzzVerify: no token makes the verifier panic, and every refusal has a
// code of this package.
func FuzzVerify(f *testing.F) {
	sim := simInstance(f)
	tok, err := sim.Token(simmaa.TokenOptions{ReportData: bytes.Repeat([]byte{1}, 64)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(read(f, "sharedweu_L138.jwt")))
	f.Add(tok)
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.")
	v := newVerifier(f, at("2023-03-30T12:00:00Z"), weu(f), sim.Trusted())
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := v.Verify(context.Background(), token); err != nil && maa.Code(err) == maa.CodeInternal {
			t.Fatalf("uncoded error: %v", err)
		}
	})
}
