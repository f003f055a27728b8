package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// wireKMS is a loopback KMS whose answers the fuzzer writes: GET /v1/keys
// answers list as is; a release answers, for each kid asked for (or, for
// all_valid, each kid of list), the public key list gives it and priv
// wrapped with the server's own encoder (wrap.HPKEWrap) to the request's
// wrapping key, so that the fuzzed bytes reach the client's checks after
// unwrapping. One fuzz worker runs one input at a time.
type wireKMS struct {
	mu         sync.Mutex
	list, priv []byte
}

func (s *wireKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list, priv := s.list, s.priv
	s.mu.Unlock()
	if r.Method == http.MethodGet && r.URL.Path == "/v1/keys" {
		w.Write(list)
		return
	}
	var req api.V1Request
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || json.Unmarshal(body, &req) != nil || req.WrappingKey == nil {
		http.Error(w, `{"error":{"code":"BAD_REQUEST","message":"x"}}`, http.StatusBadRequest)
		return
	}
	var listed api.V1Keys
	json.Unmarshal(list, &listed)
	pubs := map[string][]byte{}
	for _, l := range listed.Keys {
		pubs[l.Kid] = l.PublicKey
	}
	kids := req.Kids
	if k, ok := strings.CutPrefix(r.URL.Path, "/v1/keys/"); ok {
		kids = []string{strings.TrimSuffix(k, "/release")}
	}
	if req.AllValid {
		kids = nil
		for _, l := range listed.Keys {
			kids = append(kids, l.Kid)
		}
	}
	wpub, _ := base64.StdEncoding.DecodeString(req.WrappingKey.PublicKey)
	var resp api.V1ReleaseResponse
	for _, kid := range kids {
		wrapped, err := wrap.HPKEWrap(req.WrappingKey.KEMID, wpub, priv, wrap.ReleaseInfo(kid))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp.Keys = append(resp.Keys, api.V1ReleasedKey{Kid: kid, PublicKey: pubs[kid], Wrapped: wrapped})
	}
	b, _ := json.Marshal(resp)
	w.Write(b)
}

// stubAttester gives the same evidence for every REPORT_DATA: the fake KMS
// above does not verify it.
type stubAttester struct{}

func (stubAttester) Attest(context.Context, [64]byte) (*Evidence, error) {
	return &Evidence{Type: EvidenceSNP, Attestation: json.RawMessage(`{"type":"snp"}`)}, nil
}

