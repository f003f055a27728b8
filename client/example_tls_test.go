package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/tkms-dev/tkms/client"
)

// A KMS whose TLS certificate is issued by a private CA (tkms serve with
// tls_cert_file and tls_key_file) is reached through an http.Client whose
// transport trusts that CA besides the system's roots. A KMS with a
// publicly trusted certificate needs no HTTPClient at all.
func ExampleKeysConfig_privateCA() {
	caPEM, err := os.ReadFile("/etc/tkms/kms-ca.pem")
	if err != nil {
		log.Fatal(err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(caPEM) {
		log.Fatal("kms-ca.pem holds no PEM certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone() // keeps HTTP/2 and the proxy settings
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}

	tokens, err := client.NewIMDSTokenSource(client.IMDSOptions{Resource: "https://management.azure.com/"})
	if err != nil {
		log.Fatal(err)
	}
	keys, err := client.NewKeys(client.KeysConfig{
		KMS:        "https://kms.sro.example",
		HTTPClient: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		Attester:   client.NewSNPAttester(client.SNPOptions{}),
		Tokens:     tokens,
		LogKey:     os.Getenv("KMS_LOG_KEY"), // GET /v1/log/key, confirmed out of band
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = keys // keys.All, keys.Run, keys.ByOHTTPID as in ExampleKeys
}
