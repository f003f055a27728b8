package simsnp

import (
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
)

// Trust makes cfg trust this simulated TEE: its AMD-shaped roots and its
// UVM endorser, which the verifier marks simulated. Accepting its evidence
// is cfg.Simulated, which the caller sets. It returns the endorser's DID
// and feed, for the log line that announces the trust.
func (c *Chain) Trust(cfg *attest.Config) (did, feed string) {
	ark, ask := c.Roots()
	cfg.SNP.Roots = append(cfg.SNP.Roots, snp.Root{ProductLine: ProductLine, ARK: ark, ASK: ask})
	did, feed = c.UVMTrust()
	cfg.SimulatedEndorsers = append(cfg.SimulatedEndorsers, uvm.Endorser{DID: did, Feed: feed})
	return did, feed
}
