package gov

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/policy"
)

// An Action is one change a proposal asks for (docs/governance.md
// "Actions").
type Action struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args"`
}

// The actions.
const (
	ActSetKeyReleasePolicy    = "set_key_release_policy"
	ActSetJWTValidationPolicy = "set_jwt_validation_policy"
	ActSetJWTIssuer           = "set_jwt_issuer"
	ActSetKeyRotationPolicy   = "set_key_rotation_policy"
	ActSetSettingsPolicy      = "set_settings_policy"
	ActRotateKeyNow           = "rotate_key_now"
	ActDestroyKey             = "destroy_key"
	ActAddMember              = "add_member"
	ActRemoveMember           = "remove_member"
	ActSetNodePolicy          = "set_node_policy"
	ActSetConstitution        = "set_constitution"
	ActRemoveNode             = "remove_node"
	ActTrustNode              = "trust_node"
)

// Bounds on a proposal's actions.
const (
	MaxActions   = 20
	MaxReasonLen = 256
)

// checkers validates each action's arguments, as far as no state is needed.
var checkers = map[string]func(json.RawMessage) error{
	ActSetKeyReleasePolicy: func(b json.RawMessage) error {
		_, err := DecodeReleasePolicyArgs(b)
		return err
	},
	ActSetJWTValidationPolicy: func(b json.RawMessage) error {
		_, err := DecodeJWTValidationArgs(b)
		return err
	},
	ActSetJWTIssuer: func(b json.RawMessage) error {
		_, err := DecodeJWTIssuerArgs(b)
		return err
	},
	ActSetKeyRotationPolicy: checkRotationPolicy,
	ActSetSettingsPolicy:    checkSettingsPolicy,
	ActRotateKeyNow: func(b json.RawMessage) error {
		_, err := DecodeRotateArgs(b)
		return err
	},
	ActDestroyKey: func(b json.RawMessage) error {
		_, err := DecodeDestroyArgs(b)
		return err
	},
	ActAddMember: func(b json.RawMessage) error {
		_, err := DecodeAddMemberArgs(b)
		return err
	},
	ActRemoveMember: func(b json.RawMessage) error {
		_, err := DecodeRemoveMemberArgs(b)
		return err
	},
	ActSetNodePolicy: func(b json.RawMessage) error {
		_, err := policy.Parse(b) // the release-policy grammar; {} admits no node
		return err
	},
	ActSetConstitution: func(b json.RawMessage) error {
		_, err := ParseConstitution(b)
		return err
	},
	ActRemoveNode: func(b json.RawMessage) error {
		_, err := DecodeRemoveNodeArgs(b)
		return err
	},
	ActTrustNode: func(b json.RawMessage) error {
		_, err := DecodeTrustNodeArgs(b)
		return err
	},
}

// actionNames lists the known actions.
var actionNames = []string{
	ActSetKeyReleasePolicy, ActSetJWTValidationPolicy, ActSetJWTIssuer,
	ActSetKeyRotationPolicy, ActSetSettingsPolicy, ActRotateKeyNow,
	ActDestroyKey, ActAddMember, ActRemoveMember, ActSetNodePolicy,
	ActSetConstitution, ActRemoveNode, ActTrustNode,
}

// ActionNames returns the known action names.
func ActionNames() []string { return slices.Clone(actionNames) }

func knownAction(name string) bool { return slices.Contains(actionNames, name) }

// ValidateActions checks a proposal's actions: 1 to 20 of them, each of a
// known name with arguments that decode strictly into that action's type and
// pass the checks that need no state. Its errors wrap ErrInvalidAction and
// name the action's index and name.
func ValidateActions(actions []Action) error {
	if len(actions) == 0 {
		return fmt.Errorf("%w: no actions", ErrInvalidAction)
	}
	if len(actions) > MaxActions {
		return fmt.Errorf("%w: %d actions, at most %d are allowed", ErrInvalidAction, len(actions), MaxActions)
	}
	for i, a := range actions {
		if err := ValidateAction(a); err != nil {
			return fmt.Errorf("actions[%d]: %w", i, err)
		}
	}
	return nil
}

