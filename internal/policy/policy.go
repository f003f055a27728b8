// Package policy decides whether the claims of verified evidence satisfy a
// key release policy. It is pure: no I/O, no clock, no verification (the
// claims it reads have been verified by the caller).
//
// Two grammars are accepted, detected by Parse:
//
//   - The Azure-compatible grammar of docs/spec/azure-compat.md, "Key
//     release policy": {"claims":{"<claim>": value or [values]},
//     "gte":{"<claim>": number}, "gt":{"<claim>": number}}. Values of one
//     claim are OR'd and compared as strings (true is "true", numbers are in
//     canonical decimal form), claims are AND'd, gte and gt compare numbers
//     and, unlike in the originals, both apply when both are present. A
//     policy without claims is unset and denies (ErrUnset). It changes by
//     add/remove of values (ParseChange, Apply).
//   - The Azure Key Vault secure key release (SKR) grammar:
//     {"version":"1.0.0","anyOf":[{"authority":"...","allOf":[{"claim":"x",
//     "equals":v}, ...]}]} with the operators equals, notEquals, greater,
//     greaterOrEquals, less, lessOrEquals and exists, and nested allOf/anyOf
//     conditions (https://learn.microsoft.com/azure/key-vault/keys/policy-grammar).
//     tkms verifies evidence itself and is the only attestation authority, so
//     "authority" is kept (it is part of the policy's canonical form and
//     hash) but not matched: each authority's conditions are evaluated
//     against the same claims.
//
// Evaluate reports every failed check at once, each naming the claim, what
// the policy requires and what was observed. Marshal gives a canonical form
// so that a policy version can be hashed (Hash).
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// Error codes (the x-ms-kms-error-code of docs/spec/azure-compat.md).
const (
	CodeUnset   = "POLICY_UNSET"
	CodeDenied  = "POLICY_DENIED"
	CodeInvalid = "POLICY_INVALID"
)

// codedError is a sentinel carrying its error code.
type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.msg }

// Code returns the error code.
func (e *codedError) Code() string { return e.code }

// Sentinel errors. Every error of this package has a Code() string method
// returning one of the codes above; errors.Is finds the sentinel.
var (
	// ErrUnset means no key release policy (or one without claims) is set:
	// nothing is released.
	ErrUnset error = &codedError{CodeUnset, "policy: no key release policy is set (a policy needs at least one claim)"}
	// ErrDenied is matched by every *DeniedError.
	ErrDenied error = &codedError{CodeDenied, "policy: denied"}
	// ErrInvalid is matched by every *ParseError.
	ErrInvalid error = &codedError{CodeInvalid, "policy: invalid"}
)

// A ParseError says where a policy document is malformed.
type ParseError struct {
	Path string // e.g. `anyOf[0].allOf[2].greater`, `claims["x-ms-ver"][1]`
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Path == "" {
		return "policy: " + e.Msg
	}
	return "policy: " + e.Path + ": " + e.Msg
}

// Code returns CodeInvalid.
func (e *ParseError) Code() string { return CodeInvalid }

// Unwrap returns ErrInvalid.
func (e *ParseError) Unwrap() error { return ErrInvalid }

func perr(path, format string, a ...any) error {
	return &ParseError{Path: path, Msg: fmt.Sprintf(format, a...)}
}

// A Kind is the grammar of a policy.
type Kind uint8

const (
	KindUnset  Kind = iota // the zero Policy, or an empty document
	KindClaims             // the Azure-compatible {claims, gte, gt} grammar
	KindSKR                // the Azure SKR {version, anyOf} grammar
)

func (k Kind) String() string {
	switch k {
	case KindClaims:
		return "claims"
	case KindSKR:
		return "skr"
	}
	return "unset"
}

// A Policy is a parsed key release policy. The zero Policy is unset and
// denies everything. Policies are immutable: Apply returns a new one.
type Policy struct {
	kind Kind
	// KindClaims: claim -> accepted values, sorted by canonical string and
	// deduplicated; never empty lists. gte/gt: claim -> threshold.
	claims  map[string][]value
	gte, gt map[string]value
	// KindSKR
	version     string
	authorities []authority
}

type authority struct {
	name  string
	group group // allOf or anyOf of conditions
}

// A cond is a claim condition (claim, op, val) or a group.
type cond struct {
	claim string
	op    string
	val   value
	group *group
}

type group struct {
	any   bool // anyOf; otherwise allOf
	conds []cond
}

func (g *group) name() string {
	if g.any {
		return "anyOf"
	}
	return "allOf"
}

// SKR operators and the value kinds they take.
var operators = map[string][]kind{
	"equals":          {kindString, kindBool, kindNumber},
	"notEquals":       {kindString, kindBool, kindNumber},
	"greater":         {kindNumber},
	"greaterOrEquals": {kindNumber},
	"less":            {kindNumber},
	"lessOrEquals":    {kindNumber},
	"exists":          {kindBool},
}

