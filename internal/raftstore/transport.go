package raftstore

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Node-to-node traffic goes through one listener per node, under mutual
// TLS when the configuration has a TLS config: the raft protocol
// (hashicorp/raft's network transport) and the cluster's small HTTP API
// (appends forwarded to the leader, joins). The first byte a peer sends
// tells them apart: raft's RPC types are small integers, HTTP starts with
// a method name.

// mux splits the connections of one listener.
type mux struct {
	ln   net.Listener
	tls  *tls.Config
	raft *subListener
	http *subListener
}

func newMux(ln net.Listener, cfg *tls.Config) *mux {
	m := &mux{ln: ln, tls: cfg}
	m.raft = newSubListener(ln.Addr())
	m.http = newSubListener(ln.Addr())
	go m.serve()
	return m
}

func (m *mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.raft.close()
			m.http.close()
			return
		}
		go m.route(c)
	}
}

// route completes the TLS handshake, peeks at the first byte and hands
// the connection on. A peer that says nothing within the timeout is
// dropped.
func (m *mux) route(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if m.tls != nil {
		tc := tls.Server(c, m.tls)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return
		}
		c = tc
	}
	br := bufio.NewReader(c)
	b, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	if b[0] < 0x20 {
		m.raft.deliver(pc)
	} else {
		m.http.deliver(pc)
	}
}

func (m *mux) Close() error { return m.ln.Close() }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// subListener is a net.Listener fed by the mux.
type subListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newSubListener(addr net.Addr) *subListener {
	return &subListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *subListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *subListener) close()         { l.once.Do(func() { close(l.done) }) }
func (l *subListener) Close() error   { l.close(); return nil }
func (l *subListener) Addr() net.Addr { return l.addr }

// streamLayer is raft's StreamLayer over the mux.
type streamLayer struct {
	*subListener
	advertise net.Addr
	tls       *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), s.tls)
}
