package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/attest/simmaa"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

func cmdAttest(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want 'attest simulate' or 'attest inspect'", errUsage)
	}
	switch args[0] {
	case "simulate":
		return cmdAttestSimulate(args[1:], stdout, stderr)
	case "inspect":
		return cmdAttestInspect(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		writeGroupHelp(stdout, "attest")
		return nil
	}
	return fmt.Errorf("%w: unknown subcommand %q; want simulate or inspect", errUsage, args[0])
}

// cmdAttestSimulate implements `tkms attest simulate`: an ACI attestation
// object (docs/spec/azure-compat.md, "The attestation object") signed by the
// simulated SEV-SNP chain of a data directory (internal/attest/simsnp). It
// is evidence only for a verifier told to trust that directory's chain.
func cmdAttestSimulate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("attest simulate", stderr)
	dataDir := fs.String("data", "tkms-dev", "data `directory` whose simulated chain signs (created on first use)")
	reportData := fs.String("report-data", "", "REPORT_DATA as `hex`, at most 64 bytes, zero-padded")
	measurement := fs.String("measurement", "", "MEASUREMENT as `hex`, 48 bytes (default: a recognisable SIMULATED value)")
	hostData := fs.String("host-data", "", "HOST_DATA as `hex`, 32 bytes (default: zeros)")
	debug := fs.Bool("debug", false, "set the guest policy's DEBUG bit (verifiers must reject it)")
	wrapPEM := fs.String("wrapping-key-pem", "", "bind this wrapping key `file`: REPORT_DATA[0:32] = SHA-256 of its exact bytes (as /app/key expects)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var opts simsnp.ReportOptions
	var err error
	if *reportData != "" && *wrapPEM != "" {
		return fmt.Errorf("%w: give at most one of --report-data and --wrapping-key-pem", errUsage)
	}
	if opts.ReportData, err = hexFlag("report-data", *reportData, 0, 64); err != nil {
		return err
	}
	if *wrapPEM != "" {
		b, err := os.ReadFile(*wrapPEM)
		if err != nil {
			return err
		}
		h := sha256.Sum256(b)
		opts.ReportData = h[:]
	}
	if opts.Measurement, err = hexFlag("measurement", *measurement, 48, 48); err != nil {
		return err
	}
	if opts.HostData, err = hexFlag("host-data", *hostData, 32, 32); err != nil {
		return err
	}
	opts.Debug = *debug
	chain, err := simsnp.LoadOrCreate(*dataDir)
	if err != nil {
		return err
	}
	bundle, err := chain.ACIBundle(simsnp.ACIBundleOptions{Report: opts})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", bundle)
	return err
}

// hexFlag decodes the hex value of --name, which must be between min and
// max bytes long. An empty value is nil.
func hexFlag(name, v string, min, max int) ([]byte, error) {
	if v == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s: %v", errUsage, name, err)
	}
	if len(b) < min || len(b) > max {
		want := fmt.Sprintf("%d", max)
		if min != max {
			want = fmt.Sprintf("%d to %d", min, max)
		}
		return nil, fmt.Errorf("%w: --%s: %d bytes, want %s", errUsage, name, len(b), want)
	}
	return b, nil
}

// errNotVerified is returned by `tkms attest inspect` for evidence that
// does not verify, after it has printed why.
var errNotVerified = errors.New("evidence not verified")

// inspection is the verdict of `tkms attest inspect`, as --json prints it.
type inspection struct {
	Verified bool `json:"verified"`
	// Code and Message say why the evidence did not verify.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Simulated is true when the evidence chains to the simulated roots
	// or UVM endorser given with --data: it comes from no TEE at all.
	Simulated    bool           `json:"simulated"`
	Evidence     string         `json:"evidence"`
	Signer       string         `json:"signer,omitempty"`
	ProductLine  string         `json:"product_line,omitempty"`
	ReportSHA256 string         `json:"report_sha256,omitempty"`
	UVMSigned    *time.Time     `json:"uvm_signing_time,omitempty"`
	Claims       map[string]any `json:"claims,omitempty"`
}

