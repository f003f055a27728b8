package state

import (
	"fmt"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/gov"
)

// applySetAutoRecoveryMember applies set_auto_recovery_member: the member
// replaces the one in force (a new vault key, or a new version of it,
// needs a proposal of its own).
func (s *State) applySetAutoRecoveryMember(a gov.Action, seq uint64) error {
	m, err := gov.DecodeAutoRecoveryMemberArgs(a.Args)
	if err != nil {
		return invalid(err)
	}
	s.AutoRecovery, s.AutoRecoverySeq = &m, seq
	return nil
}

// applyRemoveAutoRecoveryMember applies remove_auto_recovery_member: only
// the member in force, named by its kid, is removed.
func (s *State) applyRemoveAutoRecoveryMember(a gov.Action, seq uint64) error {
	r, err := gov.DecodeRemoveAutoRecoveryMemberArgs(a.Args)
	if err != nil {
		return invalid(err)
	}
	if s.AutoRecovery == nil {
		return invalid(fmt.Errorf("no automatic recovery member is set (kid %s)", r.KID))
	}
	if cur := s.AutoRecovery.KID(); cur != r.KID {
		return invalid(fmt.Errorf("the automatic recovery member is %s, not %s", cur, r.KID))
	}
	s.AutoRecovery, s.AutoRecoverySeq = nil, seq
	return nil
}

// autoRecoveryMember is the type of State.AutoRecovery (an alias, so that
// state.go needs no import of its own for it).
type autoRecoveryMember = akv.Member

// AutoRecoveryHolders returns the names of the holders of the whole
// recovery key in force: the automatic recovery member's kid, or none.
// The recovery shares hold the key for exactly these (recovery.Holder).
func (s *State) AutoRecoveryHolders() []string {
	if s.AutoRecovery == nil {
		return nil
	}
	return []string{s.AutoRecovery.KID()}
}
