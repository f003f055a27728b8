package jwtauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// A Policy is the jwt validation policy of docs/spec/azure-compat.md ("JWT
// validation policy"): for each issuer, the claims its tokens must carry.
// Each claim maps to one value or to a list of allowed values:
//
//	{"https://sts.windows.net/<tenant>/": {"idtyp": "app", "oid": ["<id1>", "<id2>"]}}
//
// Strings compare exactly; numbers and booleans compare as JSON values (1 and
// 1.0 are equal). A token claim that is an array or object never matches.
type Policy map[string]map[string]any

// ParsePolicy parses a Policy from JSON, keeping numbers exact.
func ParsePolicy(data []byte) (Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("jwtauth: parsing jwt validation policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("jwtauth: parsing jwt validation policy: trailing data")
	}
	if p == nil {
		return nil, errors.New("jwtauth: jwt validation policy is null")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate checks that every claim maps to a string, number or boolean, or
// to a non-empty list of them.
func (p Policy) Validate() error {
	_, err := compilePolicy(p)
	return err
}

// clone returns a deep copy of p.
func (p Policy) clone() Policy {
	if p == nil {
		return nil
	}
	out := make(Policy, len(p))
	for iss, claims := range p {
		c := make(map[string]any, len(claims))
		for k, v := range claims {
			if l, ok := v.([]any); ok {
				v = append([]any(nil), l...)
			} else if l, ok := v.([]string); ok {
				v = append([]string(nil), l...)
			}
			c[k] = v
		}
		out[iss] = c
	}
	return out
}

// compiledPolicy is a Policy with each value converted once to a comparable
// form.
type compiledPolicy map[string]compiledRules

type compiledRules []claimRule

type claimRule struct {
	claim    string
	expected []any    // as written, for error messages
	allowed  []scalar // normalized
}

// scalar is a normalized JSON string, number or boolean.
type scalar struct {
	kind byte // 's', 'n', 'b'
	s    string
	b    bool
}

func compilePolicy(p Policy) (compiledPolicy, error) {
	out := make(compiledPolicy, len(p))
	for iss, claims := range p {
		if iss == "" {
			return nil, errors.New("jwtauth: jwt validation policy names an empty issuer")
		}
		if claims == nil {
			return nil, fmt.Errorf("jwtauth: jwt validation policy for %q is null", iss)
		}
		rules := compiledRules{}
		for claim, v := range claims {
			var expected []any
			switch v := v.(type) {
			case []any:
				expected = v
			case []string:
				for _, s := range v {
					expected = append(expected, s)
				}
			default:
				expected = []any{v}
			}
			if len(expected) == 0 {
				return nil, fmt.Errorf("jwtauth: jwt validation policy for %q: claim %q allows no value", iss, claim)
			}
			r := claimRule{claim: claim, expected: expected}
			for _, e := range expected {
				s, ok := toScalar(e)
				if !ok {
					return nil, fmt.Errorf("jwtauth: jwt validation policy for %q: claim %q: %T is not a string, number or boolean", iss, claim, e)
				}
				r.allowed = append(r.allowed, s)
			}
			rules = append(rules, r)
		}
		// Check claims in a stable order, so errors are reproducible.
		slices.SortFunc(rules, func(a, b claimRule) int { return strings.Compare(a.claim, b.claim) })
		out[iss] = rules
	}
	return out, nil
}

// toScalar converts a policy value or a decoded token claim (numbers as
// json.Number) to a scalar.
func toScalar(v any) (scalar, bool) {
	switch v := v.(type) {
	case string:
		return scalar{kind: 's', s: v}, true
	case bool:
		return scalar{kind: 'b', b: v}, true
	case json.Number:
		n, ok := normNumber(string(v))
		return scalar{kind: 'n', s: n}, ok
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return scalar{}, false
		}
		n, ok := normNumber(strconv.FormatFloat(v, 'g', -1, 64))
		return scalar{kind: 'n', s: n}, ok
	case int:
		return scalar{kind: 'n', s: strconv.Itoa(v)}, true
	case int64:
		return scalar{kind: 'n', s: strconv.FormatInt(v, 10)}, true
	}
	return scalar{}, false
}

// normNumber returns a canonical form of a JSON number: integers without
// fraction or exponent are kept exact as decimal strings; any other number is
// compared as a float64 (how JSON numbers are commonly read). Integral
// float64 values within ±2^53 get the integer form, so 1, 1.0 and 1e0 agree.
// It never expands exponents (1e999999999 stays cheap).
func normNumber(s string) (string, bool) {
	if !strings.ContainsAny(s, ".eE") {
		var i big.Int
		if _, ok := i.SetString(s, 10); !ok {
			return "", false
		}
		return i.String(), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return "", false
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "inf:" + s, true // out of range: equal only to itself
	}
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return strconv.FormatInt(int64(f), 10), true
	}
	return strconv.FormatFloat(f, 'g', -1, 64), true
}

// check returns one *PolicyError per rule the claims do not satisfy, joined.
func (rules compiledRules) check(iss string, claims map[string]any) error {
	var errs []error
	for _, r := range rules {
		v, present := claims[r.claim]
		if !present {
			errs = append(errs, &PolicyError{Issuer: iss, Claim: r.claim, Expected: r.expected, Missing: true})
			continue
		}
		got, ok := toScalar(v)
		match := false
		if ok {
			for _, a := range r.allowed {
				if a == got {
					match = true
					break
				}
			}
		}
		if !match {
			errs = append(errs, &PolicyError{Issuer: iss, Claim: r.claim, Expected: r.expected, Observed: v})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPolicyMismatch, errors.Join(errs...))
}
