package raftstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/store"
)

// The cluster's HTTP API, served to other nodes only (on the node port,
// under mutual TLS between endorsed nodes; a node that is not a member yet
// reaches the join endpoint alone, transport.go):
//
//	POST /cluster/v1/append   the proposals of a follower's append; the leader answers with the committed entries
//	POST /cluster/v1/join     a new node asks to be added (as a non-voter) and receives the ledger's secrets
//	POST /cluster/v1/promote  a caught-up non-voter asks to become a voter
//	POST /cluster/v1/node     a member's own status (url, state, last index), for GET /v1/cluster (status.go)
//
// Errors are {"error": message}: 421 from a node that does not lead
// (nothing was done; send it to the leader), 503 when there is no leader
// or leadership was lost with the request in flight (its outcome is not
// known: an append is not sent again), 409 when a join conflicts with a
// member or an entry is refused at apply time, 403 when a joining node is
// refused (its evidence or the node policy; see handoff.go), 400 for a
// request that does not parse.

type wireProposal struct {
	Time    time.Time   `json:"time"`
	Type    ledger.Type `json:"type"`
	Body    []byte      `json:"body"`
	Secret  []byte      `json:"secret,omitempty"`
	DataKey []byte      `json:"data_key,omitempty"`
}

type appendRequest struct {
	Proposals []wireProposal `json:"proposals"`
}

type appendResponse struct {
	Records [][]byte `json:"records"`
}

type joinRequest = JoinRequest

// JoinRequest is what a node sends to join.
type JoinRequest struct {
	// NodeID is the member id the node joins as, Address the node-to-node
	// address the others dial.
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
	// NodeKey is the node's attested key and Evidence the attestation
	// object that binds it (internal/node); Config.Admit checks them.
	NodeKey  []byte `json:"node_key,omitempty"`
	Evidence []byte `json:"evidence,omitempty"`
	// TLSKey is the node's TLS public key (PKIX DER) that the evidence
	// also binds: the key its node certificate will hold.
	TLSKey []byte `json:"tls_key,omitempty"`
}

