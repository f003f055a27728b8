package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// commandHelp is what `tkms COMMAND -h` says besides the flags: how to
// call it, what it does, an example and its exit codes.
type commandHelp struct {
	usage, description, example, exits string
}

// exitsCommon are the exit codes of most commands (main.go's run).
const exitsCommon = "0 success; 1 the command failed (the reason is on stderr); 2 a usage error"

// helps holds every command's help, by the name newFlagSet is given.
var helps = map[string]commandHelp{
	"dev": {
		usage:       "tkms dev [--listen ADDR] [--data DIR] [--config FILE]",
		description: "Runs a local, self-contained tkms on embedded defaults: a governed ledger with one member, a dev OIDC issuer and a simulated TEE (NOT a TEE). For development only.",
		example:     "tkms dev --data ./tkms-dev",
		exits:       "0 stopped cleanly (SIGINT, SIGTERM); 1 failed; 2 usage error",
	},
	"dev token": {
		usage:       "tkms dev token [--data DIR] [--sub S] [--ttl D] [--aud A]",
		description: "Prints a token minted by the dev OIDC issuer of a tkms dev data directory.",
		example:     "tkms dev token --data ./tkms-dev --sub svc-1 --ttl 1h",
		exits:       exitsCommon,
	},
	"dev vault": {
		usage:       "tkms dev vault [--trust DIR] [--data DIR]",
		description: "Runs a SIMULATED Azure Key Vault and Azure Attestation on loopback for the automatic recovery member (docs/auto-recovery.md): it attests the simulated TEE of the tkms dev in --trust, creates a vault key whose release policy admits it, and writes the set_auto_recovery_member action and a recovering node's auto_recovery configuration to --data. Its keys live in its memory: keep it running across the recovery.",
		example:     "tkms dev vault --trust ./tkms-dev --data ./tkms-dev-vault",
		exits:       "0 stopped cleanly (SIGINT, SIGTERM); 1 failed; 2 usage error",
	},
	"serve": {
		usage:       "tkms serve --config FILE [--allow-ungoverned]",
		description: "Runs the production server on the data directory of its configuration (docs/operations.md lists every field). The data directory must have been created by tkms init: serve refuses to create an ungoverned ledger unless --allow-ungoverned.",
		example:     "tkms serve --config /etc/tkms/tkms.json",
		exits:       "0 stopped cleanly (SIGINT, SIGTERM); 1 failed to start or stopped on an error; 2 usage error",
	},
	"init": {
		usage:       "tkms init --members FILE [--constitution FILE] [--policies DIR] --data DIR [--master-key-file F] [--service-name N] [--log-origin O] [--json]",
		description: "Creates a new governed service for tkms serve: its master key, members, constitution and initial policies. Every input is checked as governance would check it before anything is written; a failed init leaves nothing behind.",
		example:     "tkms init --members members.json --policies policies/ --data /var/lib/tkms --log-origin kms.sro.example/depa",
		exits:       exitsCommon,
	},
	"keys list": {
		usage:       "tkms keys list (--kms URL | --data DIR) [--kms-ca FILE] [--json]",
		description: "Lists the keys, their states and times, of a running tkms (--kms, or $TKMS_ADDR) or of the data directory of a stopped one.",
		example:     "tkms keys list --kms https://kms.sro.example --kms-ca ca.pem",
		exits:       exitsCommon,
	},
	"keys rotate": {
		usage:       "tkms keys rotate [--kms URL] [--kms-ca FILE] (--key FILE | --sign-command CMD --public-key FILE | --token-file FILE) [--reason R] [--json]",
		description: "Creates a new key now: on a governed KMS, a member proposes rotate_key_now (other members may have to approve); on an ungoverned one, the operator token authorises it. Says when the new key is published to clients and until when it is released to services.",
		example:     "tkms keys rotate --kms https://kms.sro.example --key sro-a.key --reason \"scheduled drill\"",
		exits:       exitsCommon,
	},
	"gov propose": {
		usage:       "tkms gov propose [--kms URL] [--kms-ca FILE] (--key FILE | --sign-command CMD --public-key FILE) [--dry-run] [--compat] [--json] ACTIONS.json",
		description: "Shows what the actions change (the key release policy as a diff), then signs them as a member's proposal and submits it; --dry-run stops before signing.",
		example:     "tkms gov propose --kms https://kms.sro.example --key sro-a.key --dry-run add-h2.json",
		exits:       exitsCommon,
	},
	"gov vote": {
		usage:       "tkms gov vote [--kms URL] [--kms-ca FILE] (--key FILE | --sign-command CMD --public-key FILE) [--yes] [--json] ID approve|reject",
		description: "Shows the proposal (its actions, the key release policy as a diff) and, once you confirm (or with --yes), signs and submits the member's ballot. ID may be a unique prefix of the proposal's id.",
		example:     "tkms gov vote --kms https://kms.sro.example --key sro-b.key 3f2a approve",
		exits:       "0 the ballot was recorded; 1 it was refused, failed or not confirmed; 2 usage error",
	},
	"gov withdraw": {
		usage:       "tkms gov withdraw [--kms URL] [--kms-ca FILE] (--key FILE | --sign-command CMD --public-key FILE) [--json] ID",
		description: "Withdraws an open proposal of the member (if the constitution allows). ID may be a unique prefix.",
		example:     "tkms gov withdraw --kms https://kms.sro.example --key sro-a.key 3f2a",
		exits:       exitsCommon,
	},
	"gov list": {
		usage:       "tkms gov list [--kms URL] [--kms-ca FILE] [--data DIR] [--json]",
		description: "Lists the proposals: id, state, approvals, proposer and actions.",
		example:     "tkms gov list --kms https://kms.sro.example",
		exits:       exitsCommon,
	},
	"gov show": {
		usage:       "tkms gov show [--kms URL] [--kms-ca FILE] [--data DIR] [--json] ID",
		description: "Shows one proposal: its state, actions and ballots. ID may be a unique prefix.",
		example:     "tkms gov show --kms https://kms.sro.example 3f2a",
		exits:       exitsCommon,
	},
	"gov keygen": {
		usage:       "tkms gov keygen --out PREFIX --name NAME [--suite x25519|mlkem768-x25519]",
		description: "Makes a new member's keys: a signing key (PREFIX.key, PREFIX.pub) and a recovery encryption key (PREFIX.enc, mode 0600), and prints the add_member action that registers both, to propose.",
		example:     "tkms gov keygen --out alice --name alice > add-alice.json",
		exits:       exitsCommon,
	},
	"gov encryption-key": {
		usage:       "tkms gov encryption-key --out FILE --member-id ID [--suite x25519|mlkem768-x25519]",
		description: "Makes a (new) recovery encryption key for an existing member (FILE, mode 0600) and prints the set_member_encryption_key action that registers it, to propose. The key opens only that member's recovery share and is never sent.",
		example:     "tkms gov encryption-key --out alice.enc --member-id 7196f14a...",
		exits:       exitsCommon,
	},
	"gov share": {
		usage:       "tkms gov share [--kms URL] [--kms-ca FILE] (--key FILE | --sign-command CMD --public-key FILE) --encryption-key FILE [--json]",
		description: "During a recovery (docs/recovery.md): fetches the member's sealed share of the ledger secret from the recovering node, opens it locally with the member's encryption key, and submits it signed. Says how many shares the node has of how many it needs.",
		example:     "tkms gov share --kms https://recovering-node:8443 --key alice.key --encryption-key alice.enc",
		exits:       exitsCommon,
	},
	"gov auto-recovery-member": {
		usage:       "tkms gov auto-recovery-member --key-bundle FILE --maa URL [--policy FILE]",
		description: "Prints the set_auto_recovery_member action (docs/auto-recovery.md) for a Key Vault or Managed HSM key: FILE is the vault's answer to GET key (az rest --method get --url https://VAULT/keys/NAME/VERSION?api-version=7.4), - for stdin. The key must be exportable and have a release policy; the action records its kid, public part and the SHA-256 of its release policy. --maa is the attestation authority the recovering nodes attest at (the policy's authority). With --policy, the key's policy must be the one in FILE. Save the output and propose it.",
		example:     "tkms gov auto-recovery-member --key-bundle key.json --maa https://sharedeus2.eus2.attest.azure.net --policy release-policy.json > auto.json",
		exits:       exitsCommon,
	},
	"attest simulate": {
		usage:       "tkms attest simulate [--data DIR] [--report-data HEX | --wrapping-key-pem FILE] [--measurement HEX] [--host-data HEX] [--debug]",
		description: "Prints ACI evidence signed by the simulated SEV-SNP chain of a data directory (NOT a TEE): evidence only for a tkms told to trust that chain.",
		example:     "tkms attest simulate --data ./tkms-dev --host-data $(printf '11%.0s' $(seq 32)) > evidence.json",
		exits:       exitsCommon,
	},
	"attest inspect": {
		usage:       "tkms attest inspect [--data DIR] [--json] [--now RFC3339] [--max-vmpl N] FILE",
		description: "Verifies evidence offline and prints its claims.",
		example:     "tkms attest inspect --json evidence.json",
		exits:       "0 the evidence verified; 1 it did not, or the command failed; 2 usage error",
	},
	"audit": {
		usage:       "tkms audit (--kms URL | --tiles DIR) --log-key VKEY [--state FILE] [--mirror DIR] [--json] [--quiet]",
		description: "Checks the transparency log without trusting the operator.",
		example:     "tkms audit --kms https://kms.sro.example --log-key @log.vkey --state audit.json",
		exits:       "0 the audit passed; 1 the log violates its promises; 2 the audit could not run",
	},
	"sidecar": {
		usage:       "tkms sidecar [--kms URL --log-key VKEY|@FILE] [flags]",
		description: "Attestation and decryption for a local service in a TEE.",
		example:     "tkms sidecar --kms https://kms.sro.example --log-key @log.vkey --attester aci --token-source imds",
		exits:       "0 stopped cleanly; 1 failed; 2 usage error",
	},
	"fetch": {
		usage:       "tkms fetch [--kms URL] [--attester aci|snp|simulated] [--token-source imds|file|static|dev] [--kid KID | --ohttp-id HEX | --all] [--out FILE] [--json]",
		description: "Obtains keys as a service in a TEE does, step by step.",
		example:     "tkms fetch --data ./tkms-dev --all --out keys.json",
		exits:       exitsCommon,
	},
	"demo": {
		usage:       "tkms demo [--keep DIR]",
		description: "The 11 steps of the protocol, end to end, narrated.",
		example:     "tkms demo",
		exits:       exitsCommon,
	},
	"bench": {
		usage:       "tkms bench [--kms URL | --dev] [--scenario S] [--workers N] [--rate R] [--duration D] [--json]",
		description: "Load test with latency percentiles and the crypto floor.",
		example:     "tkms bench --dev --scenario pubkeys --duration 10s",
		exits:       exitsCommon,
	},
	"version": {
		usage:       "tkms version [--json]",
		description: "Prints the module version, the VCS revision and the Go version the binary was built from.",
		example:     "tkms version",
		exits:       "0",
	},
}

