// Package servicecheck proves a tkms KMS before a client trusts any of
// its keys: it fetches GET /v1/service and checks, for every trusted node
// listed, that the node's endorsement (the receipt of its node.joined
// entry) verifies under the log key, and that the endorsed evidence
// verifies, binds the node key (REPORT_DATA[0:32] = SHA-256 of the key)
// and satisfies the integrator's node policy (the key release policy
// grammar). Give [New]'s result as client.KeysConfig.Service.
//
// It is a package of its own, which integrators opt into, because it
// imports the attestation verifiers (go-sev-guest's verify package, which
// registers a global flag); package client does not.
package servicecheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// ErrUntrusted is what every refusal of the service wraps: GET
// /v1/service lists no node, or a listed node fails a check (then the
// error is also a [*NodeError]).
var ErrUntrusted = errors.New("servicecheck: the KMS is not trusted")

// NodeError is a listed node that fails a check.
type NodeError struct {
	NodeID string // as listed
	Err    error  // the failed check; node.Check's codes for the evidence
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("%v: node %s: %v", ErrUntrusted, e.NodeID, e.Err)
}

// Unwrap gives ErrUntrusted and the failed check.
func (e *NodeError) Unwrap() []error { return []error{ErrUntrusted, e.Err} }

// Config configures the check.
type Config struct {
	// NodePolicy is the node policy every listed node must satisfy (JSON,
	// the key release policy grammar). Required.
	NodePolicy []byte
	// Attest configures the evidence verifier. Its zero value trusts the
	// pinned AMD (and Intel) roots and the default UVM endorsers only;
	// simulated roots are for tests.
	Attest attest.Config
}

// New returns the check for client.KeysConfig.Service. The client's
// LogKey is required: without it no endorsement verifies.
func New(cfg Config) (client.ServiceCheck, error) {
	pol, err := policy.Parse(cfg.NodePolicy)
	if err != nil {
		return nil, fmt.Errorf("servicecheck: the node policy: %w", err)
	}
	v, err := attest.New(cfg.Attest)
	if err != nil {
		return nil, fmt.Errorf("servicecheck: %w", err)
	}
	return func(ctx context.Context, hc *http.Client, kms, logKey string) error {
		return check(ctx, v, pol, hc, kms, logKey)
	}, nil
}

func check(ctx context.Context, v *attest.Verifier, pol policy.Policy, hc *http.Client, kms, logKey string) error {
	if logKey == "" {
		return fmt.Errorf("%w: no log key (KeysConfig.LogKey) to verify the nodes' endorsements", ErrUntrusted)
	}
	lv, err := translog.NewVerifier(logKey)
	if err != nil {
		return fmt.Errorf("%w: the log key: %w", ErrUntrusted, err)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, kms+"/v1/service", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET /v1/service: %s", ErrUntrusted, resp.Status)
	}
	var s api.Service
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("%w: GET /v1/service: %w", ErrUntrusted, err)
	}
	if len(s.Nodes) == 0 {
		return fmt.Errorf("%w: GET /v1/service lists no trusted node", ErrUntrusted)
	}
	for _, n := range s.Nodes {
		if err := checkNode(ctx, v, pol, lv, logKey, n.NodeKey, n.Endorsement); err != nil {
			return &NodeError{NodeID: n.NodeID, Err: err}
		}
	}
	return nil
}

// checkNode verifies a node's endorsement under the log key, that it
// endorses a node.joined entry of nodeKey, and the endorsed evidence
// with node.Check; when the entry holds a node certificate, also that the
// evidence binds its TLS key and that the log key (the service identity)
// signed the certificate for that key (node.CheckPeer).
func checkNode(ctx context.Context, v *attest.Verifier, pol policy.Policy, lv note.Verifier, logKey string, nodeKey []byte, endorsement json.RawMessage) error {
	if len(endorsement) == 0 || string(endorsement) == "null" {
		return errors.New("no endorsement (no checkpoint covers its node.joined entry yet)")
	}
	r, err := translog.ParseReceipt(endorsement)
	if err != nil {
		return fmt.Errorf("the endorsement: %w", err)
	}
	leaf, _, err := r.Verify(lv)
	if err != nil {
		return fmt.Errorf("the endorsement: %w", err)
	}
	if leaf.Type != ledger.TypeNodeJoined {
		return fmt.Errorf("the endorsement proves a %s entry, not %s", leaf.Type, ledger.TypeNodeJoined)
	}
	var nj state.NodeJoined
	if err := json.Unmarshal(leaf.Body, &nj); err != nil {
		return fmt.Errorf("the endorsed entry: %w", err)
	}
	if !bytes.Equal(nj.NodeKey, nodeKey) {
		return fmt.Errorf("the endorsed entry (%d) is of another node key", leaf.Seq)
	}
	adm, err := node.Check(ctx, v, pol, nj.NodeKey, nj.Evidence)
	if err != nil {
		return err
	}
	if len(nj.Certificate) == 0 {
		return nil // admitted before node certificates
	}
	if err := adm.CheckTLSKey(nj.TLSKey); err != nil {
		return err
	}
	sk, err := node.ServiceKey(logKey)
	if err != nil {
		return err
	}
	_, err = node.CheckPeer(nj.Certificate, sk, time.Now(), func(id string) ([]byte, error) {
		if id != nj.NodeID {
			return nil, fmt.Errorf("the certificate names node %s, not %s", id, nj.NodeID)
		}
		return nj.TLSKey, nil
	})
	return err
}
