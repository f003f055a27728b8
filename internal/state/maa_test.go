package state

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
)

// TestGovMAAInstances: set_maa_instances replaces the trusted MAA
// instances as a whole, at the accepting entry, leaves an earlier list
// untouched, survives a snapshot, and an invalid list is refused.
func TestGovMAAInstances(t *testing.T) {
	f := newGovFixture(t, 1, gov.DevConstitution())
	if f.st.MAA != nil || f.st.MAASeq != 0 {
		t.Fatalf("a new ledger has MAA instances %+v", f.st.MAA)
	}
	jwks := json.RawMessage(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`)
	f.propose(f.signers[0], action(gov.ActSetMAAInstances, map[string]any{"instances": []any{
		map[string]any{"issuer": "https://a.attest.azure.net", "jwks": jwks},
		map[string]any{"issuer": "https://b.attest.azure.net"},
	}}))
	first := f.st.MAA
	if f.st.MAASeq != f.st.Seq || len(first.Instances) != 2 || first.Instances[0].Issuer != "https://a.attest.azure.net" || len(first.Instances[1].JWKS) != 0 {
		t.Fatalf("MAA %+v at %d (seq %d)", f.st.MAA, f.st.MAASeq, f.st.Seq)
	}
	b, err := f.st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || back.MAASeq != f.st.MAASeq || len(back.MAA.Instances) != 2 || string(back.MAA.Instances[0].JWKS) != string(first.Instances[0].JWKS) {
		t.Fatalf("snapshot: %+v, %v", back, err)
	}

	f.now = f.now.Add(time.Minute)
	f.propose(f.signers[0], action(gov.ActSetMAAInstances, map[string]any{"instances": []any{}}))
	if f.st.MAA == nil || len(f.st.MAA.Instances) != 0 || f.st.MAASeq != f.st.Seq {
		t.Fatalf("after emptying: %+v at %d", f.st.MAA, f.st.MAASeq)
	}
	if len(first.Instances) != 2 {
		t.Fatal("the earlier list was modified in place")
	}

	// A signer refuses to sign an invalid list; the state machine refuses
	// it again when applying (a ledger written by another signer).
	seq := f.st.MAASeq
	err = f.st.applySetMAAInstances(gov.Action{Name: gov.ActSetMAAInstances, Args: json.RawMessage(`{"instances":[{"issuer":"http://maa.example"}]}`)}, seq+1)
	if gov.Code(err) != gov.CodeInvalidAction || f.st.MAASeq != seq {
		t.Fatalf("plain-http MAA issuer: %v, MAA seq %d", err, f.st.MAASeq)
	}
}
