package httpapi

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
)

// The governance API (docs/governance.md "API"): members submit signed
// COSE_Sign1 proposals, ballots and withdrawals; anyone reads proposals,
// members and the constitution. The messages are checked and counted by
// the kms (Service.Propose, Ballot, Withdraw); this file maps its answers
// and refusals to HTTP.

// Error codes of the governance endpoints besides the GOV_* codes of
// kms.GovError.
const (
	CodeGovRequired          = "GOV_REQUIRED"
	CodeNotGoverned          = "GOV_NOT_GOVERNED"
	CodeUnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
)

// govMaxBody caps the body of a governance message: gov.MaxMessageSize,
// 64 KiB, whatever Options.MaxBodyBytes says.
const govMaxBody = gov.MaxMessageSize

// govStatus maps the codes of refused governance messages to their HTTP
// status (docs/governance.md "API", Errors).
var govStatus = map[string]int{
	gov.CodeInvalidMessage:     http.StatusBadRequest,
	gov.CodeInvalidAction:      http.StatusBadRequest,
	gov.CodeStale:              http.StatusBadRequest,
	gov.CodeUnsafeConstitution: http.StatusBadRequest,
	gov.CodeBadSignature:       http.StatusUnauthorized,
	kms.CodeNotAMember:         http.StatusUnauthorized,
	kms.CodeDuplicate:          http.StatusConflict,
	kms.CodeProposalClosed:     http.StatusConflict,
	kms.CodeProposalNotFound:   http.StatusNotFound,
	kms.CodeForbidden:          http.StatusForbidden,
}

func (s *Server) govRoutes() {
	s.handleMethods("/v1/gov/proposals", map[string]http.HandlerFunc{
		http.MethodGet:  s.govListProposals,
		http.MethodPost: s.govPropose,
	})
	s.handleGetPattern("/v1/gov/proposals/{id}", s.govGetProposal)
	s.handlePattern("/v1/gov/proposals/{id}/ballots", http.MethodPost, s.govBallot)
	s.handlePattern("/v1/gov/proposals/{id}/withdraw", http.MethodPost, s.govWithdraw)
	s.handle("/v1/gov/members", http.MethodGet, s.govMembers)
	s.handle("/v1/gov/constitution", http.MethodGet, s.govConstitution)
	s.handleMethods("/app/proposals", map[string]http.HandlerFunc{
		http.MethodGet:  s.appProposalsCOSE,
		http.MethodPost: s.appPropose,
	})
}

// handleMethods registers one handler per method for path, answering 405
// with the JSON error shape for other methods. A GET handler also answers
// HEAD.
func (s *Server) handleMethods(path string, hs map[string]http.HandlerFunc) {
	var allow []string
	for m := range hs {
		allow = append(allow, m)
	}
	slices.Sort(allow)
	allowed := strings.Join(allow, ", ")
	f := func(w http.ResponseWriter, r *http.Request) {
		m := r.Method
		if m == http.MethodHead {
			m = http.MethodGet
		}
		h, ok := hs[m]
		if !ok {
			w.Header().Set("Allow", allowed)
			s.fail(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+path+"; use "+allowed)
			return
		}
		h(w, r)
	}
	s.mux.HandleFunc(path, f)
	s.exact[path] = f
}

func (s *Server) govResult(p *state.Proposal, e *ledger.Entry) api.GovResult {
	return api.GovResult{
		ID: p.ID, State: p.State(e.Time), Approvals: len(p.Approvals), Rejections: len(p.Rejections), Needed: p.Needed,
		Seq: e.Seq, Receipt: s.receiptJSON(e.Seq),
	}
}

// receiptJSON returns the receipt of ledger entry seq as a JSON object, or
// nil (logged) if it cannot be built.
func (s *Server) receiptJSON(seq uint64) json.RawMessage {
	r, err := s.svc.Receipt(seq)
	if err != nil {
		s.log.Error("cannot build a log receipt", "seq", seq, "err", err)
		return nil
	}
	return r.Marshal()
}

// govMessage reads a governance message: a body of type application/cose
// of at most 64 KiB. A wrong type is answered 415, an empty body 400.
func (s *Server) govMessage(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if !isCOSE(r) {
		s.fail(w, r, http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "the body must be a COSE_Sign1 governance message with Content-Type application/cose")
		return nil, false
	}
	raw, ok := s.readGovBody(w, r)
	if !ok {
		return nil, false
	}
	if len(raw) == 0 {
		s.fail(w, r, http.StatusBadRequest, gov.CodeInvalidMessage, "the body is empty: want a COSE_Sign1 governance message signed by a member (tkms gov)")
		return nil, false
	}
	return raw, true
}