// skrVersion is the only SKR grammar version Azure documents.
const skrVersion = "1.0.0"

// Kind returns the policy's grammar.
func (p Policy) Kind() Kind { return p.kind }

// ClaimNames returns the sorted names of every claim the policy reads, so
// that a caller can check them against the claims its verifier produces (a
// policy naming a claim nobody produces denies everything).
func (p Policy) ClaimNames() []string {
	set := map[string]bool{}
	for k := range p.claims {
		set[k] = true
	}
	for k := range p.gte {
		set[k] = true
	}
	for k := range p.gt {
		set[k] = true
	}
	var walk func(g *group)
	walk = func(g *group) {
		for _, c := range g.conds {
			if c.group != nil {
				walk(c.group)
			} else {
				set[c.claim] = true
			}
		}
	}
	for i := range p.authorities {
		walk(&p.authorities[i].group)
	}
	return slices.Sorted(maps.Keys(set))
}

// Parse parses a key release policy in either grammar. A document with an
// "anyOf" or "version" member is an SKR policy; any other object is an
// Azure-compatible one (which may carry "type":"add", as the originals
// return it). An empty object, null, or a document whose claims, gte and gt
// are all empty parse to an unset policy. Parsing is strict: unknown
// members, unknown operators, wrong types, empty lists and duplicate keys are
// errors naming their path.
func Parse(data []byte) (Policy, error) {
	doc, err := decodeStrict(data)
	if err != nil {
		return Policy{}, perr("", "malformed JSON: %v", err)
	}
	if doc == nil {
		return Policy{}, nil
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return Policy{}, perr("", "a policy is a JSON object")
	}
	_, hasAny := obj["anyOf"]
	_, hasVersion := obj["version"]
	if hasAny || hasVersion {
		return parseSKR(obj)
	}
	return parseClaims(obj)
}

// UnmarshalJSON parses a policy with Parse.
func (p *Policy) UnmarshalJSON(data []byte) error {
	q, err := Parse(data)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

func claimPath(base, claim string) string { return base + "[" + strconv.Quote(claim) + "]" }

// memberPath returns the path of member k of the object at path: path.k
// for a plain name, path["k"] otherwise (so a path never holds raw control
// characters).
func memberPath(path, k string) string {
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return claimPath(path, k)
		}
	}
	if k == "" {
		return claimPath(path, k)
	}
	return path + "." + k
}

// parseValues parses "value or [values]" into a sorted, deduplicated,
// non-empty list.
func parseValues(path string, v any) ([]value, error) {
	items, isList := v.([]any)
	if !isList {
		items = []any{v}
	}
	if len(items) == 0 {
		return nil, perr(path, "empty list of values")
	}
	var out []value
	for i, it := range items {
		ip := path
		if isList {
			ip = path + "[" + strconv.Itoa(i) + "]"
		}
		val, ok, err := scalar(it)
		if err != nil {
			return nil, perr(ip, "%v", err)
		}
		if !ok {
			return nil, perr(ip, "want a string, bool or number, have %s", typeName(it))
		}
		out = append(out, val)
	}
	return mergeValues(nil, out), nil
}

// mergeValues returns a ∪ b, sorted by canonical string; of two values with
// one canonical string (true and "true") the first is kept.
func mergeValues(a, b []value) []value {
	out := slices.Clone(a)
	for _, v := range b {
		if !slices.ContainsFunc(out, func(w value) bool { return w.s == v.s }) {
			out = append(out, v)
		}
	}
	slices.SortStableFunc(out, func(x, y value) int {
		if x.s < y.s {
			return -1
		} else if x.s > y.s {
			return 1
		}
		return 0
	})
	return out
}

