package attesterr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/attesterr"
)

func TestCode(t *testing.T) {
	cause := errors.New("cause")
	e := attesterr.New("tdx", "TDX_DEBUG", cause, "the TD is %s", "debuggable")
	for _, tc := range []struct {
		err  error
		code string
	}{
		{nil, ""},
		{e, "TDX_DEBUG"},
		{fmt.Errorf("wrapped: %w", e), "TDX_DEBUG"},
		{cause, attesterr.CodeInternal},
	} {
		if got := attesterr.Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.code)
		}
	}
	if e.Error() != "tdx: the TD is debuggable: cause" || !errors.Is(e, cause) {
		t.Fatalf("%v", e)
	}
	if (&attesterr.Error{Pkg: "maa", Msg: "no"}).Error() != "maa: no" {
		t.Fatal("message without a cause")
	}
}
