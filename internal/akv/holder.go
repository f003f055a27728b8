package akv

import (
	"context"
	"sync"
)

// Holder is the automatic recovery member as a holder of the whole
// recovery key (the recovery.Holder interface of internal/recovery:
// Name, Wrap, Unwrap). Wrap needs only the member's public key; Unwrap
// runs [Recover] and keeps its record for the ledger ([Holder.Last]).
type Holder struct {
	Member  Member
	Options RecoverOptions

	mu   sync.Mutex
	last *Recovery
}

// NewHolder returns the holder of member m; o is needed by Unwrap only.
func NewHolder(m Member, o RecoverOptions) *Holder { return &Holder{Member: m, Options: o} }

// Name is the vault key's id with its version: what the ledger names the
// holder by.
func (h *Holder) Name() string { return h.Member.KID() }

// Wrap seals the recovery key to the vault key's public part ([Seal]).
func (h *Holder) Wrap(recoveryKey []byte) ([]byte, error) {
	s, err := Seal(h.Member.PublicKey, recoveryKey)
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}

// Unwrap has the vault release its key to this node and opens the wrapped
// recovery key with it ([Recover]).
func (h *Holder) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	key, rec, err := Recover(ctx, h.Member, string(wrapped), h.Options)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.last = rec
	h.mu.Unlock()
	return key, nil
}

// Last returns the record of the last successful Unwrap (nil before one),
// the body service.recovered carries as "auto".
func (h *Holder) Last() *Recovery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}
