package audit

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// Tolerances of the invariants.
const (
	// maxRotationGap is how long no key may be published while the service
	// is writing entries: the scheduler creates each key so that it is
	// published when its predecessor retires, and at once after an outage.
	maxRotationGap = 60 * time.Second
	// maxTimeStep is how far an entry's time may lie before the previous
	// entry's. Writers take the time before appending and the committer
	// orders concurrent appends as they arrive, so small inversions are
	// normal; larger ones are not.
	maxTimeStep = time.Second
	// maxFindings bounds the warnings and the violations kept in a report.
	maxFindings = 1000
	// maxTypes bounds the entry types counted one by one.
	maxTypes = 100
)

// checker replays the log's entries through the state machine and checks
// the invariants that the state machine does not: it sees each entry with
// the state as it was before the entry.
type checker struct {
	r        *Report
	st       *state.State
	verifier note.Verifier

	first, last  time.Time // time of the first entry, latest time of any
	prev         time.Time // time of the previous entry
	n            int64     // entries seen
	inversions   int64     // entries recorded slightly before their predecessor
	firstInvSeq  uint64
	releasePol   *parsedPolicy
	markers      map[uint64]time.Time // seq -> time of key marker entries
	identities   map[[2]string]*IdentityN
	intervals    []interval // publication intervals of the keys, by creation
	active       []int      // intervals that may still cover the present
	cover        int        // index of the interval that covered the last entry, or -1
	uncovered    []Event    // first entry of each run of entries no key covered
	coveredSince bool       // an entry was covered since the last uncovered one
	nodePolicy   *policy.Policy
	logKeys      []uint64 // entries that set a log key: log.key, service.recovered
	recovered    []recoveredCheck
}

type parsedPolicy struct {
	seq  uint64
	p    policy.Policy
	hash string
}

// interval is when a key is published: [from, to).
type interval struct {
	from, to time.Time
}

func newChecker(r *Report, verifier note.Verifier) *checker {
	r.Counts = map[string]int64{}
	r.Releases.ByKid = map[string]int64{}
	r.Releases.ByIdentity = []IdentityN{}
	r.Denials.ByCode = map[string]int64{}
	r.Keys, r.Policies, r.Nodes = []Key{}, []Policy{}, []Node{}
	r.Notes, r.Warnings, r.Violations = []string{}, []Finding{}, []Finding{}
	return &checker{
		r: r, st: state.New(), verifier: verifier, cover: -1,
		markers: map[uint64]time.Time{}, identities: map[[2]string]*IdentityN{},
	}
}

func (c *checker) violation(seq uint64, typ ledger.Type, format string, a ...any) {
	if len(c.r.Violations) >= maxFindings {
		c.r.OmittedViolations++
		return
	}
	c.r.Violations = append(c.r.Violations, Finding{Seq: seq, Type: typ, Message: fmt.Sprintf(format, a...)})
}

func (c *checker) warning(seq uint64, typ ledger.Type, format string, a ...any) {
	if len(c.r.Warnings) >= maxFindings {
		c.r.OmittedWarnings++
		return
	}
	c.r.Warnings = append(c.r.Warnings, Finding{Seq: seq, Type: typ, Message: fmt.Sprintf(format, a...)})
}

