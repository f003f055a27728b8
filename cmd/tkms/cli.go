package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
)

// The environment variables every command that talks to a KMS reads as
// defaults: a flag given on the command line always wins, and so does a
// --data directory of a tkms dev.
const (
	envAddr      = "TKMS_ADDR"       // default of --kms
	envCACert    = "TKMS_CACERT"     // default of --kms-ca (for an https:// KMS)
	envMemberKey = "TKMS_MEMBER_KEY" // default of --key (a member's signing key)
)

// stdin is where commands read a confirmation (gov vote); tests replace
// it through the process's stdin.
var stdin io.Reader = os.Stdin

// registerURLAlias registers --url, the old spelling of --kms, writing to
// the same variable.
func registerURLAlias(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "url", "", "old spelling of --kms")
}

// envKMS returns $TKMS_ADDR without a trailing slash.
func envKMS() string {
	return strings.TrimRight(os.Getenv(envAddr), "/")
}

// caHintTransport adds to a TLS error of an unknown certificate authority
// how to trust the KMS's private CA.
type caHintTransport struct{ rt http.RoundTripper }

func (t caHintTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, fmt.Errorf("%w (if the KMS's certificate is issued by a private CA, trust it with --kms-ca CA.pem or %s=CA.pem)", err, envCACert)
		}
	}
	return resp, err
}

// writeResultJSON writes v, which must marshal to a JSON object, indented,
// with "result" as its first field: the one word a script checks
// (docs/operations.md "Scripting").
func writeResultJSON(w io.Writer, result string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if string(b) == "null" {
		b = []byte("{}")
	}
	if len(b) < 2 || b[0] != '{' {
		return fmt.Errorf("internal error: --json output is not an object")
	}
	r, _ := json.Marshal(result)
	out := append([]byte(`{"result":`), r...)
	if string(b) != "{}" {
		out = append(out, ',')
	}
	out = append(out, b[1:]...)
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// textOut is where a command writes text for people: stdout, unless
// stdout carries --json (then stderr).
func textOut(stdout, stderr io.Writer, asJSON bool) io.Writer {
	if asJSON {
		return stderr
	}
	return stdout
}

// confirm asks question on stdout and reads the answer from stdin: only y
// or yes agrees.
func confirm(stdout io.Writer, question string) bool {
	fmt.Fprintf(stdout, "%s [y/N] ", question)
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	fmt.Fprintln(stdout)
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// buildVersion is what tkms version reports: the module version, the VCS
// revision and time and the Go version, from the binary's build
// information (-ldflags "-X main.version=..." overrides the version).
type buildVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

func readBuildVersion() buildVersion {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return buildVersion{Version: version}
	}
	return buildVersionOf(version, bi)
}

// buildVersionOf reads v from bi: a version set at link time (not "dev")
// wins over the module's, which "go install MODULE@VERSION" records.
func buildVersionOf(version string, bi *debug.BuildInfo) buildVersion {
	v := buildVersion{Version: version}
	v.Go = bi.GoVersion
	if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := readBuildVersion()
	if *asJSON {
		return writeResultJSON(stdout, "ok", v)
	}
	fmt.Fprintf(stdout, "tkms %s\n", v.Version)
	if v.Revision != "" {
		mod := ""
		if v.Modified {
			mod = " (modified)"
		}
		fmt.Fprintf(stdout, "revision %s%s %s\n", v.Revision, mod, v.Time)
	}
	fmt.Fprintf(stdout, "go %s\n", v.Go)
	return nil
}
