package policy

import (
	"slices"
	"strings"
)

// Authorities returns the "authority" of each rule of an SKR policy, in
// order (nil for the other grammars).
func (p Policy) Authorities() []string {
	var out []string
	for _, a := range p.authorities {
		out = append(out, a.name)
	}
	return out
}

// SameAuthority reports whether two attestation authorities name the same
// service: equal ignoring ASCII case and a trailing slash, as Key Vault
// compares a policy's authority with an attestation token's iss.
func SameAuthority(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "/"), strings.TrimSuffix(b, "/"))
}

// EvaluateAuthority decides an SKR policy as Azure Key Vault's secure key
// release does: only the rules (anyOf entries) whose authority is the one
// that issued the claims (the attestation token's iss, compared with
// [SameAuthority]) are evaluated, and the claims satisfy the policy when
// one of those rules holds. A policy with no rule of that authority denies
// with a failure on the pseudo-claim "authority". Unlike [Evaluate], which
// serves tkms's own releases (tkms is then the only authority), this is
// the decision of a vault that trusts several attestation services.
// Policies of the other grammars give ErrUnset.
func EvaluateAuthority(p Policy, authority string, claims map[string]any) error {
	if p.kind != KindSKR {
		return ErrUnset
	}
	var fails []*Failure
	matched := false
	for i := range p.authorities {
		if !SameAuthority(p.authorities[i].name, authority) {
			continue
		}
		matched = true
		f := evalGroup("anyOf["+itoa(i)+"]", &p.authorities[i].group, claims)
		if len(f) == 0 {
			return nil
		}
		fails = append(fails, f...)
	}
	if !matched {
		req := slices.Clone(p.Authorities())
		for i, a := range req {
			req[i] = value{kind: kindString, s: a}.literal()
		}
		fails = append(fails, &Failure{Path: "anyOf", Claim: "authority", Op: "oneOf", Required: req,
			Observed: value{kind: kindString, s: authority}.literal()})
	}
	return &DeniedError{Failures: fails}
}
