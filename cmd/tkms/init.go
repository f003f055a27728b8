package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

// Files a --policies directory of tkms init may hold, each optional.
const (
	policyFileRelease    = "key_release_policy.json"
	policyFileIssuers    = "jwt_issuers.json"
	policyFileJWTClaims  = "jwt_validation_policy.json"
	policyFileRotation   = "key_rotation_policy.json"
	policyFileSettings   = "settings_policy.json"
	initSettingsDescribe = "tkms: confidential, transparent key management for DEPA inferencing"
)

var initPolicyFiles = []string{policyFileRelease, policyFileIssuers, policyFileJWTClaims, policyFileRotation, policyFileSettings}

// initPolicies are the policies a governed service starts with; after
// genesis, only accepted proposals change them (docs/governance.md).
type initPolicies struct {
	release  []byte
	jwt      *state.JWTPolicy
	rotation state.RotationPolicy
	settings state.Settings
}

// cmdInit runs `tkms init`: it creates a new governed service in a data
// directory that `tkms serve` then runs.
func cmdInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", stderr)
	membersPath := fs.String("members", "", "members `file`: {\"members\":[{\"name\",\"signing_key\",\"recovery_key\"?}, ...]} (docs/governance.md)")
	constitutionPath := fs.String("constitution", "", "constitution `file` (default: majority of the members for every action, 2/3 for member and constitution changes)")
	policiesDir := fs.String("policies", "", "`directory` of initial policies: "+strings.Join(initPolicyFiles, ", ")+" (each optional)")
	dataDir := fs.String("data", "", "data `directory` of the new service (must hold no ledger)")
	masterKeyFile := fs.String("master-key-file", "", "master key `file` (default DATA/master.key; created, mode 0600, if absent)")
	serviceName := fs.String("service-name", "tkms", "`name` of the service in the genesis entry")
	logOrigin := fs.String("log-origin", "", "the transparency log's `origin` line, e.g. kms.sro.example/depa (default tkms/<service-name>/<random>)")
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field (created) instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *membersPath == "" || *dataDir == "" {
		return fmt.Errorf("%w: --members and --data are required", errUsage)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err == nil {
		return fmt.Errorf("%s already holds a ledger: tkms init creates a new service; run it with tkms serve, and change it with tkms gov propose", dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}

	// Every input is read and checked, with the checks governance applies
	// to the same changes, before anything is written.
	raw, err := os.ReadFile(*membersPath)
	if err != nil {
		return fmt.Errorf("members: %w", err)
	}
	members, err := gov.ParseMembersFile(raw)
	if err != nil {
		return fmt.Errorf("members %s: %w", *membersPath, err)
	}
	constitution := gov.DefaultConstitution()
	if *constitutionPath != "" {
		raw, err := os.ReadFile(*constitutionPath)
		if err != nil {
			return fmt.Errorf("constitution: %w", err)
		}
		if constitution, err = parseInitConstitution(raw); err != nil {
			return fmt.Errorf("constitution %s: %w", *constitutionPath, err)
		}
	}
	if err := constitution.Validate(len(members)); err != nil {
		return fmt.Errorf("constitution: %w", err)
	}
	holders := 0
	for _, m := range members {
		if m.EncryptionKey != nil {
			holders++
		}
	}
	if err := constitution.ValidateRecovery(holders); err != nil {
		return fmt.Errorf("constitution: %w", err)
	}
	pol, err := readInitPolicies(*policiesDir, *serviceName)
	if err != nil {
		return err
	}
	if err := checkInitPolicies(pol); err != nil {
		return err
	}
	cfg := &Config{DataDir: dir, ServiceName: *serviceName, LogOrigin: *logOrigin, MasterKeyFile: *masterKeyFile}
	cfg.applyDefaults("text")
	if err := cfg.Validate(); err != nil {
		return err
	}
	var logKey string
	created, err := buildDataDir(dir, cfg.MasterKeyFile, func(tmp string, sealer seal.Sealer) error {
		svc, err := kms.Open(context.Background(), kms.Config{
			DataDir:        tmp,
			Sealer:         sealer,
			ServiceName:    *serviceName,
			RotationPolicy: pol.rotation,
			Settings:       pol.settings,
			ReleasePolicy:  pol.release,
			JWT:            pol.jwt,
			Logger:         cfg.logger(io.Discard),
			LogOrigin:      *logOrigin,
			Governance:     &kms.GovInit{Members: members, Constitution: constitution},
		})
		if err != nil {
			return err
		}
		logKey = svc.LogVerifierKey()
		return svc.Close()
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeResultJSON(stdout, "created", struct {
			DataDir       string       `json:"data_dir"`
			ServiceName   string       `json:"service_name"`
			MasterKeyFile string       `json:"master_key_file"`
			NewMasterKey  bool         `json:"new_master_key"`
			Members       []gov.Member `json:"members"`
			LogKey        string       `json:"log_key"`
		}{dir, *serviceName, cfg.MasterKeyFile, created, members, logKey})
	}
	if created {
		fmt.Fprintf(stdout, "tkms init: created a new master key in %s (mode 0600): back it up; without it the keys are lost\n", cfg.MasterKeyFile)
	}

	fmt.Fprintf(stdout, "tkms init: created governed service %q in %s\n", *serviceName, dir)
	fmt.Fprintf(stdout, "tkms init: %d members:\n", len(members))
	for _, m := range members {
		fmt.Fprintf(stdout, "  %s  %s\n", m.ID, m.Name)
	}
	fmt.Fprintf(stdout, "tkms init: constitution:\n")
	for _, line := range strings.Split(strings.TrimRight(describeConstitution(constitution, len(members)), "\n"), "\n") {
		fmt.Fprintf(stdout, "  %s\n", line)
	}
	fmt.Fprintf(stdout, "tkms init: initial policies: %s\n", describeInitPolicies(pol))
	fmt.Fprintf(stdout, "tkms init: transparency log key %s\n", logKey)
	fmt.Fprintf(stdout, "tkms init: next: tkms serve --config FILE with \"data_dir\": %q (policies in the config are then ignored: propose changes with tkms gov propose)\n", dir)
	return nil
}

// readInitPolicies reads the policy files of dir ("" for none). Unknown
// files are refused: a misspelt name must not silently leave a policy
// unset.
func readInitPolicies(dir, serviceName string) (initPolicies, error) {
	floors := policy.DefaultAttestation() // explicit, so that the ledger shows the floors in force
	p := initPolicies{
		rotation: state.DefaultRotationPolicy(),
		settings: state.Settings{Service: state.ServiceSettings{Name: serviceName, Description: initSettingsDescribe, Version: version}, Attestation: &floors},
	}
	if dir == "" {
		return p, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return p, fmt.Errorf("policies: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		if !slices.Contains(initPolicyFiles, e.Name()) {
			return p, fmt.Errorf("policies %s: unknown file %q; want only %s", dir, e.Name(), strings.Join(initPolicyFiles, ", "))
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return p, fmt.Errorf("policies: %w", err)
		}
		files[e.Name()] = b
	}
	var errs []error
	if b, ok := files[policyFileRelease]; ok {
		if _, err := policy.Parse(b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", policyFileRelease, err))
		}
		p.release = b
	}
	if b, ok := files[policyFileRotation]; ok {
		if err := decodeStrictJSON(b, &p.rotation); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", policyFileRotation, err))
		} else if err := p.rotation.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", policyFileRotation, err))
		}
	}
	if b, ok := files[policyFileSettings]; ok {
		p.settings = state.Settings{}
		if err := decodeStrictJSON(b, &p.settings); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", policyFileSettings, err))
		}
	}
	issuers, hasIssuers := files[policyFileIssuers]
	claims, hasClaims := files[policyFileJWTClaims]
	if hasClaims && !hasIssuers {
		errs = append(errs, fmt.Errorf("%s without %s: the claims are per issuer", policyFileJWTClaims, policyFileIssuers))
	}
	if hasIssuers {
		jp := &state.JWTPolicy{}
		if err := decodeStrictJSON(issuers, &jp.Issuers); err != nil {
			errs = append(errs, fmt.Errorf("%s: want a list of issuers: %w", policyFileIssuers, err))
		}
		if hasClaims {
			if err := decodeStrictJSON(claims, &jp.Claims); err != nil {
				errs = append(errs, fmt.Errorf("%s: want {\"<issuer>\":{\"<claim>\": value or [values]}}: %w", policyFileJWTClaims, err))
			}
		}
		if len(errs) == 0 {
			if err := jp.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", policyFileIssuers, err))
			}
		}
		p.jwt = jp
	}
	return p, errors.Join(errs...)
}

