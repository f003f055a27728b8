package gov

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// ActSetMAAInstances sets the Azure Attestation (MAA) instances whose
// tokens are accepted as "maa" evidence (docs/release.md "Azure
// Attestation tokens").
const ActSetMAAInstances = "set_maa_instances"

// MaxMAAInstances bounds the list of set_maa_instances.
const MaxMAAInstances = 32

func init() {
	checkers[ActSetMAAInstances] = func(b json.RawMessage) error {
		_, err := DecodeMAAInstancesArgs(b)
		return err
	}
	actionNames = append(actionNames, ActSetMAAInstances)
}

// MAAInstance is one trusted MAA instance: its issuer (the exact iss of
// its tokens) and, optionally, a static JWK Set of its signing keys;
// without one, the keys are fetched from the issuer's OpenID
// configuration.
type MAAInstance struct {
	Issuer string          `json:"issuer"`
	JWKS   json.RawMessage `json:"jwks,omitempty"`
}

// MAAInstancesArgs are the arguments of set_maa_instances: the whole list
// of trusted instances, which replaces the one in force (an empty list
// trusts none).
type MAAInstancesArgs struct {
	Instances []MAAInstance `json:"instances"`
}

// DecodeMAAInstancesArgs decodes and checks set_maa_instances's
// arguments: a list (present, possibly empty) of at most 32 instances,
// each issuer an https URL (http only to loopback, as for set_jwt_issuer)
// named once, and each inline jwks a JWK Set of at least one key.
func DecodeMAAInstancesArgs(args json.RawMessage) (MAAInstancesArgs, error) {
	var a MAAInstancesArgs
	if err := decodeStrict(args, &a); err != nil {
		return a, err
	}
	if a.Instances == nil {
		return a, errors.New(`no "instances" (an empty list trusts none)`)
	}
	if len(a.Instances) > MaxMAAInstances {
		return a, fmt.Errorf("%d instances, at most %d are allowed", len(a.Instances), MaxMAAInstances)
	}
	seen := map[string]bool{}
	for i, in := range a.Instances {
		if err := checkURL(in.Issuer); err != nil {
			return a, fmt.Errorf("instances[%d]: issuer: %w", i, err)
		}
		key := strings.TrimSuffix(in.Issuer, "/")
		if seen[key] {
			return a, fmt.Errorf("instances[%d]: issuer %q is listed twice", i, in.Issuer)
		}
		seen[key] = true
		if len(in.JWKS) == 0 {
			continue
		}
		var set jose.JSONWebKeySet
		if !isObject(in.JWKS) || json.Unmarshal(in.JWKS, &set) != nil || len(set.Keys) == 0 {
			return a, fmt.Errorf(`instances[%d]: jwks: want a JWK set, {"keys":[...]}, with at least one valid key`, i)
		}
	}
	return a, nil
}

func describeMAAInstances(args json.RawMessage) string {
	a, _ := DecodeMAAInstancesArgs(args)
	if len(a.Instances) == 0 {
		return "trust no Azure Attestation instance"
	}
	var parts []string
	for _, in := range a.Instances {
		src := "keys from its OpenID configuration"
		if len(in.JWKS) > 0 {
			src = "inline JWKS " + compact(in.JWKS)
		}
		parts = append(parts, fmt.Sprintf("%q (%s)", in.Issuer, src))
	}
	return "trust exactly these Azure Attestation instances: " + strings.Join(parts, ", ")
}
