package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/policy"
)

const govUsage = `usage:
  tkms gov propose [--kms URL] (--key FILE | --sign-command "CMD ARGS" --public-key FILE) [--data DIR] [--dry-run] [--compat] [--json] ACTIONS.json
  tkms gov vote    [--kms URL] (--key FILE | --sign-command ...) [--data DIR] [--yes] [--json] ID approve|reject
  tkms gov withdraw [--kms URL] (--key FILE | --sign-command ...) [--data DIR] ID
  tkms gov list    [--kms URL] [--data DIR] [--json]
  tkms gov show    [--kms URL] [--data DIR] [--json] ID
  tkms gov auto-recovery-member --key-bundle FILE --maa URL [--policy FILE]
  tkms gov keygen  --out PREFIX --name NAME [--suite x25519|mlkem768-x25519]
  tkms gov encryption-key --out FILE --member-id ID [--suite x25519|mlkem768-x25519]
  tkms gov share   [--kms URL] (--key FILE | --sign-command ...) --encryption-key FILE [--json]

Members of a governed tkms propose changes, vote on proposals and withdraw
their own (docs/governance.md). ACTIONS.json holds {"actions":[...]} or one
action {"name":"...","args":{...}}. With --data DIR (a tkms dev directory),
--kms and --key default to its dev.json's kms_url and member_key.
--kms-ca FILE trusts the CA certificates in FILE for an https:// KMS.
TKMS_ADDR, TKMS_CACERT and TKMS_MEMBER_KEY give --kms, --kms-ca and --key
when neither they nor --data are given. An ID may be a unique prefix.
gov vote shows the proposal and asks before signing, unless --yes.
gov keygen makes a new member's keys and prints its add_member action;
gov encryption-key a member's recovery encryption key and its
set_member_encryption_key action; gov share opens the member's recovery
share with its encryption key and submits it to a recovering node
(docs/recovery.md).
`

func cmdGov(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, govUsage)
		return fmt.Errorf("%w: want propose, vote, withdraw, list, show, keygen, encryption-key, share or auto-recovery-member", errUsage)
	}
	switch args[0] {
	case "propose":
		return cmdGovPropose(args[1:], stdout, stderr)
	case "vote":
		return cmdGovVote(args[1:], stdout, stderr)
	case "withdraw":
		return cmdGovWithdraw(args[1:], stdout, stderr)
	case "list":
		return cmdGovList(args[1:], stdout, stderr)
	case "show":
		return cmdGovShow(args[1:], stdout, stderr)
	case "auto-recovery-member":
		return cmdGovAutoRecoveryMember(args[1:], stdout, stderr)
	case "share":
		return cmdGovShare(args[1:], stdout, stderr)
	case "keygen":
		return cmdGovKeygen(args[1:], stdout, stderr)
	case "encryption-key":
		return cmdGovEncryptionKey(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, govUsage)
		return nil
	}
	return fmt.Errorf("%w: unknown subcommand %q; want propose, vote, withdraw, list, show, keygen, encryption-key, share or auto-recovery-member", errUsage, args[0])
}

// govFlags are the flags that say where the KMS is and who signs.
type govFlags struct {
	kms, kmsCA, key, signCommand, publicKey, data string
}

func (g *govFlags) register(fs *flag.FlagSet, signs bool) {
	fs.StringVar(&g.kms, "kms", "", "base `URL` of the KMS (default with --data: dev.json's kms_url; else $TKMS_ADDR)")
	fs.StringVar(&g.data, "data", "", "`directory` of a tkms dev instance, whose dev.json gives --kms and --key")
	registerKMSCA(fs, &g.kmsCA)
	if signs {
		fs.StringVar(&g.key, "key", "", "the member's private signing key, a PEM `file` (mode 0600; default with --data: dev.json's member_key; else $TKMS_MEMBER_KEY)")
		fs.StringVar(&g.signCommand, "sign-command", "", "sign with an external `command` instead of --key (an HSM or cloud KMS client; split at spaces, no shell quoting): it reads the bytes to sign (COSE ToBeSigned) on stdin and writes the signature on stdout, as 'openssl dgst -sha256 -sign KEY' does")
		fs.StringVar(&g.publicKey, "public-key", "", "with --sign-command: the member's public key, a PEM `file`")
	}
}

