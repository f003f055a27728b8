package release

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/state"
)

// MAAFollow makes a Service follow the trusted Azure Attestation (MAA)
// instances of the ledger without a restart: those set by governance
// (state.MAA, the set_maa_instances action) once it has set them, else
// Configured (the configuration's maa_instances); Always (the simulated
// instance of tkms dev) are trusted besides either.
type MAAFollow struct {
	Configured []maa.Instance
	Always     []maa.Instance
	// Seq is the state.MAASeq that the Verifier's instances were built
	// for (0: Configured).
	Seq uint64

	mu   sync.Mutex    // serialises changes
	once sync.Once     // sets cur to Seq
	cur  atomic.Uint64 // the state.MAASeq applied
}

// MAAInstances returns the MAA instances trusted under st: governance's
// list once set, else configured; always besides.
func MAAInstances(st *state.State, configured, always []maa.Instance) []maa.Instance {
	var out []maa.Instance
	if st.MAA == nil {
		out = slices.Clone(configured)
	} else {
		for _, in := range st.MAA.Instances {
			out = append(out, maa.Instance{Issuer: in.Issuer, JWKS: slices.Clone(in.JWKS)})
		}
	}
	return append(out, always...)
}

// followMAA brings the Verifier's MAA instances up to the ledger's when
// governance has changed them since. Reading the state's sequence number
// is all a request costs otherwise. If the new instances cannot be used,
// only Always is trusted (a removed instance must not stay trusted).
func (s *Service) followMAA(ctx context.Context) {
	f := s.cfg.MAA
	if f == nil {
		return
	}
	var seq uint64
	f.once.Do(func() { f.cur.Store(f.Seq) })
	s.cfg.KMS.Read(func(st *state.State) { seq = st.MAASeq })
	if seq == f.cur.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var ins []maa.Instance
	s.cfg.KMS.Read(func(st *state.State) { seq, ins = st.MAASeq, MAAInstances(st, f.Configured, f.Always) })
	if seq == f.cur.Load() {
		return // another request followed it
	}
	if err := s.cfg.Attest.SetMAAInstances(ctx, ins); err != nil {
		s.log.Error("the trusted MAA instances in force cannot be used: only the simulated one, if any, is trusted", "maa_policy_seq", seq, "err", err)
		if err := s.cfg.Attest.SetMAAInstances(ctx, f.Always); err != nil {
			s.log.Error("MAA: no instance can be used", "err", err)
		}
	} else {
		s.log.Info("trusted MAA instances changed: attestation follows them", "maa_policy_seq", seq, "instances", len(ins))
	}
	f.cur.Store(seq)
}
