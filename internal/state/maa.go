package state

import (
	"slices"

	"github.com/tkms-dev/tkms/internal/gov"
)

// MAAPolicy is the list of trusted Azure Attestation instances set by the
// accepted set_maa_instances proposal at State.MAASeq. Until governance
// sets it, the configuration's maa_instances are trusted.
type MAAPolicy struct {
	Instances []gov.MAAInstance `json:"instances"`
}

// applySetMAAInstances applies set_maa_instances: the list replaces the
// one in force.
func (s *State) applySetMAAInstances(a gov.Action, seq uint64) error {
	args, err := gov.DecodeMAAInstancesArgs(a.Args)
	if err != nil {
		return invalid(err)
	}
	p := &MAAPolicy{Instances: make([]gov.MAAInstance, 0, len(args.Instances))}
	for _, in := range args.Instances {
		p.Instances = append(p.Instances, gov.MAAInstance{Issuer: in.Issuer, JWKS: slices.Clone(in.JWKS)})
	}
	s.MAA, s.MAASeq = p, seq
	return nil
}
