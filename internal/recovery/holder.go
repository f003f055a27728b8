package recovery

import "context"

// A Holder is an automatic recovery member: it holds the whole recovery
// key, so that a service whose nodes all restarted recovers without
// waiting for k members. Split wraps the recovery key for each holder and
// records the result in the shares entry (HeldKey); Recover with a holder
// asks it to unwrap the key, which it does only for a node it trusts.
//
// internal/akv implements it with Azure Key Vault / Managed HSM secure key
// release: Wrap encrypts to the vault key's public half, Unwrap presents
// the node's Azure Attestation token to the vault's release endpoint and
// unwraps with the released key. Adding or removing a holder is a
// governance action, and each use is a ledger entry (docs/recovery.md).
//
// How a holder plugs in: the leader passes the holders in force to
// kms.Service.RunRecoveryShares (cmd/tkms/serve.go), which hands them to
// Split, so each recovery.shares entry holds their wrapped keys (Held)
// and names them in its ConfigID; a recovering node (cmd/tkms/recover.go,
// waitForRecovery) that has a holder calls UnwrapHeld instead of waiting
// for members, installs the secret the same way, and records
// kms.Recovered{Holder: h.Name(), SharesSeq: ...}, which the state machine
// accepts only for a holder named by those shares.
type Holder interface {
	// Name names the holder in the ledger, e.g. the vault key's URL.
	Name() string
	// Wrap encrypts the recovery key so that only the holder opens it.
	Wrap(recoveryKey []byte) ([]byte, error)
	// Unwrap returns the recovery key wrapped by Wrap.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}

// UnwrapHeld recovers the ledger secret with holder h alone, from the key
// it holds in s. A holder not named in s is refused with CodeNotMember.
func (s *Shares) UnwrapHeld(ctx context.Context, h Holder) ([]byte, error) {
	for _, hk := range s.Held {
		if hk.Holder != h.Name() {
			continue
		}
		rk, err := h.Unwrap(ctx, hk.Wrapped)
		if err != nil {
			return nil, fail(CodeShareInvalid, "holder %s: %w", h.Name(), err) // the holder's code stays findable
		}
		defer clear(rk)
		return s.Unwrap(rk)
	}
	return nil, fail(CodeNotMember, "holder %s holds no recovery key of shares version %d", h.Name(), s.Version)
}