// readGovBody reads the body within the cap of governance messages.
func (s *Server) readGovBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, govMaxBody)
	return s.readBody(w, r)
}

// isCOSE reports whether r's Content-Type is application/cose, with or
// without parameters.
func isCOSE(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/cose"
}

// govFail answers a refused or failed governance message. A *kms.GovError
// is the submitter's to fix and its message is safe to show; anything else
// is the server's, logged and answered 503 (nothing was recorded).
func (s *Server) govFail(w http.ResponseWriter, r *http.Request, err error) {
	var ge *kms.GovError
	if errors.As(err, &ge) {
		status, ok := govStatus[ge.Code]
		if !ok {
			status = http.StatusBadRequest
		}
		if errors.Is(err, state.ErrNotGoverned) {
			s.fail(w, r, http.StatusConflict, CodeNotGoverned, "this ledger is not governed: it has no members (tkms init --members) to sign proposals")
			return
		}
		s.fail(w, r, status, ge.Code, ge.Message)
		return
	}
	s.log.ErrorContext(r.Context(), "governance: cannot record the message", "path", r.URL.Path, "err", err)
	if s.storageFailed(w, r, err) {
		return
	}
	s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the message could not be recorded; see the server log")
}

// govPropose serves POST /v1/gov/proposals.
func (s *Server) govPropose(w http.ResponseWriter, r *http.Request) {
	raw, ok := s.govMessage(w, r)
	if !ok {
		return
	}
	p, e, err := s.svc.Propose(r.Context(), raw, false)
	if err != nil {
		s.govFail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, s.govResult(p, e))
}

// govBallot serves POST /v1/gov/proposals/{id}/ballots.
func (s *Server) govBallot(w http.ResponseWriter, r *http.Request) {
	raw, ok := s.govMessage(w, r)
	if !ok {
		return
	}
	p, e, err := s.svc.Ballot(r.Context(), r.PathValue("id"), raw)
	if err != nil {
		s.govFail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, s.govResult(p, e))
}

// govWithdraw serves POST /v1/gov/proposals/{id}/withdraw.
func (s *Server) govWithdraw(w http.ResponseWriter, r *http.Request) {
	raw, ok := s.govMessage(w, r)
	if !ok {
		return
	}
	p, e, err := s.svc.Withdraw(r.Context(), r.PathValue("id"), raw)
	if err != nil {
		s.govFail(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, s.govResult(p, e))
}

func govProposal(p *state.Proposal, now time.Time) api.GovProposal {
	out := api.GovProposal{
		ID: p.ID, State: p.State(now), Approvals: len(p.Approvals), Rejections: len(p.Rejections), Needed: p.Needed,
		Proposer: p.Proposer, CreatedAt: p.CreatedAt.Unix(), ExpiresAt: p.ExpiresAt.Unix(), Compat: p.Compat,
		Seq: p.Seq, DecidedSeq: p.DecidedSeq, Actions: []api.GovAction{}, Ballots: []api.GovBallot{},
	}
	for _, a := range p.Actions {
		out.Actions = append(out.Actions, api.GovAction{Name: a.Name, Args: a.Args, Description: gov.DescribeAction(a)})
	}
	for _, b := range p.Ballots {
		out.Ballots = append(out.Ballots, api.GovBallot{Member: b.Member, Vote: b.Vote, CreatedAt: b.CreatedAt.Unix(), Seq: b.Seq})
	}
	return out
}

// proposals returns every proposal with its state at now, newest first.
func (s *Server) proposals(now time.Time) []api.GovProposal {
	out := []api.GovProposal{}
	s.svc.Read(func(st *state.State) {
		ps := st.ProposalList()
		for i := len(ps) - 1; i >= 0; i-- {
			out = append(out, govProposal(ps[i], now))
		}
	})
	return out
}

// govListProposals serves GET /v1/gov/proposals: {"proposals":[...]}, every
// proposal, newest first. ?state= keeps those in one state.
func (s *Server) govListProposals(w http.ResponseWriter, r *http.Request) {
	want := state.ProposalState(r.URL.Query().Get("state"))
	switch want {
	case "", state.ProposalOpen, state.ProposalAccepted, state.ProposalRejected, state.ProposalWithdrawn, state.ProposalExpired:
	default:
		s.fail(w, r, http.StatusBadRequest, CodeBadRequest, "state must be open, accepted, rejected, withdrawn or expired")
		return
	}
	ps := s.proposals(s.svc.Now())
	if want != "" {
		ps = slices.DeleteFunc(ps, func(p api.GovProposal) bool { return p.State != want })
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, api.GovProposals{Proposals: ps})
}

// govGetProposal serves GET /v1/gov/proposals/{id}.
func (s *Server) govGetProposal(w http.ResponseWriter, r *http.Request) {
	id, now := r.PathValue("id"), s.svc.Now()
	var out *api.GovProposal
	s.svc.Read(func(st *state.State) {
		if p := st.Proposal(id); p != nil {
			v := govProposal(p, now)
			out = &v
		}
	})
	if out == nil {
		s.fail(w, r, http.StatusNotFound, kms.CodeProposalNotFound, "no proposal with id "+truncate(id, 100))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, out)
}

// govMembers serves GET /v1/gov/members: {"members":[...]}, the active
// members in the order they were added; none on a ledger not governed.
func (s *Server) govMembers(w http.ResponseWriter, r *http.Request) {
	out := []api.GovMember{}
	s.svc.Read(func(st *state.State) {
		for _, m := range st.ActiveMembers() {
			gm := api.GovMember{ID: m.ID, Name: m.Name, SigningKey: m.SigningKey, RecoveryKey: m.RecoveryKey, AddedSeq: m.AddedSeq}
			if k := m.EncryptionKey; k != nil {
				gm.EncryptionKey = &api.EncryptionKey{Suite: k.Suite, PublicKey: k.PublicKey}
			}
			out = append(out, gm)
		}
	})
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, struct {
		Members []api.GovMember `json:"members"`
	}{out})
}

