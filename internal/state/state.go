// Package state is the tkms state machine: the service state is what
// applying the ledger's entries in order yields.
//
// Apply is deterministic. It reads no clock and draws no randomness: every
// time and every random value it needs comes in the entry, so replaying the
// same ledger (after a restart, or on another replica) gives the same state.
// An entry that is not valid in the state it meets is rejected by Apply
// with an error and changes nothing; since the rejection depends only on the
// state and the entry, every replica rejects it alike.
//
// The lifecycle of a key (docs/lifecycle.md) is decided when the key is
// created: its key.created entry records when it is published, retired,
// expired and destroyed. Later marker entries record that those moments
// passed; Phase combines both, so a decision at time t never depends on
// whether the marker has been written yet.
//
// Governance (docs/governance.md, gov.go): from its gov.init entry on, a
// ledger is governed. Proposals, ballots and withdrawals are entries that
// carry the members' COSE_Sign1 messages; Apply verifies each against the
// member keys and the constitution in force at that entry, decides, and
// applies an accepted proposal's actions in the entry that decides it. The
// policy.* entries are then refused: policies change only by proposals.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"golang.org/x/mod/sumdb/note"
)

// Phase is a stage of a key's life.
type Phase int

// The phases, in order.
const (
	Created   Phase = iota // private key fetchable by services, not advertised
	Published              // advertised to clients
	Retired                // no longer advertised; still released during grace
	Expired                // no longer released (410)
	Destroyed              // private material erased
)

var phaseNames = [...]string{"created", "published", "retired", "expired", "destroyed"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return fmt.Sprintf("phase(%d)", int(p))
	}
	return phaseNames[p]
}

// Genesis is the body of the first entry.
type Genesis struct {
	Service string `json:"service"` // a name for this tkms instance
	Format  int    `json:"format"`  // ledger format version
}

// KeyCreated is the public body of a key.created entry. The sealed part of
// the entry holds the private key, encrypted under the key's data key.
type KeyCreated struct {
	Number       uint64    `json:"number"` // 1-based; the N of the kid
	Kid          string    `json:"kid"`
	ID           int       `json:"id"` // 10..99
	Suite        string    `json:"suite"`
	KEM          uint16    `json:"kem_id"`
	KDF          uint16    `json:"kdf_id"`
	AEAD         uint16    `json:"aead_id"`
	PublicKey    []byte    `json:"public_key"` // RFC 9180 SerializePublicKey, base64
	NotBefore    time.Time `json:"not_before"` // published from
	NotAfter     time.Time `json:"not_after"`  // retired from
	ReleaseUntil time.Time `json:"release_until"`
	DestroyAfter time.Time `json:"destroy_after"`
	Reason       string    `json:"reason"` // "scheduled", "refresh"
}

// KeyEvent is the body of key.published, key.retired, key.expired and
// key.destroyed entries.
type KeyEvent struct {
	Kid    string `json:"kid"`
	Reason string `json:"reason,omitempty"`
}

// Key is a key as the state knows it.
type Key struct {
	KeyCreated
	Created      time.Time `json:"created"`       // time of the key.created entry
	Seq          uint64    `json:"seq"`           // sequence number of the key.created entry
	PublishedSeq uint64    `json:"published_seq"` // marker entries, 0 until written
	RetiredSeq   uint64    `json:"retired_seq"`
	ExpiredSeq   uint64    `json:"expired_seq"`
	DestroyedSeq uint64    `json:"destroyed_seq"`
}

// Phase returns the key's phase at time t.
func (k *Key) Phase(t time.Time) Phase {
	switch {
	case k.DestroyedSeq != 0:
		return Destroyed
	case k.ExpiredSeq != 0 || !t.Before(k.ReleaseUntil):
		return Expired
	case k.RetiredSeq != 0 || !t.Before(k.NotAfter):
		return Retired
	case k.PublishedSeq != 0 || !t.Before(k.NotBefore):
		return Published
	}
	return Created
}

