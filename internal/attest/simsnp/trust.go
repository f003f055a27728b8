package simsnp

import (
	"time"

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

// FixtureVerifier returns the [Fixture] chain and a verifier that trusts
// it as tkms dev trusts its own, with a clock a day into the chain's
// validity: for tests that need evidence verified, not a chain made.
func FixtureVerifier() (*Chain, *attest.Verifier, error) {
	c, err := Fixture()
	if err != nil {
		return nil, nil, err
	}
	at := c.VCEK().NotBefore.Add(24 * time.Hour)
	cfg := attest.Config{Simulated: true, SNP: snp.Options{Now: func() time.Time { return at }}}
	c.Trust(&cfg)
	v, err := attest.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return c, v, nil
}
