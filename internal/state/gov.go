package state

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
)

// This file applies the governance entries of docs/governance.md: gov.init,
// gov.proposal, gov.ballot and gov.withdrawal. The signatures, constitution
// arithmetic and action arguments are package gov's; what this file adds is
// the state they are checked against (who is an active member at this entry,
// which proposals are open, what the constitution in force says) and the
// effects of accepted proposals.

// Reasons a governance entry is refused, besides the sentinel errors of
// package gov (ErrInvalidMessage, ErrBadSignature, ErrInvalidAction,
// ErrStale, ErrUnsafeConstitution). Apply's error wraps one of them.
var (
	ErrNotGoverned      = errors.New("the ledger is not governed (no gov.init)")
	ErrNotMember        = errors.New("the signer is not an active member")
	ErrDuplicate        = errors.New("duplicate")
	ErrProposalNotFound = errors.New("no such proposal")
	ErrProposalClosed   = errors.New("the proposal is not open")
	ErrForbidden        = errors.New("not allowed by the constitution")
)

// GovernanceReason is the prefix of the reason of the key.created and
// key.destroyed entries that carry out an accepted proposal's
// rotate_key_now and destroy_key actions: "governance:<proposal id>".
const GovernanceReason = "governance:"

// Member is a member as the state knows it: every member ever added, with
// whether it is active now.
type Member struct {
	gov.Member
	Active     bool   `json:"active"`
	AddedSeq   uint64 `json:"added_seq"`             // the entry that added it (gov.init or an accepted add_member)
	RemovedSeq uint64 `json:"removed_seq,omitempty"` // the entry that removed it, 0 while active
}

// ProposalState is the state of a proposal, as the governance API shows it.
type ProposalState = api.ProposalState

// The states of a proposal. Expired is never stored: an open proposal is
// expired from its ExpiresAt on (Proposal.State).
const (
	ProposalOpen      = api.ProposalOpen
	ProposalAccepted  = api.ProposalAccepted
	ProposalRejected  = api.ProposalRejected
	ProposalWithdrawn = api.ProposalWithdrawn
	ProposalExpired   = api.ProposalExpired
)

// Proposal is a proposal as the state knows it.
type Proposal struct {
	ID        string       `json:"id"`       // hex SHA-256 of the COSE_Sign1 as submitted
	Proposer  string       `json:"proposer"` // member id
	CreatedAt time.Time    `json:"created_at"`
	ExpiresAt time.Time    `json:"expires_at"` // created_at + the proposal TTL of the constitution in force at submission
	Actions   []gov.Action `json:"actions"`
	Compat    bool         `json:"compat"` // submitted through the originals' POST /app/proposals
	// ContentID is gov.ContentID of the message: what its signature
	// covers. ECDSA signatures are malleable, so one signed proposal can
	// be re-encoded into other bytes (another ID) that still verify; a
	// second proposal with a ContentID already seen is a replay.
	ContentID string `json:"content_id"`
	// Status is open, accepted, rejected or withdrawn; State derives
	// expired from it and a time.
	Status     ProposalState `json:"state"`
	Approvals  []string      `json:"approvals"`  // member ids, the proposer first
	Rejections []string      `json:"rejections"` // member ids
	Ballots    []Ballot      `json:"ballots"`    // the ballots recorded, in order
	Needed     int           `json:"needed"`     // approvals needed when last counted
	Seq        uint64        `json:"seq"`        // the gov.proposal entry
	DecidedSeq uint64        `json:"decided_seq,omitempty"`
}

// Ballot is one recorded vote.
type Ballot struct {
	Member    string    `json:"member"`
	Vote      string    `json:"vote"` // approve or reject
	CreatedAt time.Time `json:"created_at"`
	Seq       uint64    `json:"seq"`
}

// State returns the proposal's state at t: its stored state, or expired
// if it is open and t is not before ExpiresAt.
func (p *Proposal) State(t time.Time) ProposalState {
	if p.Status == ProposalOpen && !t.Before(p.ExpiresAt) {
		return ProposalExpired
	}
	return p.Status
}

func (p *Proposal) voted(member string) bool {
	return slices.Contains(p.Approvals, member) || slices.Contains(p.Rejections, member)
}