// State is the service state.
type State struct {
	Seq      uint64         `json:"seq"` // last applied entry
	Genesis  *Genesis       `json:"genesis,omitempty"`
	Rotation RotationPolicy `json:"key_rotation_policy"`
	Settings Settings       `json:"settings_policy"`
	Keys     []*Key         `json:"keys"` // by number: Keys[i].Number == i+1

	// ReleasePolicy is the canonical JSON of the key release policy in
	// force (internal/policy), set by the entry at ReleasePolicySeq; nil
	// means unset, and an unset policy denies every release.
	ReleasePolicy    json.RawMessage `json:"key_release_policy,omitempty"`
	ReleasePolicySeq uint64          `json:"key_release_policy_seq,omitempty"`
	// JWT is the trusted issuers and their claim policies, set by the
	// entry at JWTSeq.
	JWT    *JWTPolicy `json:"jwt_policy,omitempty"`
	JWTSeq uint64     `json:"jwt_policy_seq,omitempty"`
	// LogKey names the transparency log and its verifier key, set once by
	// the log.key entry at LogKeySeq.
	LogKey    *LogKey `json:"log_key,omitempty"`
	LogKeySeq uint64  `json:"log_key_seq,omitempty"`
	Releases  uint64  `json:"releases"` // key.released entries applied
	Denials   uint64  `json:"denials"`  // refusals of authenticated callers, suppressed ones included

	// Governance (docs/governance.md, gov.go). GovSeq is the gov.init
	// entry; 0 means the ledger is not governed.
	GovSeq          uint64               `json:"gov_init_seq,omitempty"`
	Members         []*Member            `json:"members,omitempty"` // every member ever added, in order
	Constitution    *gov.Constitution    `json:"constitution,omitempty"`
	ConstitutionSeq uint64               `json:"constitution_seq,omitempty"`
	Proposals       map[string]*Proposal `json:"proposals,omitempty"` // by id
	// NodePolicy is the node policy set by set_node_policy (the
	// release-policy grammar of internal/policy, as policy.Marshal writes
	// it): a joining node's evidence must satisfy it (internal/node).
	NodePolicy    json.RawMessage `json:"node_policy,omitempty"`
	NodePolicySeq uint64          `json:"node_policy_seq,omitempty"`
	// RemovedNodes are the cluster nodes removed by remove_node, by node
	// id, with the seq of the entry that removed them: the leader takes
	// them out of the cluster, and they may not join again.
	RemovedNodes map[string]uint64 `json:"removed_nodes,omitempty"`
	// Nodes are the attested nodes the ledger's secrets were handed to
	// (node.joined entries), in order.
	Nodes []*Node `json:"nodes,omitempty"`
	// TrustedNodeIDs are the node ids named by accepted trust_node
	// proposals, with the seq that decided each.
	TrustedNodeIDs map[string]uint64 `json:"trusted_node_ids,omitempty"`
	// MAA is the list of trusted Azure Attestation instances set by
	// set_maa_instances at MAASeq (maa.go); nil until governance sets it.
	MAA    *MAAPolicy `json:"maa_policy,omitempty"`
	MAASeq uint64     `json:"maa_policy_seq,omitempty"`
	// AutoRecovery is the automatic recovery member set by
	// set_auto_recovery_member at AutoRecoverySeq (autorecovery.go); nil
	// when none is set. It is replaced, never changed in place.
	AutoRecovery    *autoRecoveryMember `json:"auto_recovery_member,omitempty"`
	AutoRecoverySeq uint64              `json:"auto_recovery_member_seq,omitempty"`
	// Recovery is the latest recovery.shares entry (recovery.go); nil
	// until one is written.
	Recovery *RecoveryShares `json:"recovery,omitempty"`
	// Recoveries are the service.recovered entries, in order.
	Recoveries []*ServiceRecovered `json:"recoveries,omitempty"`
	// PreviousLogKeys are the log keys in force before each recovery,
	// with the seq of the entry holding each signing key: the recovered
	// service cosigns its checkpoints with them.
	PreviousLogKeys []PreviousLogKey `json:"previous_log_keys,omitempty"`
	// PendingEffects are the forced key operations of accepted proposals
	// that the kms has yet to record, oldest first.
	PendingEffects []Effect `json:"pending_effects,omitempty"`
	// Rekeys are the ledger.rekeyed entries applied, oldest first: the
	// chain of ledger-secret versions (rekey.go).
	Rekeys []*Rekey `json:"rekeys,omitempty"`
}

