package kms

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
)

// A replicated ledger (internal/raftstore) calls these hooks on every
// node as it applies committed entries (store.ReplicaHooks). The embedded
// store never calls them.

// checkApply re-checks an entry against the state in force just before it
// is applied: a release decided on a node whose state was behind (the
// policy changed, or the key expired, in between) is never recorded.
func (s *Service) checkApply(e *ledger.Entry) error {
	if e.Type != ledger.TypeKeyReleased {
		return nil
	}
	var r state.KeyReleased
	if err := json.Unmarshal(e.Body, &r); err != nil {
		return fmt.Errorf("kms: key.released entry: %w", err)
	}
	var err error
	s.Read(func(st *state.State) { err = releasable(st, r, e.Time) })
	return err
}

// keepDataKey stores the data key of a key.created entry made by another
// node, before the entry is written.
func (s *Service) keepDataKey(e *ledger.Entry, dk []byte) error {
	kid, err := entryKid(e)
	if err != nil {
		return err
	}
	return s.keyring.Put(kid, dk)
}

// dataKey returns the data key of a key.created entry, nil once erased.
func (s *Service) dataKey(e *ledger.Entry) ([]byte, error) {
	kid, err := entryKid(e)
	if err != nil {
		return nil, err
	}
	dk, err := s.keyring.Get(kid)
	if err == keyring.ErrNoDEK {
		return nil, nil
	}
	return dk, err
}

// applied erases, on every node, the data key of a key whose destruction
// was just applied (the leader's scheduler erases its own after the
// entry; a second erasure is a no-op).
func (s *Service) applied(e *ledger.Entry) {
	if e.Type != ledger.TypeKeyDestroyed {
		return
	}
	kid, err := entryKid(e)
	if err == nil {
		s.privMu.Lock()
		clear(s.priv[kid])
		delete(s.priv, kid)
		s.privMu.Unlock()
		err = s.keyring.Delete(kid)
	}
	if err != nil {
		s.log.Error("cannot erase the data key of a destroyed key", "seq", e.Seq, "err", err)
	}
}

func entryKid(e *ledger.Entry) (string, error) {
	var k struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(e.Body, &k); err != nil || k.Kid == "" {
		return "", fmt.Errorf("kms: %s entry %d names no key", e.Type, e.Seq)
	}
	return k.Kid, nil
}

// nodeRemoved reports whether governance removed cluster node id.
func (s *Service) nodeRemoved(id string) bool {
	var ok bool
	s.Read(func(st *state.State) { _, ok = st.RemovedNodes[id] })
	return ok
}

// hasLogSigner reports whether the log's signing key is loaded.
func (s *Service) hasLogSigner() bool {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logSigner != nil
}

// loadedLogKey returns the verifier key of the loaded signing key.
func (s *Service) loadedLogKey() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logVKey
}

// effectsWait bounds how long a node that does not lead waits for the
// leader to carry out the effects of a proposal it recorded.
const effectsWait = 10 * time.Second

// awaitEffects waits, on a node that does not lead, until the leader has
// carried out the pending effects of proposal id (a rotate_key_now's key
// is then in this node's state, as on a single node), at most effectsWait.
// On the leader it returns at once: runEffectsLocked did the work.
func (s *Service) awaitEffects(ctx context.Context, id string) {
	if s.IsLeader() {
		return
	}
	t := time.NewTimer(effectsWait)
	defer t.Stop()
	for {
		ch := s.Changed()
		var pending bool
		s.Read(func(st *state.State) {
			for _, e := range st.PendingEffects {
				pending = pending || e.ProposalID == id
			}
		})
		if !pending {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-t.C:
			return
		}
	}
}

// leader is what a replicated ledger tells of this node's role.
type leader interface{ IsLeader() bool }

// IsLeader reports whether this node runs the work that must happen once
// in a cluster (the rotation scheduler): always on the embedded store.
func (s *Service) IsLeader() bool {
	if l, ok := s.store.(leader); ok {
		return l.IsLeader()
	}
	return true
}
