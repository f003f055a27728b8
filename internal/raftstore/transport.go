package raftstore

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Node-to-node traffic goes through one listener per node, under TLS when
// the configuration has a TLS config: the raft protocol (hashicorp/raft's
// network transport) and the cluster's small HTTP API (appends forwarded
// to the leader, joins). The first byte a peer sends tells them apart:
// raft's RPC types are small integers, HTTP starts with a method name.
//
// TLS connections say by ALPN what they are for:
//
//   - ProtoNode, between nodes of the cluster: both present their node
//     certificates and Config.CheckPeer decides, at the handshake and then
//     each second while the connection is open, whether the peer may still
//     speak to this node (a removed node's connections are closed). Raft
//     and every endpoint of the cluster API.
//   - ProtoJoin, from a node that is not a member yet: the server presents
//     Config.JoinTLS's certificate and checks the client's as JoinTLS says
//     (an operator CA as an outer layer, or nothing); only POST
//     /cluster/v1/join is served, whose own check is the node's evidence.

// ALPN protocols of node-to-node TLS.
const (
	ProtoNode = "tkms-node/1"
	ProtoJoin = "tkms-join/1"
)

// tlsConfigs are the TLS configurations derived from Config.TLS.
type tlsConfigs struct {
	server *tls.Config // the listener's: picks node or join by ALPN
	client *tls.Config // dialing a peer (raft, the cluster API)
}

func (s *Store) newTLSConfigs() *tlsConfigs {
	base := s.cfg.TLS
	if base == nil {
		return nil
	}
	check := func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != ProtoNode {
			return errors.New("raftstore: the peer did not speak " + ProtoNode)
		}
		return s.cfg.CheckPeer(cs)
	}
	node := base.Clone()
	node.NextProtos = []string{ProtoNode}
	client := base.Clone()
	client.NextProtos = []string{ProtoNode}
	if s.cfg.CheckPeer != nil {
		// CheckPeer alone decides: node certificates chain to no CA the
		// x509 verifier knows, and name no host.
		node.ClientAuth = tls.RequireAnyClientCert
		node.VerifyConnection = check
		client.InsecureSkipVerify = true
		client.VerifyConnection = check
	}
	var join *tls.Config
	if s.cfg.JoinTLS != nil {
		join = s.cfg.JoinTLS.Clone()
	} else {
		join = base.Clone()
		join.ClientAuth = tls.NoClientCert
		join.ClientCAs = nil
		join.VerifyConnection = nil
	}
	join.NextProtos = []string{ProtoJoin}
	server := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if slices.Contains(h.SupportedProtos, ProtoJoin) {
				return join, nil
			}
			return node, nil
		},
	}
	return &tlsConfigs{server: server, client: client}
}

// mux splits the connections of one listener.
type mux struct {
	log   *slog.Logger
	ln    net.Listener
	tls   *tls.Config
	peers *peerConns
	raft  *subListener
	http  *subListener
	join  *subListener // ProtoJoin connections: joins only
}

func newMux(ln net.Listener, cfg *tls.Config, peers *peerConns, log *slog.Logger) *mux {
	m := &mux{ln: ln, tls: cfg, peers: peers, log: log}
	m.raft = newSubListener(ln.Addr())
	m.http = newSubListener(ln.Addr())
	m.join = newSubListener(ln.Addr())
	go m.serve()
	return m
}

func (m *mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.raft.close()
			m.http.close()
			m.join.close()
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
	joining := false
	if m.tls != nil {
		tc := tls.Server(c, m.tls)
		if err := tc.Handshake(); err != nil {
			m.log.Info("raft: a node-to-node TLS handshake failed", "peer", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		cs := tc.ConnectionState()
		c = tc
		if joining = cs.NegotiatedProtocol == ProtoJoin; !joining {
			c = m.peers.track(tc, cs)
		}
	}
	br := bufio.NewReader(c)
	b, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	switch {
	case joining && b[0] < 0x20:
		c.Close() // raft from a node that is not a member
	case joining:
		m.join.deliver(pc)
	case b[0] < 0x20:
		m.raft.deliver(pc)
	default:
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
	peers     *peerConns
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls == nil {
		return d.Dial("tcp", string(addr))
	}
	return s.peers.dial(context.Background(), d, string(addr), s.tls)
}

// peerConns are the open node-to-node TLS connections (both ways), which
// recheck closes once Config.CheckPeer refuses their peer.
type peerConns struct {
	mu    sync.Mutex
	conns map[*peerConn]struct{}
}

type peerConn struct {
	*tls.Conn
	cs    tls.ConnectionState
	peers *peerConns
}

func (c *peerConn) Close() error {
	c.peers.mu.Lock()
	delete(c.peers.conns, c)
	c.peers.mu.Unlock()
	return c.Conn.Close()
}

func (p *peerConns) track(c *tls.Conn, cs tls.ConnectionState) net.Conn {
	pc := &peerConn{Conn: c, cs: cs, peers: p}
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[*peerConn]struct{}{}
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	return pc
}

// dial opens a node-to-node TLS connection to addr.
func (p *peerConns) dial(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config) (net.Conn, error) {
	td := &tls.Dialer{NetDialer: d, Config: cfg}
	c, err := td.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	return p.track(tc, tc.ConnectionState()), nil
}

// recheck closes the connections whose peer check refuses now.
func (p *peerConns) recheck(check func(tls.ConnectionState) error, log *slog.Logger) {
	p.mu.Lock()
	conns := make([]*peerConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		if err := check(c.cs); err != nil {
			log.Info("raft: closing the connection of a peer no longer trusted", "peer", c.RemoteAddr().String(), "err", err)
			c.Close()
		}
	}
}