// LogKey is the body of the log.key entry: the origin line of the log's
// checkpoints and the note verifier key that checks their signatures. The
// entry's sealed part is the signing key.
type LogKey struct {
	Origin      string `json:"origin"`
	VerifierKey string `json:"verifier_key"`
}

// ReleaseDenied is the body of a release.denied entry: an authenticated
// caller was refused. Entries are rate-limited per caller and code; the
// refusals not written since the previous entry are counted in Suppressed.
type ReleaseDenied struct {
	Issuer     string `json:"iss"`
	Identity   string `json:"oid"`
	API        string `json:"api"`
	Code       string `json:"code"`
	Suppressed uint64 `json:"suppressed"`
}

// JWTPolicy is the body of a policy.jwt entry: which token issuers are
// trusted, how their keys are found, and which claims each must carry
// (spec/azure-compat.md "JWT validation policy").
type JWTPolicy struct {
	Issuers []JWTIssuer               `json:"issuers"`
	Claims  map[string]map[string]any `json:"claims"` // issuer -> claim -> value or [values]
}

// JWTIssuer is one trusted token issuer. Exactly one key source is set.
type JWTIssuer struct {
	Issuer       string          `json:"issuer"`
	Audiences    []string        `json:"audiences"`
	DiscoveryURL string          `json:"discovery_url,omitempty"`
	JWKSURL      string          `json:"jwks_url,omitempty"`
	JWKS         json.RawMessage `json:"jwks,omitempty"`
	Algorithms   []string        `json:"algorithms,omitempty"`
	// MaxTokenLifetime is the longest validity of the issuer's tokens (exp
	// minus the earlier of nbf and iat); 0 means jwtauth's default, 24 hours.
	MaxTokenLifetime Seconds `json:"max_token_lifetime_seconds,omitempty"`
}

// KeyReleased is the public body of a key.released entry (api.KeyReleased:
// clients check release receipts against it).
type KeyReleased = api.KeyReleased

// New returns the empty state, before genesis.
func New() *State { return &State{Rotation: DefaultRotationPolicy()} }

// Errors from Apply.
var (
	ErrSequence = errors.New("state: entry out of sequence")
	ErrInvalid  = errors.New("state: invalid entry")
)

// Apply applies e to the state. It returns an error, and changes nothing
// but Seq, if e is not valid in this state.
func (s *State) Apply(e *ledger.Entry) error {
	if e.Seq != s.Seq+1 {
		return fmt.Errorf("%w: at %d, got %d", ErrSequence, s.Seq, e.Seq)
	}
	s.Seq = e.Seq
	if err := s.apply(e); err != nil {
		return fmt.Errorf("%w: %s at seq %d: %w", ErrInvalid, e.Type, e.Seq, err)
	}
	return nil
}

