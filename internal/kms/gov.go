package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// GovInit is the governance a ledger starts with (docs/governance.md): the
// first members and the constitution, recorded in its gov.init entry.
type GovInit struct {
	Members      []gov.Member
	Constitution *gov.Constitution
}

// Error codes of refused governance messages (docs/governance.md "API"),
// besides those of package gov (gov.Code*).
const (
	CodeNotAMember       = "GOV_NOT_A_MEMBER"
	CodeDuplicate        = "GOV_DUPLICATE"
	CodeProposalNotFound = "GOV_PROPOSAL_NOT_FOUND"
	CodeProposalClosed   = "GOV_PROPOSAL_CLOSED"
	CodeForbidden        = "GOV_FORBIDDEN"
)

// GovError is a refused governance message: nothing was written. Code is
// one of the GOV_* codes of docs/governance.md; Message is safe to show the
// submitter.
type GovError struct {
	Code    string
	Message string
	Err     error
}

func (e *GovError) Error() string { return e.Code + ": " + e.Message }
func (e *GovError) Unwrap() error { return e.Err }

// govError maps a refusal by package gov or the state machine to its code.
func govError(err error) *GovError {
	// The state machine wraps its reason with the entry's type and seq,
	// which mean nothing to the submitter of an entry never written.
	if u, ok := err.(interface{ Unwrap() []error }); ok && errors.Is(err, state.ErrInvalid) {
		if es := u.Unwrap(); len(es) > 0 {
			err = es[len(es)-1]
		}
	}
	code := gov.Code(err)
	switch {
	case errors.Is(err, state.ErrNotMember), errors.Is(err, state.ErrNotGoverned):
		code = CodeNotAMember
	case errors.Is(err, state.ErrDuplicate):
		code = CodeDuplicate
	case errors.Is(err, state.ErrProposalNotFound):
		code = CodeProposalNotFound
	case errors.Is(err, state.ErrProposalClosed):
		code = CodeProposalClosed
	case errors.Is(err, state.ErrForbidden):
		code = CodeForbidden
	case code == "":
		code = gov.CodeInvalidMessage
	}
	return &GovError{Code: code, Message: err.Error(), Err: err}
}

func govErrorf(code, format string, args ...any) *GovError {
	err := fmt.Errorf(format, args...)
	return &GovError{Code: code, Message: err.Error(), Err: err}
}

// Governed reports whether the ledger is governed (has a gov.init).
func (s *Service) Governed() bool {
	var g bool
	s.Read(func(st *state.State) { g = st.Governed() })
	return g
}

// Propose records a proposal (a COSE_Sign1 signed by a member; compat marks
// one submitted through the originals' API) and returns it as decided by
// that entry: open, or accepted with its actions applied, or rejected. The
// effects of an accepted proposal (rotate_key_now, destroy_key) are carried
// out before Propose returns. A refused proposal is never written; the
// error is then a *GovError.
func (s *Service) Propose(ctx context.Context, raw []byte, compat bool) (*state.Proposal, *ledger.Entry, error) {
	m, err := gov.ParseMessage(raw)
	if err != nil {
		return nil, nil, govError(err)
	}
	if m.Type != gov.MsgProposal {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "a %s message where a proposal is expected", m.Type)
	}
	actions, err := gov.DecodeProposal(m)
	if err != nil {
		return nil, nil, govError(err)
	}
	id := gov.ProposalID(raw)
	body := state.GovProposal{ID: id, Proposer: s.memberID(m.Signer), CreatedAt: m.CreatedAt, Actions: actions, COSE: raw, Compat: compat}
	return s.submitGov(ctx, ledger.TypeGovProposal, body, id, func(p *state.Proposal, seq uint64) bool { return p.Seq == seq })
}

// Ballot records a member's ballot on proposal proposalID and returns the
// proposal as that entry leaves it; see Propose.
func (s *Service) Ballot(ctx context.Context, proposalID string, raw []byte) (*state.Proposal, *ledger.Entry, error) {
	m, err := gov.ParseMessage(raw)
	if err != nil {
		return nil, nil, govError(err)
	}
	if m.Type != gov.MsgBallot {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "a %s message where a ballot is expected", m.Type)
	}
	if m.ProposalID != proposalID {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "the ballot is for proposal %s, not %s", m.ProposalID, proposalID)
	}
	approve, err := gov.DecodeBallot(m)
	if err != nil {
		return nil, nil, govError(err)
	}
	vote := gov.VoteReject
	if approve {
		vote = gov.VoteApprove
	}
	body := state.GovBallot{ProposalID: proposalID, Member: s.memberID(m.Signer), Vote: vote, CreatedAt: m.CreatedAt, COSE: raw}
	return s.submitGov(ctx, ledger.TypeGovBallot, body, proposalID, func(p *state.Proposal, seq uint64) bool {
		return len(p.Ballots) > 0 && p.Ballots[len(p.Ballots)-1].Seq == seq
	})
}

// Withdraw records the proposer's withdrawal of proposal proposalID; see
// Propose.
func (s *Service) Withdraw(ctx context.Context, proposalID string, raw []byte) (*state.Proposal, *ledger.Entry, error) {
	m, err := gov.ParseMessage(raw)
	if err != nil {
		return nil, nil, govError(err)
	}
	if m.Type != gov.MsgWithdrawal {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "a %s message where a withdrawal is expected", m.Type)
	}
	if m.ProposalID != proposalID {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "the withdrawal is of proposal %s, not %s", m.ProposalID, proposalID)
	}
	body := state.GovWithdrawal{ProposalID: proposalID, Member: s.memberID(m.Signer), CreatedAt: m.CreatedAt, COSE: raw}
	return s.submitGov(ctx, ledger.TypeGovWithdrawal, body, proposalID, func(p *state.Proposal, seq uint64) bool { return p.DecidedSeq == seq })
}

