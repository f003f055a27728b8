package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/sidecar"
	"github.com/tkms-dev/tkms/internal/translog"
)

const sidecarUsage = `usage: tkms sidecar [--kms URL --log-key VKEY|@FILE] [--listen ADDR] [--attester aci|snp|tdx|azure-cvm|simulated|simulated-tdx|simulated-maa|simulated-az-snp|simulated-az-tdx]
                    [--token-source imds|file|static|dev] [--api v1|app] [--variant ohttp|ba|kv] [flags]

Serves attestation and request decryption to a service in the same TEE, on
a loopback address (127.0.0.1:8080 by default). Keys come from the KMS,
released to the evidence of --attester and the token of --token-source,
each with a log receipt verified against --log-key, and stay cached:
decryption goes on while the KMS is unreachable. The defaults suit tkms dev
(--data tkms-dev); in a TEE give --attester aci (or snp) and --token-source
imds. See README.md, "tkms sidecar", for the endpoints.

`

// sidecarConfig is what the flags of `tkms sidecar` say, beyond those of
// the client package (clientFlags, shared with `tkms fetch`).
type sidecarConfig struct {
	Listen      string
	AllowRemote bool
	sidecar.Config
}

// Validate checks the configuration, naming the flag at fault.
func (c *sidecarConfig) Validate() error {
	if !c.AllowRemote {
		if err := loopbackListen(c.Listen); err != nil {
			return err
		}
	}
	if _, ok := sidecar.Variants[c.Variant]; !ok {
		return fmt.Errorf("%w: --variant %q: want ohttp, ba or kv", errUsage, c.Variant)
	}
	if c.HandleTTL <= 0 || c.MaxHandles <= 0 || c.MaxBody <= 0 || c.FetchWait <= 0 {
		return fmt.Errorf("%w: --handle-ttl, --max-handles, --max-body and --fetch-wait must be positive", errUsage)
	}
	return nil
}

// loopbackListen checks that addr names a loopback address: an IP literal
// in 127.0.0.0/8 or ::1, or "localhost". Anything else (an empty host
// means every interface) would serve decryption to the network.
func loopbackListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", errUsage, addr, err)
	}
	if loopbackHost(host) {
		return nil
	}
	return fmt.Errorf("%w: --listen %s is not a loopback address: the sidecar decrypts for whoever can reach it; listen on 127.0.0.1 or give --allow-remote", errUsage, addr)
}

// cmdSidecar implements `tkms sidecar`: it parses the flags, builds the key
// cache of package client and serves internal/sidecar's handler on
// loopback. The API is in README.md, "tkms sidecar".
func cmdSidecar(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sidecar", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, sidecarUsage)
		fs.PrintDefaults()
	}
	var c sidecarConfig
	var cf clientFlags
	cf.register(fs)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "loopback `address` to listen on (127.0.0.1:0 picks a free port)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a --listen address that is not loopback (DANGEROUS: whoever reaches it can decrypt)")
	fs.StringVar(&c.Variant, "variant", "ohttp", "default framing of /decrypt: `ohttp`, ba (Bidding & Auction) or kv (key/value service)")
	fs.BoolVar(&c.AllowKeyExport, "allow-key-export", false, "serve GET /keys/{kid}/private: private keys in clear to any local caller")
	fs.DurationVar(&c.HandleTTL, "handle-ttl", time.Minute, "how long a /decrypt handle can be used")
	fs.IntVar(&c.MaxHandles, "max-handles", 10000, "most handles kept at once; /decrypt answers 503 beyond")
	fs.Int64Var(&c.MaxBody, "max-body", 4<<20, "largest request body in `bytes`")
	fs.DurationVar(&c.FetchWait, "fetch-wait", 10*time.Second, "how long a request waits for a key that is not cached before answering 503 (the fetch goes on)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if cf.data == "" && (cf.attester == "simulated" || cf.tokenSource == "dev") {
		return fmt.Errorf("%w: --attester simulated and --token-source dev need --data DIR, a tkms dev data directory", errUsage)
	}
	kc, err := cf.config()
	if err != nil {
		return err
	}
	// Keys are cached only with a receipt that proves their release in the
	// KMS's log: the sidecar never runs without the log's key.
	if kc.LogKey == "" {
		return fmt.Errorf("%w: --log-key is required: the KMS log's verifier key (GET KMS/v1/log/key, confirmed out of band) or @FILE", errUsage)
	}
	if _, err := translog.NewVerifier(kc.LogKey); err != nil {
		return fmt.Errorf("%w: --log-key: %v; give the key as GET KMS/v1/log/key serves it, or @FILE", errUsage, strings.TrimPrefix(err.Error(), "translog: log key: "))
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if cf.attester == "simulated" {
		fmt.Fprintf(stderr, "tkms sidecar: INSECURE: --attester simulated signs evidence with the simulated chain of %s: not a TEE\n", cf.data)
	}
	if c.AllowKeyExport {
		fmt.Fprintln(stderr, "tkms sidecar: --allow-key-export: any local caller can read private keys at /keys/{kid}/private")
	}
	kc.Logger = log
	cache, err := client.NewKeys(kc)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if tcp, ok := ln.Addr().(*net.TCPAddr); !c.AllowRemote && (!ok || !tcp.IP.IsLoopback()) {
		return fmt.Errorf("%w: --listen %s bound %s, which is not loopback; give --allow-remote to allow it", errUsage, c.Listen, ln.Addr())
	}
	addr := ln.Addr().String()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	s := sidecar.New(&c.Config, cache, kc.Attester, log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); cache.Run(runCtx) }()
	go func() { defer wg.Done(); s.Sweep(runCtx) }()

	limits := httpapi.DefaultLimits()
	// A request may wait FetchWait for its key before it is answered.
	limits.WriteTimeout = max(limits.WriteTimeout, c.FetchWait+10*time.Second)
	srv := httpapi.NewHTTPServer(addr, s, log, limits)
	err = serveUntil(ctx, srv, ln, log, func() {
		fmt.Fprintf(stdout, "tkms sidecar: listening on http://%s\n", addr)
		log.Info("tkms sidecar listening", "addr", addr, "kms", kc.KMS, "api", kc.API, "attester", cf.attester, "token_source", cf.tokenSource, "variant", c.Variant, "key_export", c.AllowKeyExport)
	})
	cancel()
	wg.Wait()
	return err
}