// ValidateAction checks one action as ValidateActions does. Its errors wrap
// ErrInvalidAction and name the action.
func ValidateAction(a Action) error {
	check, ok := checkers[a.Name]
	if !ok {
		return fmt.Errorf("%w: unknown action %q", ErrInvalidAction, a.Name)
	}
	if !isObject(a.Args) {
		return fmt.Errorf("%w: %s: args must be a JSON object", ErrInvalidAction, a.Name)
	}
	if err := check(a.Args); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidAction, a.Name, err)
	}
	return nil
}

// ReleasePolicyArgs are the arguments of set_key_release_policy: either a
// change of the Azure-compatible grammar (Change) or a full policy that
// replaces the current one (Replace). Exactly one is set.
type ReleasePolicyArgs struct {
	Change  json.RawMessage
	Replace json.RawMessage
}

// DecodeReleasePolicyArgs decodes set_key_release_policy's arguments:
// {"policy": <policy>} replaces the policy (checked by policy.Parse); any
// other object is a change (checked by policy.ParseChange).
func DecodeReleasePolicyArgs(args json.RawMessage) (ReleasePolicyArgs, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(args, &fields); err != nil || fields == nil {
		return ReleasePolicyArgs{}, errors.New("args must be a JSON object")
	}
	if p, ok := fields["policy"]; ok {
		if len(fields) != 1 {
			return ReleasePolicyArgs{}, errors.New(`"policy" replaces the whole policy and allows no other field`)
		}
		if _, err := policy.Parse(p); err != nil {
			return ReleasePolicyArgs{}, fmt.Errorf("policy: %w", err)
		}
		return ReleasePolicyArgs{Replace: p}, nil
	}
	if _, err := policy.ParseChange(args); err != nil {
		return ReleasePolicyArgs{}, err
	}
	return ReleasePolicyArgs{Change: args}, nil
}

// JWTValidationArgs are the arguments of set_jwt_validation_policy: the
// claims tokens of Issuer must carry, each a value or a list of values. An
// empty Claims removes the issuer's requirements.
type JWTValidationArgs struct {
	Issuer string         `json:"issuer"`
	Claims map[string]any `json:"claims"`
}

// DecodeJWTValidationArgs decodes and checks set_jwt_validation_policy's
// arguments.
func DecodeJWTValidationArgs(args json.RawMessage) (JWTValidationArgs, error) {
	var a JWTValidationArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if a.Issuer == "" {
		return a, errors.New("no issuer")
	}
	for _, name := range slices.Sorted(maps.Keys(a.Claims)) {
		if name == "" {
			return a, errors.New("claims: empty claim name")
		}
		if err := checkClaimValue(a.Claims[name]); err != nil {
			return a, fmt.Errorf("claims: %q: %w", name, err)
		}
	}
	return a, nil
}

func checkClaimValue(v any) error {
	switch v := v.(type) {
	case string, float64, bool:
		return nil
	case []any:
		if len(v) == 0 {
			return errors.New("empty list of values")
		}
		for _, e := range v {
			switch e.(type) {
			case string, float64, bool:
			default:
				return errors.New("want a string, number or boolean in the list")
			}
		}
		return nil
	}
	return errors.New("want a string, number, boolean or a list of them")
}

// JWTIssuerArgs are the arguments of set_jwt_issuer: a trusted issuer, its
// audiences and exactly one source of its keys, or Remove alone.
type JWTIssuerArgs struct {
	Issuer       string          `json:"issuer"`
	Audiences    []string        `json:"audiences,omitempty"`
	DiscoveryURL string          `json:"discovery_url,omitempty"`
	JWKSURL      string          `json:"jwks_url,omitempty"`
	JWKS         json.RawMessage `json:"jwks,omitempty"`
	Algorithms   []string        `json:"algorithms,omitempty"`
	// MaxTokenLifetime is the longest validity of the issuer's tokens, in
	// seconds; 0 means the default, 24 hours.
	MaxTokenLifetime float64 `json:"max_token_lifetime_seconds,omitempty"`
	Remove           bool    `json:"remove,omitempty"`
}

