package httpapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
)

// govEnv is env on a governed ledger: its members' signers, in the order
// of the members file.
type govEnv struct {
	*env
	members []*gov.Signer
}

// newSigner returns a signer of a new dev key and its member.
func newSigner(t testing.TB, name string) (*gov.Signer, gov.Member) {
	t.Helper()
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := gov.NewFileSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gov.NewMember(name, string(pub), "")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != s.MemberID() {
		t.Fatalf("member id %s, signer's %s", m.ID, s.MemberID())
	}
	return s, m
}

// constitution returns a constitution that needs `needed` approvals for
// everything: proposals open for an hour, messages within 10 minutes,
// withdrawal by the proposer.
func constitution(needed int) *gov.Constitution {
	return &gov.Constitution{
		Rules:                  map[string]gov.Rule{gov.DefaultRule: {Approvals: gov.Approvals{Kind: gov.ApproveN, N: needed}}},
		ProposalTTLSeconds:     3600,
		CreatedAtWindowSeconds: 600,
		Withdraw:               gov.WithdrawProposer,
	}
}

// openGoverned opens a service on a new data directory governed by c.
func openGoverned(t testing.TB, dir string, now func() time.Time, members []gov.Member, c *gov.Constitution) *kms.Service {
	t.Helper()
	sealer, _ := seal.New(seal.NewKey())
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: dir, Sealer: sealer, ServiceName: "gov-test", RotationPolicy: state.DefaultRotationPolicy(),
		Settings: state.Settings{Service: state.ServiceSettings{Name: "gov-test", Description: "d", Version: "1.2.3"}},
		Now:      now, Logger: slog.New(slog.DiscardHandler),
		Governance: &kms.GovInit{Members: members, Constitution: c},
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// newGovEnv starts a service governed by n members of whom `needed` must
// approve anything, with its first key, behind a real HTTP server.
func newGovEnv(t *testing.T, n, needed int) *govEnv {
	t.Helper()
	e := &govEnv{env: &env{t: t, clock: &clock{t: t0}}}
	var ms []gov.Member
	for i := range n {
		s, m := newSigner(t, "sro-"+string(rune('a'+i)))
		e.members = append(e.members, s)
		ms = append(ms, m)
	}
	e.svc = openGoverned(t, t.TempDir(), e.clock.Now, ms, constitution(needed))
	e.tick()
	e.srv = httptest.NewServer(New(e.svc, Options{OperatorToken: operatorToken, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(func() { e.srv.Close(); e.svc.Close() })
	if !e.svc.Governed() {
		t.Fatal("the ledger is not governed")
	}
	return e
}

// post sends body with the given content type ("" for none) and headers.
func (e *env) post(path, contentType string, body []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (e *env) postCOSE(path string, msg []byte) (*http.Response, []byte) {
	e.t.Helper()
	return e.post(path, "application/cose", msg)
}

func (e *govEnv) propose(m int, createdAt time.Time, actions ...gov.Action) []byte {
	e.t.Helper()
	msg, err := e.members[m].SignProposal(actions, createdAt)
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

func (e *govEnv) ballot(m int, id string, approve bool) []byte {
	e.t.Helper()
	msg, err := e.members[m].SignBallot(id, approve, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

func (e *govEnv) withdrawal(m int, id string) []byte {
	e.t.Helper()
	msg, err := e.members[m].SignWithdrawal(id, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

// result decodes a 200 (or want) answer to a governance message.
func (e *env) result(resp *http.Response, body []byte, want int) api.GovResult {
	e.t.Helper()
	if resp.StatusCode != want {
		e.t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
	}
	var r api.GovResult
	if err := json.Unmarshal(body, &r); err != nil {
		e.t.Fatalf("answer %s: %v", body, err)
	}
	return r
}

// verifyReceipt checks a receipt against the log's key and returns the
// entry it proves.
func (e *env) verifyReceipt(receipt []byte) *ledger.Leaf {
	e.t.Helper()
	rc, err := translog.ParseReceipt(receipt)
	if err != nil {
		e.t.Fatalf("receipt %s: %v", receipt, err)
	}
	v, err := translog.NewVerifier(e.svc.LogVerifierKey())
	if err != nil {
		e.t.Fatal(err)
	}
	leaf, _, err := rc.Verify(v)
	if err != nil {
		e.t.Fatalf("receipt does not verify: %v", err)
	}
	return leaf
}

func releaseChange(hostdata string) gov.Action {
	return gov.Action{Name: gov.ActSetKeyReleasePolicy, Args: json.RawMessage(`{"type":"add","claims":{"x-ms-sevsnpvm-hostdata":"` + hostdata + `"}}`)}
}

func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	resp, body := e.get(path)
	if resp.StatusCode != 200 {
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		e.t.Fatalf("GET %s: %s: %v", path, body, err)
	}
}

func TestGovOneOfOne(t *testing.T) {
	e := newGovEnv(t, 1, 1)
	hostdata := strings.Repeat("ab", 32)
	resp, body := e.postCOSE("/v1/gov/proposals", e.propose(0, e.clock.Now(), releaseChange(hostdata)))
	r := e.result(resp, body, 200)
	if r.State != state.ProposalAccepted || r.Approvals != 1 || r.Rejections != 0 || r.Needed != 1 || r.ID == "" || r.Seq == 0 {
		t.Fatalf("answer %s", body)
	}
	leaf := e.verifyReceipt(r.Receipt)
	if leaf.Type != ledger.TypeGovProposal || leaf.Seq != r.Seq {
		t.Fatalf("the receipt proves %s at %d, want the gov.proposal at %d", leaf.Type, leaf.Seq, r.Seq)
	}
	var gp state.GovProposal
	if err := json.Unmarshal(leaf.Body, &gp); err != nil || gp.ID != r.ID || gp.Proposer != e.members[0].MemberID() {
		t.Fatalf("the receipt's entry %s", leaf.Body)
	}
	resp, body = e.get("/app/keyReleasePolicy")
	if resp.StatusCode != 200 || !strings.Contains(string(body), hostdata) {
		t.Fatalf("keyReleasePolicy after acceptance: %d %s", resp.StatusCode, body)
	}

	var members struct{ Members []api.GovMember }
	e.getJSON("/v1/gov/members", &members)
	if len(members.Members) != 1 || members.Members[0].ID != e.members[0].MemberID() || members.Members[0].Name != "sro-a" ||
		!strings.Contains(members.Members[0].SigningKey, "PUBLIC KEY") || members.Members[0].AddedSeq == 0 {
		t.Fatalf("members %+v", members)
	}
	var c struct {
		Constitution gov.Constitution `json:"constitution"`
		Seq          uint64           `json:"seq"`
	}
	e.getJSON("/v1/gov/constitution", &c)
	if c.Constitution.Rule("anything").Approvals.Needed(1) != 1 || c.Constitution.ProposalTTLSeconds != 3600 || c.Seq != members.Members[0].AddedSeq {
		t.Fatalf("constitution %+v", c)
	}
}

func TestGovTwoOfThree(t *testing.T) {
	e := newGovEnv(t, 3, 2)
	hostdata := strings.Repeat("cd", 32)
	resp, body := e.postCOSE("/v1/gov/proposals", e.propose(0, e.clock.Now(), releaseChange(hostdata)))
	r := e.result(resp, body, 200)
	if r.State != state.ProposalOpen || r.Approvals != 1 || r.Needed != 2 {
		t.Fatalf("proposal answer %s", body)
	}
	id := r.ID
	if leaf := e.verifyReceipt(r.Receipt); leaf.Type != ledger.TypeGovProposal {
		t.Fatalf("receipt of a %s", leaf.Type)
	}
	resp, body = e.get("/app/keyReleasePolicy")
	if strings.Contains(string(body), hostdata) {
		t.Fatalf("policy in force with one approval of two: %d %s", resp.StatusCode, body)
	}

	e.clock.Add(time.Minute)
	resp, body = e.postCOSE("/v1/gov/proposals/"+id+"/ballots", e.ballot(1, id, true))
	r = e.result(resp, body, 200)
	if r.ID != id || r.State != state.ProposalAccepted || r.Approvals != 2 || r.Needed != 2 {
		t.Fatalf("ballot answer %s", body)
	}
	if leaf := e.verifyReceipt(r.Receipt); leaf.Type != ledger.TypeGovBallot || leaf.Seq != r.Seq {
		t.Fatalf("ballot receipt of %s at %d", leaf.Type, leaf.Seq)
	}
	resp, body = e.get("/app/keyReleasePolicy")
	if resp.StatusCode != 200 || !strings.Contains(string(body), hostdata) {
		t.Fatalf("keyReleasePolicy after the second approval: %d %s", resp.StatusCode, body)
	}

	var p api.GovProposal
	e.getJSON("/v1/gov/proposals/"+id, &p)
	if p.ID != id || p.State != state.ProposalAccepted || p.Proposer != e.members[0].MemberID() || p.CreatedAt != t0.Unix() ||
		p.DecidedSeq != r.Seq || p.Compat || len(p.Actions) != 1 || p.Actions[0].Name != gov.ActSetKeyReleasePolicy ||
		!strings.Contains(p.Actions[0].Description, hostdata) ||
		len(p.Ballots) != 1 || p.Ballots[0].Member != e.members[1].MemberID() || p.Ballots[0].Vote != gov.VoteApprove {
		t.Fatalf("proposal %+v", p)
	}

	// A second proposal: the list is newest first.
	resp, body = e.postCOSE("/v1/gov/proposals", e.propose(2, e.clock.Now(), gov.Action{Name: gov.ActRotateKeyNow, Args: json.RawMessage(`{}`)}))
	second := e.result(resp, body, 200)
	var list struct{ Proposals []api.GovProposal }
	e.getJSON("/v1/gov/proposals", &list)
	if len(list.Proposals) != 2 || list.Proposals[0].ID != second.ID || list.Proposals[1].ID != id ||
		list.Proposals[0].State != state.ProposalOpen || list.Proposals[0].Actions[0].Description == "" {
		t.Fatalf("list %+v", list)
	}
	e.getJSON("/v1/gov/proposals?state=accepted", &list)
	if len(list.Proposals) != 1 || list.Proposals[0].ID != id {
		t.Fatalf("accepted %+v", list)
	}
	resp, body = e.get("/v1/gov/proposals?state=pending")
	wantError(t, resp, body, 400, CodeBadRequest)

	// Open proposals expire: shown so at once, and closed to ballots.
	e.clock.Add(2 * time.Hour)
	e.getJSON("/v1/gov/proposals/"+second.ID, &p)
	if p.State != state.ProposalExpired {
		t.Fatalf("state after the TTL: %s", p.State)
	}
	resp, body = e.postCOSE("/v1/gov/proposals/"+second.ID+"/ballots", e.ballot(0, second.ID, true))
	wantError(t, resp, body, 409, kms.CodeProposalClosed)
}

// TestGovRefusals: every refusal code, over HTTP, and nothing written for
// any of them.
func TestGovRefusals(t *testing.T) {
	e := newGovEnv(t, 3, 2)
	now := e.clock.Now()
	p := e.propose(0, now, releaseChange(strings.Repeat("ef", 32)))
	r := e.resultOf(e.postCOSE("/v1/gov/proposals", p))(200)
	id := r.ID
	outsider, _ := newSigner(t, "outsider")
	foreign, err := outsider.SignProposal([]gov.Action{releaseChange(strings.Repeat("01", 32))}, now)
	if err != nil {
		t.Fatal(err)
	}
	badSig := bytes.Clone(e.propose(1, now, releaseChange(strings.Repeat("02", 32))))
	badSig[len(badSig)-1] ^= 1
	var kid string
	e.svc.Read(func(st *state.State) { kid = st.Newest().Kid })
	unknownKid := kid[:len(kid)-1] + "9"
	unsafe, _ := json.Marshal(constitution(4))
	ballotAsProposal := e.ballot(1, id, true)

	cases := []struct {
		name        string
		path        string
		contentType string
		body        []byte
		status      int
		code        string
	}{
		{"not a member", "/v1/gov/proposals", "", foreign, 401, kms.CodeNotAMember},
		{"bad signature", "/v1/gov/proposals", "", badSig, 401, gov.CodeBadSignature},
		{"replay", "/v1/gov/proposals", "", p, 409, kms.CodeDuplicate},
		{"proposer votes", "/v1/gov/proposals/" + id + "/ballots", "", e.ballot(0, id, true), 409, kms.CodeDuplicate},
		{"withdrawn by another", "/v1/gov/proposals/" + id + "/withdraw", "", e.withdrawal(1, id), 403, kms.CodeForbidden},
		{"stale", "/v1/gov/proposals", "", e.propose(1, now.Add(-time.Hour), releaseChange(strings.Repeat("03", 32))), 400, gov.CodeStale},
		{"future", "/v1/gov/proposals", "", e.propose(1, now.Add(time.Hour), releaseChange(strings.Repeat("04", 32))), 400, gov.CodeStale},
		{"invalid action", "/v1/gov/proposals", "", e.propose(1, now, gov.Action{Name: gov.ActDestroyKey, Args: json.RawMessage(`{"kid":"` + unknownKid + `"}`)}), 400, gov.CodeInvalidAction},
		{"unsafe constitution", "/v1/gov/proposals", "", e.propose(1, now, gov.Action{Name: gov.ActSetConstitution, Args: unsafe}), 400, gov.CodeUnsafeConstitution},
		{"unknown proposal", "/v1/gov/proposals/" + strings.Repeat("0", 64) + "/ballots", "", e.ballot(1, strings.Repeat("0", 64), true), 404, kms.CodeProposalNotFound},
		{"ballot for another id", "/v1/gov/proposals/" + strings.Repeat("0", 64) + "/ballots", "", ballotAsProposal, 400, gov.CodeInvalidMessage},
		{"ballot as proposal", "/v1/gov/proposals", "", ballotAsProposal, 400, gov.CodeInvalidMessage},
		{"proposal as ballot", "/v1/gov/proposals/" + id + "/ballots", "", e.propose(1, now, releaseChange(strings.Repeat("05", 32))), 400, gov.CodeInvalidMessage},
		{"not COSE", "/v1/gov/proposals", "", []byte(`{"actions":[]}`), 400, gov.CodeInvalidMessage},
		{"empty", "/v1/gov/proposals", "", nil, 400, gov.CodeInvalidMessage},
		{"json content type", "/v1/gov/proposals", "application/json", p, 415, CodeUnsupportedMediaType},
		{"no content type", "/v1/gov/proposals", "-", p, 415, CodeUnsupportedMediaType},
		{"too large", "/v1/gov/proposals", "", make([]byte, gov.MaxMessageSize+1), 413, CodeBodyTooLarge},
		{"compat replay", "/app/proposals", "", p, 409, kms.CodeDuplicate},
		{"compat not a member", "/app/proposals", "", foreign, 401, kms.CodeNotAMember},
		{"compat wrong type", "/app/proposals", "text/plain", p, 415, CodeUnsupportedMediaType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.svc.Seq()
			ct := tc.contentType
			switch ct {
			case "":
				ct = "application/cose"
			case "-":
				ct = ""
			}
			resp, body := e.post(tc.path, ct, tc.body)
			wantError(t, resp, body, tc.status, tc.code)
			if after := e.svc.Seq(); after != before {
				t.Fatalf("a refused message wrote %d entries", after-before)
			}
		})
	}

	// A second ballot by one member; then a proposal decided, withdrawn or
	// unknown is closed to ballots.
	e.resultOf(e.postCOSE("/v1/gov/proposals/"+id+"/ballots", e.ballot(1, id, false)))(200)
	resp, body := e.postCOSE("/v1/gov/proposals/"+id+"/ballots", e.ballot(1, id, true))
	wantError(t, resp, body, 409, kms.CodeDuplicate)
	w := e.resultOf(e.postCOSE("/v1/gov/proposals/"+id+"/withdraw", e.withdrawal(0, id)))(200)
	if w.State != state.ProposalWithdrawn {
		t.Fatalf("withdrawal answer %+v", w)
	}
	if leaf := e.verifyReceipt(w.Receipt); leaf.Type != ledger.TypeGovWithdrawal || leaf.Seq != w.Seq {
		t.Fatalf("withdrawal receipt of %s at %d", leaf.Type, leaf.Seq)
	}
	resp, body = e.postCOSE("/v1/gov/proposals/"+id+"/ballots", e.ballot(2, id, true))
	wantError(t, resp, body, 409, kms.CodeProposalClosed)
	resp, body = e.postCOSE("/v1/gov/proposals/"+id+"/withdraw", e.withdrawal(0, id))
	wantError(t, resp, body, 409, kms.CodeProposalClosed)

	resp, body = e.get("/v1/gov/proposals/" + strings.Repeat("0", 64))
	wantError(t, resp, body, 404, kms.CodeProposalNotFound)
	resp, body = e.get("/v1/gov/proposals/" + id + "/ballots")
	wantError(t, resp, body, 405, CodeMethodNotAllowed)
	resp, body = e.do(http.MethodDelete, "/v1/gov/proposals", nil)
	wantError(t, resp, body, 405, CodeMethodNotAllowed)
	if resp.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("Allow %q", resp.Header.Get("Allow"))
	}
	resp, body = e.do(http.MethodPost, "/v1/gov/members", nil)
	wantError(t, resp, body, 405, CodeMethodNotAllowed)
}

// resultOf lets a test check the status of e.postCOSE's answer inline.
func (e *env) resultOf(resp *http.Response, body []byte) func(int) api.GovResult {
	return func(want int) api.GovResult { e.t.Helper(); return e.result(resp, body, want) }
}

func TestAppProposals(t *testing.T) {
	e := newGovEnv(t, 3, 2)
	hostdata := strings.Repeat("12", 32)
	resp, body := e.postCOSE("/app/proposals", e.propose(0, e.clock.Now(), releaseChange(hostdata)))
	if resp.StatusCode != 200 {
		t.Fatalf("POST /app/proposals: %d %s", resp.StatusCode, body)
	}
	var ap AppProposal
	if err := json.Unmarshal(body, &ap); err != nil {
		t.Fatal(err)
	}
	if ap.ProposalID == "" || ap.ProposalID != ap.ID || ap.ProposerID != e.members[0].MemberID() || ap.State != state.ProposalOpen ||
		ap.BallotCount != 0 || ap.Needed != 2 || ap.Approvals != 1 {
		t.Fatalf("answer %s", body)
	}
	if leaf := e.verifyReceipt(ap.Receipt); leaf.Type != ledger.TypeGovProposal || leaf.Seq != ap.Seq {
		t.Fatalf("receipt of %s at %d", leaf.Type, leaf.Seq)
	}
	// The originals would apply it at once; tkms's constitution wants two.
	if _, body := e.get("/app/keyReleasePolicy"); strings.Contains(string(body), hostdata) {
		t.Fatal("a compat proposal applied with one approval of two")
	}
	e.resultOf(e.postCOSE("/v1/gov/proposals/"+ap.ID+"/ballots", e.ballot(2, ap.ID, true)))(200)
	if _, body := e.get("/app/keyReleasePolicy"); !strings.Contains(string(body), hostdata) {
		t.Fatalf("policy after the second approval: %s", body)
	}
	var p api.GovProposal
	e.getJSON("/v1/gov/proposals/"+ap.ID, &p)
	if !p.Compat || p.State != state.ProposalAccepted {
		t.Fatalf("proposal %+v", p)
	}

	resp, body = e.postCOSE("/v1/gov/proposals", e.propose(1, e.clock.Now(), gov.Action{Name: gov.ActRotateKeyNow, Args: json.RawMessage(`{}`)}))
	native := e.result(resp, body, 200)
	// As the deployed DEPA KMS: the COSE_Sign1 of each, in hex, oldest
	// first (the proposal id is the SHA-256 of those bytes).
	var list []string
	e.getJSON("/app/proposals", &list)
	if len(list) != 2 || proposalIDOfHex(t, list[0]) != ap.ID || proposalIDOfHex(t, list[1]) != native.ID {
		t.Fatalf("GET /app/proposals %q; want %s then %s", list, ap.ID, native.ID)
	}
	resp, body = e.do(http.MethodPut, "/app/proposals", nil)
	wantError(t, resp, body, 405, CodeMethodNotAllowed)
}

// proposalIDOfHex returns the id of the proposal whose COSE_Sign1 is h in
// hex.
func proposalIDOfHex(t *testing.T, h string) string {
	t.Helper()
	raw, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gov.ParseMessage(raw); err != nil {
		t.Fatal(err)
	}
	return gov.ProposalID(raw)
}

// refreshItem is POST /app/refresh's answer.
type refreshItem struct {
	Kid        string `json:"kid"`
	ID         int    `json:"id"`
	D          string `json:"d"`
	Receipt    string `json:"receipt"`
	ProposalID string `json:"proposal_id"`
}

func rotateNow() gov.Action {
	return gov.Action{Name: gov.ActRotateKeyNow, Args: json.RawMessage(`{"reason":"test"}`)}
}

func TestGovRefreshOneOfOne(t *testing.T) {
	e := newGovEnv(t, 1, 1)
	auth := []string{"Authorization", "Bearer " + operatorToken}
	// The operator token is no longer enough.
	resp, body := e.post("/app/refresh", "", nil, auth...)
	wantError(t, resp, body, 403, CodeGovRequired)
	if !strings.Contains(string(body), "rotate_key_now") {
		t.Fatalf("GOV_REQUIRED does not say what to do: %s", body)
	}
	resp, body = e.post("/app/refresh", "application/json", []byte(`{}`), auth...)
	wantError(t, resp, body, 403, CodeGovRequired)
	resp, body = e.post("/app/refresh", "application/cose", nil, auth...)
	wantError(t, resp, body, 403, CodeGovRequired)
	// Only rotate_key_now, and only a member's.
	resp, body = e.postCOSE("/app/refresh", e.propose(0, e.clock.Now(), releaseChange(strings.Repeat("aa", 32))))
	wantError(t, resp, body, 400, gov.CodeInvalidAction)
	resp, body = e.postCOSE("/app/refresh", e.propose(0, e.clock.Now(), rotateNow(), releaseChange(strings.Repeat("aa", 32))))
	wantError(t, resp, body, 400, gov.CodeInvalidAction)
	outsider, _ := newSigner(t, "outsider")
	foreign, _ := outsider.SignProposal([]gov.Action{rotateNow()}, e.clock.Now())
	resp, body = e.postCOSE("/app/refresh", foreign)
	wantError(t, resp, body, 401, kms.CodeNotAMember)
	resp, body = e.postCOSE("/app/refresh", []byte("garbage"))
	wantError(t, resp, body, 400, gov.CodeInvalidMessage)
	resp, body = e.postCOSE("/app/refresh", e.ballot(0, strings.Repeat("0", 64), true))
	wantError(t, resp, body, 400, gov.CodeInvalidMessage)

	msg := e.propose(0, e.clock.Now(), rotateNow())
	resp, body = e.postCOSE("/app/refresh", msg)
	if resp.StatusCode != 200 {
		t.Fatalf("governed refresh: %d %s", resp.StatusCode, body)
	}
	var item refreshItem
	if err := json.Unmarshal(body, &item); err != nil || !strings.HasSuffix(item.Kid, "_2") || item.ID != 12 || item.D != "" ||
		item.ProposalID != gov.ProposalID(msg) {
		t.Fatalf("refresh item %s", body)
	}
	leaf := e.verifyReceipt([]byte(item.Receipt))
	var kc state.KeyCreated
	if err := json.Unmarshal(leaf.Body, &kc); err != nil || leaf.Type != ledger.TypeKeyCreated || kc.Kid != item.Kid ||
		kc.Reason != state.GovernanceReason+item.ProposalID {
		t.Fatalf("receipt of %s: %s", leaf.Type, leaf.Body)
	}
	if resp, _ := e.get("/app/pubkey?kid=" + item.Kid); resp.StatusCode != 200 {
		t.Fatalf("the new key is unknown right after 200: %d", resp.StatusCode)
	}
	// The same bytes again are a replay.
	resp, body = e.postCOSE("/app/refresh", msg)
	wantError(t, resp, body, 409, kms.CodeDuplicate)
}

func TestGovRefreshTwoOfThree(t *testing.T) {
	e := newGovEnv(t, 3, 2)
	resp, body := e.postCOSE("/app/refresh", e.propose(1, e.clock.Now(), rotateNow()))
	r := e.result(resp, body, http.StatusAccepted)
	if r.State != state.ProposalOpen || r.Approvals != 1 || r.Needed != 2 {
		t.Fatalf("202 answer %s", body)
	}
	var n int
	e.svc.Read(func(st *state.State) { n = len(st.Keys) })
	if n != 1 {
		t.Fatalf("%d keys before the second approval", n)
	}
	e.resultOf(e.postCOSE("/v1/gov/proposals/"+r.ID+"/ballots", e.ballot(2, r.ID, true)))(200)
	var k *state.Key
	e.svc.Read(func(st *state.State) {
		if nk := st.Newest(); nk != nil {
			c := *nk
			k = &c
		}
	})
	if k == nil || k.Number != 2 || k.Reason != state.GovernanceReason+r.ID {
		t.Fatalf("newest key after acceptance: %+v", k)
	}
}

// TestUngovernedGov: on a ledger without gov.init, /app/refresh keeps the
// operator token (TestRefresh) and the governance API says there is no
// governance.
func TestUngovernedGov(t *testing.T) {
	e := newEnv(t, nil, false)
	signer, _ := newSigner(t, "x")
	msg, _ := signer.SignProposal([]gov.Action{rotateNow()}, e.clock.Now())
	resp, body := e.postCOSE("/v1/gov/proposals", msg)
	wantError(t, resp, body, 409, CodeNotGoverned)
	resp, body = e.postCOSE("/app/proposals", msg)
	wantError(t, resp, body, 409, CodeNotGoverned)
	var members struct{ Members []api.GovMember }
	e.getJSON("/v1/gov/members", &members)
	if members.Members == nil || len(members.Members) != 0 {
		t.Fatalf("members %+v", members)
	}
	resp, body = e.get("/v1/gov/constitution")
	wantError(t, resp, body, 404, CodeNotGoverned)
	var list struct{ Proposals []api.GovProposal }
	e.getJSON("/v1/gov/proposals", &list)
	if list.Proposals == nil || len(list.Proposals) != 0 {
		t.Fatalf("proposals %+v", list)
	}

	// A member-signed body does not replace the operator token here.
	resp, body = e.postCOSE("/app/refresh", msg)
	wantError(t, resp, body, 401, CodeUnauthorized)
	resp, body = e.post("/app/refresh", "", nil, "Authorization", "Bearer "+operatorToken)
	if resp.StatusCode != 200 {
		t.Fatalf("ungoverned refresh: %d %s", resp.StatusCode, body)
	}
	var item refreshItem
	if err := json.Unmarshal(body, &item); err != nil || !strings.HasSuffix(item.Kid, "_2") || item.Receipt == "" || item.ProposalID != "" {
		t.Fatalf("refresh item %s", body)
	}
}

// FuzzGovPropose posts arbitrary bytes as a proposal, in both forms, and as
// a governed refresh: whatever they are, the answer is a refusal of the
// client's message (4xx), never a server error, and nothing is written.
// The seeds are messages that parse but fail later: a non-member's, a stale
// one, a flipped signature, a ballot.
func FuzzGovPropose(f *testing.F) {
	c := &clock{t: t0}
	s, m := newSigner(f, "sro-a")
	svc := openGoverned(f, f.TempDir(), c.Now, []gov.Member{m}, constitution(1))
	f.Cleanup(func() { svc.Close() })
	h := New(svc, Options{Logger: slog.New(slog.DiscardHandler)})

	outsider, _ := newSigner(f, "outsider")
	actions := []gov.Action{releaseChange(strings.Repeat("ab", 32))}
	foreign, _ := outsider.SignProposal(actions, t0)
	stale, _ := s.SignProposal(actions, t0.Add(-time.Hour))
	flipped, _ := s.SignProposal(actions, t0)
	flipped[len(flipped)-1] ^= 1
	ballot, _ := s.SignBallot(strings.Repeat("0", 64), true, t0)
	for _, seed := range [][]byte{foreign, stale, flipped, ballot, nil, []byte{0xd2, 0x84}} {
		f.Add(seed)
	}
	seq := svc.Seq()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range []string{"/v1/gov/proposals", "/app/proposals", "/app/refresh"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/cose")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code < 400 || w.Code > 499 {
				t.Fatalf("POST %s of %x: %d %s", path, body, w.Code, w.Body)
			}
		}
		if svc.Seq() != seq {
			t.Fatalf("a refused proposal was written")
		}
	})
}