func (s *State) apply(e *ledger.Entry) error {
	if s.Genesis == nil && e.Type != ledger.TypeGenesis {
		return errors.New("the ledger must start with genesis")
	}
	switch e.Type {
	case ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy, ledger.TypeKeyReleasePolicy, ledger.TypeJWTPolicy:
		if s.Governed() {
			return fmt.Errorf("%w: the ledger is governed since seq %d: policies change only by accepted proposals", ErrForbidden, s.GovSeq)
		}
	}
	switch e.Type {
	case ledger.TypeGenesis:
		if s.Genesis != nil {
			return errors.New("genesis twice")
		}
		var g Genesis
		if err := decodeBody(e.Body, &g); err != nil {
			return err
		}
		s.Genesis = &g
	case ledger.TypeKeyRotationPolicy:
		var p RotationPolicy
		if err := decodeBody(e.Body, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return err
		}
		s.Rotation = p
	case ledger.TypeSettingsPolicy:
		var p Settings
		if err := decodeBody(e.Body, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return err
		}
		s.Settings = p
	case ledger.TypeKeyCreated:
		return s.applyKeyCreated(e)
	case ledger.TypeKeyReleasePolicy:
		p, err := policy.Parse(e.Body)
		if err != nil {
			return err
		}
		s.ReleasePolicy, s.ReleasePolicySeq = policy.Marshal(p), e.Seq
	case ledger.TypeJWTPolicy:
		var p JWTPolicy
		if err := decodeBody(e.Body, &p); err != nil {
			return err
		}
		if err := p.Validate(); err != nil {
			return err
		}
		s.JWT, s.JWTSeq = &p, e.Seq
	case ledger.TypeKeyReleased:
		// Only the kids decide anything here. Decoding the rest (the
		// claims, a map per entry) made replaying a ledger of releases
		// several times slower; the body is still checked to be JSON.
		var r struct {
			Kids []string `json:"kids"`
		}
		if err := decodeBody(e.Body, &r); err != nil {
			return err
		}
		if len(r.Kids) == 0 {
			return errors.New("release of no key")
		}
		for _, kid := range r.Kids {
			if s.Key(kid) == nil {
				return fmt.Errorf("release of unknown key %s", kid)
			}
		}
		s.Releases++
	case ledger.TypeNodeJoined:
		return s.applyNodeJoined(e)
	case ledger.TypeRecoveryShares:
		return s.applyRecoveryShares(e)
	case ledger.TypeServiceRecovered:
		return s.applyServiceRecovered(e)
	case ledger.TypeLedgerRekeyed:
		return s.applyRekeyed(e)
	case ledger.TypeReleaseDenied:
		var d ReleaseDenied
		if err := decodeBody(e.Body, &d); err != nil {
			return err
		}
		if d.Code == "" {
			return errors.New("denial without a code")
		}
		s.Denials += 1 + d.Suppressed
	case ledger.TypeKeyPublished, ledger.TypeKeyRetired, ledger.TypeKeyExpired, ledger.TypeKeyDestroyed:
		return s.applyKeyEvent(e)
	case ledger.TypeGovInit, ledger.TypeGovProposal, ledger.TypeGovBallot, ledger.TypeGovWithdrawal:
		return s.applyGov(e)
	case ledger.TypeLogKey:
		if s.LogKey != nil {
			return fmt.Errorf("the log key is already set at seq %d", s.LogKeySeq)
		}
		var k LogKey
		if err := decodeBody(e.Body, &k); err != nil {
			return err
		}
		v, err := note.NewVerifier(k.VerifierKey)
		if err != nil {
			return fmt.Errorf("verifier key: %w", err)
		}
		if v.Name() != k.Origin {
			return fmt.Errorf("verifier key is named %q, not the origin %q", v.Name(), k.Origin)
		}
		if len(e.Sealed) == 0 {
			return errors.New("no sealed signing key")
		}
		s.LogKey, s.LogKeySeq = &k, e.Seq
	default:
		return fmt.Errorf("no handler for type %q", e.Type)
	}
	return nil
}

