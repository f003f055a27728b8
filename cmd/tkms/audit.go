package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/audit"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/translog"
)

const auditUsage = `usage: tkms audit (--kms URL [--kms-ca FILE] | --tiles DIR) --log-key VKEY [--state FILE] [--mirror DIR] [--json] [--quiet]

Checks a tkms transparency log without trusting its operator: the signed
checkpoint, every entry against the Merkle tree, rollbacks and forks against
the state of the previous audit, and every entry against the rules of tkms.
Exit status: 0 the audit passed, 1 it found violations, 2 it could not run.

`

// cmdAudit runs `tkms audit`. It prints its own messages and returns the
// exit status: 0 when the audit passes, 1 on violations, 2 when the audit
// could not run (usage, fetch or state file errors).
func cmdAudit(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("audit", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, auditUsage)
		fs.PrintDefaults()
		writeHelpFoot(stderr, "audit")
	}
	kmsURL := fs.String("kms", "", "base `URL` of the tkms whose log to audit (reads URL/log/; default $TKMS_ADDR without --tiles)")
	var kmsCA string
	registerKMSCA(fs, &kmsCA)
	tiles := fs.String("tiles", "", "read an offline mirror in `DIR` instead of --kms (as --mirror writes it)")
	logKey := fs.String("log-key", "", "the log's verifier key `VKEY` (as served at URL/v1/log/key and confirmed out of band), or @FILE to read it from FILE")
	stateFile := fs.String("state", "", "`FILE` remembering the last verified checkpoint, to detect rollbacks and forks; written when the audit passes")
	mirrorDir := fs.String("mirror", "", "copy everything fetched into `DIR`, for a later audit with --tiles")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "print only violations; no progress")
	nodePolicy := fs.String("node-policy", "", "node policy `FILE` (the key release policy grammar): every node the ledger's secrets were handed to (node.joined) must satisfy it")

	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tkms audit: "+format+"\n", a...)
		return 2
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail("%v; run 'tkms audit -h' for help", strings.TrimPrefix(err.Error(), "usage: "))
	}
	if *kmsURL == "" && *tiles == "" {
		*kmsURL = envKMS()
	}
	if (*kmsURL == "") == (*tiles == "") {
		return fail("give exactly one of --kms URL and --tiles DIR")
	}
	if *logKey == "" {
		return fail("--log-key is required: give the log's verifier key (served at URL/v1/log/key; confirm it out of band) or @FILE")
	}
	vkey := *logKey
	if name, ok := strings.CutPrefix(vkey, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return fail("--log-key: %v", err)
		}
		vkey = strings.TrimSpace(string(b))
	}
	if _, err := translog.NewVerifier(vkey); err != nil {
		return fail("--log-key: %v; give the key as GET URL/v1/log/key serves it (ORIGIN+HASH+KEY), or @FILE", strings.TrimPrefix(err.Error(), "translog: log key: "))
	}

	var src audit.Source
	where := ""
	if *kmsURL != "" {
		hc, err := kmsHTTPClient(*kmsURL, kmsCA, 2*time.Minute)
		if err != nil {
			return fail("%v", strings.TrimPrefix(err.Error(), "usage: "))
		}
		s, err := audit.NewHTTPSource(*kmsURL, hc)
		if err != nil {
			return fail("--kms: %v", strings.TrimPrefix(err.Error(), "audit: "))
		}
		src, where = s, "check --kms and try again"
	} else {
		if fi, err := os.Stat(*tiles); err != nil || !fi.IsDir() {
			return fail("--tiles %s: not a directory; give the directory a --mirror run wrote", *tiles)
		}
		src, where = audit.NewDirSource(*tiles), "check that --tiles holds a complete mirror"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := audit.Options{Source: src, LogKey: vkey, StateFile: *stateFile, Mirror: *mirrorDir}
	if *nodePolicy != "" {
		b, err := os.ReadFile(*nodePolicy)
		if err != nil {
			return fail("--node-policy: %v", err)
		}
		p, err := policy.Parse(b)
		if err != nil {
			return fail("--node-policy %s: %v", *nodePolicy, err)
		}
		opts.NodePolicy = &p
	}
	if !*quiet && isTerminal(stderr) {
		opts.Progress = stderr
	}
	r, err := audit.Run(ctx, opts)
	switch {
	case err == nil:
	case errors.Is(err, audit.ErrCheckpoint):
		return fail("%v; the checkpoint is not signed by the key given: check --log-key against URL/v1/log/key and a source you trust", strings.TrimPrefix(err.Error(), "audit: "))
	case errors.Is(err, audit.ErrStateFile):
		return fail("%v; give the --state file of this log, or a new file name to start over", strings.TrimPrefix(err.Error(), "audit: "))
	case ctx.Err() != nil:
		return fail("interrupted")
	default:
		return fail("%v; %s", strings.TrimPrefix(err.Error(), "audit: "), where)
	}

	switch {
	case *asJSON:
		result := "failed"
		if r.Passed() {
			result = "passed"
		}
		if err := writeResultJSON(stdout, result, json.RawMessage(r.JSON())); err != nil {
			return fail("%v", err)
		}
	case *quiet:
		for _, v := range r.Violations {
			fmt.Fprintln(stdout, v)
		}
		if r.OmittedViolations > 0 {
			fmt.Fprintf(stdout, "... and %d more violations\n", r.OmittedViolations)
		}
	default:
		if err := r.WriteText(stdout); err != nil {
			return fail("%v", err)
		}
	}
	if !r.Passed() {
		n := int64(len(r.Violations)) + r.OmittedViolations
		fmt.Fprintf(stderr, "tkms audit: %d violations in the log of %s: do not trust it; keep the report and the mirror as evidence\n", n, r.Checkpoint.Origin)
		return 1
	}
	if !*quiet && *stateFile != "" {
		fmt.Fprintf(stderr, "tkms audit: passed; checkpoint of %d entries saved to %s for the next audit\n", r.Checkpoint.Size, *stateFile)
	}
	return 0
}

// isTerminal reports whether w is a terminal, where a progress line that
// rewrites itself makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
