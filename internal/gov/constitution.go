package gov

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Approvals says how many members must approve: "majority" (more than half
// of the active members), "2/3" (at least ⌈2n/3⌉), "all", or "n", at least
// N. In JSON it is the string or, for "n", the number N.
type Approvals struct {
	Kind string
	N    int
}

// The kinds of Approvals.
const (
	ApproveMajority = "majority"
	ApproveTwoThird = "2/3"
	ApproveAll      = "all"
	ApproveN        = "n"
)

// Needed returns how many approvals a proposal needs with active members
// (docs/governance.md "Constitution"). An unknown kind needs more than any
// count of members can give.
func (a Approvals) Needed(active int) int {
	switch a.Kind {
	case ApproveMajority:
		return active/2 + 1
	case ApproveTwoThird:
		return (2*active + 2) / 3
	case ApproveAll:
		return active
	case ApproveN:
		return a.N
	}
	return active + 1
}

func (a Approvals) String() string {
	if a.Kind == ApproveN {
		return strconv.Itoa(a.N)
	}
	return a.Kind
}

// MarshalJSON writes the kind as a string, or N as a number.
func (a Approvals) MarshalJSON() ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	if a.Kind == ApproveN {
		return []byte(strconv.Itoa(a.N)), nil
	}
	return json.Marshal(a.Kind)
}

// UnmarshalJSON reads "majority", "2/3", "all" or a positive integer.
func (a *Approvals) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case ApproveMajority, ApproveTwoThird, ApproveAll:
			*a = Approvals{Kind: s}
			return nil
		}
		return fmt.Errorf("approvals %q: want \"majority\", \"2/3\", \"all\" or a number", s)
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 1 {
		return fmt.Errorf("approvals %s: want \"majority\", \"2/3\", \"all\" or a positive integer", b)
	}
	*a = Approvals{Kind: ApproveN, N: n}
	return nil
}

func (a Approvals) check() error {
	switch a.Kind {
	case ApproveMajority, ApproveTwoThird, ApproveAll:
		if a.N != 0 {
			return fmt.Errorf("approvals %q with a number", a.Kind)
		}
		return nil
	case ApproveN:
		if a.N < 1 {
			return fmt.Errorf("approvals %d: want at least 1", a.N)
		}
		return nil
	}
	return fmt.Errorf("approvals kind %q: want majority, 2/3, all or n", a.Kind)
}

// A Rule is the constitution's rule for one kind of action.
type Rule struct {
	Approvals Approvals `json:"approvals"`
}

// DefaultRule names the rule that applies to actions without their own.
const DefaultRule = "default"

// Withdraw values.
const (
	WithdrawProposer = "proposer"
	WithdrawNone     = "none"

	// NodeTrustPolicy (the default, also when node_trust is absent): a
	// joining node whose evidence satisfies the node policy is trusted
	// automatically. NodeTrustProposal: it must also be named by an
	// accepted trust_node proposal.
	NodeTrustPolicy   = "policy"
	NodeTrustProposal = "proposal"
)

// Bounds of the constitution's durations (docs/governance.md "Validity").
// The maximum, ten years, keeps time arithmetic far from overflow.
const (
	MinProposalTTLSeconds     = 60
	MinCreatedAtWindowSeconds = 10
	MaxDurationSeconds        = 10 * 365 * 24 * 3600
)

// A Constitution says how many members must approve each kind of action and
// how long proposals and messages stay valid (docs/governance.md
// "Constitution").
type Constitution struct {
	Rules                  map[string]Rule `json:"rules"`
	ProposalTTLSeconds     int64           `json:"proposal_ttl_seconds"`
	CreatedAtWindowSeconds int64           `json:"created_at_window_seconds"`
	Withdraw               string          `json:"withdraw"` // "proposer" | "none"
	// NodeTrust says whether a joining cluster node that satisfies the
	// node policy is trusted automatically ("policy", or absent) or only
	// once a trust_node proposal names it ("proposal").
	NodeTrust string `json:"node_trust,omitempty"`
	// RecoveryThreshold is k, the number of members whose recovery shares
	// together recover the ledger secret (docs/recovery.md); 0 or absent:
	// no shares are made. It must not exceed the active members with an
	// encryption key (ValidateRecovery).
	RecoveryThreshold int `json:"recovery_threshold,omitempty"`
}

