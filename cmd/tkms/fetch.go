package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/client"
)

const fetchUsage = `usage: tkms fetch [--kms URL] [--attester aci|snp|tdx|azure-cvm|simulated|simulated-tdx|simulated-maa|simulated-az-snp|simulated-az-tdx] [--token-source imds|file|static|dev]
                  [--kid KID | --ohttp-id HEX | --all] [--out FILE] [--json] [flags]

Obtains private keys from a KMS as a service in a TEE does, with the client
package, and says what happens at each step: a fresh wrapping key, evidence
binding it, a token, the release, the unwrapping, the check against the
published public key and of the log receipt. The keys are written only where
--out says (mode 0600); nothing secret is printed.

`

// cmdFetch implements `tkms fetch`.
func cmdFetch(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fetch", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, fetchUsage); fs.PrintDefaults(); writeHelpFoot(stderr, "fetch") }
	var cf clientFlags
	cf.register(fs)
	kid := fs.String("kid", "", "fetch the key `KID` (or a unique prefix of it)")
	ohttpID := fs.String("ohttp-id", "", "fetch the key whose OHTTP key id is `HEX` (e.g. 11)")
	all := fs.Bool("all", false, "fetch every key the KMS still releases (the default)")
	out := fs.String("out", "", "write the unwrapped keys as JSON to `FILE` (mode 0600); without it no key material leaves this process")
	asJSON := fs.Bool("json", false, "print the keys obtained (no key material) as JSON with a top-level result field; the steps go to stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	report := stdout
	if *asJSON {
		report = stderr
	}
	n := 0
	for _, set := range []bool{*kid != "", *ohttpID != "", *all} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: give at most one of --kid, --ohttp-id and --all", errUsage)
	}
	cfg, err := cf.config()
	if err != nil {
		return err
	}
	nr := &narrator{w: report}
	cfg.Attester = &narratingAttester{Attester: cfg.Attester, n: nr}
	cfg.Tokens = &narratingTokens{TokenSource: cfg.Tokens, n: nr}
	cfg.Logger = slog.New(slog.DiscardHandler)
	keys, err := client.NewKeys(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(report, "tkms fetch: from %s over /%s", cfg.KMS, cfg.API)
	if cfg.LogKey != "" {
		fmt.Fprintf(report, ", receipts checked against log key %s", cfg.LogKey)
	}
	fmt.Fprintln(report)

	var got []*client.Key
	switch {
	case *kid != "":
		full, err := resolveKid(cfg.HTTPClient, cfg.KMS, *kid)
		if err != nil {
			return err
		}
		k, err := keys.ByKID(ctx, full)
		if err != nil {
			return fetchFailed(nr, err)
		}
		got = []*client.Key{k}
	case *ohttpID != "":
		id, err := parseOHTTPID(*ohttpID)
		if err != nil {
			return err
		}
		k, err := keys.ByOHTTPID(ctx, id)
		if err != nil {
			return fetchFailed(nr, err)
		}
		got = []*client.Key{k}
	default:
		if got, err = keys.All(ctx); err != nil {
			return fetchFailed(nr, err)
		}
	}
	st := keys.State()
	nr.step("7-10.", "the KMS authenticated the token, verified the evidence against its release policy, wrapped and recorded the release")
	if cfg.LogKey != "" {
		nr.say("release receipts verified against the log key: %d", st.ReceiptsVerified)
	}
	nr.step("11.", "unwrapped with WK- and checked against the published public keys")
	now := time.Now()
	for _, k := range got {
		nr.say("%s  id %d (OHTTP key id 0x%02x)  %s  %s until %s", k.Kid, k.ID, k.OHTTPKeyID, k.Suite, k.Phase(now), k.ReleaseUntil.UTC().Format(time.RFC3339))
	}
	if *out == "" {
		fmt.Fprintf(report, "\ntkms fetch: %d key(s) obtained; not written anywhere (use --out FILE)\n", len(got))
	} else {
		if err := writeKeys(*out, got); err != nil {
			return err
		}
		fmt.Fprintf(report, "\ntkms fetch: %d key(s) written to %s (mode 0600)\n", len(got), *out)
	}
	if *asJSON {
		return writeResultJSON(stdout, "ok", fetchReport(cfg.KMS, got, st.ReceiptsVerified, *out, now))
	}
	return nil
}

// fetchResult is tkms fetch --json: what was obtained, no key material.
type fetchResult struct {
	KMS              string           `json:"kms"`
	Keys             []fetchResultKey `json:"keys"`
	ReceiptsVerified uint64           `json:"receipts_verified"`
	Out              string           `json:"out,omitempty"`
}

type fetchResultKey struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   byte      `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	Phase        string    `json:"phase"`
	ReleaseUntil time.Time `json:"release_until"`
}

func fetchReport(kms string, got []*client.Key, receipts uint64, out string, now time.Time) fetchResult {
	r := fetchResult{KMS: kms, ReceiptsVerified: receipts, Out: out, Keys: []fetchResultKey{}}
	for _, k := range got {
		r.Keys = append(r.Keys, fetchResultKey{Kid: k.Kid, ID: k.ID, OHTTPKeyID: k.OHTTPKeyID, Suite: k.Suite, Phase: k.Phase(now), ReleaseUntil: k.ReleaseUntil.UTC()})
	}
	return r
}

// fetchFailed reports a refusal or failure at the step it happened.
func fetchFailed(nr *narrator, err error) error {
	var kerr *client.KMSError
	if errors.As(err, &kerr) {
		nr.step("refused.", fmt.Sprintf("the KMS answered %d %s", kerr.Status, kerr.Code))
		nr.say("%s", kerr.Message)
		if kerr.RequestID != "" {
			nr.say("request id %s (quote it to the KMS's operator)", kerr.RequestID)
		}
	}
	return err
}

// fetchedKey is one key in `tkms fetch --out`'s file.
type fetchedKey struct {
	Kid          string    `json:"kid"`
	ID           int       `json:"id"`
	OHTTPKeyID   byte      `json:"ohttp_key_id"`
	Suite        string    `json:"suite"`
	KEM          uint16    `json:"kem_id"`
	KDF          uint16    `json:"kdf_id"`
	AEAD         uint16    `json:"aead_id"`
	PublicKey    []byte    `json:"public_key"`  // RFC 9180 SerializePublicKey, base64
	PrivateKey   []byte    `json:"private_key"` // RFC 9180 SerializePrivateKey, base64
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	ReleaseUntil time.Time `json:"release_until"`
}

func writeKeys(path string, ks []*client.Key) error {
	out := make([]fetchedKey, 0, len(ks))
	defer func() {
		for _, k := range out {
			clear(k.PrivateKey)
		}
	}()
	for _, k := range ks {
		priv, err := k.PrivateKey.Bytes()
		if err != nil {
			return fmt.Errorf("key %s: %w", k.Kid, err)
		}
		out = append(out, fetchedKey{Kid: k.Kid, ID: k.ID, OHTTPKeyID: k.OHTTPKeyID, Suite: k.Suite, KEM: k.KEM, KDF: k.KDF, AEAD: k.AEAD,
			PublicKey: k.PublicKey, PrivateKey: priv, NotBefore: k.NotBefore, NotAfter: k.NotAfter, ReleaseUntil: k.ReleaseUntil})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	defer clear(b)
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}
