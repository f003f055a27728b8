package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/state"
)

// reportRotation says what a new key's times mean: services in a TEE may
// fetch (be released) it from now; clients are given it (published) from
// not_before; it is released until release_until.
func reportRotation(hc *http.Client, w io.Writer, base, kid string, id int, asJSON bool) error {
	list, err := fetchKeysWith(hc, base)
	if err != nil {
		return fmt.Errorf("created key %s (id %d), but reading its times failed: %w", kid, id, err)
	}
	var key *api.V1Key
	for i := range list.Keys {
		if list.Keys[i].Kid == kid {
			key = &list.Keys[i]
		}
	}
	if key == nil {
		return fmt.Errorf("created key %s (id %d), but GET /v1/keys does not list it", kid, id)
	}
	if asJSON {
		return writeResultJSON(w, "created", struct {
			Key api.V1Key `json:"key"`
		}{*key})
	}
	f := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	fmt.Fprintf(w, "created key %s (id %d)\n", kid, id)
	fmt.Fprintf(w, "released to attested services from now until %s\n", f(key.ReleaseUntil))
	fmt.Fprintf(w, "published to clients (the primary key) from %s until %s\n", f(key.NotBefore), f(key.NotAfter))
	return nil
}

// reportPendingRotation says that a rotation waits for approvals, how other
// members approve it, and when its key would be published.
func reportPendingRotation(hc *http.Client, w io.Writer, base string, g govFlags, st api.GovResult, asJSON bool) error {
	var pol state.RotationPolicy
	raw, err := getJSON(hc, base+"/app/keyRotationPolicy")
	if err == nil {
		err = json.Unmarshal(raw, &pol)
	}
	if err != nil {
		return fmt.Errorf("proposal %s is open, but reading the rotation policy failed: %w", st.ID, err)
	}
	delay := time.Duration(pol.PublishDelay)
	if asJSON {
		return writeResultJSON(w, "pending", struct {
			Proposal     api.GovResult `json:"proposal"`
			PublishDelay int64         `json:"publish_delay_seconds"`
			Vote         string        `json:"vote_command"`
		}{st, int64(delay / time.Second), g.voteHint(base, st.ID)})
	}
	printStatus(w, st)
	fmt.Fprintf(w, "no key yet: the rotation waits for more approvals: %s\n", g.voteHint(base, st.ID))
	fmt.Fprintf(w, "once accepted, the new key is released to attested services at once and published to clients %s later (the rotation policy's publish_delay_seconds)\n", humanDuration(delay))
	return nil
}

// fetchKeysWith reads every key of the KMS at base with hc.
func fetchKeysWith(hc *http.Client, base string) (api.V1Keys, error) {
	var list api.V1Keys
	body, err := getJSON(hc, strings.TrimRight(base, "/")+"/v1/keys?all=true")
	if err != nil {
		return list, err
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return list, fmt.Errorf("GET /v1/keys: %w", err)
	}
	return list, nil
}

// voteHint is the complete command with which another member approves
// proposal id: the KMS, and the CA file if one was given (--kms-ca, or
// $TKMS_CACERT for an https:// KMS, as kmsTLSConfig takes it).
func (g *govFlags) voteHint(base, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tkms gov vote --kms %s", base)
	ca := g.kmsCA
	if ca == "" && strings.HasPrefix(base, "https://") {
		ca = os.Getenv(envCACert)
	}
	if ca != "" {
		fmt.Fprintf(&b, " --kms-ca %s", ca)
	}
	fmt.Fprintf(&b, " --key MEMBER.pem %s approve", id)
	return b.String()
}