// kmsURL returns the KMS base URL the flags name.
func (g *govFlags) kmsURL() (string, error) {
	if g.kms != "" {
		return strings.TrimRight(g.kms, "/"), nil
	}
	if g.data != "" {
		info, err := readDevInfo(g.data)
		if err != nil {
			return "", fmt.Errorf("--data: %w", err)
		}
		return strings.TrimRight(info.KMSURL, "/"), nil
	}
	if u := envKMS(); u != "" {
		return u, nil
	}
	return "", fmt.Errorf("%w: give --kms URL or set %s (or --data DIR of a running tkms dev)", errUsage, envAddr)
}

// connect returns the KMS base URL the flags name and its HTTP client.
func (g *govFlags) connect() (string, *http.Client, error) {
	base, err := g.kmsURL()
	if err != nil {
		return "", nil, err
	}
	hc, err := g.client(base)
	return base, hc, err
}

// client returns the HTTP client for the KMS at base (--kms-ca).
func (g *govFlags) client(base string) (*http.Client, error) {
	return kmsHTTPClient(base, g.kmsCA, 0) // the commands' contexts bound the requests
}

// signer returns the member's signer the flags name.
func (g *govFlags) signer() (*gov.Signer, error) {
	switch {
	case g.key != "" && g.signCommand != "":
		return nil, fmt.Errorf("%w: give one of --key and --sign-command", errUsage)
	case g.signCommand != "":
		if g.publicKey == "" {
			return nil, fmt.Errorf("%w: --sign-command needs --public-key FILE, the member's public key", errUsage)
		}
		pub, err := os.ReadFile(g.publicKey)
		if err != nil {
			return nil, fmt.Errorf("--public-key: %w", err)
		}
		argv := strings.Fields(g.signCommand)
		return gov.NewCommandSigner(argv, pub)
	case g.key != "":
		return loadMemberKey(g.key)
	case g.data != "":
		info, err := readDevInfo(g.data)
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		if info.MemberKey == "" {
			return nil, fmt.Errorf("%s/dev.json names no member_key (a data directory of a tkms before governance?); give --key", g.data)
		}
		return loadMemberKey(info.MemberKey)
	case os.Getenv(envMemberKey) != "":
		return loadMemberKey(os.Getenv(envMemberKey))
	}
	return nil, fmt.Errorf("%w: give the member's key: --key FILE (or %s), or --sign-command CMD with --public-key FILE (or --data DIR of a tkms dev)", errUsage, envMemberKey)
}

// loadMemberKey reads a member's private key from a file only its owner
// may read.
func loadMemberKey(path string) (*gov.Signer, error) {
	b, err := readOwnerOnly(path, "member key")
	if err != nil {
		return nil, err
	}
	s, err := gov.NewFileSigner(b)
	clear(b) // the PEM text; the parsed key is in s
	if err != nil {
		return nil, fmt.Errorf("member key %s: %w", path, err)
	}
	return s, nil
}

// printStatus prints the answer of the governance API to a proposal,
// ballot or withdrawal.
func printStatus(w io.Writer, s api.GovResult) {
	fmt.Fprintf(w, "proposal %s\nstate %s, approvals %d/%d, rejections %d\n", s.ID, s.State, s.Approvals, s.Needed, s.Rejections)
}