// Effect is a forced key operation of an accepted proposal that the kms has
// yet to carry out: rotate_key_now (a key.created) or destroy_key (a
// key.destroyed of Kid), each with reason "governance:<ProposalID>".
type Effect struct {
	ProposalID string `json:"proposal_id"`
	Action     string `json:"action"`
	Kid        string `json:"kid,omitempty"`    // destroy_key
	Reason     string `json:"reason,omitempty"` // rotate_key_now's free-text reason, for the log
	Node       string `json:"node,omitempty"`   // remove_node's node (a rekey follows)
	Seq        uint64 `json:"seq"`              // the entry that accepted the proposal
}

// LedgerReason is the reason the kms records in the entry that carries e
// out.
func (e Effect) LedgerReason() string { return GovernanceReason + e.ProposalID }

// GovInit is the body of the gov.init entry.
type GovInit struct {
	Members      []gov.Member      `json:"members"`
	Constitution *gov.Constitution `json:"constitution"`
}

// GovProposal is the body of a gov.proposal entry. Every field but COSE and
// Compat repeats what the signed message says, for readers of the log; the
// state machine checks that they agree.
type GovProposal struct {
	ID        string       `json:"id"`
	Proposer  string       `json:"proposer"`
	CreatedAt time.Time    `json:"created_at"`
	Actions   []gov.Action `json:"actions"`
	COSE      []byte       `json:"cose"` // the COSE_Sign1 as submitted
	Compat    bool         `json:"compat"`
}

// GovBallot is the body of a gov.ballot entry.
type GovBallot struct {
	ProposalID string    `json:"proposal_id"`
	Member     string    `json:"member"`
	Vote       string    `json:"vote"` // approve or reject
	CreatedAt  time.Time `json:"created_at"`
	COSE       []byte    `json:"cose"`
}

// GovWithdrawal is the body of a gov.withdrawal entry.
type GovWithdrawal struct {
	ProposalID string    `json:"proposal_id"`
	Member     string    `json:"member"`
	CreatedAt  time.Time `json:"created_at"`
	COSE       []byte    `json:"cose"`
}

// Governed reports whether the ledger has a gov.init: policies then change
// only by accepted proposals.
func (s *State) Governed() bool { return s.GovSeq != 0 }

