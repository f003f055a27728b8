package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/recovery"
	"golang.org/x/mod/sumdb/note"
)

// RecoveryShares is the latest recovery.shares entry: the ledger secret
// wrapped under a recovery key split among the members (internal/recovery).
type RecoveryShares struct {
	Seq    uint64          `json:"seq"`
	Shares recovery.Shares `json:"shares"`
}

// ServiceRecovered is the body of a service.recovered entry: k members'
// shares recovered the ledger secret from a copy of the ledger, and the
// service goes on under a new log key. Its sealed part is the new signing
// key. The previous log key cosigns the checkpoints from then on, so an
// auditor who knew it follows the log across the recovery.
type ServiceRecovered struct {
	// RecoveryID is the nonce the recovering node published; every share
	// was signed for it.
	RecoveryID string `json:"recovery_id"`
	// PreviousLogKey is the log key in force before, LogKey the new one
	// (the same origin: the log goes on).
	PreviousLogKey string `json:"previous_log_key"`
	LogKey         string `json:"log_key"`
	// LastCheckpoint is the last checkpoint of the log before the
	// recovery, signed by the previous log key: the ledger copy recovered.
	LastCheckpoint string `json:"last_checkpoint"`
	// SharesSeq is the recovery.shares entry the shares came from, and
	// Members the members whose shares were used.
	SharesSeq uint64   `json:"shares_seq"`
	Members   []string `json:"members"`
	// Holder names the automatic recovery member that recovered the
	// service instead of members' shares (internal/recovery.Holder).
	Holder string `json:"holder,omitempty"`
	// Auto is the record of an automatic recovery's key release
	// (docs/auto-recovery.md), with Holder.
	Auto *akv.Recovery `json:"auto,omitempty"`
	Seq  uint64        `json:"seq"`
}

// PreviousLogKey is a log key replaced by a recovery, and the entry whose
// sealed part holds its signing key.
type PreviousLogKey struct {
	VerifierKey string `json:"verifier_key"`
	Seq         uint64 `json:"seq"`
}

// recoveryHolders counts the active members with an encryption key.
func (s *State) recoveryHolders() int {
	n := 0
	for _, m := range s.Members {
		if m.Active && m.EncryptionKey != nil {
			n++
		}
	}
	return n
}

// RecoveryRecipients returns the active members holding an encryption key,
// in the order they were added, and the recovery threshold (0: none).
func (s *State) RecoveryRecipients() ([]recovery.Recipient, int) {
	if s.Constitution == nil || s.Constitution.RecoveryThreshold == 0 {
		return nil, 0
	}
	var rs []recovery.Recipient
	for _, m := range s.Members {
		if m.Active && m.EncryptionKey != nil {
			rs = append(rs, recovery.Recipient{MemberID: m.ID, Key: *m.EncryptionKey})
		}
	}
	return rs, s.Constitution.RecoveryThreshold
}

// RecoverySharesDue says whether new recovery shares must be written for
// the ledger secret named secretID: none exist yet, or the secret, the
// members, their keys or the threshold changed since the latest.
func (s *State) RecoverySharesDue(secretID string) bool {
	rs, k := s.RecoveryRecipients()
	if k == 0 || len(rs) < k {
		return false
	}
	if s.Recovery == nil {
		return true
	}
	// The holders are the automatic recovery member in force
	// (autorecovery.go).
	return s.Recovery.Shares.SecretID != secretID || s.Recovery.Shares.ConfigID != recovery.ConfigID(k, rs, s.AutoRecoveryHolders()...)
}

func (s *State) applySetMemberEncryptionKey(a gov.Action) error {
	args, err := gov.DecodeMemberEncryptionKeyArgs(a.Args)
	if err != nil {
		return invalid(err)
	}
	m := s.Member(args.MemberID)
	if m == nil || !m.Active {
		return invalid(fmt.Errorf("%s is not an active member", args.MemberID))
	}
	if args.Remove && m.EncryptionKey == nil {
		return invalid(fmt.Errorf("member %s (%q) has no encryption key", m.ID, m.Name))
	}
	m.EncryptionKey = args.EncryptionKey // nil removes
	if err := s.Constitution.ValidateRecovery(s.recoveryHolders()); err != nil {
		return fmt.Errorf("removing the encryption key of %s (%q): %w", m.ID, m.Name, err)
	}
	return nil
}

