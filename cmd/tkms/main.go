// Command tkms is a confidential, transparent key management service for
// DEPA inferencing.
//
// Usage:
//
//	tkms dev   [--listen ADDR] [--data DIR] [--config FILE]   a local, self-contained instance
//	tkms dev token [--data DIR] [--sub S] [--ttl D] [--aud A]  a token from the dev OIDC issuer
//	tkms serve --config FILE [--allow-ungoverned]            the production server
//	tkms keys list   (--kms URL | --data DIR) [--json]        list keys, states and times
//	tkms keys rotate (--kms URL | --data DIR) [--key FILE | --token-file FILE]
//	                                                         rotate now (a member; operator if ungoverned)
//	tkms init --members FILE [--constitution FILE] [--policies DIR] --data DIR
//	                                                         create a new governed service
//	tkms gov propose|vote|withdraw|list|show ...            governance: proposals and ballots of members
//	tkms attest simulate [--data DIR] [--report-data HEX | --wrapping-key-pem FILE]
//	                     [--measurement HEX] [--host-data HEX] [--debug]
//	                                                         simulated ACI evidence (NOT a TEE)
//	tkms attest inspect [--data DIR] [--json] [--now RFC3339] [--max-vmpl N] FILE
//	                                                         verify evidence offline, print its claims
//	tkms version [--json]
//
// See README.md for configuration and the API.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `tkms: a confidential, transparent key management service for DEPA inferencing

usage:
  tkms dev   [--listen ADDR] [--data DIR] [--config FILE]   run a local instance on embedded defaults
  tkms dev token [--data DIR] [--sub S] [--ttl D] [--aud A]  print a token from the dev OIDC issuer
  tkms serve --config FILE [--allow-ungoverned]            run the server (on a data directory made by tkms init)
  tkms keys list   (--kms URL | --data DIR) [--json]        list keys, states and times
  tkms keys rotate (--kms URL | --data DIR) [--key FILE | --token-file FILE] [--json]
                                                           create a new key now (a member signs; operator token if ungoverned)
  tkms init --members FILE [--constitution FILE] [--policies DIR] --data DIR
            [--master-key-file F] [--service-name N] [--log-origin O]
                                                           create a new governed service for tkms serve
  tkms gov propose [--kms URL] (--key FILE | --sign-command CMD --public-key FILE) [--dry-run] [--compat] ACTIONS.json
  tkms gov vote    [--kms URL] --key FILE [--yes] ID approve|reject
  tkms gov withdraw [--kms URL] --key FILE ID
  tkms gov list|show [--kms URL] [ID]                      propose changes, vote, list proposals (--data DIR: a tkms dev's)
  tkms attest simulate [--data DIR] [--report-data HEX | --wrapping-key-pem FILE]
                       [--measurement HEX] [--host-data HEX] [--debug]
                                                           print simulated ACI evidence (NOT a TEE)
  tkms attest inspect [--data DIR] [--json] [--now RFC3339] [--max-vmpl N] FILE
                                                           verify evidence offline, print its claims
  tkms audit (--kms URL | --tiles DIR) --log-key VKEY [--state FILE] [--mirror DIR] [--json] [--quiet]
                                                           check the transparency log without trusting the operator
  tkms sidecar [--kms URL --log-key VKEY|@FILE] [flags]    attestation and decryption for a local service
  tkms fetch [--kms URL] [--attester aci|snp|tdx|azure-cvm|simulated|simulated-tdx|simulated-maa|simulated-az-snp|simulated-az-tdx] [--token-source imds|file|static|dev]
             [--kid KID | --ohttp-id HEX | --all] [--out FILE]
                                                           obtain keys as a service in a TEE does, step by step
  tkms demo [--keep DIR]                                   the 11 steps of the protocol, end to end, narrated
  tkms bench [--kms URL | --dev] [--scenario S] [--workers N] [--rate R] [--duration D] [--json]
                                                           load test with latency percentiles and the crypto floor
  tkms version [--json]                                    print the version, VCS revision and Go version

Environment: TKMS_ADDR (--kms), TKMS_CACERT (--kms-ca), TKMS_MEMBER_KEY (--key); a flag wins.
Exit codes: 0 success, 1 failure, 2 usage error (audit: 1 on violations).
Run 'tkms COMMAND -h' for a command's usage, flags, an example and its exit codes.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that are the caller's words being off.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "dev":
		err = cmdDev(args[1:], stdout, stderr)
	case "serve":
		err = cmdServe(args[1:], stdout, stderr)
	case "keys":
		err = cmdKeys(args[1:], stdout, stderr)
	case "init":
		err = cmdInit(args[1:], stdout, stderr)
	case "gov":
		err = cmdGov(args[1:], stdout, stderr)
	case "attest":
		err = cmdAttest(args[1:], stdout, stderr)
	case "audit":
		return cmdAudit(args[1:], stdout, stderr)
	case "sidecar":
		if err = cmdSidecar(args[1:], stdout, stderr); errors.Is(err, flag.ErrHelp) {
			writeHelpFoot(stderr, "sidecar")
		}
	case "fetch":
		err = cmdFetch(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "version", "--version":
		err = cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "tkms: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "tkms %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "tkms %s: %v\n", args[0], err)
		return 1
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tkms "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, name, stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
