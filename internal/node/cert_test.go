package node_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// serviceIdentity is a log key, as the ledger makes it, and its Ed25519
// keys.
func serviceIdentity(t testing.TB, origin string) (ed25519.PrivateKey, ed25519.PublicKey, string) {
	t.Helper()
	skey, vkey, err := translog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := node.ServiceSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := node.ServiceKey(vkey)
	if err != nil {
		t.Fatal(err)
	}
	// The key is the note key's: what it signs verifies under vkey.
	signer, _ := note.NewSigner(skey)
	msg, _ := note.Sign(&note.Note{Text: "x\n"}, signer)
	v, _ := note.NewVerifier(vkey)
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("the service identity keys are not the log key's (%v)", err)
	}
	return priv, pub, vkey
}

// A peer's certificate is accepted only when the service identity signed
// it, it is valid now, it names a node the ledger trusts, and it holds the
// TLS key that node's evidence binds.
func TestCheckPeer(t *testing.T) {
	dir := t.TempDir()
	id := newIdentity(t, dir, devtee.AttesterOptions{})
	other := newIdentity(t, dir, devtee.AttesterOptions{})
	priv, pub, _ := serviceIdentity(t, "tkms/test/1")
	otherPriv, _, _ := serviceIdentity(t, "tkms/other/1")
	now := time.Now()
	issue := func(k ed25519.PrivateKey, nodeID string, tlsKey []byte, at time.Time) []byte {
		t.Helper()
		der, err := node.IssueCertificate(k, "tkms/test/1", "n1", nodeID, tlsKey, at)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	good := issue(priv, id.ID, id.TLSKey, now)
	selfSigned, err := id.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	// trusted: the ledger trusts id with its attested TLS key.
	trusted := func(nodeID string) ([]byte, error) {
		if nodeID == id.ID {
			return id.TLSKey, nil
		}
		return nil, errors.New("not a trusted node")
	}
	removed := func(string) ([]byte, error) { return nil, errors.New("removed by remove_node") }
	for _, tc := range []struct {
		name    string
		der     []byte
		key     ed25519.PublicKey
		at      time.Time
		trusted func(string) ([]byte, error)
		code    string
	}{
		{"endorsed and trusted", good, pub, now, trusted, ""},
		{"not from the service identity", issue(otherPriv, id.ID, id.TLSKey, now), pub, now, trusted, node.CodePeerNotEndorsed},
		{"self-signed", selfSigned, pub, now, trusted, node.CodePeerNotEndorsed},
		{"service identity unknown", good, nil, now, trusted, node.CodePeerNotEndorsed},
		{"node id not trusted", issue(priv, other.ID, other.TLSKey, now), pub, now, trusted, node.CodePeerNotTrusted},
		{"removed node", good, pub, now, removed, node.CodePeerNotTrusted},
		{"TLS key not the attested one", issue(priv, id.ID, other.TLSKey, now), pub, now, trusted, node.CodePeerKeyMismatch},
		{"expired", good, pub, now.Add(node.CertValidity + time.Hour), trusted, node.CodePeerExpired},
		{"not yet valid", good, pub, now.Add(-2 * time.Hour), trusted, node.CodePeerExpired},
		{"not a certificate", []byte("garbage"), pub, now, trusted, node.CodePeerCertInvalid},
		{"no node id", issue(priv, "n1", id.TLSKey, now), pub, now, trusted, node.CodePeerCertInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := node.CheckPeer(tc.der, tc.key, tc.at, tc.trusted)
			if tc.code == "" {
				if err != nil || got != id.ID {
					t.Fatalf("refused: %s, %v", got, err)
				}
				return
			}
			if attest.Code(err) != tc.code {
				t.Fatalf("got %s, %v; want %s", got, err, tc.code)
			}
		})
	}
}

