package release_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/tkms-dev/tkms/internal/release"
)

// FuzzAppRequest feeds arbitrary /app/unwrapKey bodies, with a valid token,
// through the whole release path (request decoding, the real verifiers,
// the policy, binding, wrapping and the ledger). Whatever the body, the
// service must not panic, and must either release (a non-empty wrapped
// key, recorded) or fail with a *release.Error carrying a 4xx/5xx status
// and a code. The corpus is seeded with the real request (the ACI sample
// and its wrapping key) and variants of it. The evidence decoder has its
// own target (snp.FuzzDecodeACI).
func FuzzAppRequest(f *testing.F) {
	h := newHarness(f)
	f.Add(h.body, "jwk")
	f.Add(h.body, "tink")
	f.Add(h.body, "pem")
	var m map[string]any
	if err := json.Unmarshal(h.body, &m); err != nil {
		f.Fatal(err)
	}
	for _, edit := range []func(map[string]any){
		func(m map[string]any) { m["attestation"] = string(h.evidence) },
		func(m map[string]any) { m["wrappedKid"] = "nope_1" },
		func(m map[string]any) { delete(m, "wrappingKey") },
		func(m map[string]any) { m["attestation"] = map[string]any{"evidence": "AAAA", "endorsements": ""} },
	} {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		edit(c)
		b, _ := json.Marshal(c)
		f.Add(b, "")
	}
	f.Add([]byte(`{"attestation":{}}`), "")
	f.Add([]byte(`null`), "")
	f.Add([]byte(`{"attestation":"","wrappingKey":1}`), "jwk")

	f.Fuzz(func(t *testing.T, body []byte, format string) {
		before := h.releases()
		resp, err := h.rel.AppUnwrap(context.Background(), h.auth, body, format)
		if err == nil {
			if resp == nil || resp.Wrapped == "" {
				t.Fatalf("released nothing without an error: %+v", resp)
			}
			if h.releases() != before+1 {
				t.Fatal("a release was answered without being recorded")
			}
			return
		}
		var re *release.Error
		if !errors.As(err, &re) {
			t.Fatalf("error of type %T, want *release.Error: %v", err, err)
		}
		if re.Kind > release.KindInternal || re.Code == "" || re.Message == "" {
			t.Fatalf("error without a kind, code or message: %+v", re)
		}
		if resp != nil {
			t.Fatalf("a response together with an error: %v", err)
		}
	})
}
