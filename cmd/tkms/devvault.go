package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/akv/akvsim"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
)

const devVaultBanner = `tkms dev vault: SIMULATED Azure Key Vault and Azure Attestation on loopback (docs/auto-recovery.md).
tkms dev vault: INSECURE: its keys live in this process's memory and it attests only the SIMULATED TEE of %s.
`

// Files tkms dev vault writes to its --data directory.
const (
	devVaultActionFile = "auto-recovery-member.json" // the set_auto_recovery_member action
	devVaultConfigFile = "recover.json"              // {"auto_recovery": ...} for tkms dev --recover --config
	devVaultTokenFile  = "vault.token"
	devVaultCAFile     = "vault-ca.pem"
)

// cmdDevVault runs `tkms dev vault`: the simulated Azure side of an
// automatic recovery (internal/akv/akvsim) for the dev cluster whose
// simulated TEE is in --trust, with a vault key whose release policy
// admits that TEE's default measurement, until interrupted.
func cmdDevVault(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev vault", stderr)
	trust := fs.String("trust", "tkms-dev", "data `directory` of the tkms dev (cluster) whose simulated TEE the MAA stand-in attests")
	dataDir := fs.String("data", "tkms-dev-vault", "`directory` for the stand-ins' keys and the files this command writes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(*trust, simsnp.ChainFile)); err != nil {
		return fmt.Errorf("dev vault: no simulated TEE in %s (%w); start 'tkms dev --cluster --data %s' first", *trust, err, *trust)
	}
	chain, err := simsnp.LoadOrCreate(*trust)
	if err != nil {
		return fmt.Errorf("dev vault: %w", err)
	}
	acfg := attest.Config{Simulated: true}
	chain.Trust(&acfg)
	v, err := attest.New(acfg)
	if err != nil {
		return fmt.Errorf("dev vault: %w", err)
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bed, err := akvsim.Start(ctx, *dataDir, v)
	if err != nil {
		return fmt.Errorf("dev vault: %w", err)
	}
	defer bed.Close()
	fmt.Fprintf(stderr, devVaultBanner, *trust)
	m, err := bed.CreateMember(ctx, "tkms-recovery", akvsim.SimulatedTEEPolicy())
	if err != nil {
		return fmt.Errorf("dev vault: %w", err)
	}
	args0, _ := json.Marshal(m)
	action, _ := json.MarshalIndent(gov.Action{Name: gov.ActSetAutoRecoveryMember, Args: args0}, "", "  ")
	token, err := bed.Issuer.MintManagedIdentity(oidcissuer.ManagedIdentity{Audience: akvsim.Audience, PrincipalID: "00000000-0000-0000-0000-00000000cafe", TenantID: "simulated", TTL: 12 * time.Hour})
	if err != nil {
		return err
	}
	dir, _ := filepath.Abs(*dataDir)
	conf, _ := json.MarshalIndent(map[string]any{"auto_recovery": map[string]any{
		"maa_url": bed.MAAURL, "vault_ca_file": filepath.Join(dir, devVaultCAFile), "token_file": filepath.Join(dir, devVaultTokenFile),
	}}, "", "  ")
	for name, b := range map[string][]byte{
		devVaultActionFile: append(action, '\n'),
		devVaultConfigFile: append(conf, '\n'),
		devVaultTokenFile:  []byte(token + "\n"),
		devVaultCAFile:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bed.Vault.Root().Raw}),
	} {
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "tkms dev vault: vault %s, key %s\n", bed.VaultURL, m.KID())
	fmt.Fprintf(stdout, "tkms dev vault: MAA %s (issuer %s)\n", bed.MAAURL, simmaa.Issuer)
	fmt.Fprintf(stdout, "tkms dev vault: propose %s; recover with --config %s\n", filepath.Join(dir, devVaultActionFile), filepath.Join(dir, devVaultConfigFile))
	<-ctx.Done()
	return nil
}
