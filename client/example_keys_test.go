package client_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// A service in a TEE keeps the private keys of its KMS in a Keys cache:
// Run keeps it ahead of rotations, ByOHTTPID (or the cache as an
// ohttp.KeySource) finds the key of each request.
func ExampleKeys() {
	// A local tkms that trusts the simulated TEE, with its first key, an
	// attester for that TEE and a token issuer (in production: the KMS's
	// URL and log key, an SNP attester and a managed identity token).
	kmsURL, logKey, attester, tokens, stop := startExampleKMS()
	defer stop()

	keys, err := client.NewKeys(client.KeysConfig{
		KMS:      kmsURL,
		Attester: attester,
		Tokens:   tokens,
		LogKey:   logKey, // every release's receipt must verify under it
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Fetch every key the KMS releases now, at start, then keep the cache
	// ahead of rotations in the background.
	all, err := keys.All(ctx)
	if err != nil {
		log.Fatal(err)
	}
	go keys.Run(ctx)

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

// startExampleKMS starts a tkms on loopback as releasetest and the tests
// of this package do, without a testing.TB.
func startExampleKMS() (url, logKey string, att client.Attester, tokens client.TokenSource, stop func()) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	must := func(err error) {
		if err != nil {
			stop()
			log.Fatal(err)
		}
	}
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	dir, err := os.MkdirTemp("", "tkms-example-")
	must(err)
	stops = append(stops, func() { os.RemoveAll(dir) })

	iss, err := oidcissuer.New(filepath.Join(dir, "issuer"), oidcissuer.Options{})
	must(err)
	issSrv := httptest.NewServer(iss.Handler())
	stops = append(stops, issSrv.Close)
	must(iss.SetURL(issSrv.URL))

	fixture, err := os.ReadFile("../internal/attest/simsnp/testdata/" + simsnp.ChainFile)
	must(err)
	must(os.MkdirAll(filepath.Join(dir, "tee"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "tee", simsnp.ChainFile), fixture, 0o600))
	chain, err := simsnp.LoadOrCreate(filepath.Join(dir, "tee"))
	must(err)
	at := chain.VCEK().NotBefore.Add(24 * time.Hour)

	sealer, err := seal.New(seal.NewKey())
	must(err)
	pol, _ := json.Marshal(map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hex.EncodeToString(keysHostData)}}})
	svc, err := kms.Open(ctx, kms.Config{DataDir: filepath.Join(dir, "kms"), Sealer: sealer, ReleasePolicy: pol, RotationPolicy: state.DefaultRotationPolicy(), Logger: quiet})
	must(err)
	stops = append(stops, func() { svc.Close() })
	_, err = svc.Tick(ctx)
	must(err)

	auth, err := jwtauth.New(ctx, jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{Issuer: iss.URL(), Audiences: []string{keysAudience}, DiscoveryURL: iss.DiscoveryURL()}},
		Policy:  jwtauth.Policy{iss.URL(): {"idtyp": "app"}},
		Logger:  quiet,
	})
	must(err)
	stops = append(stops, auth.Close)
	ark, ask := chain.Roots()
	did, feed := chain.UVMTrust()
	av, err := attest.New(attest.Config{
		SNP:                snp.Options{Now: func() time.Time { return at }, Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}},
		SimulatedEndorsers: []uvm.Endorser{{DID: did, Feed: feed}}, Simulated: true,
	})
	must(err)
	rel, err := release.New(release.Config{KMS: svc, Auth: auth, Attest: av, Logger: quiet})
	must(err)
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Options{Logger: quiet, Release: rel}))
	stops = append(stops, srv.Close)

	return srv.URL, svc.LogVerifierKey(), &keysAttester{e: &keysEnv{chain: chain, at: at}}, keysTokens{iss}, stop
}
