package node_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/node"
)

// FuzzCheckPeer: the certificate a peer presents at a node-to-node TLS
// handshake is untrusted bytes. CheckPeer refuses with one of its codes or
// accepts, and it accepts only the endorsed certificate it was seeded with
// (anything else is not signed by the service identity).
func FuzzCheckPeer(f *testing.F) {
	priv, pub, _ := serviceIdentity(f, "tkms/fuzz/1")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tlsKey, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	nodeID := node.ID(make([]byte, 32))
	now := time.Now()
	good, err := node.IssueCertificate(priv, "tkms/fuzz/1", "m", nodeID, tlsKey, now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	trusted := func(id string) ([]byte, error) {
		if id == nodeID {
			return tlsKey, nil
		}
		return nil, errors.New("not trusted")
	}
	codes := map[string]bool{node.CodePeerCertInvalid: true, node.CodePeerNotEndorsed: true, node.CodePeerExpired: true, node.CodePeerNotTrusted: true, node.CodePeerKeyMismatch: true}
	f.Fuzz(func(t *testing.T, der []byte) {
		id, err := node.CheckPeer(der, pub, now, trusted)
		if err != nil {
			if !codes[attest.Code(err)] {
				t.Fatalf("refusal without a peer code: %v", err)
			}
			return
		}
		c, perr := x509.ParseCertificate(der)
		if id != nodeID || perr != nil || string(c.RawSubjectPublicKeyInfo) != string(tlsKey) {
			t.Fatalf("accepted %s for another node or key", id)
		}
	})
}

// FuzzServiceKey: the service identity (a note verifier key) a client reads
// from GET /v1/service. What parses is a 32-byte Ed25519 key.
func FuzzServiceKey(f *testing.F) {
	_, _, vkey := serviceIdentity(f, "tkms/fuzz/1")
	f.Add(vkey)
	f.Add("a+b+c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := node.ServiceKey(s)
		if err == nil && len(k) != 32 {
			t.Fatalf("a %d-byte service key", len(k))
		}
	})
}