// FuzzKeysRelease runs the client's whole fetch (GET /v1/keys, the release,
// unwrapping, the checks of every key against its listing) against a KMS
// whose key list and released private key bytes are fuzzed. Nothing may
// panic or hang; a key is handed out only if its listing is self-consistent
// (the kid names its public key, the id has its OHTTP key id) and the
// released private key is the private half of that public key. Seeds: a
// listing of one key of each suite built with the server's encoders
// (keys.PublicPEM, keys.KID), each key's real private key, and malformed
// variants.
func FuzzKeysRelease(f *testing.F) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var listing []api.V1Key
	var privs [][]byte
	for i, s := range keys.Suites {
		priv, pub, err := s.Generate()
		if err != nil {
			f.Fatal(err)
		}
		pemText, err := keys.PublicPEM(s, pub)
		if err != nil {
			f.Fatal(err)
		}
		id := keys.MinID + i
		listing = append(listing, api.V1Key{
			Kid: keys.KID(pemText, uint64(i+1)), ID: id, OHTTPKeyID: int(keys.OHTTPKeyID(id)), Suite: s.Name,
			KEM: s.KEM, KDF: s.KDF, AEAD: s.AEAD, PublicKey: pub,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ReleaseUntil: now.Add(2 * time.Hour), State: "primary",
		})
		privs = append(privs, priv)
	}
	list, _ := json.Marshal(map[string]any{"keys": listing})
	for i, l := range listing {
		f.Add(list, l.Kid, privs[i], false)
		one, _ := json.Marshal(map[string]any{"keys": listing[i : i+1]})
		f.Add(one, "", privs[i], true)
	}
	f.Add(list, listing[0].Kid, privs[1], false)
	f.Add([]byte(`{"keys":[{"kid":"x_1","state":"primary","suite":"x25519"}]}`), "x_1", []byte{}, false)
	f.Add([]byte(`{"keys":null}`), "", []byte{}, true)

	kms := &wireKMS{}
	srv := httptest.NewServer(kms)
	f.Cleanup(srv.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, list []byte, kid string, priv []byte, all bool) {
		kms.mu.Lock()
		kms.list, kms.priv = list, priv
		kms.mu.Unlock()
		k, err := NewKeys(KeysConfig{
			KMS: srv.URL, Attester: stubAttester{}, Tokens: StaticTokenSource("tok"), Logger: log,
			Now: func() time.Time { return now }, MaxAttempts: 1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			FetchTimeout: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []*Key
		if all {
			got, err = k.All(t.Context())
		} else {
			var key *Key
			if key, err = k.ByKID(t.Context(), kid); err == nil {
				got = []*Key{key}
			}
		}
		if err != nil {
			if len(priv) >= 16 && !bytes.Contains(list, priv) && !strings.Contains(kid, string(priv)) && strings.Contains(err.Error(), string(priv)) {
				t.Fatal("the error quotes the released private key")
			}
			return
		}
		for _, key := range got {
			l := api.V1Key{Kid: key.Kid, ID: key.ID, OHTTPKeyID: int(key.OHTTPKeyID), Suite: key.Suite, KEM: key.KEM, KDF: key.KDF, AEAD: key.AEAD, PublicKey: key.PublicKey}
			if err := checkListed(&l); err != nil {
				t.Fatalf("handed out key %s whose listing does not check: %v", key.Kid, err)
			}
			if !bytes.Equal(key.PrivateKey.PublicKey().Bytes(), key.PublicKey) {
				t.Fatalf("handed out key %s whose private key is not that of its public key", key.Kid)
			}
			if !now.Before(key.ReleaseUntil) {
				t.Fatalf("handed out key %s expired at %s", key.Kid, key.ReleaseUntil)
			}
		}
	})
}

// FuzzAppKeyItem feeds arbitrary unwrapped /app/unwrapKey payloads (the
// fmt=jwk key item, keys.Item with d) to the item decoding and
// itemPublicKey, which the client compares with the listed public
// key. Nothing may panic, and a public key read from an item of a known
// suite re-encodes (keys.PublicItem, the server's encoder) to an item that
// reads back as the same public key. Seeds: items of each suite made by keys.PublicItem.
func FuzzAppKeyItem(f *testing.F) {
	for i, s := range keys.Suites {
		priv, pub, err := s.Generate()
		if err != nil {
			f.Fatal(err)
		}
		it, err := keys.PublicItem(s, pub, "kid_1", keys.MinID+i, 1, 2)
		if err != nil {
			f.Fatal(err)
		}
		it.D = base64.RawURLEncoding.EncodeToString(priv)
		b, err := wrap.JWKPayload(it)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"AA","y":"!!"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var it keys.Item
		if json.Unmarshal(payload, &it) != nil {
			return
		}
		pub, err := itemPublicKey(&it)
		if err != nil {
			return
		}
		var s keys.Suite
		switch {
		case it.Kty == "OKP":
			s = keys.X25519
		case it.Kty == "EC":
			s = keys.P256
		default:
			s = keys.MLKEM768X25519
		}
		again, err := keys.PublicItem(s, pub, it.Kid, it.ID, 0, 0)
		if err != nil {
			return // not a valid key of the suite: newKey rejects it against the listing
		}
		ai := keys.Item{Kty: again.Kty, Crv: again.Crv, Alg: again.Alg, X: again.X, Y: again.Y, Pub: again.Pub}
		pub2, err := itemPublicKey(&ai)
		if err != nil || !bytes.Equal(pub, pub2) {
			t.Fatalf("item %+v re-encodes as %+v, which reads back as %x, %v", it, again, pub2, err)
		}
	})
}
