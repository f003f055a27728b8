package policy

import (
	"bytes"
	"maps"
	"slices"
	"strconv"
)

// A Change is an add or remove of values of the Azure-compatible grammar,
// {"type":"add"|"remove","claims":{...},"gte":{...},"gt":{...}}, as the
// originals' set_key_release_policy action takes it.
type Change struct {
	remove bool
	body   claimsBody
}

var changeMembers = map[string]bool{"type": true, "claims": true, "gte": true, "gt": true}

// ParseChange parses a policy change. "type" is required; at least one of
// claims, gte, gt must name a claim. Values follow the policy grammar
// (a value or a list of values per claim; numbers for gte and gt).
func ParseChange(data []byte) (Change, error) {
	doc, err := decodeStrict(data)
	if err != nil {
		return Change{}, perr("", "malformed JSON: %v", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return Change{}, perr("", "a change is a JSON object")
	}
	var c Change
	switch obj["type"] {
	case "add":
	case "remove":
		c.remove = true
	default:
		return Change{}, perr("type", `want "add" or "remove"`)
	}
	c.body, err = parseClaimsBody(obj, changeMembers)
	if err != nil {
		return Change{}, err
	}
	if len(c.body.claims) == 0 && len(c.body.gte) == 0 && len(c.body.gt) == 0 {
		return Change{}, perr("", "the change names no claim")
	}
	return c, nil
}

// Marshal returns the canonical JSON form of a change (see Marshal).
func (c Change) Marshal() []byte {
	var b bytes.Buffer
	typ := "add"
	if c.remove {
		typ = "remove"
	}
	marshalBody(&b, c.body, typ)
	return b.Bytes()
}

// Apply returns the policy that results from applying c to p, which must be
// unset or of the Azure-compatible grammar.
//
// add merges values into each claim's list (duplicates, by canonical
// string, are dropped) and sets gte/gt thresholds, replacing a claim's
// previous threshold. remove deletes values from claims' lists and deletes
// gte/gt thresholds (the value given for a threshold is not compared, as in
// the originals). Unlike the originals, removing a claim or value that the
// policy does not hold is an error rather than a silent no-op, since a
// mistyped measurement would otherwise stay allowed. A claim left with no
// values is deleted, and a policy left empty is unset (and denies).
func Apply(p Policy, c Change) (Policy, error) {
	if p.kind == KindSKR {
		return Policy{}, perr("", "add/remove changes apply to the Azure-compatible grammar, not to an SKR policy")
	}
	claims := map[string][]value{}
	for k, v := range p.claims {
		claims[k] = slices.Clone(v)
	}
	gte, gt := maps.Clone(p.gte), maps.Clone(p.gt)
	if gte == nil {
		gte = map[string]value{}
	}
	if gt == nil {
		gt = map[string]value{}
	}
	if !c.remove {
		for k, v := range c.body.claims {
			claims[k] = mergeValues(claims[k], v)
		}
		maps.Copy(gte, c.body.gte)
		maps.Copy(gt, c.body.gt)
		return fromBody(claimsBody{claims: claims, gte: gte, gt: gt}), nil
	}
	for _, k := range sortedKeys(c.body.claims) {
		have, ok := claims[k]
		if !ok {
			return Policy{}, perr(claimPath("claims", k), "the policy has no such claim")
		}
		for _, v := range c.body.claims[k] {
			i := slices.IndexFunc(have, func(w value) bool { return w.s == v.s })
			if i < 0 {
				return Policy{}, perr(claimPath("claims", k), "the policy does not hold %s", v.literal())
			}
			have = slices.Delete(have, i, i+1)
		}
		if len(have) == 0 {
			delete(claims, k)
		} else {
			claims[k] = have
		}
	}
	for _, op := range []struct {
		name string
		src  map[string]value
		dst  map[string]value
	}{{"gte", c.body.gte, gte}, {"gt", c.body.gt, gt}} {
		for _, k := range sortedKeys(op.src) {
			if _, ok := op.dst[k]; !ok {
				return Policy{}, perr(op.name+"["+strconv.Quote(k)+"]", "the policy has no such threshold")
			}
			delete(op.dst, k)
		}
	}
	return fromBody(claimsBody{claims: claims, gte: gte, gt: gt}), nil
}
