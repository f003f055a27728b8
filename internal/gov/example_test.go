package gov_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
)

// A member signs a proposal; the service parses it, finds the member by the
// signer id, verifies the signature and reads the actions.
func Example() {
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		panic(err)
	}
	member, err := gov.NewMember("sro-a", string(pub), "")
	if err != nil {
		panic(err)
	}
	signer, err := gov.NewFileSigner(priv)
	if err != nil {
		panic(err)
	}
	created := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	raw, err := signer.SignProposal([]gov.Action{{
		Name: gov.ActSetKeyReleasePolicy,
		Args: json.RawMessage(`{"type":"add","claims":{"x-ms-sevsnpvm-hostdata":"ab12"}}`),
	}}, created)
	if err != nil {
		panic(err)
	}

	msg, err := gov.ParseMessage(raw)
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Type, msg.Signer == member.ID, msg.CreatedAt)
	if err := msg.Verify(member); err != nil {
		panic(err)
	}
	if err := gov.CheckCreatedAt(msg, created.Add(time.Minute), 10*time.Minute); err != nil {
		panic(err)
	}
	actions, err := gov.DecodeProposal(msg)
	if err != nil {
		panic(err)
	}
	for _, a := range actions {
		fmt.Println(gov.DescribeAction(a))
	}
	c := gov.DefaultConstitution()
	needed := c.Needed(actions, 3)
	accepted, _ := gov.Decide(needed, 3, 1, 0)
	fmt.Println("needed", needed, "accepted", accepted)
	// Output:
	// proposal true 2026-11-27 10:00:00 +0000 UTC
	// set_key_release_policy: add x-ms-sevsnpvm-hostdata = "ab12"
	// needed 2 accepted false
}