// ParseConstitution parses a constitution strictly: unknown fields are
// errors and nothing has a default. It checks what does not depend on the
// members (Validate checks the rest); its validity errors wrap
// ErrUnsafeConstitution.
func ParseConstitution(b []byte) (*Constitution, error) {
	var c Constitution
	if err := decodeStrict(b, &c); err != nil {
		return nil, fmt.Errorf("constitution: %w", err)
	}
	if err := c.validate(-1); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks c for active members (docs/governance.md "Validity"): the
// default rule is present, every rule names a known action and can be
// satisfied by the active members, the proposal TTL is at least 60 seconds
// and the created_at window at least 10 seconds. Its error wraps
// ErrUnsafeConstitution.
func (c *Constitution) Validate(active int) error {
	if active < 0 {
		active = 0
	}
	return c.validate(active)
}

// validate checks c; active < 0 skips the checks that need the members.
func (c *Constitution) validate(active int) error {
	var errs []error
	if _, ok := c.Rules[DefaultRule]; !ok {
		errs = append(errs, errors.New(`no "default" rule`))
	}
	if active == 0 {
		errs = append(errs, errors.New("no active members"))
	}
	for _, name := range slices.Sorted(maps.Keys(c.Rules)) {
		r := c.Rules[name]
		if name != DefaultRule && !knownAction(name) {
			errs = append(errs, fmt.Errorf("rule %q: unknown action", name))
		}
		if err := r.Approvals.check(); err != nil {
			errs = append(errs, fmt.Errorf("rule %q: %w", name, err))
			continue
		}
		if active > 0 && r.Approvals.Needed(active) > active {
			errs = append(errs, fmt.Errorf("rule %q: needs %d approvals, only %d members would be active", name, r.Approvals.Needed(active), active))
		}
	}
	if c.ProposalTTLSeconds < MinProposalTTLSeconds || c.ProposalTTLSeconds > MaxDurationSeconds {
		errs = append(errs, fmt.Errorf("proposal_ttl_seconds %d: want at least %d and at most %d", c.ProposalTTLSeconds, MinProposalTTLSeconds, MaxDurationSeconds))
	}
	if c.CreatedAtWindowSeconds < MinCreatedAtWindowSeconds || c.CreatedAtWindowSeconds > MaxDurationSeconds {
		errs = append(errs, fmt.Errorf("created_at_window_seconds %d: want at least %d and at most %d", c.CreatedAtWindowSeconds, MinCreatedAtWindowSeconds, MaxDurationSeconds))
	}
	if c.Withdraw != WithdrawProposer && c.Withdraw != WithdrawNone {
		errs = append(errs, fmt.Errorf("withdraw %q: want %q or %q", c.Withdraw, WithdrawProposer, WithdrawNone))
	}
	if c.NodeTrust != "" && c.NodeTrust != NodeTrustPolicy && c.NodeTrust != NodeTrustProposal {
		errs = append(errs, fmt.Errorf("node_trust %q: want %q or %q", c.NodeTrust, NodeTrustPolicy, NodeTrustProposal))
	}
	if c.RecoveryThreshold < 0 || c.RecoveryThreshold > MaxRecoveryThreshold {
		errs = append(errs, fmt.Errorf("recovery_threshold %d: want 0 (no recovery shares) to %d", c.RecoveryThreshold, MaxRecoveryThreshold))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafeConstitution, err)
	}
	return nil
}