// DecodeJWTIssuerArgs decodes and checks set_jwt_issuer's arguments: the
// issuer is an https URL (http only to loopback), and so are the URLs of a
// key source; an inline jwks is an object with a non-empty "keys" list.
func DecodeJWTIssuerArgs(args json.RawMessage) (JWTIssuerArgs, error) {
	var a JWTIssuerArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if err := checkURL(a.Issuer); err != nil {
		return a, fmt.Errorf("issuer: %w", err)
	}
	if a.Remove {
		if len(a.Audiences) > 0 || a.DiscoveryURL != "" || a.JWKSURL != "" || len(a.JWKS) > 0 || len(a.Algorithms) > 0 || a.MaxTokenLifetime != 0 {
			return a, errors.New(`"remove" takes only "issuer"`)
		}
		return a, nil
	}
	if len(a.Audiences) == 0 {
		return a, errors.New("no audiences")
	}
	for _, aud := range a.Audiences {
		if aud == "" {
			return a, errors.New("empty audience")
		}
	}
	for _, alg := range a.Algorithms {
		if alg == "" {
			return a, errors.New("empty algorithm")
		}
	}
	if a.MaxTokenLifetime < 0 || a.MaxTokenLifetime > maxSeconds || math.IsNaN(a.MaxTokenLifetime) {
		return a, fmt.Errorf("max_token_lifetime_seconds %v: out of range", a.MaxTokenLifetime)
	}
	n := 0
	if a.DiscoveryURL != "" {
		n++
		if err := checkURL(a.DiscoveryURL); err != nil {
			return a, fmt.Errorf("discovery_url: %w", err)
		}
	}
	if a.JWKSURL != "" {
		n++
		if err := checkURL(a.JWKSURL); err != nil {
			return a, fmt.Errorf("jwks_url: %w", err)
		}
	}
	if len(a.JWKS) > 0 {
		n++
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if !isObject(a.JWKS) || json.Unmarshal(a.JWKS, &set) != nil || len(set.Keys) == 0 {
			return a, errors.New(`jwks: want a JWK set, {"keys":[...]}, with at least one key`)
		}
	}
	if n != 1 {
		return a, errors.New("want exactly one of discovery_url, jwks_url, jwks")
	}
	return a, nil
}

// checkURL accepts the URLs internal/jwtauth will fetch: https, or http
// to loopback hosts only (tests and `tkms dev`).
func checkURL(u string) error {
	if u == "" {
		return errors.New("empty")
	}
	return jwtauth.CheckFetchURL(u)
}

// rotationArgs mirrors the JSON of state.RotationPolicy (which gov cannot
// import: state imports gov). The state machine decodes and validates the
// real type when applying: a missing publish_delay_seconds is the grace
// period, a missing suite the suite in force.
type rotationArgs struct {
	RotationInterval *float64 `json:"rotation_interval_seconds"`
	GracePeriod      float64  `json:"grace_period_seconds"`
	PublishDelay     float64  `json:"publish_delay_seconds"`
	Retention        float64  `json:"retention_seconds"`
	Suite            string   `json:"suite"`
}

const maxSeconds = 100 * 365 * 24 * 3600

func checkRotationPolicy(args json.RawMessage) error {
	var a rotationArgs
	if err := decodeStrict(args, &a); err != nil {
		return err
	}
	if a.RotationInterval == nil || *a.RotationInterval <= 0 {
		return errors.New("rotation_interval_seconds must be positive")
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"rotation_interval_seconds", *a.RotationInterval},
		{"grace_period_seconds", a.GracePeriod},
		{"publish_delay_seconds", a.PublishDelay},
		{"retention_seconds", a.Retention},
	} {
		if f.v < 0 || f.v > maxSeconds || math.IsNaN(f.v) {
			return fmt.Errorf("%s %v: out of range", f.name, f.v)
		}
	}
	if a.Suite == "" {
		return nil // the suite in force
	}
	if _, err := keys.ParseSuite(a.Suite); err != nil {
		return err
	}
	return nil
}

// settingsArgs mirrors the JSON of state.Settings.
type settingsArgs struct {
	Service struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Version     string `json:"version"`
		Debug       bool   `json:"debug"`
	} `json:"service"`
	Attestation *policy.Attestation `json:"attestation,omitempty"`
}

func checkSettingsPolicy(args json.RawMessage) error {
	var a settingsArgs
	if err := decodeStrict(args, &a); err != nil {
		return err
	}
	if a.Attestation != nil {
		return a.Attestation.Validate()
	}
	return nil
}

// RotateArgs are the arguments of rotate_key_now.
type RotateArgs struct {
	Reason string `json:"reason,omitempty"`
}

