package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// Reasons recorded in key.created entries.
const (
	ReasonScheduled = "scheduled"
	ReasonRefresh   = "refresh"
)

// ErrKeyNotFound and ErrKeyDestroyed are returned by PrivateKey.
var (
	ErrKeyNotFound  = errors.New("kms: key not found")
	ErrKeyDestroyed = errors.New("kms: key destroyed")
)

// ReservedIDs is how many numeric ids forced rotations leave free for the
// scheduler, so that a burst of refreshes cannot stop scheduled rotation.
const ReservedIDs = 10

// ErrKeyLimit is returned by Rotate when a forced rotation would take one
// of the ids reserved for scheduled rotations.
var ErrKeyLimit = fmt.Errorf("kms: %d of the 90 numeric ids are held by unexpired keys; the rest are reserved for scheduled rotation", 90-ReservedIDs)

// Rotate creates a new key now, whatever the schedule says, and returns it.
// reason is recorded in the ledger.
func (s *Service) Rotate(ctx context.Context, reason string) (*state.Key, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.rotateLocked(ctx, s.now(), reason)
}

// CheckForcedRotation returns ErrKeyLimit if a forced rotation (Rotate, or
// the rotate_key_now of an accepted proposal) would be refused now because
// only the ids reserved for scheduled rotation are free. It is a hint for
// callers that would rather not propose a rotation that must wait: the
// rotation itself checks again.
func (s *Service) CheckForcedRotation() error {
	if s.freeIDs(s.now()) <= ReservedIDs {
		return ErrKeyLimit
	}
	return nil
}

// freeIDs returns how many numeric ids no unexpired key holds at now.
func (s *Service) freeIDs(now time.Time) int {
	free := 0
	s.Read(func(st *state.State) {
		for id := keys.MinID; id <= keys.MaxID; id++ {
			if !st.IDHeld(id, now) {
				free++
			}
		}
	})
	return free
}

// rotateLocked is Rotate for a caller that holds writeMu.
func (s *Service) rotateLocked(ctx context.Context, now time.Time, reason string) (*state.Key, error) {
	if reason != ReasonScheduled && s.freeIDs(now) <= ReservedIDs {
		return nil, ErrKeyLimit
	}
	k, err := s.createKeyLocked(ctx, now, reason)
	if err == nil {
		s.poke()
	}
	return k, err
}

// dueLocked reports whether a scheduled rotation is due at now: there is no
// key yet, the newest key is a rotation interval old, or the newest key
// would retire before a key created now could be published.
func dueLocked(st *state.State, now time.Time) bool {
	n := st.Newest()
	if n == nil || n.Phase(now) >= state.Retired {
		return true
	}
	p := st.Rotation
	if !now.Before(n.Created.Add(p.RotationInterval.D())) {
		return true
	}
	return !now.Before(n.NotAfter.Add(-p.PublishDelay.D()))
}

