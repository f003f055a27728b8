package gov

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestApprovalsNeeded(t *testing.T) {
	// Needed approvals for 1..7 active members.
	tests := []struct {
		a    Approvals
		want [7]int
	}{
		{Approvals{Kind: ApproveMajority}, [7]int{1, 2, 2, 3, 3, 4, 4}},
		{Approvals{Kind: ApproveTwoThird}, [7]int{1, 2, 2, 3, 4, 4, 5}},
		{Approvals{Kind: ApproveAll}, [7]int{1, 2, 3, 4, 5, 6, 7}},
		{Approvals{Kind: ApproveN, N: 1}, [7]int{1, 1, 1, 1, 1, 1, 1}},
		{Approvals{Kind: ApproveN, N: 3}, [7]int{3, 3, 3, 3, 3, 3, 3}},
		{Approvals{Kind: "bogus"}, [7]int{2, 3, 4, 5, 6, 7, 8}}, // never satisfiable
	}
	for _, tt := range tests {
		for n := 1; n <= 7; n++ {
			if got := tt.a.Needed(n); got != tt.want[n-1] {
				t.Errorf("%v.Needed(%d) = %d, want %d", tt.a, n, got, tt.want[n-1])
			}
		}
	}
}

func TestApprovalsJSON(t *testing.T) {
	good := []struct {
		in   string
		want Approvals
	}{
		{`"majority"`, Approvals{Kind: ApproveMajority}},
		{`"2/3"`, Approvals{Kind: ApproveTwoThird}},
		{`"all"`, Approvals{Kind: ApproveAll}},
		{`1`, Approvals{Kind: ApproveN, N: 1}},
		{`12`, Approvals{Kind: ApproveN, N: 12}},
	}
	for _, tt := range good {
		var a Approvals
		if err := json.Unmarshal([]byte(tt.in), &a); err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if a != tt.want {
			t.Errorf("%s = %+v, want %+v", tt.in, a, tt.want)
		}
		out, err := json.Marshal(a)
		if err != nil || string(out) != tt.in {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", a, out, err, tt.in)
		}
	}
	for _, in := range []string{`"n"`, `"half"`, `"Majority"`, `0`, `-1`, `1.5`, `2.0`, `1e1`, `true`, `null`, `[1]`, `{}`, `99999999999999999999`} {
		var a Approvals
		if err := json.Unmarshal([]byte(in), &a); err == nil {
			t.Errorf("%s: accepted as %+v", in, a)
		}
	}
	for _, a := range []Approvals{{}, {Kind: ApproveN}, {Kind: ApproveAll, N: 2}, {Kind: "x"}} {
		if _, err := json.Marshal(a); err == nil {
			t.Errorf("Marshal(%+v) succeeded", a)
		}
	}
}

const docExample = `{
  "rules": {
    "default":          {"approvals": "majority"},
    "add_member":       {"approvals": "2/3"},
    "remove_member":    {"approvals": "2/3"},
    "set_constitution": {"approvals": "2/3"}
  },
  "proposal_ttl_seconds": 604800,
  "created_at_window_seconds": 600,
  "withdraw": "proposer"
}`

func TestDefaultConstitution(t *testing.T) {
	c, err := ParseConstitution([]byte(docExample))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, DefaultConstitution()) {
		t.Errorf("docs/governance.md example = %+v, DefaultConstitution = %+v", c, DefaultConstitution())
	}
	for n := 1; n <= 7; n++ {
		if err := DefaultConstitution().Validate(n); err != nil {
			t.Errorf("Validate(%d): %v", n, err)
		}
	}
	if c := DefaultConstitution(); c.ProposalTTL() != 7*24*time.Hour || c.CreatedAtWindow() != 10*time.Minute {
		t.Errorf("durations %s, %s", c.ProposalTTL(), c.CreatedAtWindow())
	}
	if err := DevConstitution().Validate(1); err != nil {
		t.Errorf("dev: %v", err)
	}
	// Round trip.
	b, err := json.Marshal(DefaultConstitution())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConstitution(b)
	if err != nil || !reflect.DeepEqual(c2, DefaultConstitution()) {
		t.Errorf("round trip: %+v, %v", c2, err)
	}
}

