package recovery

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
)

// A Session collects members' shares on a recovering node until the
// threshold recovers the ledger secret. Every refusal has its code, and
// leaves the shares already accepted as they were.
type Session struct {
	cfg    SessionConfig
	mu     sync.Mutex
	got    map[string][]byte // member id -> verified share
	order  []string
	secret []byte
	done   chan struct{}
}

// SessionConfig configures a Session.
type SessionConfig struct {
	// ID is the recovery id: 64 lowercase hex characters, random, that
	// the node publishes and every share is signed for.
	ID string
	// Shares are the latest recovery shares of the audited ledger copy,
	// recorded in entry SharesSeq.
	Shares    *Shares
	SharesSeq uint64
	// Member returns the active member that signs as kid.
	Member func(kid string) (gov.Member, bool)
	// Window is how far a share's created_at may be from Now.
	Window time.Duration
	Now    func() time.Time
	// Status is the public part of GET /v1/recovery: the audited copy.
	Status api.RecoveryStatus
	// Public, if set, serves the GET requests of other paths: the public
	// state of the ledger copy, read-only.
	Public http.Handler
}

// NewSessionID returns a fresh recovery id.
func NewSessionID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("recovery: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// NewSession starts collecting shares.
func NewSession(cfg SessionConfig) *Session {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Session{cfg: cfg, got: map[string][]byte{}, done: make(chan struct{})}
}

// Done is closed once the ledger secret is recovered.
func (s *Session) Done() <-chan struct{} { return s.done }

// Result returns the recovered ledger secret and the members whose shares
// recovered it, in the order they arrived. The caller owns the secret.
func (s *Session) Result() ([]byte, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secret, slices.Clone(s.order)
}

// Submit takes one signed share message. It returns the shares accepted
// and whether they recovered the secret.
func (s *Session) Submit(raw []byte) (api.RecoveryShareResult, error) {
	res := api.RecoveryShareResult{Threshold: s.cfg.Shares.Threshold}
	m, err := gov.ParseMessage(raw)
	if err != nil {
		return res, fail(CodeBadMessage, "%v", err)
	}
	if m.Type != gov.MsgRecoveryShare {
		return res, fail(CodeBadMessage, "a %s message, want %s", m.Type, gov.MsgRecoveryShare)
	}
	if m.ProposalID != s.cfg.ID {
		return res, fail(CodeWrongRecovery, "the share is signed for recovery %s, this node's recovery is %s", short(m.ProposalID), short(s.cfg.ID))
	}
	mem, ok := s.cfg.Member(m.Signer)
	if !ok {
		return res, fail(CodeNotMember, "%s is not an active member of the recovered ledger", short(m.Signer))
	}
	if err := m.Verify(mem); err != nil {
		return res, fail(CodeNotMember, "the share is not signed by member %s: %v", short(mem.ID), err)
	}
	if err := gov.CheckCreatedAt(m, s.cfg.Now(), s.cfg.Window); err != nil {
		return res, fail(CodeBadMessage, "%v", err)
	}
	var p api.RecoveryShare
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		return res, fail(CodeBadMessage, "payload: %v", err)
	}
	ss := s.cfg.Shares.Share(mem.ID)
	if ss == nil {
		return res, fail(CodeNotMember, "member %s holds no share of the recovery shares of entry %d", short(mem.ID), s.cfg.SharesSeq)
	}
	if p.SharesSeq != s.cfg.SharesSeq {
		return res, fail(CodeShareInvalid, "a share of the recovery shares of entry %d, but the latest are those of entry %d: fetch the share again", p.SharesSeq, s.cfg.SharesSeq)
	}
	if p.KeyHash != ss.KeyHash {
		return res, fail(CodeWrongKey, "the share was opened with encryption key %s, but member %s's share is sealed to key %s", short(p.KeyHash), short(mem.ID), short(ss.KeyHash))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	res.Received = len(s.got)
	if s.secret != nil {
		res.Recovered = true
		return res, fail(CodeDone, "the service is recovered already; no more shares are needed")
	}
	if _, dup := s.got[mem.ID]; dup {
		return res, fail(CodeReplayed, "member %s's share was accepted already", short(mem.ID))
	}
	if err := s.cfg.Shares.Verify(mem.ID, p.Share); err != nil {
		return res, err
	}
	s.got[mem.ID] = p.Share
	s.order = append(s.order, mem.ID)
	res.Received = len(s.got)
	if len(s.got) < s.cfg.Shares.Threshold {
		return res, nil
	}
	secret, err := s.cfg.Shares.Combine(s.got)
	if err != nil {
		// Every share verified, yet they do not open the secret: keep
		// them, and say so; nothing was opened.
		return res, err
	}
	s.secret = secret
	res.Recovered = true
	close(s.done)
	return res, nil
}

// Status returns GET /v1/recovery.
func (s *Session) Status() api.RecoveryStatus {
	st := s.cfg.Status
	st.RecoveryID, st.SharesSeq, st.SharesVersion, st.Threshold = s.cfg.ID, s.cfg.SharesSeq, s.cfg.Shares.Version, s.cfg.Shares.Threshold
	st.Holders = []string{}
	for _, m := range s.cfg.Shares.Members {
		st.Holders = append(st.Holders, m.MemberID)
	}
	s.mu.Lock()
	st.Received = slices.Clone(s.order)
	st.State = api.RecoveryWaiting
	if s.secret != nil {
		st.State = api.RecoveryRecovered
	}
	s.mu.Unlock()
	if st.Received == nil {
		st.Received = []string{}
	}
	return st
}

// CodeWaiting answers every other request of a node waiting for shares.
const CodeWaiting = "RECOVERY_WAITING"

// Handler serves the recovery API (docs/recovery.md):
//
//	GET  /v1/recovery         the recovery's status (api.RecoveryStatus)
//	GET  /v1/recovery/shares  the sealed shares (Shares), for members to open theirs
//	POST /v1/recovery/share   a member's signed share (api.RecoveryShare in COSE_Sign1)
//
// and refuses everything else with 503 RECOVERY_WAITING (GET requests go
// to SessionConfig.Public, if set).
func (s *Session) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/recovery" && r.Method == http.MethodGet:
			writeJSON(w, http.StatusOK, s.Status())
		case r.URL.Path == "/v1/recovery/shares" && r.Method == http.MethodGet:
			writeJSON(w, http.StatusOK, s.cfg.Shares)
		case r.URL.Path == "/v1/recovery/share" && r.Method == http.MethodPost:
			raw, err := io.ReadAll(io.LimitReader(r.Body, gov.MaxMessageSize+1))
			if err != nil {
				writeErr(w, http.StatusBadRequest, CodeBadMessage, "reading the body: "+err.Error())
				return
			}
			if len(raw) > gov.MaxMessageSize {
				writeErr(w, http.StatusRequestEntityTooLarge, CodeBadMessage, fmt.Sprintf("a share message of more than %d bytes", gov.MaxMessageSize))
				return
			}
			res, err := s.Submit(raw)
			if err != nil {
				msg := err.Error()
				var re *Error
				if errors.As(err, &re) {
					msg = re.Err.Error()
				}
				writeErr(w, statusOf(err), CodeOf(err), msg)
				return
			}
			writeJSON(w, http.StatusOK, res)
		case s.cfg.Public != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			s.cfg.Public.ServeHTTP(w, r)
		default:
			writeErr(w, http.StatusServiceUnavailable, CodeWaiting, "this node is recovering a ledger and waits for members' recovery shares (GET /v1/recovery)")
		}
	})
}

func statusOf(err error) int {
	switch CodeOf(err) {
	case CodeNotMember:
		return http.StatusForbidden
	case CodeReplayed, CodeDone, CodeWrongRecovery:
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	apierror.Write(w, status, code, msg)
}