// createKeyLocked generates a key, stores its data key in the keyring and
// appends its key.created entry. The caller holds writeMu.
func (s *Service) createKeyLocked(ctx context.Context, now time.Time, reason string) (*state.Key, error) {
	var (
		kc     state.KeyCreated
		suite  keys.Suite
		policy state.RotationPolicy
		err    error
	)
	s.Read(func(st *state.State) {
		policy = st.Rotation
		suite, err = keys.ParseSuite(policy.Suite)
		if err != nil {
			return
		}
		kc.Number = uint64(len(st.Keys)) + 1
		kc.ID, err = keys.AssignID(kc.Number, func(id int) bool { return st.IDHeld(id, now) })
		// The first key, or one created while nothing is advertised, is
		// published at once: no client can have cached anything older.
		kc.NotBefore = now.Add(policy.PublishDelay.D())
		if st.Primary(now) == nil {
			kc.NotBefore = now
		}
	})
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", err)
	}
	priv, pub, err := suite.Generate()
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", err)
	}
	defer clear(priv)
	pem, err := keys.PublicPEM(suite, pub)
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", err)
	}
	kc.Kid = keys.KID(pem, kc.Number)
	kc.Suite, kc.KEM, kc.KDF, kc.AEAD = suite.Name, suite.KEM, suite.KDF, suite.AEAD
	kc.PublicKey = pub
	kc.NotAfter = kc.NotBefore.Add(policy.RotationInterval.D())
	kc.ReleaseUntil = kc.NotAfter.Add(policy.GracePeriod.D())
	kc.DestroyAfter = kc.ReleaseUntil.Add(policy.Retention.D())
	kc.Reason = reason
	body, err := json.Marshal(kc)
	if err != nil {
		return nil, err
	}

	// The data key is durable before the entry that needs it: a crash in
	// between leaves an orphan data key, removed at the next start.
	dek, err := s.keyring.Add(kc.Kid)
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", s.store.Fail(err))
	}
	defer clear(dek)
	inner, err := sealWithDEK(dek, kc.Kid, priv)
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", err)
	}
	// A replicated ledger carries the data key to the other nodes.
	entries, err := s.store.Append(ctx, store.Proposal{Time: now, Type: ledger.TypeKeyCreated, Body: body, Secret: inner, DataKey: dek})
	if err != nil {
		return nil, fmt.Errorf("kms: create key: %w", err)
	}
	s.privMu.Lock()
	s.priv[kc.Kid] = append([]byte(nil), priv...)
	s.privMu.Unlock()

	var k *state.Key
	s.Read(func(st *state.State) {
		if kk := st.Key(kc.Kid); kk != nil && kk.Seq == entries[0].Seq {
			c := *kk
			k = &c
		}
	})
	if k == nil {
		return nil, fmt.Errorf("kms: create key: entry %d was not applied", entries[0].Seq)
	}
	s.log.Info("key created", "kid", k.Kid, "id", k.ID, "suite", k.Suite, "seq", k.Seq, "reason", reason,
		"not_before", k.NotBefore, "not_after", k.NotAfter, "release_until", k.ReleaseUntil)
	return k, nil
}

// Tick does the lifecycle work due at the clock's current time: the pending
// effects of accepted governance proposals, a scheduled rotation, then
// marker entries for phases that have passed, then the destruction of keys
// past retention. It returns the time of the next work.
func (s *Service) Tick(ctx context.Context) (next time.Time, err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.now()
	// In a cluster only the leader rotates and marks phases: once per
	// slot, whatever node leads when it comes.
	if !s.IsLeader() {
		return now.Add(time.Second), nil
	}
	// Nothing can be recorded: check again in a minute (each failed tick
	// is logged by Run, a reminder rather than a flood).
	if err := s.store.WriteErr(); err != nil {
		return now.Add(time.Minute), err
	}
	s.runEffectsLocked(ctx, now)

	var due bool
	s.Read(func(st *state.State) { due = dueLocked(st, now) })
	if due {
		if _, err := s.createKeyLocked(ctx, now, ReasonScheduled); err != nil {
			return now.Add(time.Second), err
		}
	}

	var props []store.Proposal
	var destroy []string
	s.Read(func(st *state.State) {
		for _, k := range st.Live() {
			add := func(typ ledger.Type, reason string) {
				b, _ := json.Marshal(state.KeyEvent{Kid: k.Kid, Reason: reason})
				props = append(props, store.Proposal{Time: now, Type: typ, Body: b})
			}
			if k.PublishedSeq == 0 && !now.Before(k.NotBefore) {
				add(ledger.TypeKeyPublished, "")
			}
			if k.RetiredSeq == 0 && !now.Before(k.NotAfter) {
				add(ledger.TypeKeyRetired, "")
			}
			if k.ExpiredSeq == 0 && !now.Before(k.ReleaseUntil) {
				add(ledger.TypeKeyExpired, "")
			}
			if !now.Before(k.DestroyAfter) {
				add(ledger.TypeKeyDestroyed, "retention ended")
				destroy = append(destroy, k.Kid)
			}
		}
	})
	if len(props) > 0 {
		if _, err := s.store.Append(ctx, props...); err != nil {
			return now.Add(time.Second), fmt.Errorf("kms: lifecycle: %w", err)
		}
	}
	if err := s.eraseLocked(destroy); err != nil {
		return now.Add(time.Second), err
	}

	s.Read(func(st *state.State) {
		next = st.NextChange(now)
		if n := st.Newest(); n != nil {
			for _, t := range []time.Time{n.Created.Add(st.Rotation.RotationInterval.D()), n.NotAfter.Add(-st.Rotation.PublishDelay.D())} {
				if t.After(now) && (next.IsZero() || t.Before(next)) {
					next = t
				}
			}
		}
	})
	return next, nil
}

