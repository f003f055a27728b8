package release

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/release/releasetest"
	"github.com/tkms-dev/tkms/internal/state"
)

// maaInstance is an MAA instance of a test: a real issuer (static keys)
// at url minting tokens shaped as MAA's.
type maaInstance struct {
	url string
	iss *oidcissuer.Issuer
}

func newMAAInstance(t *testing.T, url string) maaInstance {
	t.Helper()
	iss, err := oidcissuer.New(t.TempDir(), oidcissuer.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return maaInstance{url: url, iss: iss}
}

func (m maaInstance) token(t *testing.T) []byte {
	t.Helper()
	now := time.Now()
	tok, err := m.iss.Mint(map[string]any{
		"iss": m.url, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"x-ms-attestation-type": "azurevm",
		"x-ms-isolation-tee":    map[string]any{"x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false},
		"x-ms-runtime": map[string]any{
			"client-payload": map[string]any{"tkms-report-data": base64.StdEncoding.EncodeToString(make([]byte, 64))},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}

func (m maaInstance) arg() map[string]any {
	return map[string]any{"issuer": m.url, "jwks": json.RawMessage(m.iss.JWKS())}
}

// TestMAAFollowsGovernance: the trusted MAA instances follow the ledger
// without a restart: the configuration's until governance sets a list,
// then exactly governance's (a removed instance's tokens are refused with
// MAA_ISSUER_UNTRUSTED, an added one's accepted, none left:
// MAA_NOT_CONFIGURED); the simulated instance, when trusted, stays.
func TestMAAFollowsGovernance(t *testing.T) {
	a := newMAAInstance(t, "https://a-maa.tkms.invalid")
	b := newMAAInstance(t, "https://b-maa.tkms.invalid")
	sim, err := simmaa.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	simToken, err := sim.Token(simmaa.TokenOptions{ReportData: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	signer, member := devMember(t)
	svc := releasetest.KMS(t, kms.Config{
		Governance: &kms.GovInit{Members: []gov.Member{member}, Constitution: gov.DevConstitution()},
	})
	log := slog.New(slog.DiscardHandler)
	follow := &MAAFollow{
		Configured: []maa.Instance{{Issuer: a.url, JWKS: a.iss.JWKS()}},
		Always:     []maa.Instance{sim.Trusted()},
	}
	var ins []maa.Instance
	svc.Read(func(st *state.State) { ins, follow.Seq = MAAInstances(st, follow.Configured, follow.Always), st.MAASeq })
	av, err := attest.New(attest.Config{MAA: maa.Options{Instances: ins, Logger: log}, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(av.Close)
	newAuth := func(ctx context.Context, ac jwtauth.Config) (*jwtauth.Authenticator, error) {
		return jwtauth.New(ctx, ac)
	}
	rel, err := New(Config{KMS: svc, NewAuth: newAuth, Attest: av, Logger: log, MAA: follow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rel.Close)

	check := func(what string, token []byte, code string) {
		t.Helper()
		_, err := rel.VerifyEvidence(context.Background(), token)
		var re *Error
		switch {
		case code == "" && err != nil:
			t.Fatalf("%s: %v", what, err)
		case code != "" && (!errors.As(err, &re) || re.Code != CodeAttestationFailed || attest.Code(err) != code):
			t.Fatalf("%s: %v, want %s with %s", what, err, CodeAttestationFailed, code)
		}
	}
	roots := func() []string {
		for _, f := range rel.Trust().Formats {
			if f.Type == attest.TypeMAA {
				return f.Roots
			}
		}
		return nil
	}
	propose := func(instances ...maaInstance) {
		t.Helper()
		list := []any{}
		for _, in := range instances {
			list = append(list, in.arg())
		}
		args, _ := json.Marshal(map[string]any{"instances": list})
		raw, err := signer.SignProposal([]gov.Action{{Name: gov.ActSetMAAInstances, Args: args}}, svc.Now())
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := svc.Propose(context.Background(), raw, false)
		if err != nil || p.Status != state.ProposalAccepted {
			t.Fatalf("proposal: %+v, %v", p, err)
		}
	}

	// Governed, but no list set yet: the configuration's instance.
	check("a, configured", a.token(t), "")
	check("b, not trusted", b.token(t), maa.CodeIssuerUntrusted)
	check("simulated", []byte(simToken), "")

	propose(b)
	check("b, added by governance", b.token(t), "")
	check("a, not in governance's list", a.token(t), maa.CodeIssuerUntrusted)
	check("simulated, still trusted", []byte(simToken), "")
	if r := roots(); !slices.Contains(r, "MAA instance "+b.url) || slices.Contains(r, "MAA instance "+a.url) {
		t.Fatalf("GET /v1/attestation MAA roots %q", r)
	}

	propose(a, b)
	check("a, added back", a.token(t), "")
	check("b, still trusted", b.token(t), "")

	propose()
	check("b, removed with every instance", b.token(t), maa.CodeIssuerUntrusted)
	check("simulated, always trusted", []byte(simToken), "")
}
