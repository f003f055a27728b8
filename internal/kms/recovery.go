package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// Recovery shares (docs/recovery.md): the leader keeps a recovery.shares
// entry for the ledger secret in force, split among the members holding
// an encryption key, and renews it when the secret, those members, their
// keys or the recovery threshold change. Older shares then open only the
// secret they were made for.

// RenewRecoveryShares writes new recovery shares if they are due: on the
// leader only, the ledger secret read from secret (NodeAdmission.Secrets:
// the one secret a joining node receives, and the one a recovery must
// give back). It returns the entry written, nil if none was due.
func (s *Service) RenewRecoveryShares(ctx context.Context, secret func() ([]byte, error), holders ...recovery.Holder) (*ledger.Entry, error) {
	return s.renewRecoveryShares(ctx, secret, true, holders)
}

// renewRecoveryShares is RenewRecoveryShares; without checkSecret it reads
// the secret only when the holders or the threshold changed (a rekey is
// noticed on the next check of the secret).
func (s *Service) renewRecoveryShares(ctx context.Context, secret func() ([]byte, error), checkSecret bool, holders []recovery.Holder) (*ledger.Entry, error) {
	if !s.IsLeader() {
		return nil, nil
	}
	// Cheap checks first, without the write lock releases share.
	var configDue bool
	var on bool
	s.Read(func(st *state.State) {
		rs, k := st.RecoveryRecipients()
		on = k > 0 && len(rs) >= k
		configDue = on && (st.Recovery == nil || st.Recovery.Shares.ConfigID != recovery.ConfigID(k, rs, st.AutoRecoveryHolders()...))
	})
	if !on || (!configDue && !checkSecret) {
		return nil, nil
	}
	sec, err := secret()
	if err != nil {
		return nil, fmt.Errorf("kms: recovery shares: %w", err)
	}
	defer clear(sec)
	id := recovery.SecretID(sec)
	var due bool
	s.Read(func(st *state.State) { due = st.RecoverySharesDue(id) })
	if !due {
		return nil, nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var rs []recovery.Recipient
	var k int
	var version uint64
	s.Read(func(st *state.State) {
		due = st.RecoverySharesDue(id)
		rs, k = st.RecoveryRecipients()
		if st.Recovery != nil {
			version = st.Recovery.Shares.Version
		}
		if st.AutoRecovery != nil {
			// The automatic recovery member (docs/auto-recovery.md) holds
			// the whole recovery key, sealed to its vault key's public
			// part: wrapping needs no call to the vault.
			holders = append(holders[:len(holders):len(holders)], akv.NewHolder(*st.AutoRecovery, akv.RecoverOptions{}))
		}
	})
	if !due {
		return nil, nil
	}
	sh, err := recovery.Split(sec, rs, k, version+1, holders...)
	if err != nil {
		return nil, fmt.Errorf("kms: recovery shares: %w", err)
	}
	body, err := json.Marshal(sh)
	if err != nil {
		return nil, err
	}
	es, err := s.store.Append(ctx, store.Proposal{Time: s.now(), Type: ledger.TypeRecoveryShares, Body: body})
	if err != nil {
		return nil, fmt.Errorf("kms: recovery shares: %w", err)
	}
	s.log.Info("recovery shares renewed", "seq", es[0].Seq, "version", sh.Version, "threshold", k, "members", len(rs))
	return es[0], nil
}

// RunRecoveryShares renews the recovery shares whenever they are due,
// until ctx ends: after each change of the state that changes the holders
// or the threshold, and, every few seconds, when the ledger secret
// changed (a rekey) or leadership moved here.
func (s *Service) RunRecoveryShares(ctx context.Context, secret func() ([]byte, error), holders ...recovery.Holder) {
	checkSecret := true
	for {
		ch := s.Changed()
		if _, err := s.renewRecoveryShares(ctx, secret, checkSecret, holders); err != nil && ctx.Err() == nil {
			s.log.Error("cannot renew the recovery shares", "err", err)
		}
		t := time.NewTimer(5 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-ch:
			checkSecret = false
		case <-t.C:
			checkSecret = true
		}
		t.Stop()
	}
}

// RecoveryShares returns the latest recovery shares and the seq of their
// entry, nil if the ledger holds none.
func (s *Service) RecoveryShares() (*recovery.Shares, uint64) {
	var sh *recovery.Shares
	var seq uint64
	s.Read(func(st *state.State) {
		if st.Recovery != nil {
			c := st.Recovery.Shares
			sh, seq = &c, st.Recovery.Seq
		}
	})
	return sh, seq
}

// Recovered says how a recovery was made, for its service.recovered entry.
type Recovered struct {
	RecoveryID string
	SharesSeq  uint64
	Members    []string
	Holder     string
	// Auto is the record of an automatic recovery (akv.Holder.Last).
	Auto *akv.Recovery
}

// RecordRecovery records that the service was recovered: it makes a new
// log key of the same origin and a service.recovered entry naming the
// previous and the new key and holding the last checkpoint of the log as
// it was recovered, signed by the previous key. From that entry on, the
// new key signs the checkpoints and the previous one cosigns them.
func (s *Service) RecordRecovery(ctx context.Context, r Recovered) (*ledger.Entry, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var lk *state.LogKey
	s.Read(func(st *state.State) { lk = st.LogKey })
	if lk == nil {
		return nil, errors.New("kms: a recovery of a ledger without a log key")
	}
	last := s.Checkpoint()
	if len(last.Note) == 0 {
		return nil, errors.New("kms: cannot sign the last checkpoint of the recovered log")
	}
	skey, vkey, err := translog.GenerateKey(lk.Origin)
	if err != nil {
		return nil, fmt.Errorf("kms: log key: %w", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("kms: log key: %w", err)
	}
	body, err := json.Marshal(state.ServiceRecovered{
		RecoveryID: r.RecoveryID, PreviousLogKey: lk.VerifierKey, LogKey: vkey,
		LastCheckpoint: string(last.Note), SharesSeq: r.SharesSeq, Members: r.Members, Holder: r.Holder, Auto: r.Auto,
	})
	if err != nil {
		return nil, err
	}
	s.logMu.Lock()
	old, oldV, oldCos := s.logSigner, s.logVKey, s.cosigners
	s.logSigner, s.logVKey, s.cosigners = signer, vkey, append(append([]note.Signer(nil), oldCos...), old)
	s.logMu.Unlock()
	es, err := s.store.Append(ctx, store.Proposal{Time: s.now(), Type: ledger.TypeServiceRecovered, Body: body, Secret: []byte(skey)})
	if err != nil {
		s.logMu.Lock()
		s.logSigner, s.logVKey, s.cosigners = old, oldV, oldCos
		s.logMu.Unlock()
		return nil, fmt.Errorf("kms: service.recovered: %w", err)
	}
	s.log.Info("service recovered under a new log key", "seq", es[0].Seq, "previous_log_key", lk.VerifierKey, "log_key", vkey, "members", len(r.Members))
	return es[0], nil
}
