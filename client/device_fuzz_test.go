package client

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/abi"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

// fuzzChain loads the simulated chain of testdata/simsnp-chain.pem:
// generating one (RSA-4096 keys) in every fuzz worker would take longer
// than a CI fuzz run.
func fuzzChain(f *testing.F) *simsnp.Chain {
	b, err := os.ReadFile("testdata/" + simsnp.ChainFile)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, simsnp.ChainFile), b, 0o600); err != nil {
		f.Fatal(err)
	}
	c, err := simsnp.LoadOrCreate(dir)
	if err != nil {
		f.Fatal(err)
	}
	return c
}

// parseErr is the error of snp.ParseCertTable, which the attester must
// have passed (abi.CertTable.Unmarshal itself panics on some tables).
func parseErr(table []byte) error {
	_, err := snp.ParseCertTable(table)
	return err
}

// memTSM is a configfs-tsm report entry in memory whose provider, outblob,
// auxblob and generation attributes hold what the fuzzer chose; every
// write bumps the generation (when it is a number), as the kernel's does.
type memTSM struct {
	gen, provider, outblob, auxblob []byte
	noAux                           bool
}

func (m *memTSM) MkdirTemp(dir, pattern string) (string, error) { return path.Join(dir, "e"), nil }
func (m *memTSM) Remove(string) error                           { return nil }

func (m *memTSM) WriteFile(name string, data []byte) error {
	if n, err := strconv.ParseUint(strings.TrimRight(string(m.gen), "\n"), 10, 64); err == nil {
		m.gen = []byte(strconv.FormatUint(n+1, 10) + "\n")
	}
	return nil
}

func (m *memTSM) ReadFile(name string) ([]byte, error) {
	switch path.Base(name) {
	case "generation":
		return m.gen, nil
	case "provider":
		return m.provider, nil
	case "outblob":
		return m.outblob, nil
	case "auxblob":
		if m.noAux {
			return nil, fs.ErrNotExist
		}
		return m.auxblob, nil
	}
	return nil, fs.ErrNotExist
}

// FuzzConfigFSReport feeds arbitrary configfs-tsm attribute contents
// (generation, provider, outblob, auxblob: what the guest kernel gives) to
// ConfigFSDevice and the SNP attester over it. Nothing may panic; an
// attestation is produced only from a sev_guest provider whose generation
// counted exactly our writes, from a report of the SEV-SNP size carrying the
// REPORT_DATA asked for, with a certificate table that parses; and the
// evidence carries exactly those bytes. REPORT_DATA is taken from the
// fuzzed report itself (as a real device would echo it). Seeds: a report
// and table of the simulated chain (our own encoder) and malformed
// variants.
func FuzzConfigFSReport(f *testing.F) {
	chain := fuzzChain(f)
	var rd [64]byte
	copy(rd[:], "fuzz")
	report, table, err := (&simDevice{chain: chain, certTable: true}).GetReport(context.Background(), rd)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("0\n"), []byte("sev_guest\n"), report, table, false)
	f.Add([]byte("0\n"), []byte("sev_guest"), report, []byte{}, true)
	f.Add([]byte("7"), []byte("tdx_guest\n"), report, table, false)
	f.Add([]byte("x"), []byte("sev_guest\n"), report[:100], table[:10], false)
	f.Add([]byte("18446744073709551615\n"), []byte("sev_guest\n"), report, table, false)
	f.Fuzz(func(t *testing.T, gen, provider, outblob, auxblob []byte, noAux bool) {
		var rd [64]byte
		if len(outblob) >= 0x90 {
			copy(rd[:], outblob[0x50:0x90])
		}
		m := &memTSM{gen: bytes.Clone(gen), provider: provider, outblob: outblob, auxblob: auxblob, noAux: noAux}
		dev := &ConfigFSDevice{Root: "/tsm", fs: m}
		r, tab, err := dev.GetReport(context.Background(), rd)
		if err == nil {
			_, gerr := strconv.ParseUint(strings.TrimRight(string(gen), "\n"), 10, 64)
			if gerr != nil || string(bytes.TrimRight(provider, "\n")) != "sev_guest" ||
				!bytes.Equal(r, outblob) || (noAux && tab != nil) || (!noAux && !bytes.Equal(tab, auxblob)) {
				t.Fatalf("accepted generation %q provider %q; report %d bytes, table %d bytes", gen, provider, len(r), len(tab))
			}
		}
		m = &memTSM{gen: []byte("0\n"), provider: []byte("sev_guest\n"), outblob: outblob, auxblob: auxblob, noAux: noAux}
		ev, err := NewSNPAttester(SNPOptions{Device: &ConfigFSDevice{Root: "/tsm", fs: m}}).Attest(context.Background(), rd)
		if err != nil {
			if ev != nil {
				t.Fatal("evidence with an error")
			}
			return
		}
		var raw api.RawSNP
		if err := json.Unmarshal(ev.Attestation, &raw); err != nil {
			t.Fatal(err)
		}
		if len(outblob) != abi.ReportSize || !bytes.Equal(raw.Report, outblob) || !bytes.Equal(raw.Report[0x50:0x90], rd[:]) ||
			noAux || !bytes.Equal(raw.CertTable, auxblob) || parseErr(raw.CertTable) != nil {
			t.Fatalf("evidence of a %d-byte report with a %d-byte table", len(raw.Report), len(raw.CertTable))
		}
	})
}

// FuzzSNPAttesterDevice feeds arbitrary SNP_GET_EXT_REPORT outputs (the
// report and certificate table a /dev/sev-guest ioctl fills) to the raw
// SNP attester, asking for REPORT_DATA rd. Nothing may panic; evidence is
// produced only from a report of the right size carrying rd, with a
// certificate table that parses or with the configured VCEK; every failure
// is an error naming the client.
func FuzzSNPAttesterDevice(f *testing.F) {
	chain := fuzzChain(f)
	var rd [64]byte
	copy(rd[:], "device")
	report, table, err := (&simDevice{chain: chain, certTable: true}).GetReport(context.Background(), rd)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(report, table, false)
	f.Add(report, []byte{}, true)
	f.Add(report, []byte("junk"), false)
	f.Add(report[:abi.ReportSize-1], table, false)
	f.Fuzz(func(t *testing.T, report, table []byte, withVCEK bool) {
		var opts SNPOptions
		if withVCEK {
			opts.VCEK = chain.VCEK().Raw
		}
		ev, err := NewSNPAttester(SNPOptions{Device: &fixedDevice{report: report, certTable: table}, VCEK: opts.VCEK}).Attest(context.Background(), rd)
		if err != nil {
			if ev != nil || !strings.HasPrefix(err.Error(), "client: ") {
				t.Fatalf("evidence %v, error %v", ev, err)
			}
			return
		}
		var raw api.RawSNP
		if err := json.Unmarshal(ev.Attestation, &raw); err != nil {
			t.Fatal(err)
		}
		switch {
		case len(report) != abi.ReportSize || !bytes.Equal(raw.Report, report) || !bytes.Equal(report[0x50:0x90], rd[:]):
			t.Fatalf("evidence from a %d-byte report", len(report))
		case withVCEK && (!bytes.Equal(raw.VCEK, chain.VCEK().Raw) || raw.CertTable != nil):
			t.Fatal("evidence without the configured VCEK")
		case !withVCEK && (!bytes.Equal(raw.CertTable, table) || parseErr(table) != nil):
			t.Fatal("evidence with a certificate table that does not parse")
		}
	})
}