// parseThreshold parses a gte/gt threshold: a number, or a string holding
// one (the originals accept both).
func parseThreshold(path string, v any) (value, error) {
	switch t := v.(type) {
	case json.Number:
		r, err := parseNumber(string(t))
		if err != nil {
			return value{}, perr(path, "%v", err)
		}
		return numberValue(r), nil
	case string:
		r, err := parseNumber(t)
		if err != nil {
			return value{}, perr(path, "want a number, have %s", strconv.Quote(t))
		}
		return numberValue(r), nil
	}
	return value{}, perr(path, "want a number, have %s", typeName(v))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a bool"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// claimsBody holds the claims, gte and gt members of a policy or a change.
type claimsBody struct {
	claims  map[string][]value
	gte, gt map[string]value
}

func parseClaimsBody(obj map[string]any, allowed map[string]bool) (claimsBody, error) {
	var b claimsBody
	for k := range obj {
		if !allowed[k] {
			return b, perr(strconv.Quote(k), "unknown member (want %s)", joinKeys(allowed))
		}
	}
	if v, ok := obj["claims"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return b, perr("claims", "want an object, have %s", typeName(v))
		}
		b.claims = map[string][]value{}
		for claim, raw := range m {
			if claim == "" {
				return b, perr("claims", "empty claim name")
			}
			vals, err := parseValues(claimPath("claims", claim), raw)
			if err != nil {
				return b, err
			}
			b.claims[claim] = vals
		}
	}
	for _, op := range []string{"gte", "gt"} {
		v, ok := obj[op]
		if !ok || v == nil {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return b, perr(op, "want an object, have %s", typeName(v))
		}
		dst := map[string]value{}
		for claim, raw := range m {
			if claim == "" {
				return b, perr(op, "empty claim name")
			}
			t, err := parseThreshold(claimPath(op, claim), raw)
			if err != nil {
				return b, err
			}
			dst[claim] = t
		}
		if op == "gte" {
			b.gte = dst
		} else {
			b.gt = dst
		}
	}
	return b, nil
}

func joinKeys(m map[string]bool) string {
	ks := slices.Sorted(maps.Keys(m))
	s := ""
	for i, k := range ks {
		if i > 0 {
			s += ", "
		}
		s += strconv.Quote(k)
	}
	return s
}

var policyMembers = map[string]bool{"type": true, "claims": true, "gte": true, "gt": true}

func parseClaims(obj map[string]any) (Policy, error) {
	if t, ok := obj["type"]; ok && t != "add" {
		return Policy{}, perr("type", `a policy may only carry "type":"add" (a change with "remove" is parsed by ParseChange)`)
	}
	b, err := parseClaimsBody(obj, policyMembers)
	if err != nil {
		return Policy{}, err
	}
	return fromBody(b), nil
}

// fromBody builds a KindClaims policy, or an unset one when b is empty.
func fromBody(b claimsBody) Policy {
	if len(b.claims) == 0 && len(b.gte) == 0 && len(b.gt) == 0 {
		return Policy{}
	}
	p := Policy{kind: KindClaims, claims: b.claims, gte: b.gte, gt: b.gt}
	if len(p.claims) == 0 {
		p.claims = nil
	}
	if len(p.gte) == 0 {
		p.gte = nil
	}
	if len(p.gt) == 0 {
		p.gt = nil
	}
	return p
}

func parseSKR(obj map[string]any) (Policy, error) {
	for k := range obj {
		if k != "version" && k != "anyOf" {
			return Policy{}, perr(strconv.Quote(k), `unknown member (want "version", "anyOf")`)
		}
	}
	if v, ok := obj["version"].(string); !ok || v != skrVersion {
		return Policy{}, perr("version", "want %q", skrVersion)
	}
	list, ok := obj["anyOf"].([]any)
	if !ok {
		return Policy{}, perr("anyOf", "want a list of authorities, have %s", typeName(obj["anyOf"]))
	}
	if len(list) == 0 {
		return Policy{}, perr("anyOf", "empty list of authorities")
	}
	p := Policy{kind: KindSKR, version: skrVersion}
	for i, raw := range list {
		path := "anyOf[" + strconv.Itoa(i) + "]"
		a, ok := raw.(map[string]any)
		if !ok {
			return Policy{}, perr(path, "want an authority object, have %s", typeName(raw))
		}
		name, ok := a["authority"].(string)
		if !ok {
			return Policy{}, perr(path+".authority", "want a string, have %s", typeName(a["authority"]))
		}
		g, err := parseGroup(path, a, map[string]bool{"authority": true})
		if err != nil {
			return Policy{}, err
		}
		p.authorities = append(p.authorities, authority{name: name, group: *g})
	}
	return p, nil
}

// parseGroup parses an object holding exactly one of allOf/anyOf (plus the
// members in extra).
func parseGroup(path string, obj map[string]any, extra map[string]bool) (*group, error) {
	var g *group
	for k, v := range obj {
		if extra[k] {
			continue
		}
		if k != "allOf" && k != "anyOf" {
			return nil, perr(memberPath(path, k), `unknown member (want "allOf" or "anyOf")`)
		}
		if g != nil {
			return nil, perr(path, `both "allOf" and "anyOf"`)
		}
		gp := path + "." + k
		list, ok := v.([]any)
		if !ok {
			return nil, perr(gp, "want a list of conditions, have %s", typeName(v))
		}
		if len(list) == 0 {
			return nil, perr(gp, "empty list of conditions")
		}
		g = &group{any: k == "anyOf"}
		for i, raw := range list {
			c, err := parseCond(gp+"["+strconv.Itoa(i)+"]", raw)
			if err != nil {
				return nil, err
			}
			g.conds = append(g.conds, c)
		}
	}
	if g == nil {
		return nil, perr(path, `want "allOf" or "anyOf"`)
	}
	return g, nil
}

