package keys_test

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/tkms-dev/tkms/internal/keys"
)

// The X25519 public key of the RFC 9180 base-mode test vectors.
var examplePub, _ = hex.DecodeString("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")

func ExampleKID() {
	pemText, err := keys.PublicPEM(keys.X25519, examplePub)
	if err != nil {
		panic(err)
	}
	fmt.Print(string(pemText))
	kid := keys.KID(pemText, 2) // the second key
	fmt.Println(kid)
	n, _ := keys.ParseKIDNumber(kid)
	fmt.Println(n)
	// Output:
	// -----BEGIN PUBLIC KEY-----
	// MCowBQYDK2VuAyEAOUjP4K0d22ldeA5ZB3GV2mxWUGsCcyl5SrAryoCBXE0=
	// -----END PUBLIC KEY-----
	// WmNgDnmDhJVYXa0m2br6M-FcreVEZG7wX4f-AlXmha4_2
	// 2
}

func ExampleAssignID() {
	free := func(int) bool { return false }
	for _, n := range []uint64{1, 42, 89, 90, 181} {
		id, _ := keys.AssignID(n, free)
		fmt.Printf("key %d: id %d\n", n, id)
	}

	// Key 91 would get 11, but an unexpired key still holds 11 and 12.
	held := func(id int) bool { return id == 11 || id == 12 }
	id, _ := keys.AssignID(91, held)
	fmt.Printf("key 91: id %d\n", id)
	// Output:
	// key 1: id 11
	// key 42: id 52
	// key 89: id 99
	// key 90: id 10
	// key 181: id 11
	// key 91: id 13
}

func ExampleOHTTPKeyID() {
	for _, id := range []int{10, 42, 99} {
		// listpubkeys sends the id as a string; DEPA services read it as hex.
		fmt.Printf("%q -> 0x%02x\n", strconv.Itoa(id), keys.OHTTPKeyID(id))
	}
	// Output:
	// "10" -> 0x10
	// "42" -> 0x42
	// "99" -> 0x99
}

func ExampleOHTTPConfig() {
	id, _ := keys.AssignID(1, func(int) bool { return false })
	config := keys.OHTTPConfig(keys.OHTTPKeyID(id), keys.X25519, examplePub)
	fmt.Println(hex.EncodeToString(config))
	// The application/ohttp-keys body: each configuration after its length.
	fmt.Println(hex.EncodeToString(keys.OHTTPConfigList(config)))
	// Output:
	// 1100203948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d000400010002
	// 00291100203948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d000400010002
}
