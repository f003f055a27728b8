package api

import "encoding/json"

// ProposalState is the state of a governance proposal.
type ProposalState string

// The states of a proposal. Expired is never stored: an open proposal is
// expired from its expiry on.
const (
	ProposalOpen      ProposalState = "open"
	ProposalAccepted  ProposalState = "accepted"
	ProposalRejected  ProposalState = "rejected"
	ProposalWithdrawn ProposalState = "withdrawn"
	ProposalExpired   ProposalState = "expired"
)

// GovResult is the answer to a proposal, ballot or withdrawal: the
// proposal as the entry that recorded the message left it, and the log
// receipt of that entry.
type GovResult struct {
	ID         string          `json:"id"`
	State      ProposalState   `json:"state"`
	Approvals  int             `json:"approvals"`
	Rejections int             `json:"rejections"`
	Needed     int             `json:"needed"`
	Seq        uint64          `json:"seq"` // the entry that recorded the message
	Receipt    json.RawMessage `json:"receipt,omitempty"`
}

// GovProposal is a proposal as GET /v1/gov/proposals and
// GET /v1/gov/proposals/{id} show it, with its state at the time of the
// request. Times are Unix seconds, as in the messages.
type GovProposal struct {
	ID         string        `json:"id"`
	State      ProposalState `json:"state"`
	Approvals  int           `json:"approvals"`
	Rejections int           `json:"rejections"`
	Needed     int           `json:"needed"`
	Proposer   string        `json:"proposer"`
	CreatedAt  int64         `json:"created_at"`
	ExpiresAt  int64         `json:"expires_at"`
	Compat     bool          `json:"compat"` // submitted through POST /app/proposals
	Seq        uint64        `json:"seq"`    // the gov.proposal entry
	DecidedSeq uint64        `json:"decided_seq,omitempty"`
	Actions    []GovAction   `json:"actions"`
	Ballots    []GovBallot   `json:"ballots"`
}

// GovProposals is the body of GET /v1/gov/proposals, newest first.
type GovProposals struct {
	Proposals []GovProposal `json:"proposals"`
}

// GovAction is one action of a proposal, with its plain-language
// description.
type GovAction struct {
	Name        string          `json:"name"`
	Args        json.RawMessage `json:"args"`
	Description string          `json:"description"`
}

// GovBallot is one recorded ballot. The proposer's approval is its
// submission, not a ballot.
type GovBallot struct {
	Member    string `json:"member"`
	Vote      string `json:"vote"`
	CreatedAt int64  `json:"created_at"`
	Seq       uint64 `json:"seq"`
}

// GovMember is an active member as GET /v1/gov/members shows it.
type GovMember struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	SigningKey  string `json:"signing_key"`
	RecoveryKey string `json:"recovery_key,omitempty"`
	// EncryptionKey is the HPKE key the member's recovery share is
	// sealed to (docs/recovery.md), absent if it has none.
	EncryptionKey *EncryptionKey `json:"encryption_key,omitempty"`
	AddedSeq      uint64         `json:"added_seq"`
}

// EncryptionKey is a member's HPKE encryption key: its suite ("x25519"
// or "mlkem768-x25519") and its public key (RFC 9180 SerializePublicKey).
type EncryptionKey struct {
	Suite     string `json:"suite"`
	PublicKey []byte `json:"public_key"`
}