// Member returns the member with the given id, active or not, or nil.
func (s *State) Member(id string) *Member {
	for _, m := range s.Members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// ActiveMembers returns the active members, in the order they were added.
func (s *State) ActiveMembers() []*Member {
	var out []*Member
	for _, m := range s.Members {
		if m.Active {
			out = append(out, m)
		}
	}
	return out
}

func (s *State) activeCount() int {
	n := 0
	for _, m := range s.Members {
		if m.Active {
			n++
		}
	}
	return n
}

// Proposal returns the proposal with the given id, or nil.
func (s *State) Proposal(id string) *Proposal { return s.Proposals[id] }

// ProposalList returns every proposal, oldest first.
func (s *State) ProposalList() []*Proposal {
	out := slices.Collect(maps.Values(s.Proposals))
	slices.SortFunc(out, func(a, b *Proposal) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// applyGov applies a governance entry to a copy of the state and keeps the
// copy only if every step succeeded, so that an accepted proposal's actions
// apply all together or not at all.
func (s *State) applyGov(e *ledger.Entry) error {
	c := s.Clone()
	var err error
	switch e.Type {
	case ledger.TypeGovInit:
		err = c.applyGovInit(e)
	case ledger.TypeGovProposal:
		err = c.applyProposal(e)
	case ledger.TypeGovBallot:
		err = c.applyBallot(e)
	case ledger.TypeGovWithdrawal:
		err = c.applyWithdrawal(e)
	}
	if err != nil {
		return err
	}
	*s = *c
	return nil
}

func (s *State) applyGovInit(e *ledger.Entry) error {
	if s.Governed() {
		return fmt.Errorf("%w: the ledger is governed since seq %d", ErrDuplicate, s.GovSeq)
	}
	var g GovInit
	if err := decodeBody(e.Body, &g); err != nil {
		return err
	}
	if len(g.Members) == 0 {
		return errors.New("no members")
	}
	if g.Constitution == nil {
		return errors.New("no constitution")
	}
	for _, m := range g.Members {
		if err := s.addMember(m, e.Seq); err != nil {
			return err
		}
	}
	if err := g.Constitution.Validate(s.activeCount()); err != nil {
		return err
	}
	if err := g.Constitution.ValidateRecovery(s.recoveryHolders()); err != nil {
		return err
	}
	s.Constitution, s.ConstitutionSeq = g.Constitution, e.Seq
	s.GovSeq = e.Seq
	return nil
}

// addMember adds m, or makes a removed member with m's key active again.
func (s *State) addMember(m gov.Member, seq uint64) error {
	if err := m.Check(); err != nil {
		return fmt.Errorf("%w: %w", gov.ErrInvalidAction, err)
	}
	for _, o := range s.Members {
		if o.Active && o.Name == m.Name && o.ID != m.ID {
			return fmt.Errorf("%w: member name %q is taken by %s", gov.ErrInvalidAction, m.Name, o.ID)
		}
	}
	if o := s.Member(m.ID); o != nil {
		if o.Active {
			return fmt.Errorf("%w: %s is already a member (%q)", gov.ErrInvalidAction, m.ID, o.Name)
		}
		o.Member, o.Active, o.AddedSeq, o.RemovedSeq = m, true, seq, 0
		return nil
	}
	s.Members = append(s.Members, &Member{Member: m, Active: true, AddedSeq: seq})
	return nil
}

// message parses and authenticates a governance message recorded at e:
// well formed, of type typ, signed by an active member, created within the
// constitution's window of e's time.
func (s *State) message(e *ledger.Entry, raw []byte, typ gov.MessageType) (*gov.Message, *Member, error) {
	if !s.Governed() {
		return nil, nil, ErrNotGoverned
	}
	m, err := gov.ParseMessage(raw)
	if err != nil {
		return nil, nil, err
	}
	if m.Type != typ {
		return nil, nil, fmt.Errorf("%w: a %s message where a %s is expected", gov.ErrInvalidMessage, m.Type, typ)
	}
	mem := s.MemberBySigner(m.Signer)
	if mem == nil {
		return nil, nil, fmt.Errorf("%w: %s is not a member", ErrNotMember, m.Signer)
	}
	if !mem.Active {
		return nil, nil, fmt.Errorf("%w: %s (%q) was removed at seq %d", ErrNotMember, m.Signer, mem.Name, mem.RemovedSeq)
	}
	if err := m.Verify(mem.Member); err != nil {
		return nil, nil, err
	}
	if err := gov.CheckCreatedAt(m, e.Time, time.Duration(s.Constitution.CreatedAtWindowSeconds)*time.Second); err != nil {
		return nil, nil, err
	}
	return m, mem, nil
}

func (s *State) applyProposal(e *ledger.Entry) error {
	var b GovProposal
	if err := decodeBody(e.Body, &b); err != nil {
		return err
	}
	m, mem, err := s.message(e, b.COSE, gov.MsgProposal)
	if err != nil {
		return err
	}
	id := gov.ProposalID(b.COSE)
	if b.ID != id {
		return fmt.Errorf("%w: body id %s, the message's is %s", gov.ErrInvalidMessage, b.ID, id)
	}
	if old := s.Proposals[id]; old != nil {
		return fmt.Errorf("%w: proposal %s was submitted at seq %d", ErrDuplicate, id, old.Seq)
	}
	cid := gov.ContentID(m)
	for _, old := range s.Proposals {
		if old.ContentID == cid {
			return fmt.Errorf("%w: proposal %s, submitted at seq %d, is the same signed proposal with its signature re-encoded", ErrDuplicate, old.ID, old.Seq)
		}
	}
	if b.Proposer != mem.ID || !b.CreatedAt.Equal(m.CreatedAt) {
		return fmt.Errorf("%w: the body's proposer or created_at differs from the message's", gov.ErrInvalidMessage)
	}
	actions, err := gov.DecodeProposal(m)
	if err != nil {
		return err
	}
	if !sameActions(actions, b.Actions) {
		return fmt.Errorf("%w: the body's actions differ from the message's", gov.ErrInvalidMessage)
	}
	p := &Proposal{
		ID: id, Proposer: mem.ID, CreatedAt: m.CreatedAt,
		ExpiresAt: m.CreatedAt.Add(time.Duration(s.Constitution.ProposalTTLSeconds) * time.Second),
		Actions:   actions, Compat: b.Compat, ContentID: cid, Status: ProposalOpen,
		Approvals: []string{mem.ID}, Rejections: []string{}, Ballots: []Ballot{}, Seq: e.Seq,
	}
	if !e.Time.Before(p.ExpiresAt) {
		return fmt.Errorf("%w: the proposal would expire at once", gov.ErrStale)
	}
	if s.Proposals == nil {
		s.Proposals = map[string]*Proposal{}
	}
	s.Proposals[id] = p
	accepted, err := s.decide(p, e.Seq)
	if err != nil {
		return err
	}
	if !accepted {
		// Not applied yet: the actions must still be valid now, so that a
		// proposal that could never apply is refused at once.
		if err := s.Clone().applyActions(p, e.Seq); err != nil {
			return err
		}
	}
	return nil
}

func (s *State) applyBallot(e *ledger.Entry) error {
	var b GovBallot
	if err := decodeBody(e.Body, &b); err != nil {
		return err
	}
	m, mem, err := s.message(e, b.COSE, gov.MsgBallot)
	if err != nil {
		return err
	}
	approve, err := gov.DecodeBallot(m)
	if err != nil {
		return err
	}
	vote := gov.VoteReject
	if approve {
		vote = gov.VoteApprove
	}
	if b.ProposalID != m.ProposalID || b.Member != mem.ID || b.Vote != vote || !b.CreatedAt.Equal(m.CreatedAt) {
		return fmt.Errorf("%w: the body differs from the message", gov.ErrInvalidMessage)
	}
	p, err := s.openProposal(m.ProposalID, e.Time)
	if err != nil {
		return err
	}
	if p.voted(mem.ID) {
		return fmt.Errorf("%w: %s (%q) has already voted on proposal %s", ErrDuplicate, mem.ID, mem.Name, p.ID)
	}
	if approve {
		p.Approvals = append(p.Approvals, mem.ID)
	} else {
		p.Rejections = append(p.Rejections, mem.ID)
	}
	p.Ballots = append(p.Ballots, Ballot{Member: mem.ID, Vote: vote, CreatedAt: m.CreatedAt, Seq: e.Seq})
	_, err = s.decide(p, e.Seq)
	return err
}

func (s *State) applyWithdrawal(e *ledger.Entry) error {
	var b GovWithdrawal
	if err := decodeBody(e.Body, &b); err != nil {
		return err
	}
	m, mem, err := s.message(e, b.COSE, gov.MsgWithdrawal)
	if err != nil {
		return err
	}
	if b.ProposalID != m.ProposalID || b.Member != mem.ID || !b.CreatedAt.Equal(m.CreatedAt) {
		return fmt.Errorf("%w: the body differs from the message", gov.ErrInvalidMessage)
	}
	p, err := s.openProposal(m.ProposalID, e.Time)
	if err != nil {
		return err
	}
	switch s.Constitution.Withdraw {
	case gov.WithdrawProposer:
		if mem.ID != p.Proposer {
			return fmt.Errorf("%w: only the proposer may withdraw proposal %s", ErrForbidden, p.ID)
		}
	default:
		return fmt.Errorf("%w: the constitution allows no withdrawal", ErrForbidden)
	}
	p.Status, p.DecidedSeq = ProposalWithdrawn, e.Seq
	return nil
}

// openProposal returns proposal id if it is open at t.
func (s *State) openProposal(id string, t time.Time) (*Proposal, error) {
	p := s.Proposals[id]
	if p == nil {
		return nil, fmt.Errorf("%w: %s", ErrProposalNotFound, id)
	}
	if st := p.State(t); st != ProposalOpen {
		return nil, fmt.Errorf("%w: proposal %s is %s", ErrProposalClosed, id, st)
	}
	return p, nil
}

// decide counts p's votes by active members under the constitution in
// force, and accepts it (applying its actions) or rejects it if it is
// decided. It reports whether p was accepted.
func (s *State) decide(p *Proposal, seq uint64) (bool, error) {
	active := s.activeCount()
	count := func(ids []string) int {
		n := 0
		for _, id := range ids {
			if m := s.Member(id); m != nil && m.Active {
				n++
			}
		}
		return n
	}
	p.Needed = s.Constitution.Needed(p.Actions, active)
	accepted, rejected := gov.Decide(p.Needed, active, count(p.Approvals), count(p.Rejections))
	switch {
	case accepted:
		if err := s.applyActions(p, seq); err != nil {
			return false, err
		}
		p.Status, p.DecidedSeq = ProposalAccepted, seq
	case rejected:
		p.Status, p.DecidedSeq = ProposalRejected, seq
	}
	return accepted, nil
}

// applyActions applies p's actions in order, as the entry at seq.
func (s *State) applyActions(p *Proposal, seq uint64) error {
	for i, a := range p.Actions {
		if err := s.applyAction(p.ID, a, seq); err != nil {
			return fmt.Errorf("actions[%d] %s: %w", i, a.Name, err)
		}
	}
	return nil
}

func invalid(err error) error {
	if errors.Is(err, gov.ErrInvalidAction) || errors.Is(err, gov.ErrUnsafeConstitution) {
		return err
	}
	return fmt.Errorf("%w: %w", gov.ErrInvalidAction, err)
}

func (s *State) applyAction(proposalID string, a gov.Action, seq uint64) error {
	switch a.Name {
	case gov.ActSetKeyReleasePolicy:
		args, err := gov.DecodeReleasePolicyArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		var p policy.Policy
		if args.Replace != nil {
			p, err = policy.Parse(args.Replace)
		} else {
			var ch policy.Change
			if ch, err = policy.ParseChange(args.Change); err == nil {
				var cur policy.Policy
				if s.ReleasePolicy != nil {
					cur, err = policy.Parse(s.ReleasePolicy)
				}
				if err == nil {
					p, err = policy.Apply(cur, ch)
				}
			}
		}
		if err != nil {
			return invalid(err)
		}
		s.ReleasePolicy, s.ReleasePolicySeq = policy.Marshal(p), seq
	case gov.ActSetJWTValidationPolicy:
		args, err := gov.DecodeJWTValidationArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		jp := s.JWT.clone()
		if jp.Claims == nil {
			jp.Claims = map[string]map[string]any{}
		}
		if len(args.Claims) == 0 {
			delete(jp.Claims, args.Issuer) // no requirements
		} else {
			jp.Claims[args.Issuer] = args.Claims
		}
		if err := s.setJWT(jp, seq); err != nil {
			return err
		}
	case gov.ActSetJWTIssuer:
		args, err := gov.DecodeJWTIssuerArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		jp := s.JWT.clone()
		i := slices.IndexFunc(jp.Issuers, func(is JWTIssuer) bool { return is.Issuer == args.Issuer })
		switch {
		case args.Remove && i < 0:
			return invalid(fmt.Errorf("issuer %q is not trusted", args.Issuer))
		case args.Remove:
			jp.Issuers = slices.Delete(jp.Issuers, i, i+1)
			delete(jp.Claims, args.Issuer)
		default:
			is := JWTIssuer{Issuer: args.Issuer, Audiences: args.Audiences, DiscoveryURL: args.DiscoveryURL,
				JWKSURL: args.JWKSURL, JWKS: args.JWKS, Algorithms: args.Algorithms,
				MaxTokenLifetime: Seconds(time.Duration(args.MaxTokenLifetime * float64(time.Second)))}
			if i < 0 {
				jp.Issuers = append(jp.Issuers, is)
			} else {
				jp.Issuers[i] = is
			}
		}
		if err := s.setJWT(jp, seq); err != nil {
			return err
		}
	case gov.ActSetKeyRotationPolicy:
		p := RotationPolicy{Suite: s.Rotation.Suite} // a missing suite keeps the one in force
		if err := decodeArgs(a.Args, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return invalid(err)
		}
		s.Rotation = p
	case gov.ActSetSettingsPolicy:
		var p Settings
		if err := decodeArgs(a.Args, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return invalid(err)
		}
		s.Settings = p
	case gov.ActRotateKeyNow:
		args, err := gov.DecodeRotateArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		s.PendingEffects = append(s.PendingEffects, Effect{ProposalID: proposalID, Action: a.Name, Reason: args.Reason, Seq: seq})
	case gov.ActDestroyKey:
		args, err := gov.DecodeDestroyArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		k := s.Key(args.Kid)
		if k == nil {
			return invalid(fmt.Errorf("unknown kid %q", args.Kid))
		}
		if k.DestroyedSeq != 0 {
			return invalid(fmt.Errorf("key %s was destroyed at seq %d", k.Kid, k.DestroyedSeq))
		}
		s.PendingEffects = append(s.PendingEffects, Effect{ProposalID: proposalID, Action: a.Name, Kid: k.Kid, Seq: seq})
	case gov.ActAddMember:
		m, err := gov.DecodeAddMemberArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		if err := s.addMember(m, seq); err != nil {
			return err
		}
		if err := s.Constitution.Validate(s.activeCount()); err != nil {
			return err
		}
		if err := s.Constitution.ValidateRecovery(s.recoveryHolders()); err != nil {
			return err
		}
	case gov.ActRemoveMember:
		args, err := gov.DecodeRemoveMemberArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		m := s.Member(args.MemberID)
		if m == nil || !m.Active {
			return invalid(fmt.Errorf("%s is not an active member", args.MemberID))
		}
		m.Active, m.RemovedSeq = false, seq
		if err := s.Constitution.Validate(s.activeCount()); err != nil {
			return fmt.Errorf("removing %s (%q): %w", m.ID, m.Name, err)
		}
		if err := s.Constitution.ValidateRecovery(s.recoveryHolders()); err != nil {
			return fmt.Errorf("removing %s (%q): %w", m.ID, m.Name, err)
		}
	case gov.ActSetNodePolicy:
		p, err := policy.Parse(a.Args)
		if err != nil {
			return invalid(err)
		}
		s.NodePolicy, s.NodePolicySeq = policy.Marshal(p), seq
	case gov.ActSetConstitution:
		c, err := gov.ParseConstitution(a.Args)
		if err != nil {
			return invalid(err)
		}
		if err := c.Validate(s.activeCount()); err != nil {
			return err
		}
		if err := c.ValidateRecovery(s.recoveryHolders()); err != nil {
			return err
		}
		s.Constitution, s.ConstitutionSeq = c, seq
	case gov.ActSetMemberEncryptionKey:
		return s.applySetMemberEncryptionKey(a)
	case gov.ActRemoveNode:
		args, err := gov.DecodeRemoveNodeArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		if at, ok := s.RemovedNodes[args.NodeID]; ok {
			return invalid(fmt.Errorf("node %s was removed at seq %d", args.NodeID, at))
		}
		if s.RemovedNodes == nil {
			s.RemovedNodes = map[string]uint64{}
		}
		s.RemovedNodes[args.NodeID] = seq
		if len(s.Nodes) > 0 {
			// A cluster of attested nodes: the leader rekeys (rekey.go).
			s.PendingEffects = append(s.PendingEffects, Effect{ProposalID: proposalID, Action: a.Name, Node: args.NodeID, Seq: seq})
		}
	case gov.ActTrustNode:
		args, err := gov.DecodeTrustNodeArgs(a.Args)
		if err != nil {
			return invalid(err)
		}
		if at, ok := s.TrustedNodeIDs[args.NodeID]; ok {
			return invalid(fmt.Errorf("node %s was trusted at seq %d", args.NodeID, at))
		}
		if s.TrustedNodeIDs == nil {
			s.TrustedNodeIDs = map[string]uint64{}
		}
		s.TrustedNodeIDs[args.NodeID] = seq
	case gov.ActSetMAAInstances:
		return s.applySetMAAInstances(a, seq)
	case gov.ActSetAutoRecoveryMember:
		return s.applySetAutoRecoveryMember(a, seq)
	case gov.ActRemoveAutoRecoveryMember:
		return s.applyRemoveAutoRecoveryMember(a, seq)
	default:
		return fmt.Errorf("%w: unknown action %q", gov.ErrInvalidAction, a.Name)
	}
	return nil
}

func decodeArgs(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: args: %w", gov.ErrInvalidAction, err)
	}
	return nil
}

func (s *State) setJWT(jp *JWTPolicy, seq uint64) error {
	if err := jp.Validate(); err != nil {
		return invalid(err)
	}
	s.JWT, s.JWTSeq = jp, seq
	return nil
}

// clone returns a deep copy of p, or an empty policy if p is nil.
func (p *JWTPolicy) clone() *JWTPolicy {
	c := &JWTPolicy{Issuers: []JWTIssuer{}}
	if p == nil {
		return c
	}
	for _, is := range p.Issuers {
		is.Audiences = slices.Clone(is.Audiences)
		is.Algorithms = slices.Clone(is.Algorithms)
		is.JWKS = slices.Clone(is.JWKS)
		c.Issuers = append(c.Issuers, is)
	}
	if p.Claims != nil {
		c.Claims = make(map[string]map[string]any, len(p.Claims))
		for iss, cl := range p.Claims {
			c.Claims[iss] = maps.Clone(cl) // values are never modified in place
		}
	}
	return c
}

// governanceEffect checks a key.created or key.destroyed entry whose reason
// says it carries out an accepted proposal, and clears that pending effect.
// kid is the destroyed key for destroy_key, "" for rotate_key_now.
func (s *State) governanceEffect(reason, action, kid string) error {
	id, ok := strings.CutPrefix(reason, GovernanceReason)
	if !ok {
		return nil
	}
	i := slices.IndexFunc(s.PendingEffects, func(e Effect) bool {
		return e.ProposalID == id && e.Action == action && e.Kid == kid
	})
	if i < 0 {
		return fmt.Errorf("reason %q: no pending %s of that proposal", reason, action)
	}
	s.PendingEffects = slices.Delete(slices.Clone(s.PendingEffects), i, i+1)
	return nil
}

// dropDestroyEffects removes the pending destroy_key effects of kid, once
// the key is destroyed by any entry.
func (s *State) dropDestroyEffects(kid string) {
	if !slices.ContainsFunc(s.PendingEffects, func(e Effect) bool { return e.Action == gov.ActDestroyKey && e.Kid == kid }) {
		return
	}
	s.PendingEffects = slices.DeleteFunc(slices.Clone(s.PendingEffects), func(e Effect) bool {
		return e.Action == gov.ActDestroyKey && e.Kid == kid
	})
}

// sameActions reports whether two action lists are the same, by name and by
// the compact JSON of their arguments.
func sameActions(a, b []gov.Action) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !sameJSON(a[i].Args, b[i].Args) {
			return false
		}
	}
	return true
}

func sameJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	if len(a) == 0 || len(b) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}

// cloneGov deep-copies the governance part of s into c.
func (s *State) cloneGov(c *State) {
	if s.Members != nil {
		c.Members = make([]*Member, len(s.Members))
		for i, m := range s.Members {
			mm := *m
			c.Members[i] = &mm
		}
	}
	if s.Constitution != nil {
		cc := *s.Constitution
		cc.Rules = maps.Clone(s.Constitution.Rules)
		c.Constitution = &cc
	}
	if s.Proposals != nil {
		c.Proposals = make(map[string]*Proposal, len(s.Proposals))
		for id, p := range s.Proposals {
			pp := *p
			pp.Actions = slices.Clone(p.Actions)
			pp.Approvals = slices.Clone(p.Approvals)
			pp.Rejections = slices.Clone(p.Rejections)
			pp.Ballots = slices.Clone(p.Ballots)
			c.Proposals[id] = &pp
		}
	}
	c.PendingEffects = slices.Clone(s.PendingEffects)
}

// checkGov checks the governance part of a snapshot.
func (s *State) checkGov() error {
	if s.Governed() && (s.Constitution == nil || len(s.Members) == 0) {
		return errors.New("governed without members or constitution")
	}
	for _, m := range s.Members {
		if m == nil {
			return errors.New("null member")
		}
	}
	for id, p := range s.Proposals {
		if p == nil || p.ID != id {
			return errors.New("proposals out of order")
		}
	}
	return nil
}
