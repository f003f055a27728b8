package gov

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParseMembersFile feeds arbitrary members files (`tkms init
// --members`, and the shape of add_member arguments) to ParseMembersFile.
// Nothing may panic; an accepted file lists at least one member, with
// unique names and ids, each of which re-validates (Member.Check: the id
// is that of the signing key); and the members encode to a file that
// parses to the same members. Seeds: members of each key kind, as PUBLIC
// KEY and as CERTIFICATE PEM, with and without a recovery key and an id.
func FuzzParseMembersFile(f *testing.F) {
	var ms []Member
	for i, kind := range memberKinds {
		k := genKey(f, kind)
		m := k.member(f, "member-"+kind)
		ms = append(ms, m)
		c := Member{Name: "cert " + kind, SigningKey: k.certPEM(f)}
		if i == 0 {
			c.RecoveryKey = genKey(f, "P-256").pubPEM(f)
		}
		b, _ := json.Marshal(map[string]any{"members": []Member{c}})
		f.Add(b)
	}
	b, _ := json.Marshal(map[string]any{"members": ms})
	f.Add(b)
	dup := []Member{ms[0], ms[0]}
	b, _ = json.Marshal(map[string]any{"members": dup})
	f.Add(b)
	f.Add([]byte(`{"members":[]}`))
	f.Add([]byte(`{"members":[{"name":"a","signing_key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n","extra":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseMembersFile(data)
		if err != nil {
			if got != nil {
				t.Fatal("members with an error")
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("accepted a file without members")
		}
		names, ids := map[string]bool{}, map[string]bool{}
		for _, m := range got {
			if err := m.Check(); err != nil {
				t.Fatalf("accepted member %q does not check: %v", m.Name, err)
			}
			if names[m.Name] || ids[m.ID] {
				t.Fatalf("member %q (%s) accepted twice", m.Name, m.ID)
			}
			names[m.Name], ids[m.ID] = true, true
		}
		b, err := json.Marshal(map[string]any{"members": got})
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseMembersFile(b)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-encoded members: %v", err)
		}
	})
}
