package release

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
)

// decideSim verifies simulated ACI evidence from chain (UVM SVN svn) and
// decides it under e's policy and attestation settings.
func decideSim(t *testing.T, e *simEnv, chain *simsnp.Chain, svn string) error {
	t.Helper()
	b, err := chain.ACIBundle(simsnp.ACIBundleOptions{Report: simsnp.ReportOptions{HostData: simHostData}, SigningTime: e.at, UVMSVN: svn})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.rel.VerifyEvidence(context.Background(), b)
	if err != nil {
		return err
	}
	_, err = e.rel.Decide(ev)
	return err
}

// wantRefused checks a refusal's code and the start of its message.
func wantRefused(t *testing.T, what string, err error, code, cause string) {
	t.Helper()
	var re *Error
	if !errors.As(err, &re) || re.Kind != KindRefused || re.Code != code || !strings.HasPrefix(re.Message, cause) {
		t.Fatalf("%s: %v, want a refusal %s %s", what, err, code, cause)
	}
}

// TestAttestationFloors: without any setting, a report signed by an older
// VCEK (a TCB rolled back below what Azure ships) and a UVM endorsement of
// SVN 0 are refused, under a policy that names neither (the defaults of
// policy.DefaultAttestation); the attestation settings raise or lower the
// floors, and a product line without a floor is refused.
func TestAttestationFloors(t *testing.T) {
	e := newSimEnv(t, nil)
	if err := decideSim(t, e, e.chain, ""); err != nil {
		t.Fatalf("the simulated chain at the default floor: %v", err)
	}
	rolledBack, err := e.chain.WithVCEKTCB(3, 0, 8, 114) // microcode one below the Milan floor
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "an older VCEK", decideSim(t, e, rolledBack, ""), CodeAttestationFailed, "TCB_TOO_LOW: REPORTED_TCB of this Milan report is below the minimum")
	wantRefused(t, "a UVM endorsement of SVN 0", decideSim(t, e, e.chain, "0"), CodeAttestationFailed, "UVM_SVN_TOO_LOW")
	wantRefused(t, "a UVM endorsement of SVN 21", decideSim(t, e, e.chain, "21"), CodeAttestationFailed, "UVM_SVN_TOO_LOW")

	settings := func(a policy.Attestation) func(*kms.Config) {
		return func(c *kms.Config) { c.Settings = state.Settings{Attestation: &a} }
	}
	raised := newSimEnvKMS(t, nil, settings(policy.Attestation{
		MinReportedTCB: map[string]policy.TCB{"Milan": {Bootloader: 3, SNP: 9, Microcode: 115}}, MinUVMSVN: 101,
	}))
	err = decideSim(t, raised, raised.chain, "")
	wantRefused(t, "raised floors", err, CodeAttestationFailed, "TCB_TOO_LOW")
	if !strings.Contains(err.Error(), "snp 8 < 9") || !strings.Contains(err.Error(), "svn is 100, the minimum is 101") {
		t.Fatalf("raised floors: %v, want both failures named", err)
	}
	noLine := newSimEnvKMS(t, nil, settings(policy.Attestation{MinReportedTCB: map[string]policy.TCB{"Genoa": {}}}))
	wantRefused(t, "no floor for Milan", decideSim(t, noLine, noLine.chain, ""), CodeAttestationFailed, `TCB_TOO_LOW: no minimum TCB is set for product line "Milan"`)
	lowered := newSimEnvKMS(t, nil, settings(policy.Attestation{MinReportedTCB: map[string]policy.TCB{"Milan": {}}}))
	if err := decideSim(t, lowered, rolledBack, "0"); err != nil {
		t.Fatalf("floors lowered by the settings: %v", err)
	}
}

// TestDefaultFloorsPassRealACI: every real ACI report of the vectors, with
// its real UVM endorsement, meets the default attestation settings: they are
// a floor against rollback, not a pin to the newest firmware.
func TestDefaultFloorsPassRealACI(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var thim struct {
		TCBM string `json:"tcbm"`
	}
	if err := json.Unmarshal(read("../attest/snp/testdata/sidecar_uvm_host_amd_certificate.json"), &thim); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	sidecar, _ := json.Marshal(map[string]string{
		"evidence":         b64(read("../attest/snp/testdata/sidecar_snp_report.bin")),
		"endorsements":     b64(read("../attest/snp/testdata/sidecar_uvm_host_amd_certificate.pem")),
		"uvm_endorsements": b64(read("../attest/uvm/testdata/body.uvm_reference_info.bin")),
		"endorsed_tcb":     thim.TCBM,
	})
	e := newEnv(t, nil)
	for name, att := range map[string][]byte{"azure-privacy-sandbox-kms snp.json": read(aciSample), "confidential-sidecar-containers": sidecar} {
		ev, err := e.rel.VerifyEvidence(context.Background(), att)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev.Claims[policy.ClaimEvidenceType] != policy.EvidenceSNPACI || ev.Claims["tkms-snp-product-line"] != "Milan" {
			t.Fatalf("%s: claims %v", name, ev.Claims)
		}
		if err := policy.DefaultAttestation().Check(ev.Claims); err != nil {
			t.Errorf("%s under the default attestation settings: %v", name, err)
		}
	}
}

// TestAttestationSettingsByGovernance: on a governed ledger the attestation
// settings change only by an accepted set_settings_policy, and the release
// service follows at once: a raised floor refuses evidence the default
// admitted, and the settings entry is in the ledger.
func TestAttestationSettingsByGovernance(t *testing.T) {
	signer, member := devMember(t)
	e := newSimEnvKMS(t, nil, func(c *kms.Config) {
		c.Governance = &kms.GovInit{Members: []gov.Member{member}, Constitution: gov.DevConstitution()}
	})
	if err := decideSim(t, e, e.chain, ""); err != nil {
		t.Fatalf("before the proposal: %v", err)
	}
	args, _ := json.Marshal(map[string]any{
		"service":     map[string]any{"name": "tkms"},
		"attestation": map[string]any{"min_reported_tcb": map[string]any{"Milan": map[string]any{"bootloader": 3, "tee": 0, "snp": 8, "microcode": 116}}, "min_uvm_svn": 22},
	})
	raw, err := signer.SignProposal([]gov.Action{{Name: gov.ActSetSettingsPolicy, Args: args}}, e.kms.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p, _, err := e.kms.Propose(context.Background(), raw, false); err != nil || p.Status != state.ProposalAccepted {
		t.Fatalf("proposal: %+v, %v", p, err)
	}
	wantRefused(t, "after the floor was raised", decideSim(t, e, e.chain, ""), CodeAttestationFailed, "TCB_TOO_LOW")
	var floors policy.Attestation
	e.kms.Read(func(st *state.State) { floors = st.Settings.AttestationInForce() })
	if floors.MinReportedTCB["Milan"].Microcode != 116 {
		t.Fatalf("attestation settings in force: %+v", floors)
	}

	bad, _ := json.Marshal(map[string]any{"service": map[string]any{}, "attestation": map[string]any{"min_reported_tcb": map[string]any{"milan": map[string]any{}}}})
	if err := gov.ValidateAction(gov.Action{Name: gov.ActSetSettingsPolicy, Args: bad}); err == nil || !strings.Contains(err.Error(), `unknown product line "milan"`) {
		t.Fatalf("a floor for product line milan: %v", err)
	}
}