// eraseLocked removes destroyed keys' data keys and cached private keys.
// Their key.destroyed entries are already durable.
func (s *Service) eraseLocked(kids []string) error {
	if len(kids) == 0 {
		return nil
	}
	s.privMu.Lock()
	for _, kid := range kids {
		clear(s.priv[kid])
		delete(s.priv, kid)
	}
	s.privMu.Unlock()
	if err := s.keyring.Delete(kids...); err != nil {
		return fmt.Errorf("kms: erase data keys: %w", s.store.Fail(err))
	}
	for _, kid := range kids {
		s.log.Info("key destroyed", "kid", kid)
	}
	return nil
}

// Run runs the scheduler until ctx ends: it calls Tick at each moment the
// state says something is due, and when poked by a writer.
func (s *Service) Run(ctx context.Context) {
	for {
		next, err := s.Tick(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("key scheduler", "err", err)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = min(max(next.Sub(s.now()), 0), time.Hour)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// PrivateKey returns the private key of kid (RFC 9180
// SerializePrivateKey), unsealing it from the ledger if needed. The caller
// must not modify the returned slice and must not log it. Release policy is
// not checked here: that is the caller's job.
func (s *Service) PrivateKey(kid string) ([]byte, error) {
	var k *state.Key
	s.Read(func(st *state.State) {
		if kk := st.Key(kid); kk != nil {
			c := *kk
			k = &c
		}
	})
	if k == nil {
		return nil, ErrKeyNotFound
	}
	if k.DestroyedSeq != 0 {
		return nil, ErrKeyDestroyed
	}
	s.privMu.Lock()
	defer s.privMu.Unlock()
	if p, ok := s.priv[kid]; ok {
		return p, nil
	}
	e, err := s.store.Get(k.Seq)
	if err != nil {
		return nil, err
	}
	inner, err := s.store.Unseal(e)
	if err != nil {
		return nil, fmt.Errorf("kms: unseal %s: %w", kid, err)
	}
	dek, err := s.keyring.Get(kid)
	if errors.Is(err, keyring.ErrNoDEK) {
		return nil, ErrKeyDestroyed
	}
	if err != nil {
		return nil, err
	}
	priv, err := openWithDEK(dek, kid, inner)
	clear(dek)
	if err != nil {
		return nil, fmt.Errorf("kms: open %s: %w", kid, err)
	}
	s.priv[kid] = priv
	return priv, nil
}

func dekAD(kid string) []byte { return []byte("tkms/key/v1\x00" + kid) }

func sealWithDEK(dek []byte, kid string, priv []byte) ([]byte, error) {
	a, err := seal.New(dek)
	if err != nil {
		return nil, err
	}
	return a.Seal(priv, dekAD(kid))
}

func openWithDEK(dek []byte, kid string, sealed []byte) ([]byte, error) {
	a, err := seal.New(dek)
	if err != nil {
		return nil, err
	}
	return a.Open(sealed, dekAD(kid))
}
