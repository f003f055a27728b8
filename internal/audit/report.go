package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"golang.org/x/mod/sumdb/tlog"
)

// Report is what an audit found. It is complete when Run returns no error;
// the audit passes when it holds no violations.
type Report struct {
	Checkpoint Checkpoint `json:"checkpoint"`
	// Previous is the checkpoint this one was compared with (from the
	// state file), nil on a first audit.
	Previous *Checkpoint      `json:"previous,omitempty"`
	Counts   map[string]int64 `json:"counts"` // entries by type
	Keys     []Key            `json:"keys"`
	Policies []Policy         `json:"policies"`
	Releases Releases         `json:"releases"`
	Denials  Denials          `json:"denials"`
	// Governance is the consortium and its decisions; nil for a ledger
	// that is not governed.
	Governance *Governance `json:"governance,omitempty"`
	// Nodes are the nodes the ledger's secrets were handed to.
	Nodes []Node `json:"nodes"`
	// Recoveries are the service.recovered entries: members' shares
	// brought the service back under a new log key.
	Recoveries []Recovery `json:"recoveries,omitempty"`

	Notes      []string  `json:"notes"`
	Warnings   []Finding `json:"warnings"`
	Violations []Finding `json:"violations"`
	// Omitted counts findings left out of Warnings and Violations once
	// each list holds maxFindings.
	OmittedWarnings   int64 `json:"omitted_warnings,omitempty"`
	OmittedViolations int64 `json:"omitted_violations,omitempty"`
}

// Recovery is one service.recovered entry.
type Recovery struct {
	Event
	PreviousLogKey string   `json:"previous_log_key"`
	LogKey         string   `json:"log_key"`
	LastSize       int64    `json:"last_size"` // entries of the log before the recovery
	Members        []string `json:"members"`
	Holder         string   `json:"holder,omitempty"`
}

// Checkpoint is a verified tree head.
type Checkpoint struct {
	Origin string    `json:"origin"`
	Size   int64     `json:"size"`
	Root   tlog.Hash `json:"root"`
	// Time is when it was verified (only for the previous checkpoint).
	Time time.Time `json:"time,omitzero"`
	// Note is the signed checkpoint: with the previous one, evidence of a
	// rollback or a fork that anyone holding the log key can check.
	Note string `json:"note"`
}