func (s *State) applyKeyCreated(e *ledger.Entry) error {
	var kc KeyCreated
	if err := decodeBody(e.Body, &kc); err != nil {
		return err
	}
	if kc.Number != uint64(len(s.Keys))+1 {
		return fmt.Errorf("key number %d, want %d (a second key for one rotation)", kc.Number, len(s.Keys)+1)
	}
	suite, err := keys.ParseSuite(kc.Suite)
	if err != nil {
		return err
	}
	if suite.KEM != kc.KEM || suite.KDF != kc.KDF || suite.AEAD != kc.AEAD {
		return fmt.Errorf("algorithm ids do not match suite %s", suite.Name)
	}
	pem, err := keys.PublicPEM(suite, kc.PublicKey)
	if err != nil {
		return err
	}
	if want := keys.KID(pem, kc.Number); kc.Kid != want {
		return fmt.Errorf("kid %s does not match the public key (want %s)", kc.Kid, want)
	}
	if kc.ID < keys.MinID || kc.ID > keys.MaxID {
		return fmt.Errorf("id %d out of range", kc.ID)
	}
	if holder := s.idHolder(kc.ID, e.Time); holder != nil {
		return fmt.Errorf("id %d is held by unexpired key %s", kc.ID, holder.Kid)
	}
	if kc.NotBefore.Before(e.Time) || kc.NotAfter.Before(kc.NotBefore) || kc.ReleaseUntil.Before(kc.NotAfter) || kc.DestroyAfter.Before(kc.ReleaseUntil) {
		return errors.New("lifecycle times out of order")
	}
	if len(e.Sealed) == 0 {
		return errors.New("no sealed private key")
	}
	if err := s.governanceEffect(kc.Reason, gov.ActRotateKeyNow, ""); err != nil {
		return err
	}
	s.Keys = append(s.Keys, &Key{KeyCreated: kc, Created: e.Time, Seq: e.Seq})
	return nil
}

func (s *State) applyKeyEvent(e *ledger.Entry) error {
	var ev KeyEvent
	if err := decodeBody(e.Body, &ev); err != nil {
		return err
	}
	k := s.Key(ev.Kid)
	if k == nil {
		return fmt.Errorf("unknown kid %s", ev.Kid)
	}
	if k.DestroyedSeq != 0 {
		return fmt.Errorf("key %s is destroyed", ev.Kid)
	}
	var mark *uint64
	switch e.Type {
	case ledger.TypeKeyPublished:
		mark = &k.PublishedSeq
	case ledger.TypeKeyRetired:
		mark = &k.RetiredSeq
	case ledger.TypeKeyExpired:
		mark = &k.ExpiredSeq
	case ledger.TypeKeyDestroyed:
		mark = &k.DestroyedSeq
	}
	if *mark != 0 {
		return fmt.Errorf("key %s: %s recorded twice", ev.Kid, e.Type)
	}
	if e.Type == ledger.TypeKeyDestroyed {
		if err := s.governanceEffect(ev.Reason, gov.ActDestroyKey, ev.Kid); err != nil {
			return err
		}
		s.dropDestroyEffects(ev.Kid)
	}
	*mark = e.Seq
	return nil
}

// idHolder returns the key that holds numeric id at time t: one that is not
// yet expired.
func (s *State) idHolder(id int, t time.Time) *Key {
	for _, k := range s.Keys {
		if k.ID == id && k.Phase(t) < Expired {
			return k
		}
	}
	return nil
}

// IDHeld reports whether an unexpired key holds numeric id at time t.
func (s *State) IDHeld(id int, t time.Time) bool { return s.idHolder(id, t) != nil }

// Replay applies the entries that scan yields from st.Seq+1 on, in order.
// An entry the state machine rejects is passed to rejected (if not nil)
// and skipped, as a live apply would; only a sequence gap stops the replay.
func (s *State) Replay(scan func(from uint64, fn func(*ledger.Entry) error) error, rejected func(*ledger.Entry, error)) error {
	return scan(s.Seq+1, func(e *ledger.Entry) error {
		err := s.Apply(e)
		if errors.Is(err, ErrSequence) {
			return err
		}
		if err != nil && rejected != nil {
			rejected(e, err)
		}
		return nil
	})
}

// Validate checks the JWT policy's shape: issuers named once, with
// audiences and exactly one key source, and claim policies only for
// configured issuers.
func (p *JWTPolicy) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, is := range p.Issuers {
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("issuers[%d]: no issuer", i))
		}
		if seen[is.Issuer] {
			errs = append(errs, fmt.Errorf("issuer %q listed twice", is.Issuer))
		}
		seen[is.Issuer] = true
		if len(is.Audiences) == 0 {
			errs = append(errs, fmt.Errorf("issuer %q: no audiences", is.Issuer))
		}
		n := 0
		for _, set := range []bool{is.DiscoveryURL != "", is.JWKSURL != "", len(is.JWKS) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("issuer %q: want exactly one of discovery_url, jwks_url, jwks", is.Issuer))
		}
	}
	for iss := range p.Claims {
		if !seen[iss] {
			errs = append(errs, fmt.Errorf("claims for issuer %q, which is not configured", iss))
		}
	}
	return errors.Join(errs...)
}

