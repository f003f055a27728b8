package attest

import (
	"context"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

// Object is an attestation object decoded by encoding/json in the same pass
// as the request that carries it: the members that tell the formats apart
// (see detect) and those of the ACI object. A request type that declares its
// attestation member as an Object has the ACI object's strings decoded
// straight from the body, once, instead of keeping the object's bytes and
// decoding them again to tell its format apart and to verify it.
//
// Only an object that [Object.AsACI] accepts may be verified this way
// ([Verifier.VerifyACI]); any other (another format, a string holding an
// object, anything unusual) must go to [Verifier.Verify] as bytes, which the
// caller then decodes from the request as before.
type Object struct {
	Type string `json:"type"`
	api.ACI
	// Azure CVM members (azcvm.Looks): present, whatever their value.
	HCLReport present `json:"hcl_report"`
	Report    present `json:"report"`
	TPMQuote  present `json:"tpm_quote"`
	Quote     present `json:"quote"`
}

// present records that a member was there, without keeping its value.
type present bool

func (p *present) UnmarshalJSON([]byte) error { *p = true; return nil }

// AsACI returns the object's ACI members if Verify would take the object
// for an ACI object (formats: no "type" member, nor the members of Azure
// CVM evidence) and it has evidence, which also says that the object was
// there: nil otherwise.
//
// The caller must have decoded the object from exactly the bytes Verify
// would have been given: one object, the only member of its request that
// encoding/json matches to the attestation's name (no duplicate, in any
// case), or encoding/json would have merged two objects into one.
func (o *Object) AsACI() *api.ACI {
	if o.Type != "" || o.HCLReport || o.Report || o.TPMQuote || o.Quote || o.Evidence == "" {
		return nil
	}
	return &o.ACI
}

// VerifyACI verifies an ACI attestation object whose members the caller
// decoded ([Object.AsACI]): exactly what Verify does for that object, with
// the same evidence and errors, without decoding its JSON again.
func (v *Verifier) VerifyACI(ctx context.Context, j *api.ACI) (*Evidence, error) {
	ev := &Evidence{Type: TypeACI}
	b, err := snp.DecodeACIMembers(j)
	if err != nil {
		return nil, snpError(err)
	}
	if err := verifyACIBundle(ctx, v, b, ev, false); err != nil {
		return nil, err
	}
	typeClaim(ev)
	return ev, nil
}
