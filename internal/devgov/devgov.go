// Package devgov is the governance that `tkms dev` does by itself: its dev
// member keeps the dev OIDC issuer trusted by the ledger as the issuer's
// URL changes with the port (SyncIssuer, IssuerActions). The dev member's
// key files and the issuer are cmd/tkms's and internal/oidcissuer's.
package devgov

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/state"
)

// SyncIssuer makes the governed ledger of svc trust the dev issuer want at
// its current URL (which changes with the port): if the ledger's entry for
// it differs, member (the dev member's signer; nil when the data directory
// has none) proposes IssuerActions. Under the dev constitution the
// proposal applies at once; otherwise it waits for more approvals, which is
// logged.
func SyncIssuer(ctx context.Context, svc *kms.Service, member *gov.Signer, want state.JWTIssuer, claims map[string]any, log *slog.Logger) error {
	var actions []gov.Action
	svc.Read(func(st *state.State) { actions = IssuerActions(st, want, claims) })
	if len(actions) == 0 {
		return nil
	}
	if member == nil {
		log.Warn("the dev issuer is not trusted at its current URL and this data directory has no dev member to propose it: key release will refuse its tokens", "issuer", want.Issuer)
		return nil
	}
	raw, err := member.SignProposal(actions, svc.Now())
	if err != nil {
		return fmt.Errorf("dev issuer proposal: %w", err)
	}
	p, _, err := svc.Propose(ctx, raw, false)
	if err != nil {
		return fmt.Errorf("dev issuer proposal: %w", err)
	}
	if p.Status != state.ProposalAccepted {
		log.Warn("the dev member proposed to trust the dev issuer at its new URL; the proposal needs more approvals", "proposal", p.ID, "issuer", want.Issuer, "approvals", len(p.Approvals), "needed", p.Needed)
		return nil
	}
	log.Info("the dev member's proposal to trust the dev issuer at its new URL was accepted", "proposal", p.ID, "issuer", want.Issuer)
	return nil
}

// IssuerActions returns the governance actions that make st trust the dev
// issuer want, none when it is trusted so already: trust it, with the
// claims st required of the dev issuer's earlier URL (or claims, if none),
// and stop trusting the earlier URLs of the same key set.
func IssuerActions(st *state.State, want state.JWTIssuer, claims map[string]any) []gov.Action {
	var actions []gov.Action
	add := func(name string, args any) {
		b, _ := json.Marshal(args)
		actions = append(actions, gov.Action{Name: name, Args: b})
	}
	var issuers []state.JWTIssuer
	var required map[string]map[string]any
	if st.JWT != nil {
		issuers, required = st.JWT.Issuers, st.JWT.Claims
	}
	var old []string
	for _, is := range issuers {
		if !sameJSONBytes(is.JWKS, want.JWKS) {
			continue
		}
		if is.Issuer == want.Issuer {
			if slices.Equal(is.Audiences, want.Audiences) {
				return nil // in force
			}
			continue
		}
		if old == nil {
			claims = required[is.Issuer] // what governance required of the dev issuer
		}
		old = append(old, is.Issuer)
	}
	add(gov.ActSetJWTIssuer, map[string]any{"issuer": want.Issuer, "audiences": want.Audiences, "jwks": want.JWKS})
	if len(claims) > 0 {
		add(gov.ActSetJWTValidationPolicy, map[string]any{"issuer": want.Issuer, "claims": claims})
	}
	for _, iss := range old {
		add(gov.ActSetJWTIssuer, map[string]any{"issuer": iss, "remove": true})
	}
	return actions
}

// sameJSONBytes reports whether two JSON texts are equal once compacted.
func sameJSONBytes(a, b []byte) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}