// decodeStrictJSON decodes one JSON value, refusing unknown fields and
// trailing data.
func decodeStrictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func describeInitPolicies(p initPolicies) string {
	var parts []string
	if p.release != nil {
		parts = append(parts, "key release policy")
	} else {
		parts = append(parts, "no key release policy (every release denied until one is proposed)")
	}
	if p.jwt != nil {
		parts = append(parts, fmt.Sprintf("%d token issuers", len(p.jwt.Issuers)))
	} else {
		parts = append(parts, "no token issuer (release disabled until one is proposed)")
	}
	parts = append(parts, fmt.Sprintf("a new key every %s", humanDuration(time.Duration(p.rotation.RotationInterval))))
	return strings.Join(parts, "; ")
}

// describeConstitution says in plain words what c requires of n members.
func describeConstitution(c *gov.Constitution, n int) string {
	var b strings.Builder
	names := slices.Sorted(maps.Keys(c.Rules))
	// The default rule first: it covers every action without a rule.
	if i := slices.Index(names, "default"); i > 0 {
		names = append(append([]string{"default"}, names[:i]...), names[i+1:]...)
	}
	for _, name := range names {
		r := c.Rules[name]
		what := name
		if name == "default" {
			what = "any other action"
		}
		fmt.Fprintf(&b, "%s: %s (%d of %d members)\n", what, r.Approvals, r.Approvals.Needed(n), n)
	}
	fmt.Fprintf(&b, "proposals stay open %v; messages must be signed within %v of their recording\n",
		humanDuration(time.Duration(c.ProposalTTLSeconds)*time.Second), humanDuration(time.Duration(c.CreatedAtWindowSeconds)*time.Second))
	switch c.Withdraw {
	case "proposer":
		b.WriteString("an open proposal may be withdrawn by its proposer\n")
	case "none":
		b.WriteString("proposals cannot be withdrawn\n")
	}
	return b.String()
}

// humanDuration writes whole days as days, and anything else as Go does.
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}
