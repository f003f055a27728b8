package gov

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// MessageType is the ccf.gov.msg.type of a message.
type MessageType string

// The message types.
const (
	MsgProposal   MessageType = "proposal"
	MsgBallot     MessageType = "ballot"
	MsgWithdrawal MessageType = "withdrawal"
	// MsgRecoveryShare is a member's recovery share, submitted to a
	// recovering node (docs/recovery.md); its proposal_id header is the
	// id of the recovery it is for.
	MsgRecoveryShare MessageType = "recovery_share"
)

// The protected header labels of docs/governance.md "Messages", CCF's.
const (
	HeaderType       = "ccf.gov.msg.type"
	HeaderCreatedAt  = "ccf.gov.msg.created_at"
	HeaderProposalID = "ccf.gov.msg.proposal_id"
)

// MaxMessageSize bounds a message's COSE_Sign1 bytes.
const MaxMessageSize = 64 << 10

// A Message is a parsed governance message: a COSE_Sign1 (RFC 9052) whose
// protected header names its type, signer, algorithm and creation time. A
// Message from ParseMessage is unverified until Verify succeeds.
type Message struct {
	Type       MessageType
	Signer     string    // kid: the member id, or the CCF id of its certificate (Member.CertID)
	Alg        int64     // COSE algorithm
	CreatedAt  time.Time // ccf.gov.msg.created_at, whole seconds
	ProposalID string    // ballots and withdrawals
	Payload    []byte
	Raw        []byte // the COSE_Sign1 bytes as received
	protected  []byte // the serialized protected header, as signed
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

// ParseMessage decodes a governance message and checks its shape without
// checking its signature (Verify does): a tagged COSE_Sign1 of at most
// 64 KiB in canonical encoding with an attached payload, an empty
// unprotected header, and a protected header of exactly alg (ES256, ES384 or
// EdDSA), kid (the member id, a bstr of 64 lowercase hex characters),
// ccf.gov.msg.type, ccf.gov.msg.created_at (non-negative Unix seconds) and,
// for ballots and withdrawals only, ccf.gov.msg.proposal_id. The payload is
// a JSON object ({} or empty for a withdrawal). Errors wrap
// ErrInvalidMessage.
//
// The canonical encoding makes the bytes, and so the proposal id, a function
// of the signed content and the signature; ECDSA signatures remain
// malleable (see ContentID).
func ParseMessage(raw []byte) (*Message, error) {
	if len(raw) > MaxMessageSize {
		return nil, invalid("%d bytes, at most %d are allowed", len(raw), MaxMessageSize)
	}
	var sm cose.Sign1Message
	if err := sm.UnmarshalCBOR(raw); err != nil {
		return nil, invalid("not a tagged COSE_Sign1: %v", err)
	}
	if sm.Payload == nil {
		return nil, invalid("detached payload")
	}
	if len(sm.Headers.Unprotected) != 0 || !bytes.Equal(sm.Headers.RawUnprotected, []byte{0xa0}) {
		return nil, invalid("unprotected header must be empty")
	}
	again, err := sm.MarshalCBOR()
	if err != nil || !bytes.Equal(again, raw) {
		return nil, invalid("not in canonical CBOR encoding")
	}
	m := &Message{Payload: sm.Payload, Raw: bytes.Clone(raw)}
	var protected []byte
	if err := decodeBstr(sm.Headers.RawProtected, &protected); err != nil {
		return nil, invalid("protected header: %v", err)
	}
	m.protected = protected
	if err := m.readHeaders(sm.Headers.Protected); err != nil {
		return nil, err
	}
	if !isObject(m.Payload) && !(m.Type == MsgWithdrawal && len(m.Payload) == 0) {
		return nil, invalid("payload is not a JSON object")
	}
	if m.Type == MsgWithdrawal && len(m.Payload) > 0 {
		var w struct{}
		if err := decodeStrict(m.Payload, &w); err != nil {
			return nil, invalid("withdrawal payload: want {}: %v", err)
		}
	}
	return m, nil
}

func (m *Message) readHeaders(h cose.ProtectedHeader) error {
	seen := map[any]bool{}
	for label, v := range h {
		switch label {
		case cose.HeaderLabelAlgorithm:
			alg, ok := v.(cose.Algorithm)
			if !ok {
				return invalid("alg is not an integer")
			}
			switch alg {
			case cose.AlgorithmES256, cose.AlgorithmES384, cose.AlgorithmEdDSA:
			default:
				return invalid("alg %d: want ES256 (-7), ES384 (-35) or EdDSA (-8)", int64(alg))
			}
			m.Alg = int64(alg)
		case cose.HeaderLabelKeyID:
			kid, ok := v.([]byte)
			if !ok || !isHexID(string(kid)) {
				return invalid("kid: want a bstr of 64 lowercase hex characters")
			}
			m.Signer = string(kid)
		case HeaderType:
			t, ok := v.(string)
			switch MessageType(t) {
			case MsgProposal, MsgBallot, MsgWithdrawal, MsgRecoveryShare:
			default:
				ok = false
			}
			if !ok {
				return invalid("%s: want \"proposal\", \"ballot\", \"withdrawal\" or \"recovery_share\"", HeaderType)
			}
			m.Type = MessageType(t)
		case HeaderCreatedAt:
			sec, ok := v.(int64)
			if !ok || sec < 0 {
				return invalid("%s: want a non-negative integer", HeaderCreatedAt)
			}
			m.CreatedAt = time.Unix(sec, 0).UTC()
		case HeaderProposalID:
			id, ok := v.(string)
			if !ok || !isHexID(id) {
				return invalid("%s: want 64 lowercase hex characters", HeaderProposalID)
			}
			m.ProposalID = id
		default:
			return invalid("unexpected protected header %v", label)
		}
		seen[label] = true
	}
	for _, l := range []any{cose.HeaderLabelAlgorithm, cose.HeaderLabelKeyID, HeaderType, HeaderCreatedAt} {
		if !seen[l] {
			return invalid("protected header %v missing", l)
		}
	}
	switch {
	case m.Type == MsgProposal && seen[HeaderProposalID]:
		return invalid("a proposal carries no %s", HeaderProposalID)
	case m.Type != MsgProposal && !seen[HeaderProposalID]:
		return invalid("a %s needs %s", m.Type, HeaderProposalID)
	}
	return nil
}

// Verify checks that m is signed by member: the kid is the member's id, the
// algorithm is the one of the member's key, and the signature verifies over
// m.Raw. The other fields of m must be those ParseMessage gives for m.Raw.
// Errors wrap ErrBadSignature (or ErrInvalidMessage when m.Raw does not
// parse).
func (m *Message) Verify(member Member) error {
	p, err := ParseMessage(m.Raw)
	if err != nil {
		return err
	}
	if p.Type != m.Type || p.Signer != m.Signer || p.Alg != m.Alg || !p.CreatedAt.Equal(m.CreatedAt) ||
		p.ProposalID != m.ProposalID || !bytes.Equal(p.Payload, m.Payload) {
		return fmt.Errorf("%w: message fields differ from its signed bytes", ErrBadSignature)
	}
	if !member.SignedBy(p.Signer) {
		return fmt.Errorf("%w: signed as member %s, not %s", ErrBadSignature, p.Signer, member.ID)
	}
	pub, err := member.PublicKey()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if id, err := memberID(pub); err != nil || id != member.ID {
		return fmt.Errorf("%w: member %s: id is not that of its key", ErrBadSignature, member.ID)
	}
	alg, err := algorithmFor(pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if int64(alg) != p.Alg {
		return fmt.Errorf("%w: alg %d does not match the member's key (%d)", ErrBadSignature, p.Alg, int64(alg))
	}
	v, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	var sm cose.Sign1Message
	if err := sm.UnmarshalCBOR(m.Raw); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if err := sm.Verify(nil, v); err != nil {
		return fmt.Errorf("%w: signature does not verify", ErrBadSignature)
	}
	return nil
}

// ProposalID returns the id of a proposal: the lowercase hex SHA-256 of its
// COSE_Sign1 bytes as submitted.
func ProposalID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// ContentID returns the lowercase hex SHA-256 of what m's signature covers
// (its serialized protected header and its payload, each length-prefixed).
// Two valid messages with one ContentID differ only in their signatures:
// ECDSA signatures are malleable ((r, s) and (r, n-s) both verify), so
// anyone can turn a submitted proposal into different bytes with a
// different ProposalID. The state machine refuses a proposal whose
// ContentID it has seen.
func ContentID(m *Message) string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(m.protected)))
	h.Write(n[:])
	h.Write(m.protected)
	binary.BigEndian.PutUint64(n[:], uint64(len(m.Payload)))
	h.Write(n[:])
	h.Write(m.Payload)
	return hex.EncodeToString(h.Sum(nil))
}