// JoinResult is what a node learns by joining.
type JoinResult struct {
	// Handoff is what Config.Admit returned for the node (see handoff.go).
	Handoff []byte `json:"handoff"`
	// CommitIndex is the cluster's raft commit index when the node was
	// added: once it has applied that far it is caught up.
	CommitIndex uint64 `json:"commit_index"`
	// Leader is the id of the leader that added it.
	Leader string `json:"leader"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// maxRequest bounds a request body of the cluster API.
const maxRequest = 16 << 20

func (s *Store) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cluster/v1/append", s.serveAppend)
	mux.HandleFunc("POST /cluster/v1/join", s.serveJoin)
	mux.HandleFunc("POST /cluster/v1/promote", s.servePromote)
	mux.HandleFunc("POST /cluster/v1/node", s.serveNode)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorResponse{Error: err.Error()})
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (s *Store) serveAppend(w http.ResponseWriter, r *http.Request) {
	var req appendRequest
	if err := readJSON(r, &req); err != nil || len(req.Proposals) == 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("raftstore: append request: %v", err))
		return
	}
	if !s.IsLeader() {
		// Nothing was done: the sender may try again (at the leader).
		writeErr(w, http.StatusMisdirectedRequest, fmt.Errorf("%w: %s is not the leader", ErrNoLeader, s.cfg.NodeID))
		return
	}
	props := make([]store.Proposal, len(req.Proposals))
	for i, p := range req.Proposals {
		props[i] = store.Proposal{Time: p.Time, Type: p.Type, Body: p.Body, Secret: p.Secret, DataKey: p.DataKey}
		if err := store.CheckProposal(props[i]); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
	}
	es, err := s.appendLocal(r.Context(), props)
	switch {
	case errors.Is(err, ErrNoLeader):
		// Leadership was lost while the entries were in flight: they
		// may yet be committed, so the sender must not send them again.
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	case errors.Is(err, ErrRejected):
		writeErr(w, http.StatusConflict, err)
		return
	case err != nil:
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	var resp appendResponse
	for _, e := range es {
		resp.Records = append(resp.Records, ledger.MarshalRecord(e))
	}
	writeJSON(w, http.StatusOK, resp)
}

// forward sends an append to the leader and returns its entries.
func (s *Store) forward(ctx context.Context, props []store.Proposal) ([]*ledger.Entry, error) {
	_, addr := s.Leader()
	if addr == "" {
		return nil, notSent{ErrNoLeader}
	}
	req := appendRequest{Proposals: make([]wireProposal, len(props))}
	for i, p := range props {
		req.Proposals[i] = wireProposal{Time: p.Time, Type: p.Type, Body: p.Body, Secret: p.Secret, DataKey: p.DataKey}
	}
	var resp appendResponse
	if err := post(ctx, s.client, s.cfg.TLS, addr, "/cluster/v1/append", req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Records) != len(props) {
		return nil, fmt.Errorf("raftstore: the leader answered %d entries for %d proposals", len(resp.Records), len(props))
	}
	es := make([]*ledger.Entry, len(resp.Records))
	for i, rec := range resp.Records {
		e, err := ledger.UnmarshalRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("raftstore: the leader's answer: %w", err)
		}
		es[i] = e
	}
	return es, nil
}

// post sends a request of the cluster API to the node at addr.
func post(ctx context.Context, c *http.Client, cfg *tls.Config, addr, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	scheme := "https"
	if cfg == nil {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isTLSRefusal(err) {
			return fmt.Errorf("raftstore: %s refused the mutual TLS handshake, or we refused its certificate: %w", addr, err)
		}
		dial := isDialError(err)
		err = fmt.Errorf("%w (cannot reach %s: %v)", ErrNoLeader, addr, err)
		if dial {
			// Nothing was sent: the leader is down or unreachable; an
			// append may wait for the next one.
			return notSent{err}
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRequest))
	if err != nil {
		return fmt.Errorf("%w (reading the answer of %s: %v)", ErrNoLeader, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		json.Unmarshal(b, &e)
		switch resp.StatusCode {
		case http.StatusMisdirectedRequest:
			return notSent{fmt.Errorf("%w (%s)", ErrNoLeader, e.Error)}
		case http.StatusServiceUnavailable:
			if strings.Contains(e.Error, ErrFounding.Error()) {
				return ErrFounding
			}
			return fmt.Errorf("%w (%s)", ErrNoLeader, e.Error)
		case http.StatusConflict:
			return fmt.Errorf("%w (%s)", ErrRejected, e.Error)
		case http.StatusForbidden:
			return fmt.Errorf("%w (%s)", ErrNodeRefused, strings.TrimPrefix(e.Error, ErrNodeRefused.Error()+": "))
		}
		return fmt.Errorf("raftstore: %s%s: %s: %s", addr, path, resp.Status, e.Error)
	}
	return json.Unmarshal(b, out)
}

// isTLSRefusal reports whether err is a failed certificate check (a node
// of another cluster), which no retry mends.
func isTLSRefusal(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var alert tls.AlertError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &alert) ||
		strings.Contains(err.Error(), "remote error: tls:")
}

// isDialError reports whether err is a failure to connect.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Errors of joining.
var (
	ErrNodeIDInUse = errors.New("raftstore: the node id is in use by another member at another address")
)

func (s *Store) serveJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if err := readJSON(r, &req); err != nil || req.NodeID == "" || req.Address == "" {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("raftstore: join request needs node_id and address (%v)", err))
		return
	}
	if s.cfg.Vouch != nil && !s.removed(req.NodeID) && s.isMember(req.NodeID, req.Address) {
		// A restarted member: this node may need its vote before any
		// leader exists to admit it.
		s.cfg.Vouch(r.Context(), req)
	}
	if !s.IsLeader() {
		// Ask the leader on the joiner's behalf.
		_, addr := s.Leader()
		if addr == "" {
			writeErr(w, http.StatusServiceUnavailable, ErrNoLeader)
			return
		}
		var res JoinResult
		if err := post(r.Context(), s.client, s.cfg.TLS, addr, "/cluster/v1/join", req, &res); err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	if s.founding.Load() {
		writeErr(w, http.StatusServiceUnavailable, ErrFounding)
		return
	}
	if s.removed(req.NodeID) {
		writeErr(w, http.StatusConflict, fmt.Errorf("%w: %s was removed from the cluster by governance (remove_node); a node joins under a new id", ErrNodeIDInUse, req.NodeID))
		return
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == req.NodeID && string(srv.Address) != req.Address {
			writeErr(w, http.StatusConflict, fmt.Errorf("%w: %s is at %s", ErrNodeIDInUse, req.NodeID, srv.Address))
			return
		}
		if string(srv.Address) == req.Address && string(srv.ID) != req.NodeID {
			writeErr(w, http.StatusConflict, fmt.Errorf("raftstore: the address %s is that of member %s", req.Address, srv.ID))
			return
		}
	}
	handoff, err := s.handoff(r.Context(), req)
	if err != nil {
		s.log.Warn("raft: a joining node was refused", "node", req.NodeID, "address", req.Address, "err", err)
		writeErr(w, statusOf(err), err)
		return
	}
	f := s.raft.AddNonvoter(raft.ServerID(req.NodeID), raft.ServerAddress(req.Address), 0, 30*time.Second)
	if err := f.Error(); err != nil {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%w (%v)", ErrNoLeader, err))
		return
	}
	s.log.Info("raft: node added as a non-voter", "joined", req.NodeID, "address", req.Address)
	writeJSON(w, http.StatusOK, JoinResult{Handoff: handoff, CommitIndex: s.raft.CommitIndex(), Leader: s.cfg.NodeID})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNoLeader):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrRejected), errors.Is(err, ErrNodeIDInUse):
		return http.StatusConflict
	case errors.Is(err, ErrNodeRefused):
		return http.StatusForbidden
	}
	return http.StatusBadGateway
}

func (s *Store) servePromote(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if err := readJSON(r, &req); err != nil || req.NodeID == "" || req.Address == "" {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("raftstore: promote request needs node_id and address (%v)", err))
		return
	}
	if !s.IsLeader() {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%w: %s is not the leader", ErrNoLeader, s.cfg.NodeID))
		return
	}
	f := s.raft.AddVoter(raft.ServerID(req.NodeID), raft.ServerAddress(req.Address), 0, 30*time.Second)
	if err := f.Error(); err != nil {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("%w (%v)", ErrNoLeader, err))
		return
	}
	s.log.Info("raft: node promoted to voter", "node", req.NodeID)
	writeJSON(w, http.StatusOK, struct{}{})
}

// Join asks the cluster node at addr to add a node (req) and returns what
// the node needs to start: its handoff and the commit index to catch up
// to. cfg is the joining node's TLS client configuration, used with ALPN
// ProtoJoin: its client certificate (an operator CA's, if the cluster
// asks for one) and how it checks the node it asks (nil: plain TCP, tests
// only).
func Join(ctx context.Context, addr string, req JoinRequest, cfg *tls.Config) (*JoinResult, error) {
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{ProtoJoin}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Minute}
	defer c.CloseIdleConnections()
	var res JoinResult
	if err := post(ctx, c, cfg, addr, "/cluster/v1/join", req, &res); err != nil {
		return nil, fmt.Errorf("raftstore: join %s: %w", addr, err)
	}
	if len(res.Handoff) == 0 {
		return nil, fmt.Errorf("raftstore: join %s: the answer holds no handoff", addr)
	}
	return &res, nil
}

// promoteWhenCaughtUp waits until the node has applied the cluster's log
// up to index, then asks the leader to make it a voter, until it is one.
func (s *Store) promoteWhenCaughtUp(index uint64) {
	defer s.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		}
		if s.raft.AppliedIndex() < index {
			continue
		}
		if s.isVoter() {
			return
		}
		_, addr := s.Leader()
		if addr == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := post(ctx, s.client, s.cfg.TLS, addr, "/cluster/v1/promote", joinRequest{NodeID: s.cfg.NodeID, Address: string(s.trans.LocalAddr())}, &struct{}{})
		cancel()
		if err != nil {
			s.log.Debug("raft: promotion", "err", err)
		}
	}
}

// isMember reports whether the cluster's configuration has a server id at
// address addr.
func (s *Store) isMember(id, addr string) bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id && string(srv.Address) == addr {
			return true
		}
	}
	return false
}

func (s *Store) isVoter() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == s.cfg.NodeID {
			return srv.Suffrage == raft.Voter
		}
	}
	return false
}
