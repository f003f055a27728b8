package client

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzIMDSToken serves arbitrary IMDS answers (status and body) on
// loopback to an IMDSTokenSource. Nothing may panic; a token is returned
// only from a 200 answer, and it is the answer's access_token (of type
// Bearer or none); no error quotes the token; the cached expiry is never
// before the fetch unless no lifetime is known. Seeds: the answer shapes
// of the Azure IMDS documentation (expires_in/expires_on as strings or
// numbers), JWT tokens with and without exp, and error bodies.
func FuzzIMDSToken(f *testing.F) {
	jwt := func(payload string) string {
		return imdsFuzzB64(`{"alg":"RS256"}`) + "." + imdsFuzzB64(payload) + ".sig"
	}
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, `{"access_token":"` + jwt(`{"exp":1900000000}`) + `","client_id":"c","expires_in":"86399","expires_on":"1900000000","ext_expires_in":"86399","not_before":"1","resource":"https://management.azure.com/","token_type":"Bearer"}`},
		{200, `{"access_token":"` + jwt(`{"exp":1.9e9}`) + `","expires_in":3599,"token_type":"bearer"}`},
		{200, `{"access_token":"` + jwt(`{"exp":"never"}`) + `"}`},
		{200, `{"access_token":"opaque-token-value","token_type":"pop"}`},
		{200, `{"access_token":"","expires_on":"-5"}`},
		{400, `{"error":"invalid_request","error_description":"Identity not found"}`},
		{500, `not json`},
	} {
		f.Add(uint16(s.status), []byte(s.body))
	}
	var mu sync.Mutex
	var status int
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		w.Write(body)
	}))
	f.Cleanup(srv.Close)
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, st uint16, b []byte) {
		if st < 200 || st > 599 {
			return // net/http refuses to write such a status
		}
		mu.Lock()
		status, body = int(st), b
		mu.Unlock()
		src, err := NewIMDSTokenSource(IMDSOptions{BaseURL: srv.URL, Resource: "https://management.azure.com/", HTTPClient: srv.Client(), Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		var want imdsToken
		jsonErr := json.Unmarshal(b, &want)
		tok, err := src.Token(t.Context())
		if err != nil {
			// The token must not be quoted; only a token that is nowhere
			// else in the body (an error_description, say) can be told.
			if st == 200 && len(want.AccessToken) >= 8 && strings.Count(string(b), want.AccessToken) == 1 &&
				!strings.Contains(want.TokenType, want.AccessToken) &&
				strings.Contains(err.Error(), want.AccessToken) {
				t.Fatalf("error quotes the token: %v", err)
			}
			return
		}
		if st != 200 || jsonErr != nil || tok == "" || tok != want.AccessToken ||
			(want.TokenType != "" && !strings.EqualFold(want.TokenType, "Bearer")) {
			t.Fatalf("status %d body %q gave token %q", st, b, tok)
		}
		if exp, ok := unverifiedJWTExpiry(tok); ok && (exp.Unix() <= 0 || exp.Unix() > 1<<40) {
			t.Fatalf("exp %v read from %q", exp, tok)
		}
	})
}

func imdsFuzzB64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
