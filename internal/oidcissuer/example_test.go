package oidcissuer_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

func Example() {
	dir, err := os.MkdirTemp("", "oidcissuer")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	iss, err := oidcissuer.New(dir, oidcissuer.Options{})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	if err := iss.SetURL(srv.URL); err != nil {
		log.Fatal(err)
	}

	// A relying party discovers the JWK Set from the issuer URL.
	resp, err := http.Get(iss.DiscoveryURL())
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&disc); err != nil {
		log.Fatal(err)
	}
	fmt.Println(disc.Issuer == srv.URL, disc.JWKSURI == srv.URL+oidcissuer.JWKSPath)

	// A token shaped like an Entra ID v2 managed identity token.
	claims := iss.ManagedIdentityClaims(oidcissuer.ManagedIdentity{
		Issuer:      "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0",
		Audience:    "https://management.azure.com/",
		PrincipalID: "11111111-2222-3333-4444-555555555555",
		TenantID:    "00000000-0000-0000-0000-000000000001",
	})
	fmt.Println(claims["idtyp"], claims["oid"])
	if _, err := iss.Mint(claims); err != nil {
		log.Fatal(err)
	}
	// Output:
	// true true
	// app 11111111-2222-3333-4444-555555555555
}