func TestParseConstitution(t *testing.T) {
	tests := []struct {
		name, in, want string
		unsafe         bool
	}{
		{"doc example", docExample, "", false},
		{"number rule", `{"rules":{"default":{"approvals":2}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, "", false},
		{"missing default", `{"rules":{"add_member":{"approvals":"all"}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, `no "default" rule`, true},
		{"no rules", `{"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, `no "default" rule`, true},
		{"short TTL", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":59,"created_at_window_seconds":10,"withdraw":"none"}`, "proposal_ttl_seconds 59", true},
		{"TTL over ten years", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":9223372036854775807,"created_at_window_seconds":10,"withdraw":"none"}`, "at most 315360000", true},
		{"window over ten years", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":315360001,"withdraw":"none"}`, "created_at_window_seconds 315360001", true},
		{"TTL ten years", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":315360000,"created_at_window_seconds":315360000,"withdraw":"none"}`, "", false},
		{"no TTL", `{"rules":{"default":{"approvals":1}},"created_at_window_seconds":10,"withdraw":"none"}`, "proposal_ttl_seconds 0", true},
		{"short window", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":9,"withdraw":"none"}`, "created_at_window_seconds 9", true},
		{"bad withdraw", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"anyone"}`, "withdraw", true},
		{"no withdraw", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10}`, "withdraw", true},
		{"unknown action rule", `{"rules":{"default":{"approvals":1},"add_membr":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, `rule "add_membr": unknown action`, true},
		{"rule without approvals", `{"rules":{"default":{}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, "approvals kind", true},
		{"bad approvals", `{"rules":{"default":{"approvals":"most"}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, "approvals", false},
		{"unknown field", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none","quorum":1}`, "unknown field", false},
		{"unknown rule field", `{"rules":{"default":{"approvals":1,"veto":true}},"proposal_ttl_seconds":60,"created_at_window_seconds":10,"withdraw":"none"}`, "unknown field", false},
		{"trailing data", docExample + `{}`, "trailing", false},
		{"fractional TTL", `{"rules":{"default":{"approvals":1}},"proposal_ttl_seconds":60.5,"created_at_window_seconds":10,"withdraw":"none"}`, "proposal_ttl_seconds", false},
		{"not an object", `[]`, "constitution", false},
		{"all problems at once", `{"rules":{},"proposal_ttl_seconds":1,"created_at_window_seconds":1,"withdraw":""}`, "proposal_ttl_seconds 1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConstitution([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c == nil {
					t.Fatal("nil constitution")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if got := errors.Is(err, ErrUnsafeConstitution); got != tt.unsafe {
				t.Errorf("errors.Is(err, ErrUnsafeConstitution) = %v, want %v (%v)", got, tt.unsafe, err)
			}
		})
	}
}

func TestConstitutionValidate(t *testing.T) {
	mk := func(rules map[string]Approvals) *Constitution {
		c := DevConstitution()
		c.Rules = map[string]Rule{}
		for k, a := range rules {
			c.Rules[k] = Rule{Approvals: a}
		}
		return c
	}
	tests := []struct {
		name   string
		c      *Constitution
		active int
		want   string
	}{
		{"N equals members", mk(map[string]Approvals{"default": {Kind: ApproveN, N: 3}}), 3, ""},
		{"N above members", mk(map[string]Approvals{"default": {Kind: ApproveN, N: 4}}), 3, "needs 4 approvals, only 3"},
		{"unsatisfiable action rule", mk(map[string]Approvals{"default": {Kind: ApproveMajority}, ActDestroyKey: {Kind: ApproveN, N: 5}}), 2, `rule "destroy_key"`},
		{"all of one", mk(map[string]Approvals{"default": {Kind: ApproveAll}}), 1, ""},
		{"no members", DefaultConstitution(), 0, "no active members"},
		{"negative members", DefaultConstitution(), -1, "no active members"},
		{"dev with two members", DevConstitution(), 2, ""},
		{"zero rule", mk(map[string]Approvals{"default": {}}), 3, "approvals kind"},
		{"N zero", mk(map[string]Approvals{"default": {Kind: ApproveN}}), 3, "want at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate(tt.active)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrUnsafeConstitution) {
				t.Fatalf("err = %v, want ErrUnsafeConstitution containing %q", err, tt.want)
			}
		})
	}
}

func TestConstitutionNeeded(t *testing.T) {
	c := DefaultConstitution()
	c.Rules[ActDestroyKey] = Rule{Approvals: Approvals{Kind: ApproveAll}}
	c.Rules[ActRotateKeyNow] = Rule{Approvals: Approvals{Kind: ApproveN, N: 1}}
	acts := func(names ...string) []Action {
		var out []Action
		for _, n := range names {
			out = append(out, Action{Name: n})
		}
		return out
	}
	tests := []struct {
		actions []Action
		active  int
		want    int
	}{
		{nil, 5, 3},
		{acts(ActSetKeyReleasePolicy), 5, 3}, // default: majority
		{acts(ActAddMember), 5, 4},           // 2/3
		{acts(ActSetKeyReleasePolicy, ActAddMember), 5, 4},
		{acts(ActRotateKeyNow), 5, 1}, // N=1, below the default
		{acts(ActRotateKeyNow, ActSetNodePolicy), 5, 3},
		{acts(ActDestroyKey, ActAddMember), 5, 5}, // all
		{acts(ActDestroyKey, ActAddMember), 7, 7},
		{acts(ActSetConstitution), 3, 2},
		{acts("unknown_action"), 4, 3},
	}
	for _, tt := range tests {
		var names []string
		for _, a := range tt.actions {
			names = append(names, a.Name)
		}
		if got := c.Needed(tt.actions, tt.active); got != tt.want {
			t.Errorf("Needed(%v, %d) = %d, want %d", names, tt.active, got, tt.want)
		}
	}
	if got := DevConstitution().Needed(acts(ActAddMember, ActSetConstitution), 1); got != 1 {
		t.Errorf("dev Needed = %d, want 1", got)
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		needed, active, approvals, rejections int
		accepted, rejected                    bool
	}{
		{1, 1, 1, 0, true, false},  // 1-of-1: the proposal itself
		{1, 1, 0, 1, false, true},  // cannot happen (proposer approves) but decided
		{2, 3, 1, 0, false, false}, // majority of 3: open
		{2, 3, 2, 0, true, false},
		{2, 3, 1, 1, false, false}, // one left to vote can still make it
		{2, 3, 1, 2, false, true},
		{3, 5, 1, 2, false, false}, // 1 + 2 pending = 3
		{3, 5, 1, 3, false, true},
		{3, 5, 3, 2, true, false},
		{4, 5, 1, 2, false, true},  // 2/3 of 5 = 4: 1 + 2 < 4
		{5, 5, 4, 0, false, false}, // all
		{5, 5, 4, 1, false, true},
		{5, 5, 5, 0, true, false},
		{4, 7, 4, 3, true, false},
		{4, 7, 3, 1, false, false},
		{3, 3, 1, 0, false, false},
		{3, 2, 2, 0, false, true}, // members removed: unreachable
		{2, 3, 1, 5, false, true}, // more votes than members (removed voters)
		{2, 3, 3, 0, true, false},
	}
	for _, tt := range tests {
		a, r := Decide(tt.needed, tt.active, tt.approvals, tt.rejections)
		if a != tt.accepted || r != tt.rejected {
			t.Errorf("Decide(needed %d, active %d, approvals %d, rejections %d) = %v, %v; want %v, %v",
				tt.needed, tt.active, tt.approvals, tt.rejections, a, r, tt.accepted, tt.rejected)
		}
	}
}