// govConstitution serves GET /v1/gov/constitution: {"constitution":{...},
// "seq":N}, the constitution in force and the entry that set it.
func (s *Server) govConstitution(w http.ResponseWriter, r *http.Request) {
	var c json.RawMessage
	var seq uint64
	s.svc.Read(func(st *state.State) {
		if st.Constitution != nil {
			c, _ = json.Marshal(st.Constitution)
			seq = st.ConstitutionSeq
		}
	})
	if c == nil {
		s.fail(w, r, http.StatusNotFound, CodeNotGoverned, "this ledger is not governed: it has no constitution")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, struct {
		Constitution json.RawMessage `json:"constitution"`
		Seq          uint64          `json:"seq"`
	}{c, seq})
}

// AppProposal is the answer of POST /app/proposals: the fields of CCF's
// proposal answer, which the originals imitate (proposal_id, proposer_id,
// state, ballot_count, votes: each ballot's member and whether it
// approves), with tkms's counts. Unlike the originals' (accepted at once, state "state"), the
// state is that of tkms's constitution: open until enough members approve.
type AppProposal struct {
	ProposalID  string              `json:"proposal_id"`
	ProposerID  string              `json:"proposer_id"`
	State       state.ProposalState `json:"state"`
	BallotCount int                 `json:"ballot_count"`
	Votes       map[string]bool     `json:"votes"`
	ID          string              `json:"id"`
	Approvals   int                 `json:"approvals"`
	Rejections  int                 `json:"rejections"`
	Needed      int                 `json:"needed"`
	Seq         uint64              `json:"seq,omitempty"`
	Receipt     json.RawMessage     `json:"receipt,omitempty"`
}

func appProposal(p *state.Proposal, now time.Time) AppProposal {
	votes := make(map[string]bool, len(p.Ballots))
	for _, b := range p.Ballots {
		votes[b.Member] = b.Vote == gov.VoteApprove
	}
	return AppProposal{
		ProposalID: p.ID, ProposerID: p.Proposer, State: p.State(now), BallotCount: len(p.Ballots), Votes: votes,
		ID: p.ID, Approvals: len(p.Approvals), Rejections: len(p.Rejections), Needed: p.Needed,
	}
}

// appPropose serves POST /app/proposals: the originals' COSE_Sign1
// proposal, subject to the same constitution as POST /v1/gov/proposals.
func (s *Server) appPropose(w http.ResponseWriter, r *http.Request) {
	raw, ok := s.govMessage(w, r)
	if !ok {
		return
	}
	p, e, err := s.svc.Propose(r.Context(), raw, true)
	if err != nil {
		s.govFail(w, r, err)
		return
	}
	out := appProposal(p, e.Time)
	out.Seq, out.Receipt = e.Seq, s.receiptJSON(e.Seq)
	s.writeJSON(w, http.StatusOK, out)
}

