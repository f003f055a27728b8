package jwtauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"os"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzParseJWKS feeds arbitrary JWK Set documents, as an issuer's jwks_uri
// serves them, to parseJWKS. Nothing may panic; an accepted set holds at
// least one key, each under its own non-empty kid, public, and usable for
// RS256 (RSA of at least 2048 bits) or ES256 (P-256) with no other alg; the
// kept and skipped keys add up to at most the keys listed; and a set
// re-encoded from the kept keys parses to the same kids with none skipped.
// Seeds: the MAA signing keys in testdata/ (16 RSA keys, PROVENANCE.md) and
// keys of each kind made here.
func FuzzParseJWKS(f *testing.F) {
	maa, err := os.ReadFile("testdata/maa-shared-rsa-keys.scrtlabs.jwks.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(maa)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), seedRand{})
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), seedRand{})
	rs, _ := rsa.GenerateKey(seedRand{}, 2048)
	for _, ks := range [][]jose.JSONWebKey{
		{{Key: &ec.PublicKey, KeyID: "ec", Algorithm: "ES256", Use: "sig"}},
		{{Key: ec, KeyID: "private-ec"}},
		{{Key: &rs.PublicKey, KeyID: "rsa", Algorithm: "RS256"}, {Key: &ec384.PublicKey, KeyID: "p384"}},
		{{Key: &ec.PublicKey, KeyID: "dup"}, {Key: &ec.PublicKey, KeyID: "dup"}, {Key: &ec.PublicKey, KeyID: "enc", Use: "enc"}},
		{{Key: []byte("0123456789abcdef"), KeyID: "hmac"}},
	} {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"x","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, skipped, err := parseJWKS(data)
		if err != nil {
			if set != nil {
				t.Fatal("a key set with an error")
			}
			return
		}
		var listed struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if json.Unmarshal(data, &listed) != nil {
			t.Fatal("accepted a document that is not a key set")
		}
		if len(set.byKID) == 0 || len(set.byKID)+skipped != len(listed.Keys) {
			t.Fatalf("%d keys kept and %d skipped of %d listed", len(set.byKID), skipped, len(listed.Keys))
		}
		var again jose.JSONWebKeySet
		for kid, k := range set.byKID {
			if kid == "" || k.KeyID != kid || !k.IsPublic() {
				t.Fatalf("kept key %q: %+v", kid, k)
			}
			switch pub := k.Key.(type) {
			case *rsa.PublicKey:
				if pub.N.BitLen() < 2048 || (k.Algorithm != "" && k.Algorithm != "RS256") {
					t.Fatalf("kept RSA key %q of %d bits, alg %q", kid, pub.N.BitLen(), k.Algorithm)
				}
			case *ecdsa.PublicKey:
				if pub.Curve != elliptic.P256() || (k.Algorithm != "" && k.Algorithm != "ES256") {
					t.Fatalf("kept EC key %q on %s, alg %q", kid, pub.Curve.Params().Name, k.Algorithm)
				}
			default:
				t.Fatalf("kept key %q of type %T", kid, k.Key)
			}
			again.Keys = append(again.Keys, k)
		}
		b, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		set2, skipped2, err := parseJWKS(b)
		if err != nil || skipped2 != 0 || len(set2.byKID) != len(set.byKID) {
			t.Fatalf("re-encoded set: %v, %d skipped", err, skipped2)
		}
		for kid := range set.byKID {
			if _, ok := set2.byKID[kid]; !ok {
				t.Fatalf("re-encoded set lost %q", kid)
			}
		}
	})
}

// seedRand is a deterministic reader for seed keys (not for security).
type seedRand struct{}

func (seedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return len(p), nil
}
