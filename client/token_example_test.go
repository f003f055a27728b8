package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/tkms-dev/tkms/client"
)

// In an ACI container group, a service obtains its managed identity's token
// from IMDS (here a local stand-in); the source caches it until shortly
// before it expires.
func ExampleNewIMDSTokenSource() {
	var requests atomic.Int32
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, `{"error":"invalid_request","error_description":"Required metadata header not specified"}`, http.StatusBadRequest)
			return
		}
		requests.Add(1)
		fmt.Fprint(w, `{"access_token":"eyJ...","expires_in":"86399","token_type":"Bearer"}`)
	}))
	defer imds.Close()

	tokens, err := client.NewIMDSTokenSource(client.IMDSOptions{
		BaseURL:  imds.URL, // "" in production: http://169.254.169.254
		Resource: "https://management.azure.com/",
	})
	if err != nil {
		log.Fatal(err)
	}
	for range 3 {
		tok, err := tokens.Token(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("token:", tok)
	}
	fmt.Println("requests to IMDS:", requests.Load())
	// Output:
	// token: eyJ...
	// token: eyJ...
	// token: eyJ...
	// requests to IMDS: 1
}
