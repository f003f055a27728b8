package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/state"
)

// AutoRecoveryConfig lets a recovering node (--recover) use the automatic
// recovery member of its ledger copy (docs/auto-recovery.md): before it
// waits for members' shares, it has the member's vault release the
// recovery key to it. Without this section a recovering node waits for
// members' shares only.
type AutoRecoveryConfig struct {
	// MAAURL is where the node attests; "" means the member's
	// maa_instance (in Azure they are the same; a test or a proxy
	// differs).
	MAAURL string `json:"maa_url"`
	// VaultCAFile holds the PEM roots the vault's signing certificate
	// must chain to; "" means the system's roots (Key Vault's).
	VaultCAFile string `json:"vault_ca_file"`
	// TokenFile holds the vault's bearer token (mode 0600, read at the
	// recovery); "" means the node's managed identity (IMDS), for
	// https://vault.azure.net or, for a Managed HSM, https://managedhsm.azure.net.
	TokenFile string `json:"token_file"`
	// ClientID chooses a user-assigned managed identity for IMDS.
	ClientID string `json:"client_id"`
	// TimeoutSeconds bounds the attempt (default 120); then the node
	// waits for members' shares.
	TimeoutSeconds int `json:"timeout_seconds"`
}

func (c *AutoRecoveryConfig) validate() []error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.MAAURL != "" {
		if u, err := url.Parse(c.MAAURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("auto_recovery.maa_url %q: want an http(s) URL", c.MAAURL))
		}
	}
	if c.TimeoutSeconds < 0 {
		errs = append(errs, errors.New("auto_recovery.timeout_seconds: want a positive number of seconds"))
	}
	return errs
}

// autoRecoveryOptions builds the options of akv.Recover for member m.
func (c *AutoRecoveryConfig) options(m *akv.Member, a client.Attester) (akv.RecoverOptions, error) {
	o := akv.RecoverOptions{Attester: a, MAAURL: c.MAAURL}
	if c.VaultCAFile != "" {
		pem, err := os.ReadFile(c.VaultCAFile)
		if err != nil {
			return o, fmt.Errorf("auto_recovery.vault_ca_file: %w", err)
		}
		o.Roots = x509.NewCertPool()
		if !o.Roots.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("auto_recovery.vault_ca_file %s: no PEM certificate", c.VaultCAFile)
		}
	}
	if c.TokenFile != "" {
		path := c.TokenFile
		o.Token = func(context.Context) (string, error) { return readSecretFile(path) }
		return o, nil
	}
	resource := "https://vault.azure.net"
	if strings.Contains(m.VaultURL, ".managedhsm.") {
		resource = "https://managedhsm.azure.net"
	}
	src, err := client.NewIMDSTokenSource(client.IMDSOptions{Resource: resource, ClientID: c.ClientID})
	if err != nil {
		return o, err
	}
	o.Token = src.Token
	return o, nil
}

// tryAutoRecovery has the automatic recovery member of the audited ledger
// copy st release the recovery key to this node, if the configuration
// allows it and the copy's latest shares hold the key for the member in
// force. It returns the ledger secret and what service.recovered records,
// or nil (and the reason in the log) to wait for members' shares.
func tryAutoRecovery(ctx context.Context, cfg *Config, st *state.State, log *slog.Logger) ([]byte, *kms.Recovered) {
	c := cfg.AutoRecovery
	if c == nil || st.AutoRecovery == nil || st.Recovery == nil {
		return nil, nil
	}
	m := st.AutoRecovery
	a, err := nodeAttester(cfg)
	if err == nil {
		var o akv.RecoverOptions
		if o, err = c.options(m, a); err == nil {
			timeout := 120 * time.Second
			if c.TimeoutSeconds > 0 {
				timeout = time.Duration(c.TimeoutSeconds) * time.Second
			}
			actx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			h := akv.NewHolder(*m, o)
			log.Info("recovery: asking the automatic recovery member", "kid", h.Name(), "maa_instance", m.MAAInstance)
			var secret []byte
			if secret, err = st.Recovery.Shares.UnwrapHeld(actx, h); err == nil {
				log.Info("recovery: the automatic recovery member released the recovery key", "kid", h.Name(), "release_sha256", h.Last().ReleaseSHA256)
				return secret, &kms.Recovered{RecoveryID: recovery.NewSessionID(), SharesSeq: st.Recovery.Seq, Holder: h.Name(), Auto: h.Last()}
			}
		}
	}
	log.Warn("recovery: the automatic recovery member did not recover the service; waiting for members' shares", "kid", m.KID(), "code", akv.Code(err), "err", err)
	return nil, nil
}
