package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/gov"
)

func cmdGovAutoRecoveryMember(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov auto-recovery-member", stderr)
	bundleFile := fs.String("key-bundle", "", "the vault's GET key answer, a JSON `file` (- for stdin)")
	maaURL := fs.String("maa", "", "the attestation authority's `URL` (https://NAME.REGION.attest.azure.net)")
	policyFile := fs.String("policy", "", "the release policy `file` the key must have")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *bundleFile == "" || *maaURL == "" {
		return fmt.Errorf("%w: want --key-bundle and --maa", errUsage)
	}
	var raw []byte
	var err error
	if *bundleFile == "-" {
		raw, err = io.ReadAll(io.LimitReader(stdin, akv.MaxAnswerBytes))
	} else {
		raw, err = os.ReadFile(*bundleFile)
	}
	if err != nil {
		return fmt.Errorf("gov auto-recovery-member: reading the key bundle: %w", err)
	}
	kb, err := akv.ParseKeyBundle(raw)
	if err != nil {
		return fmt.Errorf("gov auto-recovery-member: %w", err)
	}
	m, err := memberFromBundle(kb, *maaURL)
	if err != nil {
		return fmt.Errorf("gov auto-recovery-member: %w", err)
	}
	if *policyFile != "" {
		doc, err := os.ReadFile(*policyFile)
		if err != nil {
			return fmt.Errorf("gov auto-recovery-member: %w", err)
		}
		h, err := akv.PolicySHA256(doc)
		if err != nil {
			return fmt.Errorf("gov auto-recovery-member: %s: %w", *policyFile, err)
		}
		if h != m.ReleasePolicySHA256 {
			return fmt.Errorf("gov auto-recovery-member: the key's release policy (SHA-256 %s) is not the one in %s (%s); check the key version", m.ReleasePolicySHA256, *policyFile, h)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	a := gov.Action{Name: gov.ActSetAutoRecoveryMember, Args: b}
	if err := gov.ValidateAction(a); err != nil {
		return fmt.Errorf("gov auto-recovery-member: %w", err)
	}
	out, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "tkms: "+gov.DescribeAction(a))
	_, err = io.Copy(stdout, bytes.NewReader(append(out, '\n')))
	return err
}

// memberFromBundle makes the member of a vault key bundle whose kid is
// https://VAULT/keys/NAME/VERSION, checked as a node checks it.
func memberFromBundle(kb *akv.KeyBundle, maaURL string) (akv.Member, error) {
	u, err := url.Parse(kb.Key.KID)
	parts := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	if err != nil || len(parts) != 3 || parts[0] != "keys" {
		return akv.Member{}, fmt.Errorf("the key's kid %q is not VAULT/keys/NAME/VERSION", kb.Key.KID)
	}
	if kb.ReleasePolicy == nil {
		return akv.Member{}, fmt.Errorf("the key %s has no release policy: create it with --exportable true --policy FILE", kb.Key.KID)
	}
	doc, err := kb.ReleasePolicy.Document()
	if err != nil {
		return akv.Member{}, fmt.Errorf("the key's release policy data is not base64url")
	}
	h, err := akv.PolicySHA256(doc)
	if err != nil {
		return akv.Member{}, fmt.Errorf("the key's release policy: %w", err)
	}
	pub := kb.Key
	m := akv.Member{
		VaultURL: u.Scheme + "://" + u.Host, KeyName: parts[1], KeyVersion: parts[2], MAAInstance: strings.TrimSuffix(maaURL, "/"),
		PublicKey: akv.JWK{KID: pub.KID, KTY: pub.KTY, N: pub.N, E: pub.E}, ReleasePolicySHA256: h,
	}
	if err := m.CheckKey(kb); err != nil {
		return akv.Member{}, err
	}
	return m, nil
}