// DecodeRotateArgs decodes rotate_key_now's arguments: {} or
// {"reason":"..."}, a reason of at most 256 printable characters.
func DecodeRotateArgs(args json.RawMessage) (RotateArgs, error) {
	var a RotateArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if utf8.RuneCountInString(a.Reason) > MaxReasonLen || !printable(a.Reason) {
		return a, fmt.Errorf("reason: want at most %d printable characters", MaxReasonLen)
	}
	return a, nil
}

// DestroyArgs are the arguments of destroy_key.
type DestroyArgs struct {
	Kid string `json:"kid"`
}

// DecodeDestroyArgs decodes destroy_key's arguments: a well-formed kid
// (whether the key exists is the state's question).
func DecodeDestroyArgs(args json.RawMessage) (DestroyArgs, error) {
	var a DestroyArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if a.Kid == "" {
		return a, errors.New("no kid")
	}
	if _, ok := keys.ParseKIDNumber(a.Kid); !ok || !printable(a.Kid) {
		return a, fmt.Errorf("kid %q is not a tkms kid", a.Kid)
	}
	return a, nil
}

// DecodeAddMemberArgs decodes add_member's arguments, a member object as in
// the members file (an "id", when present, must match the signing key), and
// returns the member with its id.
func DecodeAddMemberArgs(args json.RawMessage) (Member, error) {
	var in Member
	if err := decodeStrict(args, &in); err != nil {
		return Member{}, err
	}
	return memberFromObject(in)
}

// RemoveMemberArgs are the arguments of remove_member.
type RemoveMemberArgs struct {
	MemberID string `json:"member_id"`
}

// DecodeRemoveMemberArgs decodes remove_member's arguments: a member id, 64
// lowercase hex characters.
func DecodeRemoveMemberArgs(args json.RawMessage) (RemoveMemberArgs, error) {
	var a RemoveMemberArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if !isHexID(a.MemberID) {
		return a, fmt.Errorf("member_id %q: want 64 lowercase hex characters", a.MemberID)
	}
	return a, nil
}

// RemoveNodeArgs are the arguments of remove_node: the id of a node of
// the cluster (docs/operations.md "Running a cluster").
type RemoveNodeArgs struct {
	NodeID string `json:"node_id"`
}

// TrustNodeArgs are the arguments of trust_node: the node id (hex SHA-256
// of the node key) of a joining node, whose evidence must still satisfy
// the node policy when it joins.
type TrustNodeArgs struct {
	NodeID string `json:"node_id"`
}

// DecodeTrustNodeArgs decodes and checks trust_node's arguments.
func DecodeTrustNodeArgs(args json.RawMessage) (TrustNodeArgs, error) {
	var a TrustNodeArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if !isHexID(a.NodeID) {
		return a, fmt.Errorf("node_id %q: want 64 lowercase hex characters (the SHA-256 of the node key)", a.NodeID)
	}
	return a, nil
}

// DecodeRemoveNodeArgs decodes and checks remove_node's arguments.
func DecodeRemoveNodeArgs(args json.RawMessage) (RemoveNodeArgs, error) {
	var a RemoveNodeArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if a.NodeID == "" || len(a.NodeID) > 128 || strings.ContainsAny(a.NodeID, " /\\\n") {
		return a, fmt.Errorf("node_id %q: want a node id (no spaces or slashes, at most 128 bytes)", a.NodeID)
	}
	return a, nil
}

// maxDescription bounds DescribeAction's line.
const maxDescription = 4096

