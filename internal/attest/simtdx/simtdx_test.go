package simtdx_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simtdx"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	a, err := simtdx.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := simtdx.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Root().Raw, b.Root().Raw) {
		t.Fatal("a second load gave another root")
	}
	if !strings.Contains(a.Root().Subject.String(), "SIMULATED") {
		t.Fatalf("root subject %s", a.Root().Subject)
	}
	fi, err := os.Stat(filepath.Join(dir, simtdx.ChainFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("chain file: %v %v", fi, err)
	}
	for name, content := range map[string]string{
		"empty":      "",
		"truncated":  string(a.Marshal()[:600]),
		"trailing":   string(a.Marshal()) + "junk",
		"other type": "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
	} {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, simtdx.ChainFile), []byte(content), 0o600)
		if _, err := simtdx.LoadOrCreate(d); err == nil {
			t.Errorf("%s chain file accepted", name)
		}
	}
}

func TestQuoteOptions(t *testing.T) {
	c, err := simtdx.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]simtdx.QuoteOptions{
		"report data": {ReportData: make([]byte, 65)},
		"MRTD":        {MRTD: make([]byte, 47)},
		"RTMRs":       {RTMRs: make([][]byte, 5)},
		"RTMR size":   {RTMRs: [][]byte{make([]byte, 3)}},
		"MRCONFIGID":  {MRConfigID: make([]byte, 3)},
	} {
		if _, err := c.Quote(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	q, err := c.Quote(simtdx.QuoteOptions{RTMRs: [][]byte{bytes.Repeat([]byte{1}, 48)}, MRConfigID: bytes.Repeat([]byte{2}, 48)})
	if err != nil || !bytes.Contains(q, []byte(simtdx.DefaultMRTD)) {
		t.Fatalf("quote: %v", err)
	}
}
