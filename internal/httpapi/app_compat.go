package httpapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"

	"github.com/tkms-dev/tkms/internal/state"
)

// The answers of /app endpoints in the shapes of the deployed DEPA KMS
// (docs/spec/azure-compat.md, the table): GET /app/proposals, GET
// /app/auth with tokens and TLS client certificates, and the hint a
// rotation cron gets from /app/refresh.

// rotationHint tells an operator whose cron posts /app/refresh what to do
// instead.
const rotationHint = "tkms rotates keys itself on the key rotation policy's schedule, so a cron that posts /app/refresh is not needed: remove it"

// appProposalsCOSE serves GET /app/proposals as the deployed DEPA KMS
// does: a JSON list of the proposals' COSE_Sign1 messages, each in
// lowercase hex, oldest first. Unlike it (which keeps the last 5), tkms
// keeps and lists every proposal; their state is at GET /v1/gov/proposals.
func (s *Server) appProposalsCOSE(w http.ResponseWriter, r *http.Request) {
	var seqs []uint64
	s.svc.Read(func(st *state.State) {
		for _, p := range st.ProposalList() { // oldest first
			seqs = append(seqs, p.Seq)
		}
	})
	out := make([]string, 0, len(seqs))
	for _, seq := range seqs {
		e, err := s.svc.Entry(seq)
		var b state.GovProposal
		if err == nil {
			err = json.Unmarshal(e.Body, &b)
		}
		if err != nil {
			s.log.ErrorContext(r.Context(), "GET /app/proposals: cannot read a proposal entry", "seq", seq, "err", err)
			if s.storageFailed(w, r, err) {
				return
			}
			s.fail(w, r, http.StatusServiceUnavailable, CodeUnavailable, "a proposal could not be read; see the server log")
			return
		}
		out = append(out, hex.EncodeToString(b.COSE))
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, out)
}

// appReleasePolicy returns the key release policy raw (canonical JSON, as
// internal/policy marshals it) in the deployed DEPA KMS's shape: "type"
// first for the claims grammar. It returns nil for an unset policy,
// whether never set or left empty by removals.
func appReleasePolicy(raw json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if raw == nil || json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return nil
	}
	_, skr := m["anyOf"]
	_, typed := m["type"]
	if skr || typed {
		return raw
	}
	out := append([]byte(`{"type":"add",`), bytes.TrimPrefix(bytes.TrimSpace(raw), []byte("{"))...)
	if !json.Valid(out) {
		return nil
	}
	return out
}

// CertID returns the CCF id of a TLS client certificate: the lowercase
// hex SHA-256 of its DER (gov.Member.CertID).
func CertID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// certAuth is the caller identity of a TLS client certificate, in the
// shape of CCF's member_cert and user_cert identities ({"policy","id",
// "data","cert"}), with tkms's member id and name beside.
type certAuth struct {
	Policy   string         `json:"policy"` // member_cert or user_cert
	ID       string         `json:"id"`     // CertID
	Data     map[string]any `json:"data"`
	Cert     string         `json:"cert"`
	MemberID string         `json:"member_id,omitempty"`
	Name     string         `json:"name,omitempty"`
}

// AppAuth is the answer of GET /app/auth to a bearer token: CCF's jwt
// identity, as the deployed DEPA KMS answers, with tkms's fields beside.
type AppAuth struct {
	Auth JWTIdentity `json:"auth"`
}

// JWTIdentity is a token's identity in CCF's shape.
type JWTIdentity struct {
	Policy string   `json:"policy"` // "jwt"
	JWT    JWTToken `json:"jwt"`
	// tkms's: the trusted issuer, and the identity's oid, sub and tid.
	Iss string `json:"iss"`
	OID string `json:"oid"`
	Sub string `json:"sub"`
	TID string `json:"tid"`
}

// JWTToken is a verified token as CCF reports it: the trusted issuer
// whose key verified it, its JOSE header and its claims.
type JWTToken struct {
	KeyIssuer string         `json:"keyIssuer"`
	Header    map[string]any `json:"header"`
	Payload   map[string]any `json:"payload"`
}

// clientCert identifies the TLS client certificate of r, if any: an
// active member registered with that certificate, or a reader
// (Options.Readers). known is false when r presents a certificate that is
// neither; a is nil when r presents none.
func (s *Server) clientCert(r *http.Request) (a *certAuth, known bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, false
	}
	c := r.TLS.PeerCertificates[0]
	id := CertID(c)
	a = &certAuth{ID: id, Data: map[string]any{}, Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))}
	s.svc.Read(func(st *state.State) {
		for _, m := range st.ActiveMembers() {
			if m.CertID() == id {
				a.Policy, a.MemberID, a.Name = "member_cert", m.ID, m.Name
				return
			}
		}
	})
	if a.Policy == "" && s.readers[id] {
		a.Policy = "user_cert"
	}
	return a, a.Policy != ""
}

// appAuth serves GET /app/auth: the caller's identity in the shape of the
// deployed DEPA KMS (CCF's), {"auth":{"policy":...}}. A TLS client
// certificate of a member or a reader comes first ("member_cert",
// "user_cert"), as in its endpoint's authn_policies; then a bearer token
// ("jwt", with "jwt":{"keyIssuer","header","payload"} and tkms's iss,
// oid, sub and tid beside).
func (s *Server) appAuth(w http.ResponseWriter, r *http.Request) {
	ca, known := s.clientCert(r)
	if known {
		w.Header().Set("Cache-Control", "no-store")
		s.writeJSON(w, http.StatusOK, map[string]any{"auth": ca})
		return
	}
	if ca != nil && r.Header.Get("Authorization") == "" {
		s.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "the TLS client certificate (id "+ca.ID+") is neither an active member's registered certificate nor one of the readers setting; present a bearer token instead")
		return
	}
	if !s.releaseReady(w, r) {
		return
	}
	id, err := s.release.Authenticate(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		s.releaseFailed(w, r, err)
		return
	}
	payload, header := id.Claims, id.Header
	if payload == nil {
		payload = map[string]any{}
	}
	if header == nil {
		header = map[string]any{}
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, AppAuth{Auth: JWTIdentity{
		Policy: "jwt",
		JWT:    JWTToken{KeyIssuer: id.Issuer, Header: header, Payload: payload},
		Iss:    id.Issuer, OID: id.OID, Sub: id.Subject, TID: id.TenantID,
	}})
}
