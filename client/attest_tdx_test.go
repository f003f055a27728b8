package client

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/attest/tdx"
)

// simTDXDevice is a TD's quote device backed by the simulated TDX chain.
type simTDXDevice struct {
	chain  *simtdx.Chain
	debug  bool
	mutate func([]byte) []byte
}

func (d *simTDXDevice) GetReport(_ context.Context, rd [64]byte) ([]byte, []byte, error) {
	q, err := d.chain.Quote(simtdx.QuoteOptions{ReportData: rd[:], Debug: d.debug})
	if err == nil && d.mutate != nil {
		q = d.mutate(q)
	}
	return q, nil, err
}

func TestTDXAttester(t *testing.T) {
	chain, err := simtdx.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rd := [64]byte{1, 2, 3}
	k := &fakeTSM{dev: &simTDXDevice{chain: chain}, provider: "tdx_guest", noAux: true}
	a := NewTDXAttester(TDXOptions{Device: &ConfigFSDevice{Root: newTSMRoot(t), Provider: "tdx_guest", fs: k}})
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	var obj api.TDX
	if err := json.Unmarshal(ev.Attestation, &obj); err != nil || ev.Type != EvidenceTDX || obj.Type != "tdx" {
		t.Fatalf("%s %v", ev.Attestation, err)
	}
	res, err := tdx.New(tdx.Options{Roots: []*x509.Certificate{chain.Root()}}).Verify(obj.Quote)
	if err != nil || [64]byte(res.ReportData) != rd {
		t.Fatalf("verify: %v", err)
	}

	for _, tt := range []struct {
		name string
		dev  ReportDevice
		want string
	}{
		{"SEV-SNP guest", NewTDXAttester(TDXOptions{Device: &ConfigFSDevice{Root: newTSMRoot(t), Provider: "tdx_guest", fs: &fakeTSM{dev: &simTDXDevice{chain: chain}, provider: "sev_guest"}}}).device, `not "tdx_guest": this is not a TDX guest`},
		{"short", &simTDXDevice{chain: chain, mutate: func(q []byte) []byte { return q[:100] }}, "too short"},
		{"version", &simTDXDevice{chain: chain, mutate: func(q []byte) []byte { q[0] = 5; return q }}, "version 5"},
		{"report data", &simTDXDevice{chain: chain, mutate: func(q []byte) []byte { q[0x238] ^= 1; return q }}, "REPORT_DATA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTDXAttester(TDXOptions{Device: tt.dev}).Attest(context.Background(), rd)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v, want %q", err, tt.want)
			}
		})
	}
}