// submitGov stamps a governance entry with the time, applies it to a copy
// of the state and appends it only if it applies, all under the lifecycle
// write lock, so that no other governance or lifecycle entry can come in
// between. applied tells whether the proposal shows the appended entry. It
// then runs the effects the entry left pending.
func (s *Service) submitGov(ctx context.Context, typ ledger.Type, body any, proposalID string, applied func(*state.Proposal, uint64) bool) (*state.Proposal, *ledger.Entry, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, nil, err
	}
	if n := ledger.LeafSize(typ, b); n > ledger.MaxLeafSize {
		return nil, nil, govErrorf(gov.CodeInvalidMessage, "the message is too large: its ledger entry would be %d bytes, at most %d fit in the log", n, ledger.MaxLeafSize)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.now()
	var trial *state.State
	s.Read(func(st *state.State) { trial = st.Clone() })
	if err := trial.Apply(&ledger.Entry{Seq: trial.Seq + 1, Time: now, Type: typ, Body: b}); err != nil {
		ge := govError(err)
		s.log.Info("governance message refused", "type", typ, "proposal", proposalID, "code", ge.Code, "err", ge.Message)
		return nil, nil, ge
	}
	es, err := s.store.Append(ctx, store.Proposal{Time: now, Type: typ, Body: b})
	if err != nil {
		return nil, nil, fmt.Errorf("kms: record %s: %w", typ, err)
	}
	e := es[0]
	var p *state.Proposal
	var pending bool
	s.Read(func(st *state.State) {
		if pp := st.Proposal(proposalID); pp != nil && applied(pp, e.Seq) {
			p = copyProposal(pp)
		}
		pending = len(st.PendingEffects) > 0
	})
	if p == nil {
		return nil, nil, fmt.Errorf("kms: %s at seq %d was not applied", typ, e.Seq)
	}
	s.log.Info("governance: recorded", "type", typ, "seq", e.Seq, "proposal", p.ID, "state", p.Status,
		"approvals", len(p.Approvals), "rejections", len(p.Rejections), "needed", p.Needed)
	if p.Status == state.ProposalAccepted && p.DecidedSeq == e.Seq {
		for _, a := range p.Actions {
			s.log.Info("governance: applied", "proposal", p.ID, "seq", e.Seq, "action", gov.DescribeAction(a))
		}
	}
	if pending {
		s.runEffectsLocked(ctx, s.now())
		s.poke()
		s.awaitEffects(ctx, p.ID)
	}
	return p, e, nil
}

func copyProposal(p *state.Proposal) *state.Proposal {
	c := *p
	c.Actions = slices.Clone(p.Actions)
	c.Approvals = slices.Clone(p.Approvals)
	c.Rejections = slices.Clone(p.Rejections)
	c.Ballots = slices.Clone(p.Ballots)
	return &c
}

// runEffectsLocked carries out the pending effects of accepted proposals:
// destroy_key first (key.destroyed, then the data key erased), then
// rotate_key_now (a new key, subject to the ids reserved for scheduled
// rotation). Each entry's reason names the proposal, which clears the
// effect. A failure is logged and the effect stays pending for the next
// Tick. In a cluster only the leader carries them out. The caller holds
// writeMu.
func (s *Service) runEffectsLocked(ctx context.Context, now time.Time) {
	if !s.IsLeader() {
		return // in a cluster the leader carries out effects, once
	}
	var effects []state.Effect
	s.Read(func(st *state.State) { effects = slices.Clone(st.PendingEffects) })
	if len(effects) == 0 {
		return
	}
	slices.SortStableFunc(effects, func(a, b state.Effect) int {
		// remove_node's rekey first (what follows is sealed under the
		// new version), then destroy_key, then rotate_key_now
		return effectOrder(a) - effectOrder(b)
	})
	for _, e := range effects {
		var err error
		switch e.Action {
		case gov.ActDestroyKey:
			err = s.destroyLocked(ctx, now, e)
		case gov.ActRotateKeyNow:
			_, err = s.rotateLocked(ctx, now, e.LedgerReason())
		case gov.ActRemoveNode:
			err = s.rekeyLocked(ctx, now, e)
		default:
			err = fmt.Errorf("unknown effect %q", e.Action)
		}
		if err != nil {
			s.log.Error("governance: effect not carried out; it stays pending", "proposal", e.ProposalID, "action", e.Action, "kid", e.Kid, "err", err)
			continue
		}
		s.log.Info("governance: effect carried out", "proposal", e.ProposalID, "action", e.Action, "kid", e.Kid, "reason", e.Reason)
	}
}

func effectOrder(e state.Effect) int {
	switch e.Action {
	case gov.ActRemoveNode:
		return 0
	case gov.ActDestroyKey:
		return 1
	}
	return 2
}

// destroyLocked destroys the key of a destroy_key effect now: its
// key.destroyed entry, then its data key and cached private key.
func (s *Service) destroyLocked(ctx context.Context, now time.Time, e state.Effect) error {
	var live bool
	s.Read(func(st *state.State) {
		k := st.Key(e.Kid)
		live = k != nil && k.DestroyedSeq == 0 && slices.Contains(st.PendingEffects, e)
	})
	if !live {
		return nil // destroyed meanwhile, which cleared the effect
	}
	b, _ := json.Marshal(state.KeyEvent{Kid: e.Kid, Reason: e.LedgerReason()})
	if _, err := s.store.Append(ctx, store.Proposal{Time: now, Type: ledger.TypeKeyDestroyed, Body: b}); err != nil {
		return fmt.Errorf("kms: destroy %s: %w", e.Kid, err)
	}
	return s.eraseLocked([]string{e.Kid})
}
