package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tkms-dev/tkms/client"
)

// The narration of `tkms fetch` and `tkms demo`: wrappers around the
// client's Attester and TokenSource that say what happens at DESIGN.md §1
// steps 2 to 5 as the client package does it, without changing anything.

// narrator writes numbered steps.
type narrator struct {
	mu sync.Mutex
	w  io.Writer
}

func (n *narrator) step(num, title string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.w, "\n%-5s %s\n", num, title)
}

func (n *narrator) say(format string, a ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.w, "      "+format+"\n", a...)
}

// narratingAttester tells steps 2 and 3 and remembers the last
// REPORT_DATA, so that a caller can match it with the ledger's record.
type narratingAttester struct {
	client.Attester
	n    *narrator
	mu   sync.Mutex
	last [64]byte
}

func (a *narratingAttester) Attest(ctx context.Context, reportData [64]byte) (*client.Evidence, error) {
	a.mu.Lock()
	a.last = reportData
	a.mu.Unlock()
	a.n.step("2.", "the service generates a fresh wrapping key pair (WK+, WK-) for this fetch")
	a.n.say("SHA-256(WK+) = %x", reportData[:32])
	ev, err := a.Attester.Attest(ctx, reportData)
	a.n.step("3.", "its TEE signs an attestation report whose REPORT_DATA binds WK+")
	if err != nil {
		a.n.say("FAILED: %v", err)
		return nil, err
	}
	a.n.say("REPORT_DATA[0:32] = %x", reportData[:32])
	if [32]byte(reportData[32:]) != [32]byte{} {
		a.n.say("REPORT_DATA[32:64] = %x (the KMS's freshness nonce)", reportData[32:])
	}
	kind := ev.Type
	if ev.Simulated {
		kind += ", SIMULATED TEE (not a TEE: for development only)"
	}
	a.n.say("evidence: %s, %d bytes", kind, len(ev.Attestation))
	return ev, nil
}

func (a *narratingAttester) reportData() [64]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// narratingTokens tells steps 4 and 5: which identity the token names.
type narratingTokens struct {
	client.TokenSource
	n *narrator
}

func (t *narratingTokens) Token(ctx context.Context) (string, error) {
	tok, err := t.TokenSource.Token(ctx)
	t.n.step("4-5.", "it obtains a token for its identity from its identity provider")
	if err != nil {
		t.n.say("FAILED: %v", err)
		return "", err
	}
	c := unverifiedClaims(tok)
	t.n.say("iss %v", c["iss"])
	t.n.say("oid %v, aud %v, expires %s", c["oid"], c["aud"], expiry(c["exp"]))
	t.n.step("6.", "it sends the evidence and the token to the KMS")
	return tok, nil
}

// unverifiedClaims decodes a JWT's payload for display only: the KMS
// verifies it.
func unverifiedClaims(jwt string) map[string]any {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return map[string]any{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return map[string]any{}
	}
	var c map[string]any
	if json.Unmarshal(b, &c) != nil {
		return map[string]any{}
	}
	return c
}

func expiry(v any) string {
	f, ok := v.(float64)
	if !ok {
		return "?"
	}
	return time.Unix(int64(f), 0).UTC().Format(time.RFC3339)
}

// shortHex abbreviates a hex string for display.
func shortHex(s string) string {
	if len(s) > 24 {
		return s[:16] + "…" + s[len(s)-8:]
	}
	return s
}

// measurementHex returns MEASUREMENT as the policy claim spells it.
func measurementHex(b []byte) string { return hex.EncodeToString(b) }
