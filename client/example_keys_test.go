package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/kmstest"
)

// A service in a TEE keeps the private keys of its KMS in a Keys cache:
// Run keeps it ahead of rotations, ByOHTTPID (or the cache as an
// ohttp.KeySource) finds the key of each request.
func ExampleKeys() {
	// A tkms in this process that trusts a simulated TEE, with its first
	// key, an attester for that TEE and a token source (in production:
	// the KMS's URL and log key, client.NewACIAttester and
	// client.NewIMDSTokenSource).
	kms, err := kmstest.Start(kmstest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer kms.Close()

	keys, err := client.NewKeys(client.KeysConfig{
		KMS:        kms.URL,
		HTTPClient: kms.Client(),
		Attester:   kms.Attester(),
		Tokens:     kms.Tokens(),
		LogKey:     kms.LogKey, // every release's receipt must verify under it
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close() // stops Run and every fetch
	ctx := context.Background()
	// Fetch every key the KMS releases now, at start, then keep the cache
	// ahead of rotations in the background.
	all, err := keys.All(ctx)
	if err != nil {
		log.Fatal(err)
	}
	go keys.Run(ctx) // until ctx is done or keys.Close

	for _, k := range all {
		fmt.Println(k.Suite, k.Phase(time.Now()), k.OHTTPKeyID == byte(k.ID/10<<4|k.ID%10))
	}
	// An OHTTP request names its key by the key id byte.
	k, err := keys.ByOHTTPID(ctx, all[0].OHTTPKeyID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(k.Kid == all[0].Kid)
	st := keys.State()
	fmt.Println(len(st.Keys), "cached,", st.ReceiptsVerified, "receipt verified")
	// Output:
	// x25519 published true
	// true
	// 1 cached, 1 receipt verified
}