// ValidateRecovery checks that the recovery threshold can be met by
// holders, the active members with an encryption key: a threshold above
// them could never recover the service. Its error wraps
// ErrUnsafeConstitution.
func (c *Constitution) ValidateRecovery(holders int) error {
	if c == nil || c.RecoveryThreshold == 0 || c.RecoveryThreshold <= holders {
		return nil
	}
	return fmt.Errorf("%w: recovery_threshold %d: only %d active members have an encryption key, so their shares could never recover the service", ErrUnsafeConstitution, c.RecoveryThreshold, holders)
}

// ProposalTTL returns the proposal TTL as a duration.
func (c *Constitution) ProposalTTL() time.Duration {
	return time.Duration(c.ProposalTTLSeconds) * time.Second
}

// CreatedAtWindow returns the created_at window as a duration.
func (c *Constitution) CreatedAtWindow() time.Duration {
	return time.Duration(c.CreatedAtWindowSeconds) * time.Second
}

// Rule returns the rule for an action name: its own, or the default.
func (c *Constitution) Rule(action string) Rule {
	if r, ok := c.Rules[action]; ok {
		return r
	}
	return c.Rules[DefaultRule]
}

// Needed returns the approvals a proposal of actions needs with active
// members: the strictest (largest) of its actions' rules. With no actions it
// is the default rule's.
func (c *Constitution) Needed(actions []Action, active int) int {
	if len(actions) == 0 {
		return c.Rule(DefaultRule).Approvals.Needed(active)
	}
	needed := 0
	for _, a := range actions {
		needed = max(needed, c.Rule(a.Name).Approvals.Needed(active))
	}
	return needed
}

// Decide says whether a proposal is decided: accepted when approvals reach
// needed; rejected when they no longer can, even if every member yet to vote
// approved (approvals + (active - approvals - rejections) < needed).
func Decide(needed, active, approvals, rejections int) (accepted, rejected bool) {
	if approvals >= needed {
		return true, false
	}
	pending := max(active-approvals-rejections, 0)
	return false, approvals+pending < needed
}

// Duration values of the default constitution.
const (
	defaultTTL    = 7 * 24 * 3600
	defaultWindow = 600
)

// DefaultConstitution returns the example of docs/governance.md: a majority
// by default, two thirds for member changes and the constitution, proposals
// open for 7 days, messages within 10 minutes, withdrawal by the proposer.
func DefaultConstitution() *Constitution {
	two3 := Rule{Approvals: Approvals{Kind: ApproveTwoThird}}
	return &Constitution{
		Rules: map[string]Rule{
			DefaultRule:        {Approvals: Approvals{Kind: ApproveMajority}},
			ActAddMember:       two3,
			ActRemoveMember:    two3,
			ActSetConstitution: two3,
		},
		ProposalTTLSeconds:     defaultTTL,
		CreatedAtWindowSeconds: defaultWindow,
		Withdraw:               WithdrawProposer,
	}
}

// DevConstitution returns the constitution of `tkms dev`: one approval for
// everything, so that its single member's proposals apply at once.
func DevConstitution() *Constitution {
	return &Constitution{
		Rules:                  map[string]Rule{DefaultRule: {Approvals: Approvals{Kind: ApproveN, N: 1}}},
		ProposalTTLSeconds:     defaultTTL,
		CreatedAtWindowSeconds: defaultWindow,
		Withdraw:               WithdrawProposer,
	}
}

// describe renders c on one line.
func (c *Constitution) describe() string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(c.Rules)) {
		parts = append(parts, fmt.Sprintf("%s %s", name, c.Rules[name].Approvals))
	}
	d := fmt.Sprintf("%s; proposal TTL %d s, created_at window %d s, withdraw %s",
		strings.Join(parts, ", "), c.ProposalTTLSeconds, c.CreatedAtWindowSeconds, c.Withdraw)
	if c.NodeTrust == NodeTrustProposal {
		d += "; nodes trusted by trust_node proposals"
	}
	if c.RecoveryThreshold > 0 {
		d += fmt.Sprintf("; recovery by %d members' shares", c.RecoveryThreshold)
	}
	return d
}