// entry checks and applies the next entry, whose sequence number the
// caller has checked.
func (c *checker) entry(l *ledger.Leaf) {
	if l.Type.Known() || c.r.Counts[string(l.Type)] > 0 || len(c.r.Counts) < maxTypes {
		c.r.Counts[string(l.Type)]++
	} else {
		c.r.Counts["(other unknown types)"]++
	}
	if c.n == 0 {
		c.first, c.last, c.prev = l.Time, l.Time, l.Time
	}
	c.n++
	if l.Time.Before(c.prev) {
		if d := c.prev.Sub(l.Time); d > maxTimeStep {
			c.violation(l.Seq, l.Type, "recorded at %s, %v before entry seq %d (%s): entry times must not go back",
				l.Time.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), l.Seq-1, c.prev.UTC().Format(time.RFC3339Nano))
		} else if c.inversions++; c.inversions == 1 {
			c.firstInvSeq = l.Seq
		}
	}
	c.prev = l.Time
	if l.Time.After(c.last) {
		c.last = l.Time
	}

	e := &ledger.Entry{Seq: l.Seq, Time: l.Time, Type: l.Type, Body: l.Body}
	if l.HasSealed() {
		// The state machine only checks that a sealed part is present.
		e.Sealed = l.SealedSHA256[:]
	}
	if !l.Type.Known() {
		c.st.Apply(e) // advances the state's sequence number; rejected
		c.violation(l.Seq, l.Type, "unknown entry type: written by a newer tkms, or not by tkms at all; audit with a tkms that knows it")
		return
	}

	// Checks against the state before the entry.
	var kc *state.KeyCreated
	var rel *state.KeyReleased
	switch l.Type {
	case ledger.TypeKeyCreated:
		kc = new(state.KeyCreated)
		if json.Unmarshal(l.Body, kc) == nil {
			c.checkScheduled(l, kc)
		}
	case ledger.TypeKeyReleased:
		rel = new(state.KeyReleased)
		d := json.NewDecoder(bytes.NewReader(l.Body))
		d.UseNumber() // claims as recorded, numbers exact
		if err := d.Decode(rel); err != nil {
			c.violation(l.Seq, l.Type, "the release record does not decode: %v", err)
		} else {
			c.checkRelease(l, rel)
		}
	}

	before := policySeqs(c.st)
	if err := c.st.Apply(e); err != nil {
		c.violation(l.Seq, l.Type, "rejected by the state machine: %v", innermost(err))
		c.covered(l)
		return
	}
	if l.Type == ledger.TypeGovProposal || l.Type == ledger.TypeGovBallot {
		c.govPolicyVersions(l, before)
	}

	// Accepted: record what the report lists.
	switch l.Type {
	case ledger.TypeKeyCreated:
		c.intervals = append(c.intervals, interval{kc.NotBefore, kc.NotAfter})
		c.active = append(c.active, len(c.intervals)-1)
	case ledger.TypeKeyPublished, ledger.TypeKeyRetired, ledger.TypeKeyExpired, ledger.TypeKeyDestroyed:
		c.markers[l.Seq] = l.Time
	case ledger.TypeKeyReleasePolicy, ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy, ledger.TypeJWTPolicy:
		c.policyVersion(l)
	case ledger.TypeKeyReleased:
		c.countRelease(l, rel)
	case ledger.TypeReleaseDenied:
		var d state.ReleaseDenied
		if json.Unmarshal(l.Body, &d) == nil {
			c.r.Denials.Entries++
			c.r.Denials.Suppressed += int64(d.Suppressed)
			c.r.Denials.Total += 1 + int64(d.Suppressed)
			c.r.Denials.ByCode[d.Code] += 1 + int64(d.Suppressed)
		}
	case ledger.TypeLogKey:
		c.logKeys = append(c.logKeys, l.Seq)
	case ledger.TypeServiceRecovered:
		c.checkRecovered(l)
	case ledger.TypeNodeJoined:
		c.checkNode(l)
	}
	c.covered(l)
}

// innermost returns the most specific error in err's chain: the state
// machine wraps its reason with the entry's type and seq, which the finding
// already names.
func innermost(err error) error {
	for {
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			if es := u.Unwrap(); len(es) > 0 {
				err = es[len(es)-1]
				continue
			}
		}
		return err
	}
}

// checkScheduled checks that a scheduled key was due, as the scheduler
// decides (kms.dueLocked): there was no key, the newest key was retired,
// a rotation interval old, or about to retire before a key created now
// could be published. A scheduled key created earlier is a second key for
// one rotation slot.
func (c *checker) checkScheduled(l *ledger.Leaf, kc *state.KeyCreated) {
	if kc.Reason != "scheduled" {
		return
	}
	n := c.st.Newest()
	if n == nil || n.Phase(l.Time) >= state.Retired {
		return
	}
	p := c.st.Rotation
	due := n.Created.Add(p.RotationInterval.D())
	if t := n.NotAfter.Add(-p.PublishDelay.D()); t.Before(due) {
		due = t
	}
	if !l.Time.Before(due) {
		return
	}
	c.violation(l.Seq, l.Type, "scheduled key %s was created while key %s (created %s) was not due for rotation until %s: a second key for one rotation slot",
		kc.Kid, n.Kid, stamp(n.Created), stamp(due))
}