// DescribeAction returns one plain-language line saying what a does, for
// members to read before they vote, e.g.
//
//	set_key_release_policy: add x-ms-sevsnpvm-hostdata = "ab12..."
//
// Values are shown in full (up to a bound on the whole line). Arguments that
// do not validate are shown as compact JSON.
func DescribeAction(a Action) string {
	s := label(a.Name) + ": " + describeArgs(a)
	if len(s) > maxDescription {
		cut := maxDescription
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// describers describe the actions declared in files of their own (their
// init functions register them), so that adding an action does not touch
// describeArgs's switch.
var describers = map[string]func(json.RawMessage) string{}

func describeArgs(a Action) string {
	if ValidateAction(a) != nil {
		return "(invalid) " + compact(a.Args)
	}
	if d, ok := describers[a.Name]; ok {
		return d(a.Args)
	}
	switch a.Name {
	case ActSetKeyReleasePolicy:
		r, _ := DecodeReleasePolicyArgs(a.Args)
		if r.Replace != nil {
			return "replace the policy with " + compact(r.Replace)
		}
		return describeChange(r.Change)
	case ActSetJWTValidationPolicy:
		v, _ := DecodeJWTValidationArgs(a.Args)
		if len(v.Claims) == 0 {
			return fmt.Sprintf("require no claims of issuer %q", v.Issuer)
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(v.Claims)) {
			parts = append(parts, describeClaim(k, v.Claims[k]))
		}
		return fmt.Sprintf("require of issuer %q: %s", v.Issuer, strings.Join(parts, ", "))
	case ActSetJWTIssuer:
		j, _ := DecodeJWTIssuerArgs(a.Args)
		if j.Remove {
			return fmt.Sprintf("stop trusting issuer %q", j.Issuer)
		}
		var src string
		switch {
		case j.DiscoveryURL != "":
			src = "discovery " + j.DiscoveryURL
		case j.JWKSURL != "":
			src = "JWKS " + j.JWKSURL
		default:
			src = "inline JWKS " + compact(j.JWKS)
		}
		s := fmt.Sprintf("trust issuer %q for audiences %q, keys from %s", j.Issuer, j.Audiences, src)
		if len(j.Algorithms) > 0 {
			s += fmt.Sprintf(", algorithms %q", j.Algorithms)
		}
		if j.MaxTokenLifetime > 0 {
			s += fmt.Sprintf(", tokens valid for at most %v s", j.MaxTokenLifetime)
		}
		return s
	case ActSetKeyRotationPolicy:
		return "set the key rotation policy to " + compact(a.Args)
	case ActSetSettingsPolicy:
		return "set the settings policy to " + compact(a.Args)
	case ActRotateKeyNow:
		r, _ := DecodeRotateArgs(a.Args)
		if r.Reason != "" {
			return fmt.Sprintf("create a new key now (reason %q)", r.Reason)
		}
		return "create a new key now"
	case ActDestroyKey:
		d, _ := DecodeDestroyArgs(a.Args)
		return fmt.Sprintf("erase the private key of %s now", d.Kid)
	case ActAddMember:
		m, _ := DecodeAddMemberArgs(a.Args)
		return fmt.Sprintf("add member %q (id %s)", m.Name, m.ID)
	case ActRemoveMember:
		r, _ := DecodeRemoveMemberArgs(a.Args)
		return "remove member " + r.MemberID
	case ActSetNodePolicy:
		return "set the node policy to " + compact(a.Args)
	case ActSetConstitution:
		c, _ := ParseConstitution(a.Args)
		return "set the constitution: " + c.describe()
	case ActRemoveNode:
		r, _ := DecodeRemoveNodeArgs(a.Args)
		return "remove node " + r.NodeID + " from the cluster"
	case ActTrustNode:
		r, _ := DecodeTrustNodeArgs(a.Args)
		return "trust joining node " + r.NodeID
	case ActSetMAAInstances:
		return describeMAAInstances(a.Args)
	case ActSetMemberEncryptionKey:
		return describeMemberEncryptionKey(a.Args)
	}
	return compact(a.Args)
}

// describeChange renders a policy change (already checked by
// policy.ParseChange) such as "add a = "x", b in ["y","z"]; gte c >= 3".
func describeChange(b json.RawMessage) string {
	var c struct {
		Type   string                     `json:"type"`
		Claims map[string]any             `json:"claims"`
		Gte    map[string]json.RawMessage `json:"gte"`
		Gt     map[string]json.RawMessage `json:"gt"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return compact(b)
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c.Claims)) {
		parts = append(parts, describeClaim(k, c.Claims[k]))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Gte)) {
		parts = append(parts, fmt.Sprintf("%s >= %s", label(k), compact(c.Gte[k])))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Gt)) {
		parts = append(parts, fmt.Sprintf("%s > %s", label(k), compact(c.Gt[k])))
	}
	return c.Type + " " + strings.Join(parts, ", ")
}

func describeClaim(name string, v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	op := "="
	if _, ok := v.([]any); ok {
		op = "in"
	}
	return fmt.Sprintf("%s %s %s", label(name), op, strings.TrimSpace(buf.String()))
}

// label returns a claim name as is when it is a plain word, quoted
// otherwise, so that a description stays one unambiguous line.
func label(s string) string {
	if s == "" || !printable(s) || strings.ContainsAny(s, " \"=,") {
		return strconv.Quote(s)
	}
	return s
}