func cmdGovPropose(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov propose", stderr)
	var g govFlags
	g.register(fs, true)
	compat := fs.Bool("compat", false, "submit through the originals' POST /app/proposals instead of POST /v1/gov/proposals")
	dryRun := fs.Bool("dry-run", false, "show what the proposal would change, and stop: nothing is signed or submitted")
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field (the proposal's state, or dry_run) instead of text")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one ACTIONS.json file", errUsage)
	}
	raw, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	actions, err := parseActionsFile(raw)
	if err == nil {
		// The DEPA KMS's proposal files work as they are.
		actions, err = gov.MapPeerActions(actions)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if err := gov.ValidateActions(actions); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	base, hc, err := g.connect()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := describeProposal(ctx, hc, textOut(stdout, stderr, *asJSON), base, actions); err != nil {
		return err
	}
	if *dryRun {
		return reportDryRun(stdout, actions, *asJSON)
	}
	signer, err := g.signer()
	if err != nil {
		return err
	}
	msg, err := signer.SignProposal(actions, time.Now())
	if err != nil {
		return fmt.Errorf("signing the proposal: %w", err)
	}
	path := "/v1/gov/proposals"
	if *compat {
		path = "/app/proposals"
	}
	var st api.GovResult
	if err := postCOSE(ctx, hc, base+path, msg, &st); err != nil {
		return err
	}
	if *asJSON {
		return writeResultJSON(stdout, string(st.State), struct {
			api.GovResult
			Member string `json:"member"`
		}{st, signer.MemberID()})
	}
	fmt.Fprintf(stdout, "submitted by member %s\n", signer.MemberID())
	printStatus(stdout, st)
	if st.State == "open" {
		fmt.Fprintf(stdout, "other members approve with: %s\n", g.voteHint(base, st.ID))
	}
	return nil
}

// parseActionsFile parses {"actions":[...]} or a single action object.
func parseActionsFile(raw []byte) ([]gov.Action, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("want {\"actions\":[...]} or one action {\"name\",\"args\"}: %w", err)
	}
	if _, ok := probe["actions"]; ok {
		var f struct {
			Actions []gov.Action `json:"actions"`
		}
		if err := decodeStrictJSON(raw, &f); err != nil {
			return nil, fmt.Errorf("want {\"actions\":[...]}: %w", err)
		}
		return f.Actions, nil
	}
	var a gov.Action
	if err := decodeStrictJSON(raw, &a); err != nil {
		return nil, fmt.Errorf("want {\"actions\":[...]} or one action {\"name\",\"args\"}: %w", err)
	}
	return []gov.Action{a}, nil
}

// describeProposal prints, in plain language, what the actions change, and
// for key release policy changes the difference between the policy in
// force and the result.
func describeProposal(ctx context.Context, hc *http.Client, w io.Writer, base string, actions []gov.Action) error {
	fmt.Fprintf(w, "this proposal, once accepted, will:\n")
	for i, a := range actions {
		fmt.Fprintf(w, "  %d. %s\n", i+1, gov.DescribeAction(a))
	}
	var cur *policy.Policy
	for _, a := range actions {
		if a.Name != "set_key_release_policy" {
			continue
		}
		if cur == nil {
			p, err := releasePolicyInForce(ctx, hc, base)
			if err != nil {
				return err
			}
			cur = &p
		}
		next, err := applyReleaseArgs(*cur, a.Args)
		if err != nil {
			return fmt.Errorf("set_key_release_policy: %w", err)
		}
		fmt.Fprintf(w, "key release policy, in force (-) and after this action (+):\n")
		writeDiff(w, policyLines(*cur), policyLines(next))
		cur = &next
	}
	return nil
}

