package servicecheck

import (
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// FuzzCheckNode: an endorsement of any bytes is refused, never a panic.
func FuzzCheckNode(f *testing.F) {
	_, vkey, err := note.GenerateKey(rand.Reader, "tkms.example")
	if err != nil {
		f.Fatal(err)
	}
	lv, err := translog.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	v, err := attest.New(attest.Config{})
	if err != nil {
		f.Fatal(err)
	}
	pol, err := policy.Parse([]byte(`{"claims":{"x-ms-sevsnpvm-is-debuggable":false}}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"leaf":"AA==","index":0,"proof":[],"checkpoint":""}`), []byte{1})
	f.Add([]byte(`null`), []byte{})
	f.Fuzz(func(t *testing.T, endorsement, nodeKey []byte) {
		if checkNode(t.Context(), v, pol, lv, vkey, nodeKey, json.RawMessage(endorsement)) == nil {
			t.Fatal("an endorsement not signed by the log key passed")
		}
	})
}
