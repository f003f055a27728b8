package gov

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func FuzzParseMessage(f *testing.F) {
	var members []Member
	for _, kind := range memberKinds {
		k := genKey(f, kind)
		s := k.signer(f)
		members = append(members, k.member(f, kind))
		prop, err := s.SignProposal([]Action{
			{Name: ActSetKeyReleasePolicy, Args: json.RawMessage(`{"type":"add","claims":{"x":"y"}}`)},
			{Name: ActRotateKeyNow, Args: json.RawMessage(`{}`)},
		}, t0)
		if err != nil {
			f.Fatal(err)
		}
		ballot, err := s.SignBallot(ProposalID(prop), false, t0)
		if err != nil {
			f.Fatal(err)
		}
		withdrawal, err := s.SignWithdrawal(ProposalID(prop), t0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(prop)
		f.Add(ballot)
		f.Add(withdrawal)
	}
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := ParseMessage(raw)
		if err != nil {
			if Code(err) != CodeInvalidMessage {
				t.Fatalf("error without GOV_INVALID_MESSAGE: %v", err)
			}
			return
		}
		// Canonical: parsing is a function of the bytes.
		m2, err := ParseMessage(m.Raw)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("reparse: %+v, %v", m2, err)
		}
		if !bytes.Equal(m.Raw, raw) {
			t.Fatal("Raw differs from the input")
		}
		_ = ContentID(m)
		_ = CheckCreatedAt(m, t0, time.Minute)
		for _, mem := range members {
			if err := m.Verify(mem); err == nil && mem.ID != m.Signer {
				t.Fatalf("verified under member %s, signer %s", mem.ID, m.Signer)
			}
		}
		switch m.Type {
		case MsgProposal:
			if acts, err := DecodeProposal(m); err == nil {
				for _, a := range acts {
					_ = DescribeAction(a)
				}
				if err := ValidateActions(acts); err != nil {
					t.Fatalf("decoded actions do not validate: %v", err)
				}
			}
		case MsgBallot:
			_, _ = DecodeBallot(m)
		}
	})
}

func FuzzParseConstitution(f *testing.F) {
	f.Add([]byte(docExample))
	for _, c := range []*Constitution{DefaultConstitution(), DevConstitution()} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"rules":{"default":{"approvals":3},"destroy_key":{"approvals":"all"}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConstitution(b)
		if err != nil {
			return
		}
		for n := 0; n <= 8; n++ {
			err := c.Validate(n)
			if err == nil {
				// A valid constitution is satisfiable for every action.
				for _, name := range ActionNames() {
					if need := c.Needed([]Action{{Name: name}}, n); need > n || need < 1 {
						t.Fatalf("valid for %d members, but %s needs %d", n, name, need)
					}
				}
			} else if Code(err) != CodeUnsafeConstitution {
				t.Fatalf("Validate error without GOV_UNSAFE_CONSTITUTION: %v", err)
			}
		}
		// Round trip.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConstitution(out)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip of %s: %+v, %v", out, c2, err)
		}
		_ = DescribeAction(Action{Name: ActSetConstitution, Args: b})
	})
}

func FuzzValidateActions(f *testing.F) {
	f.Add(ActSetKeyReleasePolicy, []byte(`{"type":"add","claims":{"x":"y"}}`))
	f.Add(ActSetKeyReleasePolicy, []byte(`{"policy":{"claims":{"x":["a","b"]}}}`))
	f.Add(ActSetJWTIssuer, []byte(`{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k"}`))
	f.Add(ActSetJWTValidationPolicy, []byte(`{"issuer":"https://i","claims":{"oid":["a"]}}`))
	f.Add(ActSetKeyRotationPolicy, []byte(`{"rotation_interval_seconds":60,"suite":"x25519"}`))
	f.Add(ActSetJWTIssuer, []byte(`{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","max_token_lifetime_seconds":3600}`))
	f.Add(ActSetSettingsPolicy, []byte(`{"service":{"name":"kms"},"attestation":{"min_reported_tcb":{"Milan":{"bootloader":3,"tee":0,"snp":8,"microcode":115}},"min_uvm_svn":22}}`))
	f.Add(ActDestroyKey, []byte(`{"kid":"`+kid+`"}`))
	f.Add(ActRemoveMember, []byte(`{"member_id":"`+pid+`"}`))
	f.Add(ActSetConstitution, []byte(docExample))
	f.Add(ActSetMAAInstances, []byte(`{"instances":[{"issuer":"https://a.attest.azure.net","jwks":{"keys":[`+rfcJWK+`]}},{"issuer":"https://b.attest.azure.net"}]}`))
	f.Add(ActSetMemberEncryptionKey, []byte(`{"member_id":"`+strings.Repeat("ab", 32)+`","encryption_key":{"suite":"x25519","public_key":"`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}}`))
	f.Fuzz(func(t *testing.T, name string, args []byte) {
		a := Action{Name: name, Args: args}
		err := ValidateActions([]Action{a})
		if err != nil && Code(err) != CodeInvalidAction && Code(err) != CodeUnsafeConstitution {
			t.Fatalf("error without an action code: %v", err)
		}
		if d := DescribeAction(a); strings.ContainsAny(d, "\r\n") {
			t.Fatalf("description with a line break: %q", d)
		}
	})
}