// cmdAttestInspect implements `tkms attest inspect`: it verifies evidence
// fully offline, with the verifiers the server uses, and prints every claim
// a release policy could name. It is the tool to reach for when a release is
// denied. The evidence is an attestation object in FILE, as a release
// request carries it: an ACI bundle or a raw SEV-SNP one ({"type":"snp",...},
// api.RawSNP: the report and its VCEK/VLEK or certificate table, no UVM
// endorsement); or a raw report and its VCEK/VLEK given as files with
// --report and --vcek. Both go through the server's door, internal/attest,
// in its unpinned inspect mode.
func cmdAttestInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("attest inspect", stderr)
	dataDir := fs.String("data", "", "also trust the simulated chain and UVM endorser of this data `directory` (INSECURE: simulated evidence comes from no TEE)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	nowFlag := fs.String("now", "", "verify certificates at this `time` (RFC 3339) instead of now, for captured evidence whose certificates have expired")
	maxVMPL := fs.Int("max-vmpl", 0, "highest VMPL accepted (`0..3`; ACI reports are VMPL 0)")
	reportFile := fs.String("report", "", "verify the raw SEV-SNP report (1184 bytes, binary) in this `file` instead of an attestation object FILE; needs --vcek")
	vcekFile := fs.String("vcek", "", "the VCEK or VLEK certificate `file` (DER or PEM) that signed --report")
	maaJWKS := fs.String("maa-jwks", "", "verify an Azure Attestation token with this JWK Set `file` (its instance's signing keys), offline")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tkms attest inspect [--data DIR] [--json] [--now RFC3339] [--max-vmpl N] FILE")
		fmt.Fprintln(stderr, "       tkms attest inspect [--data DIR] [--json] [--now RFC3339] [--max-vmpl N] --report FILE --vcek FILE")
		fmt.Fprintln(stderr, "FILE is an attestation object (JSON): an ACI bundle, {\"type\":\"snp\",\"report\":...,\"vcek\"|\"cert_table\":...}")
		fmt.Fprintln(stderr, "or {\"type\":\"tdx\",\"quote\":...}; or a bare Intel TDX quote file (binary, as configfs-tsm's outblob holds it);")
		fmt.Fprintln(stderr, "or an Azure Attestation token (a JWT, bare or {\"type\":\"maa\",\"token\":...}), verified with --maa-jwks.")
		fs.PrintDefaults()
		writeHelpFoot(stderr, "attest inspect")
	}
	files, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	rawFlags := *reportFile != "" || *vcekFile != ""
	switch {
	case rawFlags && len(files) > 0:
		return fmt.Errorf("%w: give either FILE or --report and --vcek, not both", errUsage)
	case rawFlags && (*reportFile == "" || *vcekFile == ""):
		return fmt.Errorf("%w: --report and --vcek go together", errUsage)
	case !rawFlags && len(files) != 1:
		return fmt.Errorf("%w: want exactly one FILE (an attestation object, JSON) or --report and --vcek", errUsage)
	}
	if *maxVMPL < 0 || *maxVMPL > 3 {
		return fmt.Errorf("%w: --max-vmpl %d: want 0..3", errUsage, *maxVMPL)
	}
	cfg := attest.Config{SNP: snp.Options{MaxVMPL: *maxVMPL, CacheSize: -1}}
	if *nowFlag != "" {
		at, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return fmt.Errorf("%w: --now: %v", errUsage, err)
		}
		cfg.SNP.Now = func() time.Time { return at }
	}
	if *dataDir != "" {
		// LoadOrCreate would make a new chain that signed nothing: refuse.
		if _, err := os.Stat(filepath.Join(*dataDir, simsnp.ChainFile)); errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("%w: %s holds no simulated chain (%s); 'tkms attest simulate --data %s' makes one", errUsage, *dataDir, simsnp.ChainFile, *dataDir)
		}
		chain, err := simsnp.LoadOrCreate(*dataDir)
		if err != nil {
			return err
		}
		chain.Trust(&cfg)
		if err := trustSimulatedTDX(&cfg, *dataDir, false); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(*dataDir, simmaa.Dir)); err == nil {
			sim, err := simmaa.LoadOrCreate(*dataDir)
			if err != nil {
				return err
			}
			cfg.MAA.Instances = append(cfg.MAA.Instances, sim.Trusted())
		}
	}
	v, err := attest.New(cfg)
	if err != nil {
		return err
	}
	var raw []byte
	if rawFlags {
		report, err := os.ReadFile(*reportFile)
		if err != nil {
			return err
		}
		vcek, err := os.ReadFile(*vcekFile)
		if err != nil {
			return err
		}
		if raw, err = json.Marshal(api.RawSNP{Type: attest.TypeSNP, Report: report, VCEK: vcek}); err != nil {
			return err
		}
	} else if raw, err = os.ReadFile(files[0]); err != nil {
		return err
	}
	if *maaJWKS != "" {
		if v, err = withMAAKeys(cfg, v, raw, *maaJWKS); err != nil {
			return err
		}
	}
	defer v.Close()
	ev, err := v.InspectUnpinned(context.Background(), raw)
	res := newInspection(ev, err)
	if *asJSON {
		result := "refused"
		if res.Verified {
			result = "verified"
		}
		if err := writeResultJSON(stdout, result, res); err != nil {
			return err
		}
	} else {
		printInspection(stdout, res, *dataDir)
	}
	if !res.Verified {
		return fmt.Errorf("%w: %s: %s", errNotVerified, res.Code, res.Message)
	}
	return nil
}

