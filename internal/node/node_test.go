package node_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/policy"
)

// simVerifier trusts the simulated TEE of dir, as tkms dev does.
func simVerifier(t *testing.T, dir string) *attest.Verifier {
	t.Helper()
	chain, err := simsnp.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := attest.Config{Simulated: true}
	chain.Trust(&cfg)
	v, err := attest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func devPolicy(t *testing.T) policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(`{"claims":{"x-ms-sevsnpvm-launchmeasurement":["` + hex.EncodeToString([]byte(simsnp.DefaultMeasurement)) + `"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newIdentity(t *testing.T, dir string, opts devtee.AttesterOptions) *node.Identity {
	t.Helper()
	if _, err := simsnp.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	a, err := devtee.NewAttester(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	id, err := node.New(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fixedAttester returns the same evidence whatever key it is asked to bind.
type fixedAttester struct{ ev *client.Evidence }

func (f fixedAttester) Attest(context.Context, [64]byte) (*client.Evidence, error) { return f.ev, nil }

func TestCheck(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := simVerifier(t, dir)
	pol := devPolicy(t)
	good := newIdentity(t, dir, devtee.AttesterOptions{})
	other := newIdentity(t, dir, devtee.AttesterOptions{Measurement: bytes.Repeat([]byte{0xab}, 48)})
	debug := newIdentity(t, dir, devtee.AttesterOptions{Debug: true})
	forged := newIdentity(t, t.TempDir(), devtee.AttesterOptions{}) // another simulated chain
	replayed := good.Evidence

	if id := node.ID(good.Public); id != good.ID || len(good.Public) != 32 {
		t.Fatalf("node id %s of a %d-byte key, want %s", good.ID, len(good.Public), id)
	}
	adm, err := node.Check(ctx, v, pol, good.Public, good.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	if adm.NodeID != good.ID || adm.EvidenceType != attest.TypeACI || !adm.Simulated || adm.Claims["x-ms-sevsnpvm-launchmeasurement"] == nil {
		t.Fatalf("admitted: %+v", adm)
	}
	for _, tc := range []struct {
		name     string
		key, ev  []byte
		pol      policy.Policy
		code     string
		contains string
	}{
		{"another measurement", other.Public, other.Evidence, pol, node.CodePolicyDenied, "x-ms-sevsnpvm-launchmeasurement"},
		{"replayed evidence of another node key", other.Public, replayed, pol, node.CodeKeyNotBound, "REPORT_DATA"},
		{"forged (another chain)", forged.Public, forged.Evidence, pol, "", ""},
		{"debug", debug.Public, debug.Evidence, pol, "", ""},
		{"no node policy", good.Public, good.Evidence, policy.Policy{}, node.CodePolicyUnset, ""},
		{"not a key", []byte("short"), good.Evidence, pol, node.CodeKeyInvalid, ""},
		{"not evidence", good.Public, []byte("{}"), pol, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := node.Check(ctx, v, pol, tc.key, tc.ev)
			if tc.pol.Kind() == policy.KindUnset {
				_, err = node.Check(ctx, v, tc.pol, tc.key, tc.ev)
			}
			if err == nil {
				t.Fatal("admitted")
			}
			code := attest.Code(err)
			if code == "" || (tc.code != "" && code != tc.code) {
				t.Fatalf("code %q, want %q: %v", code, tc.code, err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tc.contains)) {
				t.Fatalf("error %q does not name %q", err, tc.contains)
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	dir := t.TempDir()
	a := newIdentity(t, dir, devtee.AttesterOptions{})
	b := newIdentity(t, dir, devtee.AttesterOptions{})
	secret := []byte("the ledger's master key, 32 byte")
	sealed, err := node.Seal(a.Public, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("the sealed handoff holds the secret in clear")
	}
	got, err := a.Open(sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := b.Open(sealed); err == nil {
		t.Fatal("another node opened the handoff")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := a.Open(sealed); err == nil {
		t.Fatal("a tampered handoff opened")
	}
	if _, err := node.Seal([]byte("short"), secret); attest.Code(err) != node.CodeKeyInvalid {
		t.Fatalf("seal to a bad key: %v", err)
	}
}

// A fixed attester returns evidence bound to another key: refused.
func TestNewBindsKey(t *testing.T) {
	dir := t.TempDir()
	good := newIdentity(t, dir, devtee.AttesterOptions{})
	id, err := node.New(context.Background(), fixedAttester{&client.Evidence{Type: client.EvidenceACI, Attestation: good.Evidence}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Check(context.Background(), simVerifier(t, dir), devPolicy(t), id.Public, id.Evidence); attest.Code(err) != node.CodeKeyNotBound {
		t.Fatalf("evidence of another key: %v", err)
	}
}
