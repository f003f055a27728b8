package policy

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// A Failure is one failed check of a policy.
type Failure struct {
	// Path locates the check in the policy: "claims", "gte", "gt", or an
	// SKR path such as "anyOf[0].allOf[2]".
	Path  string
	Claim string
	// Op is "oneOf" (Azure-compatible claims), "gte", "gt", or an SKR
	// operator ("equals", "greaterOrEquals", "exists", ...).
	Op string
	// Required holds the JSON literals the check accepts: the values of a
	// claim list, or the one operand of an operator.
	Required []string
	// Observed is the JSON literal of the claim's value; empty when Missing.
	// Values of unsupported types are described by type, never printed.
	Observed string
	Missing  bool
}

// maxObserved bounds how much of an observed value a message repeats.
const maxObserved = 160

func (f *Failure) Error() string {
	var b strings.Builder
	if f.Path != "" {
		b.WriteString(f.Path + ": ")
	}
	b.WriteString("claim " + value{kind: kindString, s: f.Claim}.literal())
	switch {
	case f.Missing:
		b.WriteString(" is missing")
	case f.Observed != "":
		b.WriteString(" is " + f.Observed)
	}
	b.WriteString(", want ")
	req := strings.Join(f.Required, ", ")
	switch f.Op {
	case "oneOf":
		if len(f.Required) == 1 {
			b.WriteString(req)
		} else {
			b.WriteString("one of [" + req + "]")
		}
	case "gte", "greaterOrEquals":
		b.WriteString(">= " + req)
	case "gt", "greater":
		b.WriteString("> " + req)
	case "less":
		b.WriteString("< " + req)
	case "lessOrEquals":
		b.WriteString("<= " + req)
	case "equals":
		b.WriteString("== " + req)
	case "notEquals":
		b.WriteString("!= " + req)
	case "exists":
		if req == "true" {
			b.WriteString("present")
		} else {
			b.WriteString("absent")
		}
	default:
		b.WriteString(f.Op + " " + req)
	}
	return b.String()
}

// A DeniedError is a policy denial carrying every failed check.
// errors.Is(err, ErrDenied) holds and errors.As finds each *Failure.
type DeniedError struct {
	Failures []*Failure
}

// Error returns every failure on one line (it may travel in a header).
func (e *DeniedError) Error() string {
	msgs := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		msgs[i] = f.Error()
	}
	return "policy: denied: " + strings.Join(msgs, "; ")
}

// Code returns CodeDenied.
func (e *DeniedError) Code() string { return CodeDenied }

// Unwrap returns ErrDenied and every failure, as errors.Join would.
func (e *DeniedError) Unwrap() []error {
	errs := make([]error, 0, 1+len(e.Failures))
	errs = append(errs, ErrDenied)
	for _, f := range e.Failures {
		errs = append(errs, f)
	}
	return errs
}

// Evaluate decides whether claims satisfy p. It returns nil when they do,
// ErrUnset for an unset policy or one without claims, and otherwise a
// *DeniedError listing every failed check.
//
// Claim values may be strings, bools, json.Number, float32/64 or any Go
// integer type; a claim of another type fails every check on it. In the
// Azure-compatible grammar a claim matches when its canonical string equals
// one of the policy's (so true matches "true" and 2 matches "2.0"); gte and
// gt need a number or a string holding one. In the SKR grammar equals and
// notEquals compare type and value (numbers numerically, strings exactly);
// ordering operators need a number or a string holding one; a missing
// claim fails every operator except "exists": false.
func Evaluate(p Policy, claims map[string]any) error {
	var fails []*Failure
	switch p.kind {
	case KindClaims:
		if len(p.claims) == 0 {
			return ErrUnset
		}
		fails = evalClaims(p, claims)
	case KindSKR:
		var all []*Failure
		for i := range p.authorities {
			f := evalGroup("anyOf["+itoa(i)+"]", &p.authorities[i].group, claims)
			if len(f) == 0 {
				return nil
			}
			all = append(all, f...)
		}
		fails = all
	default:
		return ErrUnset
	}
	if len(fails) == 0 {
		return nil
	}
	return &DeniedError{Failures: fails}
}

