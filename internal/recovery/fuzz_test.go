package recovery

import (
	"encoding/json"
	"testing"
)

// FuzzShares parses a recovery.shares body as a recovering node reads it
// from a ledger copy, and verifies and combines shares against it: no
// input may panic (a share with index 0 or a duplicated one would make
// circl's Recover panic).
func FuzzShares(f *testing.F) {
	fx := newFixture(f)
	body, _ := json.Marshal(fx.shares)
	s0, _ := fx.shares.OpenShare(fx.ms[0].id, fx.ms[0].key, fx.ms[0].priv)
	f.Add(body, s0, s0)
	f.Add([]byte(`{"version":1,"threshold":1,"members":[{"member_id":"a","index":1}],"commitments":["AA=="],"wrapped_secret":"AA=="}`), []byte{0, 1}, []byte{0, 0})
	f.Fuzz(func(t *testing.T, body, a, b []byte) {
		var sh Shares
		if json.Unmarshal(body, &sh) != nil || sh.Check() != nil {
			return
		}
		for _, m := range sh.Members {
			_ = sh.Verify(m.MemberID, a)
		}
		if len(sh.Members) >= 2 {
			_, _ = sh.Combine(map[string][]byte{sh.Members[0].MemberID: a, sh.Members[1].MemberID: b})
		}
	})
}

// FuzzSubmit submits arbitrary bytes as a share message: each is refused
// with a code or accepted, never a panic.
func FuzzSubmit(f *testing.F) {
	fx := newFixture(f)
	id := fx.sess.Status().RecoveryID
	f.Add(fx.message(f, fx.ms[0], id, 40, "", nil))
	f.Add([]byte{0xd2, 0x84})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := fx.sess.Submit(raw); err != nil && CodeOf(err) == "" {
			t.Fatalf("an error without a code: %v", err)
		}
	})
}
