package attest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/tkms-dev/tkms/internal/attest/maa"
)

// maaHolder holds the MAA verifier in use, which SetMAAInstances replaces
// when the trusted instances change (a governance decision).
type maaHolder struct {
	mu   sync.Mutex // serialises replacements
	cur  atomic.Pointer[maa.Verifier]
	opts maa.Options // Config.MAA, Now resolved
}

func (h *maaHolder) init(v *maa.Verifier, opts maa.Options) {
	h.cur.Store(v)
	h.opts = opts
}

func (h *maaHolder) get() *maa.Verifier { return h.cur.Load() }

func (h *maaHolder) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.get().Close()
}

// SetMAAInstances replaces the trusted Azure Attestation instances (those
// of Config.MAA until then) with instances, keeping Config.MAA's clock,
// HTTP client and logger: tokens of an instance no longer listed are
// refused (maa.CodeIssuerUntrusted, or maa.CodeNotConfigured when none
// is left), those of a new one accepted. Remote key sets that cannot be
// fetched now are retried later, as by New. Verifications in progress
// finish with the previous instances.
func (v *Verifier) SetMAAInstances(ctx context.Context, instances []maa.Instance) error {
	h := &v.maa
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.opts
	o.Instances = append([]maa.Instance(nil), instances...)
	next, err := maa.New(ctx, o)
	if err != nil {
		return err
	}
	old := h.cur.Swap(next)
	old.Close()
	return nil
}

// MAAIssuers returns the issuers of the trusted Azure Attestation
// instances.
func (v *Verifier) MAAIssuers() []string { return v.maa.get().Issuers() }
