package release

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/policy"
)

// docPolicies returns the JSON blocks of docs/release.md's section "One
// example policy per format".
func docPolicies(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/release.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## One example policy per format")
	if start < 0 {
		t.Fatal(`docs/release.md has no section "One example policy per format"`)
	}
	section := doc[start+3:]
	section = section[:strings.Index(section, "\n## ")]
	var out []string
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(section, -1) {
		out = append(out, m[1])
	}
	return out
}

// fillPlaceholders replaces each "<...>" value of a policy (a claim's
// value or one of its values, an allOf condition's equals) by the claim of
// the same name in claims, when there is one.
func fillPlaceholders(v any, claims map[string]any) any {
	placeholder := func(x any) bool { s, ok := x.(string); return ok && strings.HasPrefix(s, "<") }
	switch v := v.(type) {
	case map[string]any:
		if name, ok := v["claim"].(string); ok && placeholder(v["equals"]) && claims[name] != nil {
			v["equals"] = claims[name]
		}
		for k, x := range v {
			if arr, ok := x.([]any); ok && len(arr) == 1 && placeholder(arr[0]) && claims[k] != nil {
				v[k] = []any{claims[k]}
				continue
			}
			v[k] = fillPlaceholders(x, claims)
		}
	case []any:
		for i := range v {
			v[i] = fillPlaceholders(v[i], claims)
		}
	}
	return v
}

// TestDocsExamplePolicies: each example policy of docs/release.md, its
// placeholders filled with the values of a real vector of its format,
// admits that vector's evidence and denies (or does not admit) every
// other format's; the example for every format at once admits a TDX quote.
func TestDocsExamplePolicies(t *testing.T) {
	file := func(path string) []byte { return readFile(t, path) }
	object := func(v any) []byte { b, _ := json.Marshal(v); return b }
	evidence := map[string]*attest.Evidence{}
	for _, r := range []struct {
		typ, at string
		raw     []byte
	}{
		{attest.TypeACI, "2025-01-01T00:00:00Z", file(aciSample)},
		{attest.TypeSNP, "2025-01-01T00:00:00Z", object(api.RawSNP{Type: attest.TypeSNP, Report: file("../attest/snp/testdata/trustee_test-report.bin"), VCEK: file("../attest/snp/testdata/trustee_test-vcek.der")})},
		{attest.TypeTDX, "2026-01-01T00:00:00Z", file("../attest/tdx/testdata/tdx_quote_6.dat")},
		{attest.TypeAzSNP, "2025-06-01T00:00:00Z", file("../attest/azcvm/testdata/snp_evidence-v1.json")},
		{attest.TypeAzTDX, "2025-01-01T00:00:00Z", file("../attest/azcvm/testdata/tdx_evidence-v1.json")},
		{attest.TypeMAA, "2023-03-30T12:00:00Z", file("../attest/maa/testdata/sharedweu_L138.jwt")},
	} {
		tm, _ := time.Parse(time.RFC3339, r.at)
		cfg := attest.Config{SNP: snp.Options{Now: func() time.Time { return tm }}}
		cfg.MAA.Instances = []maa.Instance{{Issuer: "https://sharedweu.weu.attest.azure.net", JWKS: file("../attest/maa/testdata/maa-shared-rsa-keys.scrtlabs.jwks.json")}}
		v, err := attest.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := v.Verify(context.Background(), r.raw)
		v.Close()
		if err != nil || ev.Type != r.typ {
			t.Fatalf("the %s vector: %v", r.typ, err)
		}
		evidence[r.typ] = ev
	}

	blocks := docPolicies(t)
	if len(blocks) != len(evidence)+1 {
		t.Fatalf("docs/release.md has %d example policies, want one per format (%d) and one for every format at once", len(blocks), len(evidence))
	}
	seen := map[string]bool{}
	typeOf := regexp.MustCompile(`"tkms-evidence-type",? *(?:"equals": *)?:? *"([a-z-]+)"`)
	for i, block := range blocks {
		typ := attest.TypeACI
		if m := typeOf.FindStringSubmatch(block); m != nil {
			typ = m[1]
		}
		if i == len(blocks)-1 {
			typ = attest.TypeTDX // every format at once: its TDX branch
		} else {
			seen[typ] = true
		}
		own, ok := evidence[typ]
		if !ok {
			t.Fatalf("example %d names evidence type %q, which no vector has", i+1, typ)
		}
		var doc any
		if err := json.Unmarshal([]byte(block), &doc); err != nil {
			t.Fatalf("example %d (%s) is not JSON: %v", i+1, typ, err)
		}
		filled, _ := json.Marshal(fillPlaceholders(doc, own.Claims))
		if strings.Contains(string(filled), `"<`) {
			t.Fatalf("example %d (%s): a placeholder names no claim of the vector: %s", i+1, typ, filled)
		}
		p, err := policy.Parse(filled)
		if err != nil {
			t.Fatalf("example %d (%s) does not parse: %v", i+1, typ, err)
		}
		if err := policy.Admit(p, own.Claims); err != nil {
			t.Errorf("example %d (%s) does not admit its format: %v", i+1, typ, err)
		} else if err := policy.Evaluate(p, own.Claims); err != nil {
			t.Errorf("example %d (%s) denies the real %s vector: %v", i+1, typ, typ, err)
		}
		if i == len(blocks)-1 {
			continue
		}
		for other, ev := range evidence {
			if other != typ && policy.Admit(p, ev.Claims) == nil && policy.Evaluate(p, ev.Claims) == nil {
				t.Errorf("example %d (%s) releases to %s evidence too", i+1, typ, other)
			}
		}
	}
	if len(seen) != len(evidence) {
		t.Fatalf("the examples are of the formats %v, want one of each of the %d", seen, len(evidence))
	}
}
