package recovery_test

import (
	"bytes"
	"fmt"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/recovery"
)

// Three members with encryption keys; any two of them recover the ledger
// secret, each opening its own share with its private key.
func Example() {
	secret := bytes.Repeat([]byte{0x5a}, 32) // the ledger secret
	var rs []recovery.Recipient
	privs := map[string][]byte{}
	for _, id := range []string{"alice", "bob", "carol"} {
		priv, pub, _ := keys.X25519.Generate()
		rs = append(rs, recovery.Recipient{MemberID: id, Key: gov.EncryptionKey{Suite: "x25519", PublicKey: pub}})
		privs[id] = priv
	}
	shares, _ := recovery.Split(secret, rs, 2, 1) // the body of a recovery.shares entry

	opened := map[string][]byte{}
	for _, r := range rs[1:] { // bob and carol, each on its own machine
		s, err := shares.OpenShare(r.MemberID, r.Key, privs[r.MemberID])
		if err != nil {
			panic(err)
		}
		opened[r.MemberID] = s
	}
	got, err := shares.Combine(opened)
	fmt.Println(bytes.Equal(got, secret), err)

	_, err = shares.Combine(map[string][]byte{"bob": opened["bob"]})
	fmt.Println(recovery.CodeOf(err))
	// Output:
	// true <nil>
	// RECOVERY_BELOW_THRESHOLD
}
