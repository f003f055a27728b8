package gov

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const kid = "n1bcxOsv1QiGkmOLJ5Nq3XwI6nX7gzHZf8dU0QYm2Ns_12"

func TestValidateActions(t *testing.T) {
	pk := genKey(t, "P-256")
	member, _ := json.Marshal(map[string]string{"name": "sro-d", "signing_key": pk.pubPEM(t)})
	memberWithID, _ := json.Marshal(map[string]string{"id": pk.member(t, "x").ID, "name": "sro-d", "signing_key": pk.certPEM(t)})
	memberWrongID, _ := json.Marshal(map[string]string{"id": pid, "name": "sro-d", "signing_key": pk.pubPEM(t)})
	memberBadKey, _ := json.Marshal(map[string]string{"name": "sro-d", "signing_key": genKey(t, "RSA").pubPEM(t)})
	constitution, _ := json.Marshal(DefaultConstitution())
	tests := []struct {
		name, action, args string
		want               string // error substring, "" for valid
	}{
		// set_key_release_policy
		{"release add", ActSetKeyReleasePolicy, `{"type":"add","claims":{"x-ms-sevsnpvm-hostdata":"ab12"}}`, ""},
		{"release remove gte", ActSetKeyReleasePolicy, `{"type":"remove","gte":{"x-ms-sevsnpvm-bootloader-svn":3}}`, ""},
		{"release replace azure", ActSetKeyReleasePolicy, `{"policy":{"claims":{"x-ms-attestation-type":"sevsnpvm"}}}`, ""},
		{"release replace skr", ActSetKeyReleasePolicy, `{"policy":{"version":"1.0.0","anyOf":[{"authority":"https://a","allOf":[{"claim":"x","equals":"y"}]}]}}`, ""},
		{"release change without type", ActSetKeyReleasePolicy, `{"claims":{"x":"y"}}`, "set_key_release_policy"},
		{"release bad type", ActSetKeyReleasePolicy, `{"type":"replace","claims":{"x":"y"}}`, "set_key_release_policy"},
		{"release empty change", ActSetKeyReleasePolicy, `{"type":"add"}`, "set_key_release_policy"},
		{"release policy and more", ActSetKeyReleasePolicy, `{"policy":{"claims":{"x":"y"}},"type":"add"}`, "allows no other field"},
		{"release bad policy", ActSetKeyReleasePolicy, `{"policy":{"claims":{"x":{}}}}`, "policy"},
		{"release unknown field", ActSetKeyReleasePolicy, `{"type":"add","claims":{"x":"y"},"lte":{}}`, "set_key_release_policy"},
		// set_jwt_validation_policy
		{"jwt claims", ActSetJWTValidationPolicy, `{"issuer":"https://sts.windows.net/t/","claims":{"oid":["a","b"],"idtyp":"app","n":1,"b":true}}`, ""},
		{"jwt clear claims", ActSetJWTValidationPolicy, `{"issuer":"https://sts.windows.net/t/","claims":{}}`, ""},
		{"jwt no issuer", ActSetJWTValidationPolicy, `{"claims":{"oid":"a"}}`, "no issuer"},
		{"jwt object value", ActSetJWTValidationPolicy, `{"issuer":"i","claims":{"oid":{"a":1}}}`, `"oid"`},
		{"jwt empty list", ActSetJWTValidationPolicy, `{"issuer":"i","claims":{"oid":[]}}`, "empty list"},
		{"jwt nested list", ActSetJWTValidationPolicy, `{"issuer":"i","claims":{"oid":[["a"]]}}`, "in the list"},
		{"jwt null value", ActSetJWTValidationPolicy, `{"issuer":"i","claims":{"oid":null}}`, `"oid"`},
		{"jwt empty claim name", ActSetJWTValidationPolicy, `{"issuer":"i","claims":{"":"a"}}`, "empty claim name"},
		{"jwt unknown field", ActSetJWTValidationPolicy, `{"issuer":"i","claim":{}}`, "unknown field"},
		// set_jwt_issuer
		{"issuer discovery", ActSetJWTIssuer, `{"issuer":"https://login.microsoftonline.com/t/v2.0","audiences":["api://kms"],"discovery_url":"https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"}`, ""},
		{"issuer jwks_url loopback", ActSetJWTIssuer, `{"issuer":"http://127.0.0.1:8080","audiences":["a"],"jwks_url":"http://localhost:8080/keys","algorithms":["ES256"]}`, ""},
		{"issuer inline jwks", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks":{"keys":[{"kty":"EC"}]}}`, ""},
		{"issuer max token lifetime", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","max_token_lifetime_seconds":3600}`, ""},
		{"issuer negative max token lifetime", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","max_token_lifetime_seconds":-1}`, "out of range"},
		{"issuer remove", ActSetJWTIssuer, `{"issuer":"https://i","remove":true}`, ""},
		{"issuer remove with more", ActSetJWTIssuer, `{"issuer":"https://i","remove":true,"audiences":["a"]}`, "takes only"},
		{"issuer two sources", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","discovery_url":"https://i/d"}`, "exactly one"},
		{"issuer no source", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"]}`, "exactly one"},
		{"issuer no audiences", ActSetJWTIssuer, `{"issuer":"https://i","jwks_url":"https://i/k"}`, "no audiences"},
		{"issuer empty audience", ActSetJWTIssuer, `{"issuer":"https://i","audiences":[""],"jwks_url":"https://i/k"}`, "empty audience"},
		{"issuer plain http", ActSetJWTIssuer, `{"issuer":"http://example.com","audiences":["a"],"jwks_url":"https://i/k"}`, "loopback"},
		{"issuer not a URL", ActSetJWTIssuer, `{"issuer":"sts","audiences":["a"],"jwks_url":"https://i/k"}`, "absolute"},
		{"issuer no issuer", ActSetJWTIssuer, `{"audiences":["a"],"jwks_url":"https://i/k"}`, "issuer: empty"},
		{"issuer ftp jwks", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"ftp://i/k"}`, "https"},
		{"issuer bad jwks", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks":{"keys":[]}}`, "JWK set"},
		{"issuer jwks not object", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks":"x"}`, "JWK set"},
		{"issuer empty algorithm", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","algorithms":[""]}`, "empty algorithm"},
		{"issuer unknown field", ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k","refresh":1}`, "unknown field"},
		// set_key_rotation_policy
		{"rotation", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":2678400,"grace_period_seconds":604800,"publish_delay_seconds":604800,"retention_seconds":604800,"suite":"x25519"}`, ""},
		{"rotation fractional", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":0.5,"suite":"p256"}`, ""},
		{"rotation no interval", ActSetKeyRotationPolicy, `{"suite":"x25519"}`, "positive"},
		{"rotation zero interval", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":0,"suite":"x25519"}`, "positive"},
		{"rotation negative grace", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":10,"grace_period_seconds":-1,"suite":"x25519"}`, "out of range"},
		{"rotation huge", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":1e300,"suite":"x25519"}`, "out of range"},
		{"rotation bad suite", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":10,"suite":"rsa"}`, "set_key_rotation_policy"},
		{"rotation unknown field", ActSetKeyRotationPolicy, `{"rotation_interval_seconds":10,"suite":"x25519","rotate":true}`, "unknown field"},
		// set_settings_policy
		{"settings", ActSetSettingsPolicy, `{"service":{"name":"kms","description":"d","version":"1","debug":false}}`, ""},
		{"settings empty", ActSetSettingsPolicy, `{}`, ""},
		{"settings unknown field", ActSetSettingsPolicy, `{"service":{"nam":"kms"}}`, "unknown field"},
		{"settings with attestation", ActSetSettingsPolicy, `{"service":{"name":"kms"},"attestation":{"min_reported_tcb":{"Milan":{"bootloader":3,"tee":0,"snp":8,"microcode":115},"Genoa":{"bootloader":10,"tee":0,"snp":23,"microcode":84}},"min_uvm_svn":22}}`, ""},
		{"settings attestation unknown product line", ActSetSettingsPolicy, `{"service":{},"attestation":{"min_reported_tcb":{"Naples":{}}}}`, "unknown product line"},
		{"settings attestation unknown field", ActSetSettingsPolicy, `{"service":{},"attestation":{"min_tcb":{}}}`, "unknown field"},
		{"settings attestation spl out of range", ActSetSettingsPolicy, `{"service":{},"attestation":{"min_reported_tcb":{"Milan":{"microcode":256}}}}`, "set_settings_policy"},
		{"settings attestation negative svn", ActSetSettingsPolicy, `{"service":{},"attestation":{"min_uvm_svn":-1}}`, "set_settings_policy"},
		{"settings wrong type", ActSetSettingsPolicy, `{"service":{"debug":"yes"}}`, "set_settings_policy"},
		// rotate_key_now
		{"rotate", ActRotateKeyNow, `{}`, ""},
		{"rotate reason", ActRotateKeyNow, `{"reason":"suspected compromise"}`, ""},
		{"rotate long reason", ActRotateKeyNow, `{"reason":"` + strings.Repeat("a", 257) + `"}`, "reason"},
		{"rotate newline reason", ActRotateKeyNow, `{"reason":"a\nb"}`, "reason"},
		{"rotate unknown field", ActRotateKeyNow, `{"kid":"x"}`, "unknown field"},
		// destroy_key
		{"destroy", ActDestroyKey, `{"kid":"` + kid + `"}`, ""},
		{"destroy no kid", ActDestroyKey, `{}`, "no kid"},
		{"destroy bad kid", ActDestroyKey, `{"kid":"abc"}`, "not a tkms kid"},
		{"destroy kid leading zero", ActDestroyKey, `{"kid":"abc_01"}`, "not a tkms kid"},
		{"destroy unknown field", ActDestroyKey, `{"kid":"` + kid + `","now":true}`, "unknown field"},
		// add_member
		{"add member", ActAddMember, string(member), ""},
		{"add member with id and certificate", ActAddMember, string(memberWithID), ""},
		{"add member wrong id", ActAddMember, string(memberWrongID), "not the id"},
		{"add member RSA", ActAddMember, string(memberBadKey), "want ECDSA"},
		{"add member no name", ActAddMember, `{"signing_key":"x"}`, "name"},
		{"add member unknown field", ActAddMember, `{"name":"a","signing_key":"x","role":"chair"}`, "unknown field"},
		// remove_member
		{"remove member", ActRemoveMember, `{"member_id":"` + pid + `"}`, ""},
		{"remove member uppercase", ActRemoveMember, `{"member_id":"` + strings.ToUpper(pid) + `"}`, "lowercase hex"},
		{"remove member short", ActRemoveMember, `{"member_id":"abc"}`, "lowercase hex"},
		{"remove member name", ActRemoveMember, `{"name":"sro-a"}`, "unknown field"},
		// set_node_policy
		{"node policy", ActSetNodePolicy, `{"claims":{"x-ms-sevsnpvm-launchmeasurement":["ab"]}}`, ""},
		{"node policy not a policy", ActSetNodePolicy, `{"anything":[1,2,{"x":null}]}`, "policy"},
		{"node policy empty", ActSetNodePolicy, `{}`, ""},
		// set_constitution
		{"constitution", ActSetConstitution, string(constitution), ""},
		{"constitution no default", ActSetConstitution, `{"rules":{"add_member":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, `no "default"`},
		{"constitution short ttl", ActSetConstitution, `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":5,"created_at_window_seconds":10,"withdraw":"none"}`, "proposal_ttl_seconds"},
		{"constitution unknown field", ActSetConstitution, `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none","x":1}`, "unknown field"},
		{"constitution node trust", ActSetConstitution, `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none","node_trust":"proposal"}`, ""},
		{"constitution node trust unknown", ActSetConstitution, `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none","node_trust":"always"}`, "node_trust"},
		// trust_node
		{"trust node", ActTrustNode, `{"node_id":"` + pid + `"}`, ""},
		{"trust node short", ActTrustNode, `{"node_id":"abc"}`, "64 lowercase hex"},
		{"trust node member name", ActTrustNode, `{"node_id":"` + pid + `","member":"n2"}`, "unknown field"},
		// every action: args must be an object
		{"unknown action", "set_everything", `{}`, `unknown action "set_everything"`},
		{"empty name", "", `{}`, "unknown action"},
		{"args array", ActSetNodePolicy, `[]`, "JSON object"},
		{"args string", ActRotateKeyNow, `"x"`, "JSON object"},
		{"args null", ActRotateKeyNow, `null`, "JSON object"},
		{"args missing", ActRotateKeyNow, ``, "JSON object"},
		{"args invalid JSON", ActSetNodePolicy, `{"a":}`, "JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Action{Name: tt.action, Args: json.RawMessage(tt.args)}
			err := ValidateActions([]Action{{Name: ActRotateKeyNow, Args: json.RawMessage(`{}`)}, a})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d := DescribeAction(a); strings.Contains(d, "(invalid)") || !strings.HasPrefix(d, tt.action+": ") {
					t.Errorf("DescribeAction = %q", d)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidAction) {
				t.Errorf("error does not wrap ErrInvalidAction: %v", err)
			}
			if !strings.Contains(err.Error(), "actions[1]") || (tt.action != "" && !strings.Contains(err.Error(), tt.action)) {
				t.Errorf("error does not name the action's index and name: %v", err)
			}
			if d := DescribeAction(a); !strings.Contains(d, "(invalid)") {
				t.Errorf("DescribeAction of an invalid action = %q", d)
			}
		})
	}
}

func TestValidateActionsCount(t *testing.T) {
	rotate := Action{Name: ActRotateKeyNow, Args: json.RawMessage(`{}`)}
	for _, tt := range []struct {
		n    int
		want string
	}{{0, "no actions"}, {1, ""}, {20, ""}, {21, "21 actions"}} {
		actions := make([]Action, tt.n)
		for i := range actions {
			actions[i] = rotate
		}
		err := ValidateActions(actions)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%d actions: %v", tt.n, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidAction)):
			t.Errorf("%d actions: err = %v, want %q", tt.n, err, tt.want)
		}
	}
}

func TestDecodeReleasePolicyArgs(t *testing.T) {
	r, err := DecodeReleasePolicyArgs(json.RawMessage(`{"policy":{"claims":{"x":"y"}}}`))
	if err != nil || string(r.Replace) != `{"claims":{"x":"y"}}` || r.Change != nil {
		t.Errorf("replace: %+v, %v", r, err)
	}
	r, err = DecodeReleasePolicyArgs(json.RawMessage(`{"type":"add","claims":{"x":"y"}}`))
	if err != nil || string(r.Change) != `{"type":"add","claims":{"x":"y"}}` || r.Replace != nil {
		t.Errorf("change: %+v, %v", r, err)
	}
	// An unset policy may replace the current one (it denies everything).
	if _, err := DecodeReleasePolicyArgs(json.RawMessage(`{"policy":{}}`)); err != nil {
		t.Errorf("unset policy: %v", err)
	}
	for _, in := range []string{`[]`, `null`, `"policy"`, `{"policy":null,"x":1}`} {
		if _, err := DecodeReleasePolicyArgs(json.RawMessage(in)); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

func TestDecodeArgs(t *testing.T) {
	j, err := DecodeJWTIssuerArgs(json.RawMessage(`{"issuer":"https://i","audiences":["a","b"],"jwks":{"keys":[{}]}}`))
	if err != nil || j.Issuer != "https://i" || len(j.Audiences) != 2 || string(j.JWKS) != `{"keys":[{}]}` {
		t.Errorf("issuer: %+v, %v", j, err)
	}
	v, err := DecodeJWTValidationArgs(json.RawMessage(`{"issuer":"i","claims":{"a":["x"]}}`))
	if err != nil || v.Issuer != "i" || fmt.Sprint(v.Claims) != "map[a:[x]]" {
		t.Errorf("validation: %+v, %v", v, err)
	}
	r, err := DecodeRotateArgs(json.RawMessage(`{"reason":"r"}`))
	if err != nil || r.Reason != "r" {
		t.Errorf("rotate: %+v, %v", r, err)
	}
	d, err := DecodeDestroyArgs(json.RawMessage(`{"kid":"` + kid + `"}`))
	if err != nil || d.Kid != kid {
		t.Errorf("destroy: %+v, %v", d, err)
	}
	rm, err := DecodeRemoveMemberArgs(json.RawMessage(`{"member_id":"` + pid + `"}`))
	if err != nil || rm.MemberID != pid {
		t.Errorf("remove: %+v, %v", rm, err)
	}
	k := genKey(t, "Ed25519")
	args, _ := json.Marshal(map[string]string{"name": "sro-e", "signing_key": k.pubPEM(t)})
	m, err := DecodeAddMemberArgs(args)
	if err != nil || m.ID != k.member(t, "x").ID || m.Name != "sro-e" {
		t.Errorf("add: %+v, %v", m, err)
	}
}

func TestDescribeAction(t *testing.T) {
	k := genKey(t, "P-256")
	member, _ := json.Marshal(map[string]string{"name": "sro-d", "signing_key": k.pubPEM(t)})
	tests := []struct {
		name, args, want string
	}{
		{ActSetKeyReleasePolicy, `{"type":"add","claims":{"x-ms-sevsnpvm-hostdata":"ab12","b":["y","z"]},"gte":{"svn":3},"gt":{"tcb":1.5}}`,
			`set_key_release_policy: add b in ["y","z"], x-ms-sevsnpvm-hostdata = "ab12", svn >= 3, tcb > 1.5`},
		{ActSetKeyReleasePolicy, `{"policy": {"claims": {"x": "<y>"}}}`, `set_key_release_policy: replace the policy with {"claims":{"x":"<y>"}}`},
		{ActSetJWTValidationPolicy, `{"issuer":"https://i","claims":{"oid":["a"],"idtyp":"app"}}`, `set_jwt_validation_policy: require of issuer "https://i": idtyp = "app", oid in ["a"]`},
		{ActSetJWTValidationPolicy, `{"issuer":"https://i"}`, `set_jwt_validation_policy: require no claims of issuer "https://i"`},
		{ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks_url":"https://i/k"}`, `set_jwt_issuer: trust issuer "https://i" for audiences ["a"], keys from JWKS https://i/k`},
		{ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"discovery_url":"https://i/d","algorithms":["ES256"]}`, `set_jwt_issuer: trust issuer "https://i" for audiences ["a"], keys from discovery https://i/d, algorithms ["ES256"]`},
		{ActSetJWTIssuer, `{"issuer":"https://i","audiences":["a"],"jwks":{"keys":[{"kty":"EC"}]}}`, `set_jwt_issuer: trust issuer "https://i" for audiences ["a"], keys from inline JWKS {"keys":[{"kty":"EC"}]}`},
		{ActSetJWTIssuer, `{"issuer":"https://i","remove":true}`, `set_jwt_issuer: stop trusting issuer "https://i"`},
		{ActSetKeyRotationPolicy, `{"rotation_interval_seconds":60, "suite":"x25519"}`, `set_key_rotation_policy: set the key rotation policy to {"rotation_interval_seconds":60,"suite":"x25519"}`},
		{ActSetSettingsPolicy, `{"service":{"name":"kms"}}`, `set_settings_policy: set the settings policy to {"service":{"name":"kms"}}`},
		{ActRotateKeyNow, `{}`, `rotate_key_now: create a new key now`},
		{ActRotateKeyNow, `{"reason":"leak"}`, `rotate_key_now: create a new key now (reason "leak")`},
		{ActDestroyKey, `{"kid":"` + kid + `"}`, `destroy_key: erase the private key of ` + kid + ` now`},
		{ActAddMember, string(member), `add_member: add member "sro-d" (id ` + k.member(t, "x").ID + `)`},
		{ActRemoveMember, `{"member_id":"` + pid + `"}`, `remove_member: remove member ` + pid},
		{ActSetNodePolicy, `{"claims": {"a": ["1"]}}`, `set_node_policy: set the node policy to {"claims":{"a":["1"]}}`},
		{ActSetConstitution, docExample, `set_constitution: set the constitution: add_member 2/3, default majority, remove_member 2/3, set_constitution 2/3; proposal TTL 604800 s, created_at window 600 s, withdraw proposer`},
		{ActSetKeyReleasePolicy, `{"type":"remove","claims":{"a b":"x","c\nd":["y"]},"gte":{"e=f":1}}`, `set_key_release_policy: remove "a b" = "x", "c\nd" in ["y"], "e=f" >= 1`},
		{"frobnicate", `{"a":1}`, `frobnicate: (invalid) {"a":1}`},
		{ActDestroyKey, "{\"kid\":\n\"x\"}", `destroy_key: (invalid) {"kid":"x"}`},
		{ActDestroyKey, "not json\n", `destroy_key: (invalid) "not json\n"`},
	}
	for _, tt := range tests {
		got := DescribeAction(Action{Name: tt.name, Args: json.RawMessage(tt.args)})
		if got != tt.want {
			t.Errorf("DescribeAction(%s %s)\n got %s\nwant %s", tt.name, tt.args, got, tt.want)
		}
		if strings.ContainsAny(got, "\n\r") {
			t.Errorf("DescribeAction(%s) has a line break: %q", tt.name, got)
		}
	}
	long := DescribeAction(Action{Name: ActSetNodePolicy, Args: json.RawMessage(`{"a":"` + strings.Repeat("é", 5000) + `"}`)})
	if len(long) > maxDescription+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("long description: %d bytes", len(long))
	}
}