// checkRelease checks a release against the state it met: the keys were
// releasable, the recorded policy is the one in force, and that policy
// grants the recorded claims.
func (c *checker) checkRelease(l *ledger.Leaf, r *state.KeyReleased) {
	for _, kid := range r.Kids {
		k := c.st.Key(kid)
		switch {
		case k == nil:
			// The state machine rejects it.
		case k.DestroyedSeq != 0:
			c.violation(l.Seq, l.Type, "released key %s, destroyed at seq %d", kid, k.DestroyedSeq)
		case k.Phase(l.Time) >= state.Expired:
			c.violation(l.Seq, l.Type, "released key %s at %s, but it expired at %s (release_until): expired keys must not be released",
				kid, stamp(l.Time), stamp(k.ReleaseUntil))
		}
	}
	if c.st.ReleasePolicySeq == 0 {
		c.violation(l.Seq, l.Type, "released keys while no key release policy was in force (records policy_seq %d)", r.PolicySeq)
		return
	}
	if r.PolicySeq != c.st.ReleasePolicySeq {
		c.violation(l.Seq, l.Type, "records policy_seq %d, but the key release policy in force was set by seq %d", r.PolicySeq, c.st.ReleasePolicySeq)
	}
	pp := c.releasePolicy()
	if pp == nil {
		return // the policy entry itself was reported
	}
	if r.PolicySHA256 != pp.hash {
		c.violation(l.Seq, l.Type, "records policy_sha256 %s, but the key release policy in force (seq %d) hashes to %s", r.PolicySHA256, pp.seq, pp.hash)
	}
	if r.Claims == nil {
		c.warning(l.Seq, l.Type, "no claims recorded (written by a tkms before the transparency log): the release decision cannot be checked again")
		return
	}
	if err := policy.Evaluate(pp.p, r.Claims); err != nil {
		c.violation(l.Seq, l.Type, "the key release policy in force (seq %d) does not grant the recorded claims: %v", pp.seq, err)
	}
	// The attestation settings and the admission of evidence types are
	// decided on the claims too, by releases that record the evidence
	// type (older ones did not decide them).
	if _, ok := r.Claims[policy.ClaimEvidenceType]; !ok {
		return
	}
	if err := policy.Admit(pp.p, r.Claims); err != nil {
		c.violation(l.Seq, l.Type, "the key release policy in force (seq %d) does not admit the evidence: %v", pp.seq, err)
	}
	if err := c.st.Settings.AttestationInForce().Check(r.Claims); err != nil {
		c.violation(l.Seq, l.Type, "the evidence is below the attestation settings in force: %v", err)
	}
}

// releasePolicy returns the key release policy in force, parsed.
func (c *checker) releasePolicy() *parsedPolicy {
	seq := c.st.ReleasePolicySeq
	if c.releasePol != nil && c.releasePol.seq == seq {
		return c.releasePol
	}
	p, err := policy.Parse(c.st.ReleasePolicy)
	if err != nil {
		return nil
	}
	h := policy.Hash(p)
	c.releasePol = &parsedPolicy{seq: seq, p: p, hash: hex.EncodeToString(h[:])}
	return c.releasePol
}

func (c *checker) policyVersion(l *ledger.Leaf) {
	v := Policy{Seq: l.Seq, Time: l.Time, Type: l.Type}
	if l.Type == ledger.TypeKeyReleasePolicy {
		if pp := c.releasePolicy(); pp != nil {
			v.SHA256 = pp.hash
		}
	} else {
		h := sha256.Sum256(l.Body)
		v.SHA256 = hex.EncodeToString(h[:])
	}
	c.r.Policies = append(c.r.Policies, v)
}