// The node certificate makes a TLS certificate only with the node's own
// TLS key, and names its member.
func TestTLSCertificate(t *testing.T) {
	dir := t.TempDir()
	id := newIdentity(t, dir, devtee.AttesterOptions{})
	other := newIdentity(t, dir, devtee.AttesterOptions{})
	priv, _, _ := serviceIdentity(t, "tkms/test/1")
	der, err := node.IssueCertificate(priv, "tkms/test/1", "member-1", id.ID, id.TLSKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := id.TLSCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if node.CertMember(tc.Leaf) != "member-1" || tc.Leaf.Subject.CommonName != id.ID || tc.Leaf.Issuer.CommonName != "tkms/test/1" {
		t.Fatalf("certificate subject %s, issuer %s", tc.Leaf.Subject, tc.Leaf.Issuer)
	}
	if _, err := other.TLSCertificate(der); err == nil {
		t.Fatal("another node's key made a TLS certificate of the node certificate")
	}
	if _, err := node.IssueCertificate(priv, "o", "m", id.ID, []byte("not a key"), time.Now()); err == nil {
		t.Fatal("a certificate for a key that does not parse")
	}
}

// A TLS handshake between two nodes with endorsed certificates, verified by
// CheckPeer both ways, as raftstore does it; a node whose certificate the
// ledger no longer trusts is refused at the handshake.
func TestCheckPeerHandshake(t *testing.T) {
	dir := t.TempDir()
	a := newIdentity(t, dir, devtee.AttesterOptions{})
	b := newIdentity(t, dir, devtee.AttesterOptions{})
	priv, pub, _ := serviceIdentity(t, "tkms/test/1")
	trustB := true
	trusted := func(id string) ([]byte, error) {
		switch {
		case id == a.ID:
			return a.TLSKey, nil
		case id == b.ID && trustB:
			return b.TLSKey, nil
		}
		return nil, errors.New("not trusted")
	}
	cfg := func(id *node.Identity) *tls.Config {
		der, err := node.IssueCertificate(priv, "tkms/test/1", "m", id.ID, id.TLSKey, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c, err := id.TLSCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{
			Certificates: []tls.Certificate{*c}, ClientAuth: tls.RequireAnyClientCert, InsecureSkipVerify: true,
			MinVersion: tls.VersionTLS13,
			VerifyConnection: func(cs tls.ConnectionState) error {
				_, err := node.CheckPeer(cs.PeerCertificates[0].Raw, pub, time.Now(), trusted)
				return err
			},
		}
	}
	handshake := func() (client, server error) {
		c1, c2 := pipe(t)
		done := make(chan error, 1)
		go func() { done <- tls.Server(c2, cfg(a)).Handshake(); c2.Close() }()
		err := tls.Client(c1, cfg(b)).Handshake()
		c1.Close()
		return err, <-done
	}
	if c, s := handshake(); c != nil || s != nil {
		t.Fatalf("trusted nodes: client %v, server %v", c, s)
	}
	trustB = false
	if _, s := handshake(); attest.Code(s) != node.CodePeerNotTrusted {
		t.Fatalf("an untrusted node's handshake: %v", s)
	}
}

// The TLS key is bound by REPORT_DATA[32:64]: an admitted node's evidence
// vouches for its own TLS key only.
func TestCheckTLSKey(t *testing.T) {
	dir := t.TempDir()
	v := simVerifier(t, dir)
	id := newIdentity(t, dir, devtee.AttesterOptions{})
	other := newIdentity(t, dir, devtee.AttesterOptions{})
	adm, err := node.Check(t.Context(), v, devPolicy(t), id.Public, id.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.CheckTLSKey(id.TLSKey); err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	for name, key := range map[string][]byte{"another node's": other.TLSKey, "not a key": []byte("x"), "a P-384 key": p384} {
		if err := adm.CheckTLSKey(key); attest.Code(err) != node.CodeTLSKeyNotBound {
			t.Errorf("%s TLS key: %v", name, err)
		}
	}
}

func TestServiceKeyRefuses(t *testing.T) {
	_, _, vkey := serviceIdentity(t, "tkms/test/1")
	for _, bad := range []string{"", "a+b", strings.Replace(vkey, "+", "-", 1), vkey + "x", "PRIVATE+KEY+" + vkey} {
		if _, err := node.ServiceKey(bad); err == nil {
			t.Errorf("ServiceKey(%q) accepted", bad)
		}
	}
	if _, err := node.ServiceSigner(vkey); err == nil {
		t.Error("ServiceSigner accepted a verifier key")
	}
}

func ExampleCheckPeer() {
	skey, vkey, _ := translog.GenerateKey("tkms/example/1")
	issuer, _ := node.ServiceSigner(skey)
	service, _ := node.ServiceKey(vkey)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tlsKey, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	nodeID := node.ID(bytes.Repeat([]byte{1}, 32))
	der, _ := node.IssueCertificate(issuer, "tkms/example/1", "kms-1", nodeID, tlsKey, time.Now())
	// The ledger trusts nodeID, whose evidence binds tlsKey.
	trusted := func(id string) ([]byte, error) {
		if id == nodeID {
			return tlsKey, nil
		}
		return nil, errors.New("not trusted")
	}
	id, err := node.CheckPeer(der, service, time.Now(), trusted)
	fmt.Println(id == nodeID, err)
	// Output: true <nil>
}

func pipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