// releasePolicyInForce reads GET /app/keyReleasePolicy; unset is the zero
// policy.
func releasePolicyInForce(ctx context.Context, hc *http.Client, base string) (policy.Policy, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/app/keyReleasePolicy", nil)
	if err != nil {
		return policy.Policy{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return policy.Policy{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return policy.Policy{}, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		p, err := policy.Parse(body)
		if err != nil {
			return policy.Policy{}, fmt.Errorf("GET /app/keyReleasePolicy: %w", err)
		}
		return p, nil
	case http.StatusNotFound:
		return policy.Policy{}, nil
	}
	return policy.Policy{}, apiError("GET /app/keyReleasePolicy", resp, body)
}

// applyReleaseArgs computes the policy that set_key_release_policy's
// arguments make of p: a replacement ({"policy": ...}) or a change.
func applyReleaseArgs(p policy.Policy, args json.RawMessage) (policy.Policy, error) {
	ra, err := gov.DecodeReleasePolicyArgs(args)
	if err != nil {
		return policy.Policy{}, err
	}
	if ra.Replace != nil {
		return policy.Parse(ra.Replace)
	}
	c, err := policy.ParseChange(ra.Change)
	if err != nil {
		return policy.Policy{}, err
	}
	return policy.Apply(p, c)
}

// policyLines is the canonical form of p, indented, one line per member.
func policyLines(p policy.Policy) []string {
	b := policy.Marshal(p)
	if len(b) == 0 || string(b) == "null" {
		return []string{"(unset: every release is denied)"}
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return []string{string(b)}
	}
	return strings.Split(out.String(), "\n")
}

// writeDiff writes the lines of a and b as one listing: common lines
// indented, removed ones after "- ", added ones after "+ " (longest common
// subsequence; policies are small). A line that only gained or lost its
// trailing comma is common.
func writeDiff(w io.Writer, a, b []string) {
	same := func(i, j int) bool { return strings.TrimSuffix(a[i], ",") == strings.TrimSuffix(b[j], ",") }
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if same(i, j) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && same(i, j):
			fmt.Fprintf(w, "    %s\n", b[j])
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "  + %s\n", b[j])
			j++
		default:
			fmt.Fprintf(w, "  - %s\n", a[i])
			i++
		}
	}
}