func (c *checker) countRelease(l *ledger.Leaf, r *state.KeyReleased) {
	rel := &c.r.Releases
	rel.Total++
	if r.Simulated {
		rel.Simulated++
		if len(rel.SimulatedSeqs) < maxFindings {
			rel.SimulatedSeqs = append(rel.SimulatedSeqs, l.Seq)
		}
	}
	for _, kid := range r.Kids {
		rel.ByKid[kid]++
	}
	k := [2]string{r.Issuer, r.Identity}
	id := c.identities[k]
	if id == nil {
		id = &IdentityN{Issuer: r.Issuer, Identity: r.Identity}
		c.identities[k] = id
	}
	id.Releases++
	if r.Simulated {
		id.Simulated++
	}
}

// checkLogKey checks that the log key the ledger records is the one the
// checkpoints verified with.
// checkLogKeys checks, once every entry is read, that the pinned key is
// one of the log's keys: the log.key entry's or one a recovery made
// (whose predecessor cosigns every later checkpoint).
func (c *checker) checkLogKeys() {
	if len(c.logKeys) == 0 || c.st.LogKey == nil {
		return
	}
	keys := append([]string{}, c.st.LogKey.VerifierKey)
	for _, p := range c.st.PreviousLogKeys {
		keys = append(keys, p.VerifierKey)
	}
	for _, k := range keys {
		v, err := note.NewVerifier(k)
		if err == nil && v.Name() == c.verifier.Name() && v.KeyHash() == c.verifier.KeyHash() {
			return
		}
	}
	if c.st.LogKey.Origin != c.verifier.Name() {
		c.violation(c.logKeys[0], ledger.TypeLogKey, "records origin %q, but the checkpoints name the log %q", c.st.LogKey.Origin, c.verifier.Name())
		return
	}
	c.violation(c.logKeys[0], ledger.TypeLogKey, "records verifier key %q, but the checkpoints verify with the pinned key %s+%08x", keys[len(keys)-1], c.verifier.Name(), c.verifier.KeyHash())
}

// recoveredCheck is a recovery's last checkpoint of the old log, checked
// against the recomputed tree once it is complete (scan.finish).
type recoveredCheck struct {
	seq uint64
	cp  translog.Signed
}

// checkRecovered records a recovery in the report and checks its last
// checkpoint of the old log: signed by the previous key, of the entries
// before it.
func (c *checker) checkRecovered(l *ledger.Leaf) {
	r := c.st.Recoveries[len(c.st.Recoveries)-1]
	rec := Recovery{Event: Event{Seq: l.Seq, Time: l.Time}, PreviousLogKey: r.PreviousLogKey, LogKey: r.LogKey, Members: r.Members, Holder: r.Holder}
	c.logKeys = append(c.logKeys, l.Seq)
	v, err := note.NewVerifier(r.PreviousLogKey)
	if err != nil {
		c.violation(l.Seq, l.Type, "the previous log key does not parse: %v", err)
		return
	}
	cp, err := translog.Verify([]byte(r.LastCheckpoint), v)
	if err != nil {
		c.violation(l.Seq, l.Type, "the last checkpoint of the recovered log is not signed by the previous log key: %v", err)
		return
	}
	if cp.Size >= int64(l.Seq) {
		c.violation(l.Seq, l.Type, "the last checkpoint of the recovered log has %d entries, but the recovery is entry %d", cp.Size, l.Seq)
		return
	}
	rec.LastSize = cp.Size
	c.r.Recoveries = append(c.r.Recoveries, rec)
	c.recovered = append(c.recovered, recoveredCheck{seq: l.Seq, cp: cp})
}

// covered notes whether some key was published at the entry's time. It
// keeps the first entry of each run of entries that no key covered; gaps
// finds the periods without a published key.
func (c *checker) covered(l *ledger.Leaf) {
	t := l.Time
	if c.cover >= 0 && c.intervals[c.cover].covers(t) {
		c.coveredSince = true
		return
	}
	c.cover = -1
	for _, i := range c.active {
		if c.intervals[i].covers(t) {
			c.cover = i
			break
		}
	}
	if c.cover >= 0 {
		c.coveredSince = true
	} else {
		// A new run unless no key was published since the last
		// uncovered entry, not even between two entries.
		newRun := len(c.uncovered) == 0 || c.coveredSince
		if !newRun {
			prev := c.uncovered[len(c.uncovered)-1].Time
			for _, i := range c.active {
				if iv := c.intervals[i]; iv.from.Compare(t) <= 0 && iv.to.After(prev) {
					newRun = true
				}
			}
		}
		if newRun {
			c.uncovered = append(c.uncovered, Event{Seq: l.Seq, Time: t})
		}
		c.coveredSince = false
	}
	// A key retired long enough ago covers no later entry.
	keep := c.active[:0]
	for _, i := range c.active {
		if c.intervals[i].to.Add(maxTimeStep).After(t) {
			keep = append(keep, i)
		}
	}
	c.active = keep
}