// proposalPayload is the payload of a proposal.
type proposalPayload struct {
	Actions []Action `json:"actions"`
}

// DecodeProposal returns the actions of a proposal, those in the deployed
// DEPA KMS's shapes mapped onto tkms's (MapPeerActions), validated by
// ValidateActions. Missing or null args are read as {}. Errors wrap
// ErrInvalidMessage (not a proposal, malformed payload) or ErrInvalidAction.
func DecodeProposal(m *Message) ([]Action, error) {
	if m.Type != MsgProposal {
		return nil, invalid("a %s, not a proposal", m.Type)
	}
	var p proposalPayload
	if err := decodeStrict(m.Payload, &p); err != nil {
		return nil, invalid("proposal payload: %v", err)
	}
	for i := range p.Actions {
		if len(p.Actions[i].Args) == 0 || string(p.Actions[i].Args) == "null" {
			p.Actions[i].Args = []byte("{}")
		}
	}
	actions, err := MapPeerActions(p.Actions)
	if err != nil {
		return nil, err
	}
	if err := ValidateActions(actions); err != nil {
		return nil, err
	}
	return actions, nil
}

// Votes.
const (
	VoteApprove = "approve"
	VoteReject  = "reject"
)

// DecodeBallot returns the vote of a ballot, {"vote":"approve"} or
// {"vote":"reject"}. Errors wrap ErrInvalidMessage.
func DecodeBallot(m *Message) (approve bool, err error) {
	if m.Type != MsgBallot {
		return false, invalid("a %s, not a ballot", m.Type)
	}
	var b struct {
		Vote string `json:"vote"`
	}
	if err := decodeStrict(m.Payload, &b); err != nil {
		return false, invalid("ballot payload: %v", err)
	}
	switch b.Vote {
	case VoteApprove:
		return true, nil
	case VoteReject:
		return false, nil
	}
	return false, invalid("ballot vote %q: want %q or %q", b.Vote, VoteApprove, VoteReject)
}

// CheckCreatedAt checks that m was created within window of at, the time of
// the entry that records it, in the past or the future. Errors wrap
// ErrStale.
func CheckCreatedAt(m *Message, at time.Time, window time.Duration) error {
	d := at.Sub(m.CreatedAt)
	if d > window || d < -window {
		return fmt.Errorf("%w: created_at %s is %s from %s (window %s)", ErrStale,
			m.CreatedAt.UTC().Format(time.RFC3339), d.Round(time.Second), at.UTC().Format(time.RFC3339), window)
	}
	return nil
}

// decodeBstr decodes the CBOR byte string b (a header bucket as
// serialized) into out.
func decodeBstr(b []byte, out *[]byte) error {
	if len(b) == 0 || b[0]>>5 != 2 {
		return errors.New("not a byte string")
	}
	return cbor.Unmarshal(b, out)
}
