package akvsim

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

// Bed is the whole simulated Azure side of an automatic recovery, on
// loopback: an Entra-ID-like token issuer (internal/oidcissuer) for the
// vault's bearer tokens, the simulated MAA instance of a data directory
// serving its SEV-SNP attest API (simmaa.AttestHandler), and a Vault that
// trusts both.
type Bed struct {
	Vault    *Vault
	VaultURL string
	// MAAURL is where the simulated MAA instance attests; its tokens' iss
	// (the authority a release policy names) is simmaa.Issuer.
	MAAURL string
	Issuer *oidcissuer.Issuer

	servers []*http.Server
}

// Start starts a Bed whose keys live in dir (the simulated MAA instance's
// signing key in dir/simmaa, the token issuer's in dir/akvsim-oidc). v
// verifies the evidence the MAA instance is given: it must trust the
// simulated TEE of the nodes (simsnp.Chain.Trust).
func Start(ctx context.Context, dir string, v *attest.Verifier) (b *Bed, err error) {
	b = &Bed{}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	sim, err := simmaa.LoadOrCreate(dir)
	if err != nil {
		return nil, err
	}
	if b.MAAURL, err = b.serve(sim.AttestHandler(v)); err != nil {
		return nil, err
	}
	if b.Issuer, err = oidcissuer.New(filepath.Join(dir, "akvsim-oidc"), oidcissuer.Options{}); err != nil {
		return nil, err
	}
	issURL, err := b.serve(b.Issuer.Handler())
	if err != nil {
		return nil, err
	}
	if err := b.Issuer.SetURL(issURL); err != nil {
		return nil, err
	}
	b.Vault, err = New(ctx, Options{
		Authorities:  []maa.Instance{sim.Trusted()},
		TokenIssuers: []jwtauth.IssuerConfig{{Issuer: b.Issuer.URL(), DiscoveryURL: b.Issuer.DiscoveryURL(), Algorithms: []string{"RS256"}}},
	})
	if err != nil {
		return nil, err
	}
	if b.VaultURL, err = b.serve(b.Vault.Handler()); err != nil {
		return nil, err
	}
	b.Vault.SetURL(b.VaultURL)
	return b, nil
}

func (b *Bed) serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := &http.Server{Handler: h}
	b.servers = append(b.servers, s)
	go func() { _ = s.Serve(l) }()
	return "http://" + l.Addr().String(), nil
}

// Close stops the servers.
func (b *Bed) Close() {
	for _, s := range b.servers {
		_ = s.Close()
	}
	if b.Vault != nil {
		b.Vault.Close()
	}
}

// Token is an akv.TokenSource: a managed-identity-shaped token for the
// vault.
func (b *Bed) Token(ctx context.Context) (string, error) {
	return b.Issuer.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: Audience, PrincipalID: "00000000-0000-0000-0000-00000000cafe", TenantID: "simulated"})
}

// Policy returns an SKR release policy document with one rule: authority
// and every claim equal to its value (sorted by claim), as docs/auto-recovery.md
// writes it for the real vault.
func Policy(authority string, claims map[string]any) []byte {
	var all []map[string]any
	for _, k := range slices.Sorted(maps.Keys(claims)) {
		all = append(all, map[string]any{"claim": k, "equals": claims[k]})
	}
	b, _ := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{map[string]any{"authority": authority, "allOf": all}}})
	return b
}

// SimulatedTEEPolicy returns the release policy that admits the simulated
// TEE of tkms dev (internal/attest/simsnp) as MAA attests it: an ACI
// container of simsnp's default measurement, not debuggable, attested by
// the simulated MAA instance.
func SimulatedTEEPolicy() []byte {
	return Policy(simmaa.Issuer, map[string]any{
		"x-ms-attestation-type":           "sevsnpvm",
		"x-ms-compliance-status":          "azure-compliant-uvm",
		"x-ms-sevsnpvm-launchmeasurement": hex.EncodeToString([]byte(simsnp.DefaultMeasurement)),
		"x-ms-sevsnpvm-is-debuggable":     false,
	})
}

// CreateMember creates a vault key name with releasePolicy through the
// vault's HTTP API, fetches it back with GET key, and returns the member a
// proposal would name.
func (b *Bed) CreateMember(ctx context.Context, name string, releasePolicy []byte) (akv.Member, error) {
	kb, err := b.Vault.Create(name, releasePolicy)
	if err != nil {
		return akv.Member{}, err
	}
	ver := kb.Key.KID[len(b.VaultURL+"/keys/"+name+"/"):]
	c := &akv.Client{VaultURL: b.VaultURL, Token: b.Token}
	got, err := c.GetKey(ctx, name, ver)
	if err != nil {
		return akv.Member{}, err
	}
	h, err := akv.PolicySHA256(releasePolicy)
	if err != nil {
		return akv.Member{}, err
	}
	m := akv.Member{VaultURL: b.VaultURL, KeyName: name, KeyVersion: ver, MAAInstance: simmaa.Issuer, PublicKey: got.Key, ReleasePolicySHA256: h}
	if err := m.CheckKey(got); err != nil {
		return akv.Member{}, fmt.Errorf("akvsim: %w", err)
	}
	return m, nil
}

// RecoverOptions returns the options of akv.Recover for a node attesting
// with a against this bed.
func (b *Bed) RecoverOptions(a client.Attester) akv.RecoverOptions {
	return akv.RecoverOptions{Attester: a, Token: b.Token, MAAURL: b.MAAURL, Roots: b.Vault.Roots()}
}