func (iv interval) covers(t time.Time) bool { return iv.from.Compare(t) <= 0 && t.Before(iv.to) }

// finish completes the report once every entry has been applied.
func (c *checker) finish() {
	c.checkLogKeys()
	c.gaps()
	if c.inversions > 0 {
		c.r.Notes = append(c.r.Notes, fmt.Sprintf("%d entries (the first at seq %d) were recorded up to %v before the entry before them, as concurrent writers may be ordered", c.inversions, c.firstInvSeq, maxTimeStep))
	}
	for _, k := range c.st.Keys {
		rk := Key{
			Kid: k.Kid, Number: k.Number, ID: k.ID, Suite: k.Suite, Reason: k.Reason,
			Created:   Event{Seq: k.Seq, Time: k.Created},
			NotBefore: k.NotBefore, NotAfter: k.NotAfter, ReleaseUntil: k.ReleaseUntil, DestroyAfter: k.DestroyAfter,
			Published: c.marker(k.PublishedSeq), Retired: c.marker(k.RetiredSeq),
			Expired: c.marker(k.ExpiredSeq), Destroyed: c.marker(k.DestroyedSeq),
			Phase: k.Phase(c.last).String(),
		}
		c.r.Keys = append(c.r.Keys, rk)
	}
	for _, id := range c.identities {
		c.r.Releases.ByIdentity = append(c.r.Releases.ByIdentity, *id)
	}
	slices.SortFunc(c.r.Releases.ByIdentity, func(a, b IdentityN) int {
		if a.Releases != b.Releases {
			return cmp.Compare(b.Releases, a.Releases)
		}
		return cmp.Or(cmp.Compare(a.Issuer, b.Issuer), cmp.Compare(a.Identity, b.Identity))
	})
	if !c.st.Governed() {
		c.r.Notes = append(c.r.Notes, "this ledger is not governed (no gov.init): its policy changes came from the operator's configuration and are listed, not checked against governance decisions")
		return
	}
	c.r.Notes = append(c.r.Notes, fmt.Sprintf("governed since seq %d: every governance message's signature was recomputed against the member's key in force and its ballots counted against the constitution in force, by the state machine's own replay; a policy entry outside an accepted proposal would be a violation", c.st.GovSeq))
	g := &Governance{Since: c.st.GovSeq, ConstitutionSeq: c.st.ConstitutionSeq}
	for _, m := range c.st.Members {
		g.Members = append(g.Members, GovMember{ID: m.ID, Name: m.Name, Active: m.Active, AddedSeq: m.AddedSeq, RemovedSeq: m.RemovedSeq})
	}
	slices.SortFunc(g.Members, func(a, b GovMember) int { return cmp.Or(cmp.Compare(a.AddedSeq, b.AddedSeq), cmp.Compare(a.ID, b.ID)) })
	for _, p := range c.st.ProposalList() {
		gp := GovProposal{ID: p.ID, Proposer: p.Proposer, State: string(p.State(c.last)), Approvals: len(p.Approvals),
			Rejections: len(p.Rejections), Needed: p.Needed, Seq: p.Seq, DecidedSeq: p.DecidedSeq}
		for _, a := range p.Actions {
			gp.Actions = append(gp.Actions, gov.DescribeAction(a))
		}
		g.Proposals = append(g.Proposals, gp)
	}
	c.r.Governance = g
}

// policySeqs is what says which policies a governance entry changed.
type policyMarks struct {
	release, jwt uint64
	rotation     state.RotationPolicy
	settings     state.Settings
}

func policySeqs(st *state.State) policyMarks {
	return policyMarks{release: st.ReleasePolicySeq, jwt: st.JWTSeq, rotation: st.Rotation, settings: st.Settings}
}

