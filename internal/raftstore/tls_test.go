package raftstore_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/raftstore"
	"github.com/tkms-dev/tkms/internal/store"
)

// selfSigned is a TLS certificate of a fresh P-256 key.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// allowList is a CheckPeer that accepts the certificates it holds, as the
// ledger's trusted nodes would.
type allowList struct {
	mu sync.Mutex
	ok map[string]bool
}

func (a *allowList) set(c tls.Certificate, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ok == nil {
		a.ok = map[string]bool{}
	}
	a.ok[string(c.Certificate[0])] = ok
}

func (a *allowList) check(cs tls.ConnectionState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(cs.PeerCertificates) == 0 || !a.ok[string(cs.PeerCertificates[0].Raw)] {
		return errors.New("not a trusted node")
	}
	return nil
}

// Node-to-node TLS: a peer speaks raft and the cluster API only while
// CheckPeer accepts it, checked at the handshake and again on its open
// connections, which are closed once it is refused (a removed node); a node
// that is not a member reaches the join endpoint alone, under the join
// ALPN, whatever CheckPeer says.
func TestPeerTLS(t *testing.T) {
	dir := t.TempDir()
	sealer, key := newKey(t)
	own, peer := selfSigned(t, "n1"), selfSigned(t, "peer")
	var allow allowList
	allow.set(own, true) // a node talks to itself (a follower forwards to the leader it knows)
	ln := listen(t, filepath.Join(dir, "n1"))
	s, err := raftstore.Open(filepath.Join(dir, "n1"), store.Options{Sealer: sealer, Logger: quiet}, raftstore.Config{
		NodeID: "n1", Listener: ln, Logger: quiet, Bootstrap: true,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		TLS:       &tls.Config{Certificates: []tls.Certificate{own}, MinVersion: tls.VersionTLS13},
		CheckPeer: allow.check,
		Admit: func(context.Context, raftstore.JoinRequest) ([]byte, error) {
			return append([]byte(nil), key...), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Start(func(store.Batch) {})
	waitFor(t, "n1 to lead", s.IsLeader)
	addr := ln.Addr().String()
	nodeTLS := &tls.Config{Certificates: []tls.Certificate{peer}, InsecureSkipVerify: true, NextProtos: []string{raftstore.ProtoNode}, MinVersion: tls.VersionTLS13}

	// Not trusted: the handshake is refused.
	if c, err := tls.Dial("tcp", addr, nodeTLS); err == nil {
		err = c.Handshake()
		if err == nil {
			_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the client's Finished
		}
		c.Close()
		if err == nil || !strings.Contains(err.Error(), "tls") {
			t.Fatalf("an untrusted peer's connection: %v", err)
		}
	}
	// Under the join ALPN it reaches the join endpoint, and nothing else.
	joinTLS := &tls.Config{Certificates: []tls.Certificate{peer}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	side := listen(t, filepath.Join(dir, "n2"))
	defer side.Close()
	res, err := raftstore.Join(context.Background(), addr, raftstore.JoinRequest{NodeID: "n2", Address: side.Addr().String()}, joinTLS)
	if err != nil || !bytes.Equal(res.Handoff, key) {
		t.Fatalf("a join under the join ALPN: %v", err)
	}
	jc := joinTLS.Clone()
	jc.NextProtos = []string{raftstore.ProtoJoin}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: jc}}
	resp, err := hc.Post("https://"+addr+"/cluster/v1/append", "application/json", strings.NewReader(`{"proposals":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the cluster API under the join ALPN: %s", resp.Status)
	}
	hc.CloseIdleConnections()

	// Trusted: it speaks the cluster API, until it is refused; then its
	// open connection is closed.
	allow.set(peer, true)
	c, err := tls.Dial("tcp", addr, nodeTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte("POST /cluster/v1/node HTTP/1.1\r\nHost: n1\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"node_id\":\"peer\"}\n")); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusForbidden {
		t.Fatalf("a trusted peer's request: %s", resp.Status)
	}
	allow.set(peer, false)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var ne net.Error
	if _, err := br.ReadByte(); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection of a peer refused since: %v, want it closed", err)
	}
}
