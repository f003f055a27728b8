package client

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/snp"
)

// fakeTSM makes a temporary directory behave like the kernel's configfs-tsm
// report interface (Documentation/ABI/testing/configfs-tsm) for the real
// file operations of osFS: mkdir of an entry creates its attributes with
// generation 0; every write bumps generation; reading outblob produces a
// report of inblob signed by the simulated chain and the extended report's
// certificate table in auxblob; rmdir removes the entry with its
// attributes.
type fakeTSM struct {
	osFS
	dev      ReportDevice
	provider string
	noAux    bool
	// afterWrite runs after every write (to simulate another writer).
	afterWrite func(entry string)

	mu      sync.Mutex
	entries map[string]bool
}

func (k *fakeTSM) MkdirTemp(dir, pattern string) (string, error) {
	entry, err := os.MkdirTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	attrs := map[string]string{"generation": "0\n", "provider": k.provider + "\n", "inblob": "", "outblob": "", "privlevel": "", "privlevel_floor": "0\n"}
	if !k.noAux {
		attrs["auxblob"] = ""
	}
	for name, v := range attrs {
		if err := os.WriteFile(filepath.Join(entry, name), []byte(v), 0o600); err != nil {
			return "", err
		}
	}
	k.mu.Lock()
	if k.entries == nil {
		k.entries = map[string]bool{}
	}
	k.entries[entry] = true
	k.mu.Unlock()
	return entry, nil
}

func (k *fakeTSM) bump(entry string) error {
	g, err := os.ReadFile(filepath.Join(entry, "generation"))
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(g)))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(entry, "generation"), []byte(strconv.Itoa(n+1)+"\n"), 0o600)
}

func (k *fakeTSM) WriteFile(name string, data []byte) error {
	entry, attr := filepath.Split(name)
	entry = filepath.Clean(entry)
	if attr == "inblob" && len(data) > 64 {
		return errors.New("invalid argument")
	}
	if err := k.osFS.WriteFile(name, data); err != nil {
		return err
	}
	if err := k.bump(entry); err != nil {
		return err
	}
	if k.afterWrite != nil {
		k.afterWrite(entry)
	}
	return nil
}

func (k *fakeTSM) ReadFile(name string) ([]byte, error) {
	entry, attr := filepath.Split(name)
	if attr == "outblob" {
		in, err := os.ReadFile(filepath.Join(entry, "inblob"))
		if err != nil {
			return nil, err
		}
		var rd [64]byte
		copy(rd[:], in)
		report, table, err := k.dev.GetReport(context.Background(), rd)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(name, report, 0o600); err != nil {
			return nil, err
		}
		if !k.noAux {
			if err := os.WriteFile(filepath.Join(entry, "auxblob"), table, 0o600); err != nil {
				return nil, err
			}
		}
	}
	return k.osFS.ReadFile(name)
}

// Remove is configfs's rmdir of an entry.
func (k *fakeTSM) Remove(name string) error {
	k.mu.Lock()
	delete(k.entries, name)
	k.mu.Unlock()
	return os.RemoveAll(name)
}

func newTSMRoot(t *testing.T) string {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "report"), 0o700); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestConfigFSDevice(t *testing.T) {
	chain := testChain(t)
	ark, ask := chain.Roots()
	sv, err := snp.New(snp.Options{Roots: []snp.Root{{ProductLine: simsnp.ProductLine, ARK: ark, ASK: ask}}})
	if err != nil {
		t.Fatal(err)
	}
	rd := testReportData("configfs")

	t.Run("report and cert table", func(t *testing.T) {
		root := newTSMRoot(t)
		k := &fakeTSM{dev: &simDevice{chain: chain, certTable: true}, provider: "sev_guest"}
		level := uint(0)
		d := &ConfigFSDevice{Root: root, Privilege: &level, fs: k}
		report, table, err := d.GetReport(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		res, err := sv.VerifyExtendedReport(context.Background(), report, table)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.ReportData, rd[:]) {
			t.Errorf("REPORT_DATA %x", res.ReportData)
		}
		left, _ := os.ReadDir(filepath.Join(root, "report"))
		if len(left) != 0 {
			t.Errorf("entries left behind: %v", left)
		}
		// The raw SNP attester on top of it.
		ev, err := NewSNPAttester(SNPOptions{Device: d}).Attest(context.Background(), rd)
		if err != nil || ev.Type != EvidenceSNP {
			t.Fatalf("%v %+v", err, ev)
		}
	})
	t.Run("kernel without auxblob", func(t *testing.T) {
		k := &fakeTSM{dev: &simDevice{chain: chain}, provider: "sev_guest", noAux: true}
		report, table, err := (&ConfigFSDevice{Root: newTSMRoot(t), fs: k}).GetReport(context.Background(), rd)
		if err != nil || len(report) != 1184 || table != nil {
			t.Fatalf("%d-byte report, %d-byte table, %v", len(report), len(table), err)
		}
	})

	for _, tt := range []struct {
		name string
		k    *fakeTSM
		priv uint
		err  string
	}{
		{"TDX guest", &fakeTSM{dev: &simDevice{chain: chain}, provider: "tdx_guest"}, 0, `provider is "tdx_guest"`},
		{"another writer", &fakeTSM{dev: &simDevice{chain: chain}, provider: "sev_guest", afterWrite: func(entry string) {
			os.WriteFile(filepath.Join(entry, "generation"), []byte("7\n"), 0o600)
		}}, 0, "another writer"},
		{"device error", &fakeTSM{dev: &simDevice{err: errors.New("EIO")}, provider: "sev_guest"}, 0, "EIO"},
		{"bad privilege", &fakeTSM{dev: &simDevice{chain: chain}, provider: "sev_guest"}, 4, "privilege level 4"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := newTSMRoot(t)
			d := &ConfigFSDevice{Root: root, Privilege: &tt.priv, fs: tt.k}
			_, _, err := d.GetReport(context.Background(), rd)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want one containing %q", err, tt.err)
			}
			if left, _ := os.ReadDir(filepath.Join(root, "report")); len(left) != 0 {
				t.Errorf("entries left behind after an error: %v", left)
			}
		})
	}
	t.Run("no configfs", func(t *testing.T) {
		_, _, err := (&ConfigFSDevice{Root: t.TempDir()}).GetReport(context.Background(), rd)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %v, want ErrNotExist", err)
		}
	})
}

// On this (non-SEV) machine the real device fails cleanly.
func TestSEVGuestDeviceAbsent(t *testing.T) {
	_, _, err := (&SEVGuestDevice{Path: filepath.Join(t.TempDir(), "sev-guest")}).GetReport(context.Background(), [64]byte{})
	if err == nil {
		t.Fatal("a report from a device that does not exist")
	}
}
