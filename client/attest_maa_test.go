package client

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/api"
)

func TestMAAAttester(t *testing.T) {
	rd := [64]byte{7}
	var got [64]byte
	a := NewMAAAttester(MAATokenFunc(func(_ context.Context, r [64]byte) (string, error) {
		got = r
		return " eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n", nil
	}))
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	var obj api.MAA
	if err := json.Unmarshal(ev.Attestation, &obj); err != nil || ev.Type != EvidenceMAA || obj.Type != "maa" || obj.Token != "eyJhbGciOiJSUzI1NiJ9.e30.c2ln" || got != rd {
		t.Fatalf("%s %v", ev.Attestation, err)
	}
	for name, tt := range map[string]struct {
		a    *MAAAttester
		want string
	}{
		"no source":  {NewMAAAttester(nil), "no MAA token source"},
		"source err": {NewMAAAttester(MAATokenFunc(func(context.Context, [64]byte) (string, error) { return "", errors.New("MAA 429") })), "MAA 429"},
		"not a JWT":  {NewMAAAttester(MAATokenFunc(func(context.Context, [64]byte) (string, error) { return "hello", nil })), "not a compact JWT"},
	} {
		if _, err := tt.a.Attest(context.Background(), rd); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", name, err, tt.want)
		}
	}
}
