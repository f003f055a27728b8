package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
)

// proposalIDLen is the length of a proposal id: hex SHA-256.
const proposalIDLen = 64

// resolveProposalID returns the proposal id that id is a unique prefix of
// (an id of full length is returned as it is).
func resolveProposalID(hc *http.Client, base, id string) (string, error) {
	id = strings.ToLower(id)
	if _, err := hex.DecodeString(id + strings.Repeat("0", len(id)%2)); err != nil || id == "" || len(id) > proposalIDLen {
		return "", fmt.Errorf("%w: proposal id %q: want the id or a unique prefix of it, in hex", errUsage, id)
	}
	if len(id) == proposalIDLen {
		return id, nil
	}
	raw, err := getJSON(hc, base+"/v1/gov/proposals")
	if err != nil {
		return "", err
	}
	var list api.GovProposals
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("GET /v1/gov/proposals: %w", err)
	}
	var found []string
	for _, p := range list.Proposals {
		if strings.HasPrefix(p.ID, id) {
			found = append(found, p.ID)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no proposal has an id that starts with %s (tkms gov list shows them)", id)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d proposals have an id that starts with %s: give more of it (%s)", len(found), id, strings.Join(found, ", "))
}

// errNotConfirmed is a ballot the member did not confirm.
var errNotConfirmed = errors.New("not confirmed: nothing was signed (answer y, or pass --yes)")

// confirmBallot shows proposal id as the member is about to vote on it (its
// state, actions and, for the key release policy, the change against the
// policy in force) and asks for confirmation.
func confirmBallot(hc *http.Client, w io.Writer, base, id, vote string) error {
	raw, err := getJSON(hc, base+"/v1/gov/proposals/"+id)
	if err != nil {
		return err
	}
	var p api.GovProposal
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("GET /v1/gov/proposals/%s: %w", id, err)
	}
	printStatus(w, api.GovResult{ID: p.ID, State: p.State, Approvals: p.Approvals, Rejections: p.Rejections, Needed: p.Needed})
	fmt.Fprintf(w, "proposer %s, created %s\n", p.Proposer, time.Unix(p.CreatedAt, 0).UTC().Format(time.RFC3339))
	actions := make([]gov.Action, len(p.Actions))
	for i, a := range p.Actions {
		actions[i] = gov.Action{Name: a.Name, Args: a.Args}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := describeProposal(ctx, hc, w, base, actions); err != nil {
		return err
	}
	if !confirm(w, fmt.Sprintf("%s proposal %s?", vote, id)) {
		return errNotConfirmed
	}
	return nil
}

// reportDryRun ends gov propose --dry-run.
func reportDryRun(w io.Writer, actions []gov.Action, asJSON bool) error {
	if asJSON {
		type described struct {
			gov.Action
			Description string `json:"description"`
		}
		out := make([]described, len(actions))
		for i, a := range actions {
			out[i] = described{a, gov.DescribeAction(a)}
		}
		return writeResultJSON(w, "dry_run", struct {
			Actions []described `json:"actions"`
		}{out})
	}
	fmt.Fprintln(w, "dry run: nothing was signed or submitted")
	return nil
}

// resolveKid returns the kid of the KMS at base that kid names: the kid
// itself if a key has it, else the one kid it is a prefix of. With no
// match it returns kid unchanged, for the KMS to answer KEY_NOT_FOUND.
func resolveKid(hc *http.Client, base, kid string) (string, error) {
	list, err := fetchKeysWith(hc, base)
	if err != nil {
		return "", err
	}
	var found []string
	for _, k := range list.Keys {
		if k.Kid == kid {
			return kid, nil
		}
		if strings.HasPrefix(k.Kid, kid) {
			found = append(found, k.Kid)
		}
	}
	if len(found) > 1 {
		return "", fmt.Errorf("%d keys have a kid that starts with %s: give more of it (%s)", len(found), kid, strings.Join(found, ", "))
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return kid, nil
}