// Key returns the key with the given kid, or nil.
func (s *State) Key(kid string) *Key {
	n, ok := keys.ParseKIDNumber(kid)
	if !ok || n > uint64(len(s.Keys)) {
		return nil
	}
	if k := s.Keys[n-1]; k.Kid == kid {
		return k
	}
	return nil
}

// Newest returns the most recently created key, or nil.
func (s *State) Newest() *Key {
	if len(s.Keys) == 0 {
		return nil
	}
	return s.Keys[len(s.Keys)-1]
}

// Advertised returns the keys published and not retired at t, newest first.
// The first is the primary key.
func (s *State) Advertised(t time.Time) []*Key {
	var out []*Key
	for i := len(s.Keys) - 1; i >= 0; i-- {
		if s.Keys[i].Phase(t) == Published {
			out = append(out, s.Keys[i])
		}
	}
	return out
}

// Primary returns the primary key at t: the newest advertised key, or nil.
func (s *State) Primary(t time.Time) *Key {
	for i := len(s.Keys) - 1; i >= 0; i-- {
		if s.Keys[i].Phase(t) == Published {
			return s.Keys[i]
		}
	}
	return nil
}

// NextChange returns the first moment after t at which some key's phase
// changes by time alone, or the zero time if none will.
func (s *State) NextChange(t time.Time) time.Time {
	var next time.Time
	consider := func(x time.Time) {
		if x.After(t) && (next.IsZero() || x.Before(next)) {
			next = x
		}
	}
	for _, k := range s.Keys {
		if k.DestroyedSeq != 0 {
			continue
		}
		consider(k.NotBefore)
		consider(k.NotAfter)
		consider(k.ReleaseUntil)
		consider(k.DestroyAfter)
	}
	return next
}

// Live returns the keys that are not destroyed, oldest first.
func (s *State) Live() []*Key {
	var out []*Key
	for _, k := range s.Keys {
		if k.DestroyedSeq == 0 {
			out = append(out, k)
		}
	}
	return out
}

// Clone returns a deep copy of s, for snapshots, readers and trial
// applies. (Values that Apply replaces rather than modifies, such as the
// JWT policy and the key release policy, are shared.)
func (s *State) Clone() *State {
	c := *s
	if s.Genesis != nil {
		g := *s.Genesis
		c.Genesis = &g
	}
	c.Keys = make([]*Key, len(s.Keys))
	for i, k := range s.Keys {
		kk := *k
		c.Keys[i] = &kk
	}
	s.cloneGov(&c)
	if s.RemovedNodes != nil {
		c.RemovedNodes = maps.Clone(s.RemovedNodes)
	}
	if s.TrustedNodeIDs != nil {
		c.TrustedNodeIDs = maps.Clone(s.TrustedNodeIDs)
	}
	c.Nodes = slices.Clone(s.Nodes)   // a Node is never modified once applied
	c.Rekeys = slices.Clone(s.Rekeys) // nor a Rekey
	c.Recoveries = slices.Clone(s.Recoveries)
	c.PreviousLogKeys = slices.Clone(s.PreviousLogKeys)
	return &c
}

// Marshal encodes the state for a snapshot.
func (s *State) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes a snapshot made by Marshal and checks its invariants.
func Unmarshal(b []byte) (*State, error) {
	s := New()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	for i, k := range s.Keys {
		if k == nil || k.Number != uint64(i)+1 {
			return nil, errors.New("state: snapshot: keys out of order")
		}
	}
	if err := s.checkGov(); err != nil {
		return nil, fmt.Errorf("state: snapshot: %w", err)
	}
	return s, nil
}

func decodeBody(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}
