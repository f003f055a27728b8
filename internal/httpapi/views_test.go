package httpapi

import (
	"context"
	"log/slog"
	"testing"

	"github.com/tkms-dev/tkms/internal/state"
)

// TestViewCachedPerKeySet checks that the public-key answers are built once
// per key set: a ledger entry that changes no key (a release or, here, a
// recorded denial) serves the same bytes under the new sequence number,
// and a key change builds them again.
func TestViewCachedPerKeySet(t *testing.T) {
	e := newEnv(t, nil, false)
	s := New(e.svc, Options{Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	now := e.clock.Now()
	v1 := s.views.get(now)

	if err := e.svc.RecordDenial(ctx, state.ReleaseDenied{Issuer: "https://issuer.example", Identity: "x", API: "app/unwrapKey", Code: "POLICY_DENIED"}); err != nil {
		t.Fatal(err)
	}
	v2 := s.views.get(now)
	if v2.seq == v1.seq {
		t.Fatal("the ledger did not move")
	}
	if &v2.listPubKeys[0] != &v1.listPubKeys[0] || &v2.v1Keys[0] != &v1.v1Keys[0] {
		t.Fatal("an entry that changes no key rebuilt the public-key answers")
	}
	if s.views.get(now) != v2 {
		t.Fatal("the view of an unchanged ledger was not kept")
	}

	if _, err := e.svc.Rotate(ctx, "refresh"); err != nil {
		t.Fatal(err)
	}
	v3 := s.views.get(now)
	if &v3.v1Keys[0] == &v2.v1Keys[0] {
		t.Fatal("a new key did not rebuild the public-key answers")
	}
}
