package raftstore

import (
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
)

// A rekey ends its command: the appends queued after it wait for the
// next, which the leader numbers once the rekey is applied.
func TestSplitAfterRekey(t *testing.T) {
	p := func(types ...ledger.Type) *pending {
		var props []store.Proposal
		for _, ty := range types {
			props = append(props, store.Proposal{Type: ty})
		}
		return &pending{props: props}
	}
	created, rekeyed := ledger.TypeKeyCreated, ledger.TypeLedgerRekeyed
	a, r, b, c := p(created), p(rekeyed), p(created), p(created, created)
	for _, tc := range []struct {
		name       string
		batch      []*pending
		now, later int
	}{
		{"no rekey", []*pending{a, b, c}, 3, 0},
		{"a rekey first", []*pending{r, a, b}, 1, 2},
		{"a rekey inside", []*pending{a, r, b, c}, 2, 2},
		{"a rekey last", []*pending{a, b, r}, 3, 0},
		{"a rekey alone", []*pending{r}, 1, 0},
		{"two rekeys", []*pending{a, r, b, r}, 2, 2},
	} {
		now, later := splitAfterRekey(tc.batch)
		if len(now) != tc.now || len(later) != tc.later {
			t.Errorf("%s: %d now, %d later; want %d, %d", tc.name, len(now), len(later), tc.now, tc.later)
			continue
		}
		if tc.later > 0 && !rekeys(now[len(now)-1]) {
			t.Errorf("%s: the command does not end with the rekey", tc.name)
		}
	}
}
