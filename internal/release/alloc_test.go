package release_test

import (
	"context"
	"testing"
)

// appUnwrapAllocBudget bounds the heap allocations of one /app/unwrapKey
// release through the service with the real ACI sample (decoding,
// token, evidence, policy, wrapping, the durable ledger append and the
// receipt; no HTTP): 975-1,015 measured (BENCHMARKS.md), most of them in
// go-jose, go-sev-guest's report validation (which parses the VCEK again),
// crypto/rsa's per-key precomputation and bbolt. A change that allocates
// more per release must say why here.
const appUnwrapAllocBudget = 1100

// TestAppUnwrapAllocs holds a release to its allocation budget. It counts
// allocations, not time, so the machine's load does not change it (a
// background refresh may add a few: hence the margin).
func TestAppUnwrapAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("releases 50 times")
	}
	h := newHarness(t)
	release := func() {
		if _, err := h.rel.AppUnwrap(context.Background(), h.auth, h.body, "jwk"); err != nil {
			t.Fatal(err)
		}
	}
	release() // caches: the VCEK chain, the parsed policy, the checkpoint key
	if n := testing.AllocsPerRun(50, release); n > appUnwrapAllocBudget {
		t.Fatalf("%.0f allocations per release, over the budget of %d", n, appUnwrapAllocBudget)
	} else {
		t.Logf("%.0f allocations per release (budget %d)", n, appUnwrapAllocBudget)
	}
}

// BenchmarkAppUnwrapService is one /app/unwrapKey release through the
// service (no HTTP), with the real ACI sample, one at a time: allocations
// per release are what TestAppUnwrapAllocs holds to a budget.
func BenchmarkAppUnwrapService(b *testing.B) {
	h := newHarness(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.rel.AppUnwrap(context.Background(), h.auth, h.body, "jwk"); err != nil {
			b.Fatal(err)
		}
	}
}