// helpNames are the commands with help, sorted (for tests and docs).
func helpNames() []string {
	names := make([]string, 0, len(helps))
	for n := range helps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// writeGroupHelp lists the subcommands of group (keys, attest) with their
// usage and description.
func writeGroupHelp(w io.Writer, group string) {
	for _, name := range helpNames() {
		if strings.HasPrefix(name, group+" ") {
			fmt.Fprintf(w, "%s\n    %s\n", helps[name].usage, wrapText(helps[name].description, 72))
		}
	}
	fmt.Fprintf(w, "\nRun 'tkms %s SUBCOMMAND -h' for its flags, an example and its exit codes.\n", group)
}

// writeHelpHead writes a command's usage and description.
func writeHelpHead(w io.Writer, name string) {
	h, ok := helps[name]
	if !ok {
		fmt.Fprintf(w, "usage: tkms %s [flags]\n\nflags:\n", name)
		return
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n\nflags:\n", h.usage, wrapText(h.description, 76))
}

// writeHelpFoot writes a command's example and exit codes.
func writeHelpFoot(w io.Writer, name string) {
	h, ok := helps[name]
	if !ok {
		return
	}
	fmt.Fprintf(w, "\nexample:\n  %s\n\nexit codes: %s\n", h.example, h.exits)
}

// setUsage makes fs's usage the command's help: usage, description, flags,
// example and exit codes.
func setUsage(fs *flag.FlagSet, name string, w io.Writer) {
	fs.Usage = func() {
		writeHelpHead(w, name)
		fs.PrintDefaults()
		writeHelpFoot(w, name)
	}
}

// wrapText breaks s into lines of at most width characters.
func wrapText(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		if n > 0 && n+1+len(word) > width {
			b.WriteByte('\n')
			n = 0
		} else if n > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