// appRefresh serves POST /app/refresh. On a ledger that is not governed it
// is refresh: the operator rotates with its token. On a governed ledger
// the token no longer suffices: the body must be a member's proposal whose
// only action is rotate_key_now, which the constitution decides. Accepted
// at once (as with tkms dev's one member), the rotation has run and the
// answer is the new key, as refresh's; still open, the answer is 202 with
// the proposal's state, for the other members to approve.
func (s *Server) appRefresh(w http.ResponseWriter, r *http.Request) {
	if !s.svc.Governed() {
		s.refresh(w, r)
		return
	}
	var raw []byte
	if isCOSE(r) {
		var ok bool
		if raw, ok = s.readGovBody(w, r); !ok {
			return
		}
	}
	if len(raw) == 0 {
		s.fail(w, r, http.StatusForbidden, CodeGovRequired, rotationHint+". To rotate now, a member signs a proposal whose only action is rotate_key_now (tkms keys rotate --key MEMBER.pem, or tkms gov propose) and posts it here with Content-Type application/cose; on a governed ledger the operator token no longer rotates keys")
		return
	}
	// Only a rotation goes through here: anything else is proposed at
	// /v1/gov/proposals, where the submitter sees what it asks for.
	m, err := gov.ParseMessage(raw)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, gov.CodeInvalidMessage, err.Error())
		return
	}
	if m.Type != gov.MsgProposal {
		s.fail(w, r, http.StatusBadRequest, gov.CodeInvalidMessage, "a "+string(m.Type)+" message where a proposal of rotate_key_now is expected")
		return
	}
	actions, err := gov.DecodeProposal(m)
	if err != nil {
		code := gov.Code(err)
		if code == "" {
			code = gov.CodeInvalidMessage
		}
		s.govFail(w, r, &kms.GovError{Code: code, Message: err.Error(), Err: err})
		return
	}
	if len(actions) != 1 || actions[0].Name != gov.ActRotateKeyNow {
		s.fail(w, r, http.StatusBadRequest, gov.CodeInvalidAction, "/app/refresh takes a proposal whose only action is rotate_key_now; propose other actions at /v1/gov/proposals")
		return
	}
	// A rotation that could not run now is refused before anything is
	// written, as an ungoverned refresh is.
	if err := s.svc.CheckForcedRotation(); errors.Is(err, kms.ErrKeyLimit) {
		s.fail(w, r, http.StatusConflict, CodeKeyLimit, "too many unexpired keys: the remaining numeric ids are reserved for scheduled rotation; wait for keys to expire")
		return
	}
	p, e, err := s.svc.Propose(r.Context(), raw, false)
	if err != nil {
		s.govFail(w, r, err)
		return
	}
	switch p.State(e.Time) {
	case state.ProposalOpen:
		s.writeJSON(w, http.StatusAccepted, s.govResult(p, e))
		return
	case state.ProposalAccepted:
	default:
		s.fail(w, r, http.StatusConflict, kms.CodeProposalClosed, "the rotation was proposed as "+p.ID+" and is "+string(p.State(e.Time)))
		return
	}
	// Accepted: Propose ran the rotation, whose key.created names the
	// proposal, before returning.
	var k *state.Key
	reason := state.GovernanceReason + p.ID
	s.svc.Read(func(st *state.State) {
		for _, c := range st.Live() {
			if c.Reason == reason {
				cc := *c
				k = &cc
			}
		}
	})
	if k == nil {
		s.log.ErrorContext(r.Context(), "refresh: the proposal was accepted but no key was created yet", "proposal", p.ID, "seq", e.Seq)
		if s.storageFailed(w, r, s.svc.WriteErr()) {
			return
		}
		s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the rotation was accepted as proposal "+p.ID+" but the key could not be created yet (see the server log); the scheduler retries it")
		return
	}
	item, err := keyItem(k)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, CodeInternal, "cannot encode key")
		return
	}
	s.writeJSON(w, http.StatusOK, struct {
		pubKeyItem
		ProposalID string `json:"proposal_id"`
	}{pubKeyItem{Item: item, Receipt: s.receipt(k.Seq)}, p.ID})
}
