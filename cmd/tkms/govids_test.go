package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/api"
)

// idServer serves a proposal list and a key list, as tkms does.
func idServer(t *testing.T, proposals, kids []string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/gov/proposals", func(w http.ResponseWriter, r *http.Request) {
		var l api.GovProposals
		for _, id := range proposals {
			l.Proposals = append(l.Proposals, api.GovProposal{ID: id})
		}
		json.NewEncoder(w).Encode(l)
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		var l api.V1Keys
		for _, k := range kids {
			l.Keys = append(l.Keys, api.V1Key{Kid: k})
		}
		json.NewEncoder(w).Encode(l)
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestResolveIDs: a unique prefix names its proposal or key; an ambiguous
// one is refused listing the candidates, an unknown one says so, and a
// proposal id that is not hex is a usage error.
func TestResolveIDs(t *testing.T) {
	p1, p2, p3 := "3f2a"+strings.Repeat("0", 60), "3f2b"+strings.Repeat("1", 60), "a0"+strings.Repeat("2", 62)
	base := idServer(t, []string{p1, p2, p3}, []string{"abc_1", "abd_2", "x_3"})
	for _, tc := range []struct {
		id, want, err string
		usage         bool
	}{
		{id: "3f2a", want: p1},
		{id: "3F2B", want: p2},
		{id: "a", want: p3},
		{id: p1, want: p1},
		{id: "3f2", err: "2 proposals have an id that starts with 3f2"},
		{id: "ff", err: "no proposal has an id that starts with ff"},
		{id: "zz", err: "unique prefix", usage: true},
		{id: "", err: "unique prefix", usage: true},
		{id: p1 + "0", err: "unique prefix", usage: true},
	} {
		got, err := resolveProposalID(http.DefaultClient, base, tc.id)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("proposal %q: %q, %v; want %q", tc.id, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || errors.Is(err, errUsage) != tc.usage):
			t.Errorf("proposal %q: %q, %v; want an error with %q (usage %v)", tc.id, got, err, tc.err, tc.usage)
		}
	}
	for _, tc := range []struct{ kid, want, err string }{
		{kid: "abc", want: "abc_1"},
		{kid: "x", want: "x_3"},
		{kid: "x_3", want: "x_3"},
		{kid: "nope", want: "nope"}, // the KMS answers KEY_NOT_FOUND
		{kid: "ab", err: "2 keys have a kid that starts with ab"},
	} {
		got, err := resolveKid(http.DefaultClient, base, tc.kid)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("kid %q: %q, %v; want %q", tc.kid, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("kid %q: %q, %v; want an error with %q", tc.kid, got, err, tc.err)
		}
	}
}