// govPolicyVersions lists the policies an accepted proposal changed in
// entry l as new versions, naming the proposal.
func (c *checker) govPolicyVersions(l *ledger.Leaf, before policyMarks) {
	var id string
	for _, p := range c.st.Proposals {
		if p.DecidedSeq == l.Seq {
			id = p.ID
		}
	}
	if id == "" {
		return
	}
	add := func(typ ledger.Type, sum string) {
		c.r.Policies = append(c.r.Policies, Policy{Seq: l.Seq, Time: l.Time, Type: typ, SHA256: sum, Proposal: id})
	}
	if c.st.ReleasePolicySeq != before.release {
		sum := ""
		if pp := c.releasePolicy(); pp != nil {
			sum = pp.hash
		}
		add(ledger.TypeKeyReleasePolicy, sum)
	}
	hash := func(v any) string {
		b, _ := json.Marshal(v)
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	if c.st.JWTSeq != before.jwt {
		add(ledger.TypeJWTPolicy, hash(c.st.JWT))
	}
	if c.st.Rotation != before.rotation {
		add(ledger.TypeKeyRotationPolicy, hash(c.st.Rotation))
	}
	if !c.st.Settings.Equal(before.settings) {
		add(ledger.TypeSettingsPolicy, hash(c.st.Settings))
	}
}

// sortFindings orders the violations and warnings: the log as a whole
// first, then by entry.
func (c *checker) sortFindings() {
	for _, fs := range [][]Finding{c.r.Violations, c.r.Warnings} {
		slices.SortStableFunc(fs, func(a, b Finding) int { return cmp.Compare(a.Seq, b.Seq) })
	}
}

func (c *checker) marker(seq uint64) *Event {
	if seq == 0 {
		return nil
	}
	return &Event{Seq: seq, Time: c.markers[seq]}
}

// gaps reports the periods, between the first and the last entry, in
// which no key was published. A gap during which the service wrote entries
// and still published no key for more than maxRotationGap is a violation;
// a gap without entries (the service was down) is a note.
func (c *checker) gaps() {
	if c.n == 0 {
		return
	}
	ivs := slices.Clone(c.intervals)
	slices.SortFunc(ivs, func(a, b interval) int { return a.from.Compare(b.from) })
	type gap struct {
		from, to time.Time
		open     bool // no key published up to the last entry
	}
	var gs []gap
	at := c.first // covered up to here
	for _, iv := range ivs {
		if !at.Before(c.last) {
			break
		}
		if !iv.to.After(iv.from) {
			continue
		}
		if iv.from.After(at) {
			g := gap{from: at, to: iv.from}
			if iv.from.After(c.last) {
				g.to, g.open = c.last, true
			}
			gs = append(gs, g)
		}
		if iv.to.After(at) {
			at = iv.to
		}
	}
	if at.Before(c.last) {
		gs = append(gs, gap{from: at, to: c.last, open: true})
	}
	for _, g := range gs {
		if g.to.Sub(g.from) <= maxRotationGap {
			continue
		}
		// The earliest entry in the gap: the service was up then, and
		// should have published a key within maxRotationGap.
		var up *Event
		for i := range c.uncovered {
			u := &c.uncovered[i]
			if !u.Time.Before(g.from) && (u.Time.Before(g.to) || g.open && !u.Time.After(g.to)) {
				up = u
				break
			}
		}
		end := stamp(g.to)
		if g.open {
			end = "the last entry, " + stamp(g.to)
		}
		if up != nil && g.to.Sub(up.Time) > maxRotationGap {
			c.violation(0, "", "no key was published from %s to %s (%v), but the service was up: it wrote entry seq %d at %s and did not rotate within %v",
				stamp(g.from), end, g.to.Sub(g.from).Round(time.Second), up.Seq, stamp(up.Time), maxRotationGap)
			continue
		}
		c.r.Notes = append(c.r.Notes, fmt.Sprintf("no key was published from %s to %s (%v); the ledger holds no entries in between: the service was down",
			stamp(g.from), end, g.to.Sub(g.from).Round(time.Second)))
	}
}