// withMAAKeys returns a verifier that also trusts, as the issuer of the
// MAA token raw, the JWK Set in file (closing v).
func withMAAKeys(cfg attest.Config, v *attest.Verifier, raw []byte, file string) (*attest.Verifier, error) {
	if attest.Type(raw) != attest.TypeMAA {
		return nil, fmt.Errorf("%w: --maa-jwks: the evidence is not an Azure Attestation token", errUsage)
	}
	u, err := attest.DecodeUnverified(raw)
	if err != nil {
		return nil, err
	}
	iss, err := maa.UnverifiedIssuer(string(u.Report))
	if err != nil {
		return nil, err
	}
	jwks, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--maa-jwks: %w", err)
	}
	v.Close()
	cfg.MAA.Instances = append(cfg.MAA.Instances, maa.Instance{Issuer: iss, JWKS: jwks})
	nv, err := attest.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("--maa-jwks: %w", err)
	}
	return nv, nil
}

// newInspection is the verdict on evidence that InspectUnpinned returned
// with err.
func newInspection(ev *attest.Evidence, err error) *inspection {
	out := &inspection{Evidence: ev.Type, Verified: err == nil, Simulated: ev.Simulated || ev.UVMSimulated}
	if err != nil {
		out.Code, out.Message = attest.Code(err), err.Error()
		var ae *attest.Error
		if errors.As(err, &ae) {
			out.Message = ae.Err.Error()
		}
	}
	if ev.Claims == nil {
		return out // the report did not verify
	}
	out.Signer, out.ProductLine = ev.Signer, ev.ProductLine
	out.ReportSHA256 = hex.EncodeToString(ev.ReportSHA256[:])
	out.Claims = ev.Claims
	if !ev.UVMSigningTime.IsZero() {
		t := ev.UVMSigningTime
		out.UVMSigned = &t
	}
	return out
}

const simulatedBanner = "SIMULATED: not a TEE. This evidence chains to the simulated roots of %s; anybody with that directory can forge it.\n"

func printInspection(w io.Writer, r *inspection, dataDir string) {
	if !r.Verified {
		fmt.Fprintf(w, "verdict: NOT VERIFIED\ncode: %s\nmessage: %s\n", r.Code, r.Message)
		if len(r.Claims) == 0 {
			return
		}
		fmt.Fprintln(w, "claims of the report (its signature and chain verified; do not rely on them):")
	} else {
		if r.Simulated {
			fmt.Fprintf(w, simulatedBanner, dataDir)
		}
		root := "AMD root (pinned)"
		switch r.Evidence {
		case attest.TypeTDX, attest.TypeAzTDX:
			root = "Intel SGX root (pinned)"
		case attest.TypeMAA:
			root = "trusted Azure Attestation instance"
		}
		if r.Simulated {
			root = "SIMULATED root"
		}
		fmt.Fprintf(w, "verdict: VERIFIED\nevidence: %s, %s-signed, %s, %s\nreport_sha256: %s\n",
			r.Evidence, r.Signer, r.ProductLine, root, r.ReportSHA256)
		if r.UVMSigned != nil { // raw SNP evidence has no UVM endorsement
			fmt.Fprintf(w, "uvm_signing_time: %s\n", r.UVMSigned.Format(time.RFC3339))
		}
		fmt.Fprintln(w, "claims:")
	}
	names := make([]string, 0, len(r.Claims))
	for k := range r.Claims {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(w, "  %s: %v\n", k, r.Claims[k])
	}
	if r.Verified && r.Simulated {
		fmt.Fprintf(w, simulatedBanner, dataDir)
	}
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments (`inspect FILE --data DIR`), which flag.Parse alone
// does not allow, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