func cmdGovVote(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov vote", stderr)
	var g govFlags
	g.register(fs, true)
	yes := fs.Bool("yes", false, "sign without showing the proposal and asking first")
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field (the proposal's state) instead of text")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[1] != "approve" && pos[1] != "reject") {
		return fmt.Errorf("%w: want ID approve|reject", errUsage)
	}
	id, approve := pos[0], pos[1] == "approve"
	base, err := g.kmsURL()
	if err != nil {
		return err
	}
	signer, err := g.signer()
	if err != nil {
		return err
	}
	hc, err := g.client(base)
	if err != nil {
		return err
	}
	if id, err = resolveProposalID(hc, base, id); err != nil {
		return err
	}
	if !*yes {
		if err := confirmBallot(hc, textOut(stdout, stderr, *asJSON), base, id, pos[1]); err != nil {
			return err
		}
	}
	msg, err := signer.SignBallot(id, approve, time.Now())
	if err != nil {
		return fmt.Errorf("signing the ballot: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var st api.GovResult
	if err := postCOSE(ctx, hc, base+"/v1/gov/proposals/"+id+"/ballots", msg, &st); err != nil {
		return err
	}
	if st.ID == "" {
		st.ID = id
	}
	if *asJSON {
		return writeResultJSON(stdout, string(st.State), struct {
			api.GovResult
			Member string `json:"member"`
			Vote   string `json:"vote"`
		}{st, signer.MemberID(), pos[1]})
	}
	fmt.Fprintf(stdout, "member %s voted %s\n", signer.MemberID(), pos[1])
	printStatus(stdout, st)
	return nil
}

func cmdGovWithdraw(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov withdraw", stderr)
	var g govFlags
	g.register(fs, true)
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field (the proposal's state) instead of text")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want the proposal ID", errUsage)
	}
	base, err := g.kmsURL()
	if err != nil {
		return err
	}
	signer, err := g.signer()
	if err != nil {
		return err
	}
	hc, err := g.client(base)
	if err != nil {
		return err
	}
	if pos[0], err = resolveProposalID(hc, base, pos[0]); err != nil {
		return err
	}
	msg, err := signer.SignWithdrawal(pos[0], time.Now())
	if err != nil {
		return fmt.Errorf("signing the withdrawal: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var st api.GovResult
	if err := postCOSE(ctx, hc, base+"/v1/gov/proposals/"+pos[0]+"/withdraw", msg, &st); err != nil {
		return err
	}
	if st.ID == "" {
		st.ID = pos[0]
	}
	if *asJSON {
		return writeResultJSON(stdout, string(st.State), st)
	}
	printStatus(stdout, st)
	return nil
}

func cmdGovList(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov list", stderr)
	var g govFlags
	g.register(fs, false)
	asJSON := fs.Bool("json", false, "print the API's JSON, with a top-level result field")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, hc, err := g.connect()
	if err != nil {
		return err
	}
	raw, err := getJSON(hc, base+"/v1/gov/proposals")
	if err != nil {
		return err
	}
	if *asJSON {
		return writeResultJSON(stdout, "ok", json.RawMessage(raw))
	}
	var list api.GovProposals
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("GET /v1/gov/proposals: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAPPROVALS\tPROPOSER\tACTIONS")
	for _, p := range list.Proposals {
		var names []string
		for _, a := range p.Actions {
			names = append(names, a.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", p.ID, p.State, p.Approvals, p.Needed, shortID(p.Proposer), strings.Join(names, ","))
	}
	tw.Flush()
	if len(list.Proposals) == 0 {
		fmt.Fprintln(stdout, "(no proposals)")
	}
	return nil
}

func cmdGovShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov show", stderr)
	var g govFlags
	g.register(fs, false)
	asJSON := fs.Bool("json", false, "print the API's JSON, with a top-level result field")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want the proposal ID", errUsage)
	}
	base, hc, err := g.connect()
	if err != nil {
		return err
	}
	if pos[0], err = resolveProposalID(hc, base, pos[0]); err != nil {
		return err
	}
	raw, err := getJSON(hc, base+"/v1/gov/proposals/"+pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return writeResultJSON(stdout, "ok", json.RawMessage(raw))
	}
	var p api.GovProposal
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("GET /v1/gov/proposals/%s: %w", pos[0], err)
	}
	printStatus(stdout, api.GovResult{ID: p.ID, State: p.State, Approvals: p.Approvals, Rejections: p.Rejections, Needed: p.Needed})
	fmt.Fprintf(stdout, "proposer %s, created %s\n", p.Proposer, time.Unix(p.CreatedAt, 0).UTC().Format(time.RFC3339))
	for i, a := range p.Actions {
		d := a.Description
		if d == "" {
			d = gov.DescribeAction(gov.Action{Name: a.Name, Args: a.Args})
		}
		fmt.Fprintf(stdout, "  %d. %s\n", i+1, d)
	}
	for _, b := range p.Ballots {
		fmt.Fprintf(stdout, "ballot: %s %s\n", b.Member, b.Vote)
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// postCOSE posts a signed governance message and decodes the answer into
// out.
func postCOSE(ctx context.Context, hc *http.Client, url string, msg []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(msg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/cose")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	what := "POST " + req.URL.Path
	if resp.StatusCode/100 != 2 {
		return apiError(what, resp, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func getJSON(hc *http.Client, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, apiError("GET "+req.URL.Path, resp, body)
	}
	return body, nil
}

// apiError is the error of a refused API call: its status, and the code
// and message of tkms's error body when it has one.
func apiError(what string, resp *http.Response, body []byte) error {
	var e api.ErrorResponse
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		return fmt.Errorf("%s: %s: %s: %s", what, resp.Status, e.Error.Code, e.Error.Message)
	}
	return fmt.Errorf("%s: %s: %s", what, resp.Status, strings.TrimSpace(string(body)))
}
