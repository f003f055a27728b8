package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tkms-dev/tkms/internal/keys"
)

// MemberBySigner returns the member a governance message's kid names: the
// member of that id or, for a member registered with a certificate, the
// member whose certificate has that CCF id (gov.Member.CertID), as CCF's
// tooling signs. It returns nil when no member has either id.
func (s *State) MemberBySigner(kid string) *Member {
	if m := s.Member(kid); m != nil {
		return m
	}
	var removed *Member
	for _, m := range s.Members {
		if m.CertID() == kid {
			if m.Active {
				return m
			}
			removed = m
		}
	}
	return removed
}

// UnmarshalJSON reads a rotation policy strictly (unknown members are
// errors). A missing publish_delay_seconds is the grace period, as the
// deployed DEPA KMS, which has no such field, advertises a new key once it
// is a grace period old; a missing suite keeps the suite of the policy
// decoded into (the suite in force, for set_key_rotation_policy), or the
// default suite.
func (p *RotationPolicy) UnmarshalJSON(b []byte) error {
	type plain RotationPolicy
	in := struct {
		plain
		PublishDelay *Seconds `json:"publish_delay_seconds"`
	}{plain: plain(*p)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("trailing data after the rotation policy")
	}
	out := RotationPolicy(in.plain)
	out.PublishDelay = out.GracePeriod
	if in.PublishDelay != nil {
		out.PublishDelay = *in.PublishDelay
	}
	if out.Suite == "" {
		out.Suite = keys.X25519.Name
	}
	*p = out
	return nil
}
