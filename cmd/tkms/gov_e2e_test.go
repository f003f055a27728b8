package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// govMember is a member key of a test consortium, in files as a member
// keeps them.
type govMember struct {
	name     string
	key, pub string // paths of the private (0600) and public keys
	signer   *gov.Signer
	id       string
}

func newGovMember(t *testing.T, dir, name string) govMember {
	t.Helper()
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		t.Fatal(err)
	}
	m := govMember{name: name, key: filepath.Join(dir, name+".key"), pub: filepath.Join(dir, name+".pub")}
	if err := os.WriteFile(m.key, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.pub, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	if m.signer, err = gov.NewFileSigner(priv); err != nil {
		t.Fatal(err)
	}
	m.id = m.signer.MemberID()
	return m
}

// govCLI runs a tkms command that must succeed and returns its stdout.
func govCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runTkms(t, args...)
	if code != 0 {
		t.Fatalf("tkms %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// govCLIRefused runs a tkms command that must fail with an error naming
// code, and returns its stderr.
func govCLIRefused(t *testing.T, code string, args ...string) string {
	t.Helper()
	out, errOut, exit := runTkms(t, args...)
	if exit == 0 || !strings.Contains(errOut, code) {
		t.Fatalf("tkms %s: exit %d, stderr %q; want a refusal with %s\nstdout:\n%s", strings.Join(args, " "), exit, errOut, code, out)
	}
	return errOut
}

var proposalLine = regexp.MustCompile(`(?m)^proposal ([0-9a-f]{64})$`)

func proposalID(t *testing.T, out string) string {
	t.Helper()
	m := proposalLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no proposal id in:\n%s", out)
	}
	return m[1]
}

// TestGovernanceThreeMembers: a service created by `tkms init` for three
// members under the default constitution (a majority: 2 of 3) and run by
// `tkms serve` changes its key release policy only once a second member
// approves; a release the change admits is denied before and granted
// after; the decided proposal takes no more ballots; members cannot cheat;
// and `tkms audit` checks it all.
func TestGovernanceThreeMembers(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	keys := filepath.Join(dir, "members")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	a, b, c := newGovMember(t, keys, "sro-a"), newGovMember(t, keys, "sro-b"), newGovMember(t, keys, "sro-c")
	var members []map[string]string
	for _, m := range []govMember{a, b, c} {
		members = append(members, map[string]string{"name": m.name, "signing_key": string(readFile(t, m.pub))})
	}
	membersFile := filepath.Join(dir, "members.json")
	writeJSONFile(t, membersFile, map[string]any{"members": members})
	constitutionFile := filepath.Join(dir, "constitution.json")
	writeJSONFile(t, constitutionFile, gov.DefaultConstitution())

	const (
		h1  = "1111111111111111111111111111111111111111111111111111111111111111"
		h2  = "2222222222222222222222222222222222222222222222222222222222222222"
		h3  = "3333333333333333333333333333333333333333333333333333333333333333"
		aud = "api://sro-kms"
	)
	iss, err := oidcissuer.New(filepath.Join(dir, "idp"), oidcissuer.Options{URL: "https://login.microsoftonline.com/tenant-1/v2.0"})
	if err != nil {
		t.Fatal(err)
	}
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o700); err != nil {
		t.Fatal(err)
	}
	writeJSONFile(t, filepath.Join(policies, "key_release_policy.json"), map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-hostdata": []string{h1},
	}})
	writeJSONFile(t, filepath.Join(policies, "jwt_issuers.json"), []map[string]any{{"issuer": iss.URL(), "audiences": []string{aud}, "jwks": json.RawMessage(iss.JWKS())}})
	writeJSONFile(t, filepath.Join(policies, "jwt_validation_policy.json"), map[string]any{iss.URL(): map[string]any{"idtyp": "app", "tid": "tenant-1"}})

	initArgs := []string{"init", "--members", membersFile, "--constitution", constitutionFile, "--policies", policies, "--data", data, "--service-name", "sro-kms"}
	out := govCLI(t, initArgs...)
	t.Logf("tkms init:\n%s", out)
	for _, want := range []string{a.id, b.id, c.id, "majority (2 of 3 members)", "transparency log key tkms/sro-kms/"} {
		if !strings.Contains(out, want) {
			t.Errorf("tkms init printed no %q", want)
		}
	}
	if perm(t, filepath.Join(data, "master.key")) != 0o600 {
		t.Errorf("master.key has mode %v, want 0600", perm(t, filepath.Join(data, "master.key")))
	}
	govCLIRefused(t, "already holds a ledger", initArgs...)
	t.Run("init refuses unknown policy files", func(t *testing.T) {
		bad := filepath.Join(dir, "bad-policies")
		os.Mkdir(bad, 0o700)
		writeJSONFile(t, filepath.Join(bad, "key_release_polcy.json"), map[string]any{})
		govCLIRefused(t, "key_release_polcy.json", "init", "--members", membersFile, "--policies", bad, "--data", filepath.Join(dir, "other"))
		if _, err := os.Stat(filepath.Join(dir, "other", "ledger.db")); err == nil {
			t.Error("a refused init wrote a ledger")
		}
	})

	// The config's release policy would admit anything with H3: a governed
	// ledger ignores it.
	cfgPath := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{
		"listen": "127.0.0.1:0", "data_dir": data, "insecure_simulated_tee": true,
		"key_release_policy": map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{h3}}},
	})
	p := startServe(t, cfgPath)
	kms := p.URL

	wrapPEM := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	wrapFile := filepath.Join(dir, "wrap.pub")
	if err := os.WriteFile(wrapFile, wrapPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	token, err := iss.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: aud, PrincipalID: "svc-1", TenantID: "tenant-1"})
	if err != nil {
		t.Fatal(err)
	}
	// release asks /app/unwrapKey for the primary key with simulated
	// evidence of host data hostData.
	release := func(hostData string) (*http.Response, []byte) {
		t.Helper()
		evidence := govCLI(t, "attest", "simulate", "--data", data, "--wrapping-key-pem", wrapFile, "--host-data", hostData)
		body, _ := json.Marshal(map[string]any{"attestation": json.RawMessage(evidence), "wrappingKey": string(wrapPEM), "wrappedKid": allKeys(t, kms)[0].Kid})
		return doBody(t, http.MethodPost, kms+"/app/unwrapKey?fmt=jwk", http.Header{"Authorization": {"Bearer " + token}}, body)
	}
	resp, body := release(h1)
	wantOK(t, "release to H1", resp, body)
	resp, body = release(h3)
	wantError(t, "release to H3 (the ignored config's policy)", resp, body, http.StatusBadRequest, "POLICY_DENIED")
	resp, before := do(t, http.MethodGet, kms+"/app/keyReleasePolicy", nil)
	wantOK(t, "keyReleasePolicy", resp, before)

	// Member A proposes admitting H2.
	change := filepath.Join(dir, "add-h2.json")
	writeJSONFile(t, change, map[string]any{"actions": []map[string]any{{
		"name": "set_key_release_policy", "args": map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{h2}}},
	}}})
	out = govCLI(t, "gov", "propose", "--kms", kms, "--key", a.key, change)
	t.Logf("tkms gov propose:\n%s", out)
	id := proposalID(t, out)
	for _, want := range []string{"state open, approvals 1/2", "submitted by member " + a.id, "set_key_release_policy"} {
		if !strings.Contains(out, want) {
			t.Errorf("tkms gov propose printed no %q", want)
		}
	}
	// The diff of the policy: H1 stays, H2 is added.
	if !regexp.MustCompile(`(?m)^  \+ +"`+h2+`"$`).MatchString(out) || !regexp.MustCompile(`(?m)^    +"`+h1+`",?$`).MatchString(out) {
		t.Errorf("tkms gov propose shows no diff of the policy that keeps H1 and adds H2")
	}
	resp, after := do(t, http.MethodGet, kms+"/app/keyReleasePolicy", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(after, before) {
		t.Fatalf("an open proposal changed the policy:\n%s\nwas\n%s", after, before)
	}
	resp, body = release(h2)
	wantError(t, "release to H2 before approval", resp, body, http.StatusBadRequest, "POLICY_DENIED")
	if out := govCLI(t, "gov", "list", "--kms", kms); !strings.Contains(out, id) || !strings.Contains(out, "open") {
		t.Errorf("tkms gov list:\n%s\nwant %s open", out, id)
	}

	// Member B approves: accepted, in force at once.
	out = govCLI(t, "gov", "vote", "--yes", "--kms", kms, "--key", b.key, id, "approve")
	t.Logf("tkms gov vote:\n%s", out)
	if !strings.Contains(out, "state accepted, approvals 2/2") {
		t.Errorf("tkms gov vote printed:\n%s\nwant the proposal accepted with 2/2", out)
	}
	resp, after = do(t, http.MethodGet, kms+"/app/keyReleasePolicy", nil)
	wantOK(t, "keyReleasePolicy after the vote", resp, after)
	if !bytes.Contains(after, []byte(h2)) || !bytes.Contains(after, []byte(h1)) {
		t.Fatalf("the accepted policy is %s; want H1 and H2", after)
	}
	resp, body = release(h2)
	wantOK(t, "release to H2 after approval", resp, body)
	govCLIRefused(t, "GOV_PROPOSAL_CLOSED", "gov", "vote", "--yes", "--kms", kms, "--key", c.key, id, "approve")
	out = govCLI(t, "gov", "show", "--kms", kms, id)
	if !strings.Contains(out, "state accepted") || !strings.Contains(out, b.id) {
		t.Errorf("tkms gov show:\n%s\nwant the accepted proposal and B's ballot", out)
	}

	t.Run("cheats", func(t *testing.T) {
		add3 := filepath.Join(dir, "add-h3.json")
		writeJSONFile(t, add3, map[string]any{"name": "set_key_release_policy", "args": map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{h3}}}})

		// A key that is no member's.
		stranger := newGovMember(t, keys, "stranger")
		govCLIRefused(t, "GOV_NOT_A_MEMBER", "gov", "propose", "--kms", kms, "--key", stranger.key, add3)

		// A proposes H3; A's submission is A's approval: a ballot of A
		// is a second one. B rejects once, not twice.
		id3 := proposalID(t, govCLI(t, "gov", "propose", "--kms", kms, "--key", a.key, add3))
		govCLIRefused(t, "GOV_DUPLICATE", "gov", "vote", "--yes", "--kms", kms, "--key", a.key, id3, "approve")
		govCLIRefused(t, "GOV_NOT_A_MEMBER", "gov", "vote", "--yes", "--kms", kms, "--key", stranger.key, id3, "approve")
		out := govCLI(t, "gov", "vote", "--yes", "--kms", kms, "--key", b.key, id3, "reject")
		if !strings.Contains(out, "state open") {
			t.Errorf("after one rejection of 3 members:\n%s\nwant the proposal still open (A and C can reach 2)", out)
		}
		govCLIRefused(t, "GOV_DUPLICATE", "gov", "vote", "--yes", "--kms", kms, "--key", b.key, id3, "approve")

		// Only the proposer withdraws.
		govCLIRefused(t, "GOV_FORBIDDEN", "gov", "withdraw", "--kms", kms, "--key", c.key, id3)
		if out := govCLI(t, "gov", "withdraw", "--kms", kms, "--key", a.key, id3); !strings.Contains(out, "state withdrawn") {
			t.Errorf("tkms gov withdraw by the proposer:\n%s", out)
		}
		govCLIRefused(t, "GOV_PROPOSAL_CLOSED", "gov", "vote", "--yes", "--kms", kms, "--key", c.key, id3, "approve")
		if _, after := do(t, http.MethodGet, kms+"/app/keyReleasePolicy", nil); bytes.Contains(after, []byte(h3)) {
			t.Errorf("a withdrawn proposal changed the policy: %s", after)
		}

		// The same proposal bytes twice: a replay.
		args, _ := json.Marshal(map[string]any{"type": "add", "claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{h3}}})
		msg, err := c.signer.SignProposal([]gov.Action{{Name: "set_key_release_policy", Args: args}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		resp, body := postCOSETest(t, kms+"/v1/gov/proposals", msg)
		wantOK(t, "C's proposal", resp, body)
		resp, body = postCOSETest(t, kms+"/v1/gov/proposals", msg)
		wantError(t, "the replay of C's proposal", resp, body, http.StatusConflict, "GOV_DUPLICATE")
		// A ballot with a bad signature.
		ballot, err := a.signer.SignBallot(sha256Hex(msg), false, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ballot[len(ballot)-1] ^= 1
		resp, body = postCOSETest(t, kms+"/v1/gov/proposals/"+sha256Hex(msg)+"/ballots", ballot)
		wantError(t, "a ballot with a flipped signature bit", resp, body, http.StatusUnauthorized, "GOV_BAD_SIGNATURE")
		// Withdraw it, so the policy stays as it is.
		wd, _ := c.signer.SignWithdrawal(sha256Hex(msg), time.Now())
		resp, body = postCOSETest(t, kms+"/v1/gov/proposals/"+sha256Hex(msg)+"/withdraw", wd)
		wantOK(t, "C withdraws", resp, body)

		// The operator token does not rotate a governed KMS; a member's
		// rotation waits for a second member.
		resp, body = do(t, http.MethodPost, kms+"/app/refresh", nil)
		wantError(t, "refresh without a proposal", resp, body, http.StatusForbidden, "GOV_REQUIRED")
		n := len(allKeys(t, kms))
		out = govCLI(t, "keys", "rotate", "--url", kms, "--key", a.key)
		if !strings.Contains(out, "approvals 1/2") || strings.Contains(out, "created key") {
			t.Fatalf("tkms keys rotate by one of 3 members:\n%s\nwant an open proposal", out)
		}
		if got := len(allKeys(t, kms)); got != n {
			t.Fatalf("%d keys after an open rotation proposal, want %d", got, n)
		}
		// C approves with an external signer, as with a key in an HSM.
		vote := []string{"gov", "vote", "--yes", "--kms", kms, "--key", c.key, proposalID(t, out), "approve"}
		if _, err := exec.LookPath("openssl"); err == nil {
			vote = []string{"gov", "vote", "--yes", "--kms", kms, "--sign-command", "openssl dgst -sha256 -sign " + c.key, "--public-key", c.pub, proposalID(t, out), "approve"}
		}
		if out := govCLI(t, vote...); !strings.Contains(out, "state accepted") || !strings.Contains(out, "member "+c.id) {
			t.Errorf("tkms %s:\n%s", strings.Join(vote, " "), out)
		}
		if got := len(allKeys(t, kms)); got != n+1 {
			t.Fatalf("%d keys after the rotation was approved, want %d", got, n+1)
		}
	})

	// The auditor replays every decision.
	logKey := logKeyArg(t, kms)
	out, errOut, code := runTkms(t, "audit", "--kms", kms, "--log-key", logKey, "--json")
	if code != 0 {
		t.Fatalf("tkms audit: exit %d\n%s\n%s", code, out, errOut)
	}
	var report struct {
		Counts   map[string]int64 `json:"counts"`
		Policies []struct {
			Seq  uint64 `json:"seq"`
			Type string `json:"type"`
		} `json:"policies"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("tkms audit --json: %v\n%s", err, out)
	}
	if report.Counts["gov.init"] != 1 || report.Counts["gov.proposal"] < 4 || report.Counts["gov.ballot"] < 3 || report.Counts["gov.withdrawal"] != 2 {
		t.Errorf("audit counts %v; want gov.init 1, the proposals, ballots and withdrawals", report.Counts)
	}
	// The audit recounted the decision (the state machine's replay
	// verifies every signature and ballot), checked the releases after it
	// against the policy it put in force, and shows it: the proposal
	// accepted with 2 of 2 approvals, its action, and the policy version
	// it set.
	text := govCLI(t, "audit", "--kms", kms, "--log-key", logKey)
	for _, want := range []string{"gov.proposal", "gov.ballot", "governance (since seq", "proposal " + id[:12] + " by " + a.id[:12],
		"accepted, 2 of 2 approvals", "set_key_release_policy: add x-ms-sevsnpvm-hostdata", "(proposal " + id[:12] + ")"} {
		if !strings.Contains(text, want) {
			t.Errorf("the audit report does not mention %s:\n%s", want, text)
		}
	}
	p.stopClean(syscall.SIGTERM)
}

// TestReadmeGovernance runs the README's governance walkthrough, as
// written, against a real `tkms dev` (one member, 1-of-1): the proposal is
// accepted at once and the policy in force shows it.
func TestReadmeGovernance(t *testing.T) {
	needTools(t, "curl")
	block := readmeBlock(t, "Governance")
	wd := t.TempDir()
	p := startDev(t, filepath.Join(wd, "tkms-dev"))
	script := strings.ReplaceAll(block, "http://127.0.0.1:8000", p.URL)
	script = strings.ReplaceAll(script, "go run ./cmd/tkms", tkmsBin)
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = wd
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README governance: %v\n%s", err, out)
	}
	for _, want := range []string{"will:", "state accepted, approvals 1/1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the walkthrough printed no %q:\n%s", want, out)
		}
	}
	resp, pol := do(t, http.MethodGet, p.URL+"/app/keyReleasePolicy", nil)
	wantOK(t, "keyReleasePolicy", resp, pol)
	if !bytes.Contains(pol, []byte(readmeMeasurement)) {
		t.Errorf("after the walkthrough the policy is %s; want measurement %s", pol, readmeMeasurement)
	}
	p.stopClean(syscall.SIGINT)
}

// readmeMeasurement is the measurement the README walkthrough admits.
const readmeMeasurement = "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b"

// sha256Hex is the id of a proposal: the SHA-256 of its bytes, in hex.
func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestParseActionsFile(t *testing.T) {
	for _, tc := range []struct {
		in    string
		names []string
		bad   bool
	}{
		{in: `{"actions":[{"name":"rotate_key_now","args":{}},{"name":"destroy_key","args":{"kid":"k"}}]}`, names: []string{"rotate_key_now", "destroy_key"}},
		{in: `{"name":"rotate_key_now"}`, names: []string{"rotate_key_now"}},
		{in: `{"name":"rotate_key_now","argz":{}}`, bad: true},
		{in: `{"actions":[],"extra":1}`, bad: true},
		{in: `[1]`, bad: true},
	} {
		got, err := parseActionsFile([]byte(tc.in))
		if (err != nil) != tc.bad {
			t.Errorf("%s: err %v, want error %v", tc.in, err, tc.bad)
			continue
		}
		var names []string
		for _, a := range got {
			names = append(names, a.Name)
		}
		if strings.Join(names, ",") != strings.Join(tc.names, ",") {
			t.Errorf("%s: actions %v, want %v", tc.in, names, tc.names)
		}
	}
}

func TestWriteDiff(t *testing.T) {
	var b strings.Builder
	writeDiff(&b, []string{"{", `  "a": [`, `    "1"`, "  ]", "}"}, []string{"{", `  "a": [`, `    "1",`, `    "2"`, "  ]", "}"})
	want := "    {\n" + `      "a": [` + "\n" + `        "1",` + "\n" + `  +     "2"` + "\n      ]\n    }\n"
	if b.String() != want {
		t.Errorf("writeDiff:\n%s\nwant\n%s", b.String(), want)
	}
}
