package client

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
)

// checkReceipt verifies a release's receipt when KeysConfig.LogKey is set: the
// checkpoint's signature, the inclusion proof, and that the entry is a
// key.released of exactly these kids to this wrapping key (so a receipt
// of another release does not pass).
func (k *Keys) checkReceipt(raw json.RawMessage, kids []string, bind [32]byte) error {
	if k.verifier == nil {
		return nil
	}
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		return fmt.Errorf("%w: the release answer has no log receipt", ErrRejected)
	}
	r, err := translog.ParseReceipt(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	leaf, _, err := r.Verify(k.verifier)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if leaf.Type != ledger.TypeKeyReleased {
		return fmt.Errorf("%w: the receipt proves a %s entry, not %s", ErrRejected, leaf.Type, ledger.TypeKeyReleased)
	}
	var body api.KeyReleased
	if err := json.Unmarshal(leaf.Body, &body); err != nil {
		return fmt.Errorf("%w: the receipt's entry: %w", ErrRejected, err)
	}
	if !sameSet(body.Kids, kids) || body.WrappingKeySHA256 != hex.EncodeToString(bind[:]) {
		return fmt.Errorf("%w: the receipt records another release (entry %d)", ErrRejected, leaf.Seq)
	}
	k.receipts.Add(1)
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

func distinct(a []string) bool {
	s := slices.Sorted(slices.Values(a))
	return len(slices.Compact(s)) == len(a)
}