func itoa(i int) string { return strconv.Itoa(i) }

// observe looks a claim up. present is false when it is missing; otherwise
// v is its value, or bad describes an unsupported value (by type only).
func observe(claims map[string]any, name string) (v value, present bool, bad string) {
	raw, present := claims[name]
	if !present {
		return value{}, false, ""
	}
	v, err := claimValue(raw)
	if err != nil {
		return value{}, true, "<" + err.Error() + ">"
	}
	return v, true, ""
}

func observed(v value, bad string) string {
	if bad != "" {
		return bad
	}
	s := v.literal()
	if len(s) > maxObserved {
		s = s[:maxObserved] + "..."
	}
	return s
}

func literals(vs []value) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.literal()
	}
	return out
}

func evalClaims(p Policy, claims map[string]any) []*Failure {
	var fails []*Failure
	for _, name := range sortedKeys(p.claims) {
		want := p.claims[name]
		v, present, bad := observe(claims, name)
		f := &Failure{Path: "claims", Claim: name, Op: "oneOf", Required: literals(want)}
		switch {
		case !present:
			f.Missing = true
		case bad == "":
			match := false
			for _, w := range want {
				if w.s == v.s {
					match = true
					break
				}
			}
			if match {
				continue
			}
			f.Observed = observed(v, bad)
		default:
			f.Observed = bad
		}
		fails = append(fails, f)
	}
	for _, op := range []struct {
		name string
		m    map[string]value
	}{{"gte", p.gte}, {"gt", p.gt}} {
		for _, name := range sortedKeys(op.m) {
			t := op.m[name]
			if f := compare(op.name, op.name, name, t, claims); f != nil {
				fails = append(fails, f)
			}
		}
	}
	return fails
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// compare checks an ordering operator; nil means it holds.
func compare(path, op, name string, t value, claims map[string]any) *Failure {
	f := &Failure{Path: path, Claim: name, Op: op, Required: []string{t.literal()}}
	v, present, bad := observe(claims, name)
	if !present {
		f.Missing = true
		return f
	}
	n, ok := asNumber(v)
	if bad != "" || !ok {
		f.Observed = observed(v, bad)
		if bad == "" {
			f.Observed += " (not a number)"
		}
		return f
	}
	c := n.Cmp(t.num)
	var holds bool
	switch op {
	case "gte", "greaterOrEquals":
		holds = c >= 0
	case "gt", "greater":
		holds = c > 0
	case "less":
		holds = c < 0
	case "lessOrEquals":
		holds = c <= 0
	}
	if holds {
		return nil
	}
	f.Observed = observed(v, "")
	return f
}

func evalGroup(path string, g *group, claims map[string]any) []*Failure {
	var fails []*Failure
	for i, c := range g.conds {
		cp := path + "." + g.name() + "[" + itoa(i) + "]"
		var f []*Failure
		if c.group != nil {
			f = evalGroup(cp, c.group, claims)
		} else if one := evalCond(cp, c, claims); one != nil {
			f = []*Failure{one}
		}
		if g.any && len(f) == 0 {
			return nil
		}
		fails = append(fails, f...)
	}
	return fails
}

func evalCond(path string, c cond, claims map[string]any) *Failure {
	switch c.op {
	case "greater", "greaterOrEquals", "less", "lessOrEquals":
		return compare(path, c.op, c.claim, c.val, claims)
	}
	f := &Failure{Path: path, Claim: c.claim, Op: c.op, Required: []string{c.val.literal()}}
	v, present, bad := observe(claims, c.claim)
	if c.op == "exists" {
		want := c.val.s == "true"
		if present == want {
			return nil
		}
		if present {
			f.Observed = observed(v, bad)
		} else {
			f.Missing = true
		}
		return f
	}
	if !present {
		f.Missing = true
		return f
	}
	if bad != "" {
		f.Observed = bad
		return f
	}
	eq := v.kind == c.val.kind && v.s == c.val.s // numbers: canonical decimal is exact
	if eq == (c.op == "equals") {
		return nil
	}
	f.Observed = observed(v, "")
	return f
}