// Key is a key's life as the log records it.
type Key struct {
	Kid          string    `json:"kid"`
	Number       uint64    `json:"number"`
	ID           int       `json:"id"`
	Suite        string    `json:"suite"`
	Reason       string    `json:"reason"`
	Created      Event     `json:"created"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
	DestroyAfter time.Time `json:"destroy_after"`
	// The marker entries, absent until written.
	Published *Event `json:"published,omitempty"`
	Retired   *Event `json:"retired,omitempty"`
	Expired   *Event `json:"expired,omitempty"`
	Destroyed *Event `json:"destroyed,omitempty"`
	// Phase is the key's phase at the time of the log's last entry.
	Phase string `json:"phase"`
}

// Event is the entry that recorded something.
type Event struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// Policy is one version of a policy, as a policy.* entry set it.
type Policy struct {
	Seq  uint64      `json:"seq"`
	Time time.Time   `json:"time"`
	Type ledger.Type `json:"type"`
	// SHA256 is, for the key release policy, the hash that releases record
	// (policy.Hash of the parsed policy); for other policies the SHA-256
	// of the entry's body. Hex.
	SHA256 string `json:"sha256"`
	// Proposal is the accepted governance proposal that set this
	// version, if one did.
	Proposal string `json:"proposal,omitempty"`
}

// Governance is what the log says of the consortium.
type Governance struct {
	Since           uint64        `json:"since"` // the gov.init entry
	ConstitutionSeq uint64        `json:"constitution_seq"`
	Members         []GovMember   `json:"members"`
	Proposals       []GovProposal `json:"proposals"`
}

// GovMember is a member, active or removed.
type GovMember struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Active     bool   `json:"active"`
	AddedSeq   uint64 `json:"added_seq"`
	RemovedSeq uint64 `json:"removed_seq,omitempty"`
}

// GovProposal is a proposal and its outcome.
type GovProposal struct {
	ID         string   `json:"id"`
	Proposer   string   `json:"proposer"`
	State      string   `json:"state"` // at the log's last entry
	Approvals  int      `json:"approvals"`
	Rejections int      `json:"rejections"`
	Needed     int      `json:"needed"`
	Seq        uint64   `json:"seq"`
	DecidedSeq uint64   `json:"decided_seq,omitempty"`
	Actions    []string `json:"actions"` // in plain language
}

// Releases summarises the key.released entries.
type Releases struct {
	Total     int64 `json:"total"`
	Simulated int64 `json:"simulated"` // evidence chained to the simulated TEE
	// SimulatedSeqs lists the simulated releases (up to maxFindings).
	SimulatedSeqs []uint64         `json:"simulated_seqs,omitempty"`
	ByIdentity    []IdentityN      `json:"by_identity"`
	ByKid         map[string]int64 `json:"by_kid"`
}

// IdentityN counts the releases to one caller.
type IdentityN struct {
	Issuer    string `json:"iss"`
	Identity  string `json:"oid"`
	Releases  int64  `json:"releases"`
	Simulated int64  `json:"simulated"`
}

// Denials summarises the release.denied entries: each records one refusal
// plus the refusals suppressed (rate-limited) since the caller's previous
// entry.
type Denials struct {
	Entries    int64            `json:"entries"`
	Suppressed int64            `json:"suppressed"`
	Total      int64            `json:"total"` // entries + suppressed
	ByCode     map[string]int64 `json:"by_code"`
}

// A Finding is a violation or a warning, naming the entry it is about when
// there is one (Seq 0 means the log as a whole).
type Finding struct {
	Seq     uint64      `json:"seq,omitempty"`
	Type    ledger.Type `json:"type,omitempty"`
	Message string      `json:"message"`
}

func (f Finding) String() string {
	switch {
	case f.Seq != 0 && f.Type != "":
		return fmt.Sprintf("entry seq %d (%s): %s", f.Seq, f.Type, f.Message)
	case f.Seq != 0:
		return fmt.Sprintf("entry seq %d: %s", f.Seq, f.Message)
	}
	return f.Message
}

// Passed reports whether the audit found no violation.
func (r *Report) Passed() bool { return len(r.Violations) == 0 && r.OmittedViolations == 0 }

// JSON returns the report as indented JSON.
func (r *Report) JSON() []byte {
	b, _ := json.MarshalIndent(r, "", "  ") // a Report always marshals
	return append(b, '\n')
}

// WriteText writes the report for people to read.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	cp := r.Checkpoint
	fmt.Fprintf(&b, "log      %s\n", cp.Origin)
	fmt.Fprintf(&b, "size     %d entries\n", cp.Size)
	fmt.Fprintf(&b, "root     %s\n", cp.Root)
	if p := r.Previous; p != nil {
		fmt.Fprintf(&b, "previous %d entries, root %s, verified %s\n", p.Size, p.Root, p.Time.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, "previous none (first audit: this checkpoint is trusted on first use)\n")
	}

	types := make([]string, 0, len(r.Counts))
	for t := range r.Counts {
		types = append(types, t)
	}
	slices.Sort(types)
	fmt.Fprintf(&b, "\nentries by type:\n")
	for _, t := range types {
		fmt.Fprintf(&b, "  %-22s %d\n", t, r.Counts[t])
	}

	fmt.Fprintf(&b, "\nkeys (%d):\n", len(r.Keys))
	if len(r.Keys) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KID\tSUITE\tREASON\tCREATED\tPUBLISHED\tRETIRED\tEXPIRED\tDESTROYED\tPHASE")
		for _, k := range r.Keys {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Kid, k.Suite, k.Reason,
				event(&k.Created), event(k.Published), event(k.Retired), event(k.Expired), event(k.Destroyed), k.Phase)
		}
		tw.Flush()
	}

	fmt.Fprintf(&b, "\npolicy versions (%d):\n", len(r.Policies))
	for _, p := range r.Policies {
		by := "configuration"
		if p.Proposal != "" {
			by = "proposal " + shortID(p.Proposal)
		}
		fmt.Fprintf(&b, "  seq %-8d %-20s %s  sha256 %s  (%s)\n", p.Seq, p.Type, stamp(p.Time), p.SHA256, by)
	}
	if g := r.Governance; g != nil {
		active := 0
		for _, m := range g.Members {
			if m.Active {
				active++
			}
		}
		fmt.Fprintf(&b, "\ngovernance (since seq %d; %d active members, constitution of seq %d):\n", g.Since, active, g.ConstitutionSeq)
		for _, m := range g.Members {
			st := "active"
			if !m.Active {
				st = fmt.Sprintf("removed at seq %d", m.RemovedSeq)
			}
			fmt.Fprintf(&b, "  member %s %-16s added at seq %d, %s\n", shortID(m.ID), m.Name, m.AddedSeq, st)
		}
		for _, p := range g.Proposals {
			decided := ""
			if p.DecidedSeq != 0 {
				decided = fmt.Sprintf(", decided at seq %d", p.DecidedSeq)
			}
			fmt.Fprintf(&b, "  proposal %s by %s at seq %d: %s, %d of %d approvals, %d rejections%s\n",
				shortID(p.ID), shortID(p.Proposer), p.Seq, p.State, p.Approvals, p.Needed, p.Rejections, decided)
			for _, a := range p.Actions {
				fmt.Fprintf(&b, "      %s\n", a)
			}
		}
	}

	for _, rc := range r.Recoveries {
		by := fmt.Sprintf("shares of %d members", len(rc.Members))
		if rc.Holder != "" {
			by = "automatic recovery member " + rc.Holder
		}
		fmt.Fprintf(&b, "\nrecovered at seq %d (%s) from the log's first %d entries, by %s:\n  previous log key %s\n  new log key      %s\n",
			rc.Seq, stamp(rc.Time), rc.LastSize, by, rc.PreviousLogKey, rc.LogKey)
		for _, m := range rc.Members {
			fmt.Fprintf(&b, "  member %s\n", shortID(m))
		}
	}

	rel := r.Releases
	fmt.Fprintf(&b, "\nreleases: %d (%d on simulated evidence)\n", rel.Total, rel.Simulated)
	if len(rel.SimulatedSeqs) > 0 {
		seqs := make([]string, len(rel.SimulatedSeqs))
		for i, s := range rel.SimulatedSeqs {
			seqs[i] = fmt.Sprint(s)
		}
		fmt.Fprintf(&b, "  simulated: seq %s\n", strings.Join(seqs, ", "))
	}
	for _, id := range rel.ByIdentity {
		fmt.Fprintf(&b, "  %s %s: %d (%d simulated)\n", id.Issuer, id.Identity, id.Releases, id.Simulated)
	}
	d := r.Denials
	fmt.Fprintf(&b, "denials: %d (%d entries, %d suppressed)\n", d.Total, d.Entries, d.Suppressed)
	codes := make([]string, 0, len(d.ByCode))
	for c := range d.ByCode {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(&b, "  %s: %d\n", c, d.ByCode[c])
	}

	section := func(title string, items []string, omitted int64) {
		if len(items) == 0 && omitted == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s (%d):\n", title, int64(len(items))+omitted)
		for _, s := range items {
			fmt.Fprintf(&b, "  %s\n", s)
		}
		if omitted > 0 {
			fmt.Fprintf(&b, "  ... and %d more (see --json for the first %d)\n", omitted, maxFindings)
		}
	}
	section("notes", r.Notes, 0)
	section("warnings", findings(r.Warnings), r.OmittedWarnings)
	section("violations", findings(r.Violations), r.OmittedViolations)
	if r.Passed() {
		fmt.Fprintf(&b, "\nresult: PASS\n")
	} else {
		fmt.Fprintf(&b, "\nresult: FAIL (%d violations)\n", int64(len(r.Violations))+r.OmittedViolations)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func findings(fs []Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.String()
	}
	return out
}

func event(e *Event) string {
	if e == nil {
		return "-"
	}
	return fmt.Sprintf("%s (%d)", stamp(e.Time), e.Seq)
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
