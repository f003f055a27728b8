package jwtauth_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"time"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

func Example() {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	// A local OIDC issuer on loopback stands in for Entra ID.
	dir, err := os.MkdirTemp("", "jwtauth-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	idp, err := oidcissuer.New(dir, oidcissuer.Options{Now: clock})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	defer srv.Close()
	if err := idp.SetURL(srv.URL); err != nil {
		log.Fatal(err)
	}

	// Trust it as an Entra ID v1 issuer: the iss string is what matters.
	const iss = "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
	auth, err := jwtauth.New(context.Background(), jwtauth.Config{
		Issuers: []jwtauth.IssuerConfig{{
			Issuer:       iss,
			Audiences:    []string{"https://management.azure.com/"},
			DiscoveryURL: idp.URL(),
			Algorithms:   []string{"RS256"},
		}},
		Policy: jwtauth.Policy{iss: {"idtyp": "app"}},
		Now:    clock,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer auth.Close()

	token, err := idp.MintManagedIdentity(oidcissuer.ManagedIdentity{
		Issuer:      iss,
		Audience:    "https://management.azure.com/",
		PrincipalID: "6c5b3b4e-4cb3-4a6e-9d55-2a3c1f0e9b11",
		TenantID:    "72f988bf-86f1-41af-91ab-2d7cd011db47",
	})
	if err != nil {
		log.Fatal(err)
	}
	id, err := auth.Authenticate(context.Background(), "Bearer "+token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id.Issuer, id.OID)

	// An hour and a minute later the token has expired.
	now = now.Add(61 * time.Minute)
	_, err = auth.Authenticate(context.Background(), "Bearer "+token)
	fmt.Println(jwtauth.Code(err))
	// Output:
	// https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/ 6c5b3b4e-4cb3-4a6e-9d55-2a3c1f0e9b11
	// JWT_EXPIRED
}
