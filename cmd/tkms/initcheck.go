package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/seal"
)

// parseInitConstitution parses tkms init's constitution file: the rules are
// required; proposal_ttl_seconds, created_at_window_seconds and withdraw
// default to those of gov.DefaultConstitution (7 days, 10 minutes,
// "proposer"). The result passes governance's own checks
// (gov.ParseConstitution): a set_constitution proposal must still give
// every field.
func parseInitConstitution(raw []byte) (*gov.Constitution, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf(`want a JSON object {"rules":{...}}: %v`, err)
	}
	def, err := json.Marshal(gov.DefaultConstitution())
	if err != nil {
		return nil, err
	}
	var defaults map[string]json.RawMessage
	if err := json.Unmarshal(def, &defaults); err != nil {
		return nil, err
	}
	for name, v := range defaults {
		if _, ok := fields[name]; !ok && name != "rules" {
			fields[name] = v
		}
	}
	full, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return gov.ParseConstitution(full)
}

// checkInitPolicies checks the initial policies as the proposals that would
// set them are checked (gov.ValidateAction): whatever init accepts, a
// governed service could also have been given by its members, and serve
// loads.
func checkInitPolicies(p initPolicies) error {
	var errs []error
	check := func(file, name string, args any) {
		b, err := json.Marshal(args)
		if err == nil {
			err = gov.ValidateAction(gov.Action{Name: name, Args: b})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
		}
	}
	if p.release != nil {
		check(policyFileRelease, gov.ActSetKeyReleasePolicy, map[string]json.RawMessage{"policy": p.release})
	}
	if p.jwt != nil {
		for _, is := range p.jwt.Issuers {
			check(policyFileIssuers, gov.ActSetJWTIssuer, is)
		}
		for _, iss := range slices.Sorted(maps.Keys(p.jwt.Claims)) {
			check(policyFileJWTClaims, gov.ActSetJWTValidationPolicy, gov.JWTValidationArgs{Issuer: iss, Claims: p.jwt.Claims[iss]})
		}
	}
	check(policyFileRotation, gov.ActSetKeyRotationPolicy, p.rotation)
	check(policyFileSettings, gov.ActSetSettingsPolicy, p.settings)
	return errors.Join(errs...)
}

// buildDataDir creates the data directory dir through build, which writes
// it in a new temporary directory, with the sealer of masterKeyFile: beside
// dir, or inside it if dir exists (a mount point, say, on a file system of
// its own). Only once build succeeds does the result take dir's place (a
// rename, or one per entry if dir exists): a failed init leaves nothing
// behind, and can be rerun. A master key file inside dir is
// created in the temporary directory unless it exists; one outside is
// created in place, and removed again if build fails. created says whether
// the master key is new.
func buildDataDir(dir, masterKeyFile string, build func(tmp string, sealer seal.Sealer) error) (created bool, err error) {
	parent, prefix := filepath.Dir(dir), "."+filepath.Base(dir)+".init-"
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		parent, prefix = dir, ".init-"
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	keyPath := masterKeyFile
	if rel, rerr := filepath.Rel(dir, masterKeyFile); rerr == nil && !strings.HasPrefix(rel, "..") {
		if _, serr := os.Stat(masterKeyFile); errors.Is(serr, os.ErrNotExist) {
			keyPath = filepath.Join(tmp, rel)
		}
	}
	sealer, created, err := seal.LoadOrCreateFile(keyPath)
	if err != nil {
		return false, err
	}
	if created && keyPath == masterKeyFile {
		defer func() {
			if err != nil {
				os.Remove(masterKeyFile)
			}
		}()
	}
	if err := build(tmp, sealer); err != nil {
		return false, err
	}
	if err := installDir(tmp, dir); err != nil {
		return false, err
	}
	return created, nil
}

// installDir moves the directory tmp to dir: a rename if dir does not
// exist, else a rename of each of tmp's entries into dir, refusing to
// replace any.
func installDir(tmp, dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		return seal.SyncDir(filepath.Dir(dir))
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, err := os.Lstat(filepath.Join(dir, e.Name())); err == nil {
			return fmt.Errorf("%s already holds %s: tkms init does not replace what a data directory holds", dir, e.Name())
		}
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	if err := seal.SyncDir(dir); err != nil {
		return err
	}
	return os.Remove(tmp)
}