func parseCond(path string, raw any) (cond, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return cond{}, perr(path, "want a condition object, have %s", typeName(raw))
	}
	if _, ok := obj["claim"]; !ok {
		g, err := parseGroup(path, obj, nil)
		if err != nil {
			return cond{}, err
		}
		return cond{group: g}, nil
	}
	claim, ok := obj["claim"].(string)
	if !ok || claim == "" {
		return cond{}, perr(path+".claim", "want a claim name, have %s", typeName(obj["claim"]))
	}
	var c cond
	for k, v := range obj {
		if k == "claim" {
			continue
		}
		kinds, known := operators[k]
		if !known {
			return cond{}, perr(memberPath(path, k), "unknown operator (want one of %s)", joinKeys(opSet()))
		}
		if c.op != "" {
			return cond{}, perr(path, "more than one operator (%q and %q)", min(c.op, k), max(c.op, k))
		}
		val, ok, err := scalar(v)
		if err != nil {
			return cond{}, perr(path+"."+k, "%v", err)
		}
		if !ok || !slices.Contains(kinds, val.kind) {
			return cond{}, perr(path+"."+k, "want %s, have %s", kindNames(kinds), typeName(v))
		}
		c = cond{claim: claim, op: k, val: val}
	}
	if c.op == "" {
		return cond{}, perr(path, "no operator (want one of %s)", joinKeys(opSet()))
	}
	return c, nil
}

func opSet() map[string]bool {
	m := map[string]bool{}
	for k := range operators {
		m[k] = true
	}
	return m
}

func kindNames(ks []kind) string {
	if len(ks) == 1 {
		switch ks[0] {
		case kindNumber:
			return "a number"
		case kindBool:
			return "a bool"
		}
		return "a string"
	}
	return "a string, bool or number"
}

// Marshal returns the canonical JSON form of a policy: members in a fixed
// order, claim names sorted, a claim's values as a sorted list, numbers in
// canonical decimal, no insignificant space. Parse(Marshal(p)) is p. An
// unset policy is {}.
func Marshal(p Policy) []byte {
	var b bytes.Buffer
	switch p.kind {
	case KindClaims:
		marshalBody(&b, claimsBody{claims: p.claims, gte: p.gte, gt: p.gt}, "")
	case KindSKR:
		b.WriteString(`{"anyOf":[`)
		for i, a := range p.authorities {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"authority":`)
			b.Write(value{kind: kindString, s: a.name}.json())
			b.WriteByte(',')
			marshalGroup(&b, &a.group)
			b.WriteByte('}')
		}
		b.WriteString(`],"version":`)
		b.Write(value{kind: kindString, s: p.version}.json())
		b.WriteByte('}')
	default:
		b.WriteString("{}")
	}
	return b.Bytes()
}

// MarshalJSON returns Marshal(p).
func (p Policy) MarshalJSON() ([]byte, error) { return Marshal(p), nil }

// Hash returns SHA-256 of Marshal(p): the policy version recorded with
// every release.
func Hash(p Policy) [32]byte { return sha256.Sum256(Marshal(p)) }

func marshalBody(b *bytes.Buffer, body claimsBody, typ string) {
	b.WriteByte('{')
	first := true
	member := func(name string) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + name + `":`)
	}
	if body.claims != nil || typ == "" {
		member("claims")
		b.WriteByte('{')
		for i, k := range slices.Sorted(maps.Keys(body.claims)) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(value{kind: kindString, s: k}.json())
			b.WriteString(":[")
			for j, v := range body.claims[k] {
				if j > 0 {
					b.WriteByte(',')
				}
				b.Write(v.json())
			}
			b.WriteByte(']')
		}
		b.WriteByte('}')
	}
	for _, op := range []struct {
		name string
		m    map[string]value
	}{{"gt", body.gt}, {"gte", body.gte}} {
		if len(op.m) == 0 {
			continue
		}
		member(op.name)
		b.WriteByte('{')
		for i, k := range slices.Sorted(maps.Keys(op.m)) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(value{kind: kindString, s: k}.json())
			b.WriteByte(':')
			b.Write(op.m[k].json())
		}
		b.WriteByte('}')
	}
	if typ != "" {
		member("type")
		b.Write(value{kind: kindString, s: typ}.json())
	}
	b.WriteByte('}')
}

func marshalGroup(b *bytes.Buffer, g *group) {
	b.WriteString(`"` + g.name() + `":[`)
	for i, c := range g.conds {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('{')
		if c.group != nil {
			marshalGroup(b, c.group)
		} else {
			b.WriteString(`"claim":`)
			b.Write(value{kind: kindString, s: c.claim}.json())
			b.WriteString(`,"` + c.op + `":`)
			b.Write(c.val.json())
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
}