func (s *State) applyRecoveryShares(e *ledger.Entry) error {
	var sh recovery.Shares
	if err := decodeBody(e.Body, &sh); err != nil {
		return err
	}
	if err := sh.Check(); err != nil {
		return err
	}
	rs, k := s.RecoveryRecipients()
	if k == 0 {
		return errors.New("recovery shares without a recovery_threshold in the constitution")
	}
	// The holders of the whole key are the automatic recovery member in
	// force (autorecovery.go), if any.
	want := recovery.ConfigID(k, rs, s.AutoRecoveryHolders()...)
	if sh.Threshold != k || sh.ConfigID != want || len(sh.Members) != len(rs) {
		return fmt.Errorf("recovery shares for threshold %d and configuration %s, but the constitution and members in force make threshold %d and configuration %s", sh.Threshold, sh.ConfigID, k, want)
	}
	for _, r := range rs {
		ss := sh.Share(r.MemberID)
		if ss == nil || ss.KeyHash != r.Key.Hash() {
			return fmt.Errorf("recovery shares: member %s's share is missing or sealed to another key", r.MemberID)
		}
	}
	if !slices.Equal(sh.HolderNames(), s.AutoRecoveryHolders()) {
		return fmt.Errorf("recovery shares hold the whole recovery key for %q, but the automatic recovery member in force is %q", sh.HolderNames(), s.AutoRecoveryHolders())
	}
	if s.Recovery != nil && sh.Version != s.Recovery.Shares.Version+1 {
		return fmt.Errorf("recovery shares version %d after version %d", sh.Version, s.Recovery.Shares.Version)
	}
	s.Recovery = &RecoveryShares{Seq: e.Seq, Shares: sh}
	return nil
}

func (s *State) applyServiceRecovered(e *ledger.Entry) error {
	var r ServiceRecovered
	if err := decodeBody(e.Body, &r); err != nil {
		return err
	}
	if s.LogKey == nil {
		return errors.New("a recovery of a log without a log key")
	}
	if r.PreviousLogKey != s.LogKey.VerifierKey {
		return fmt.Errorf("names previous log key %q, but the key in force is %q", r.PreviousLogKey, s.LogKey.VerifierKey)
	}
	v, err := note.NewVerifier(r.LogKey)
	if err != nil {
		return fmt.Errorf("log key: %w", err)
	}
	if v.Name() != s.LogKey.Origin {
		return fmt.Errorf("the new log key is named %q, not the log's origin %q", v.Name(), s.LogKey.Origin)
	}
	if r.LogKey == r.PreviousLogKey {
		return errors.New("the new log key is the previous one")
	}
	if len(e.Sealed) == 0 {
		return errors.New("no sealed signing key")
	}
	if s.Recovery == nil || r.SharesSeq != s.Recovery.Seq {
		return fmt.Errorf("the shares of entry %d are not the latest recovery shares", r.SharesSeq)
	}
	if r.Holder != "" && !slices.Contains(s.Recovery.Shares.HolderNames(), r.Holder) {
		return fmt.Errorf("holder %q holds no recovery key of the shares of entry %d", r.Holder, r.SharesSeq)
	}
	if r.Holder == "" {
		if len(r.Members) < s.Recovery.Shares.Threshold {
			return fmt.Errorf("%d members' shares, the threshold is %d", len(r.Members), s.Recovery.Shares.Threshold)
		}
		for _, m := range r.Members {
			if s.Recovery.Shares.Share(m) == nil {
				return fmt.Errorf("member %s holds no share", m)
			}
		}
	}
	r.Seq = e.Seq
	s.PreviousLogKeys = append(s.PreviousLogKeys, PreviousLogKey{VerifierKey: s.LogKey.VerifierKey, Seq: s.LogKeySeq})
	s.LogKey, s.LogKeySeq = &LogKey{Origin: s.LogKey.Origin, VerifierKey: r.LogKey}, e.Seq
	s.Recoveries = append(s.Recoveries, &r)
	return nil
}
