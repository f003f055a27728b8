package simsnp

import (
	_ "embed" // the fixtureChain chain
)

//go:embed testdata/simsnp-chain.pem
var fixtureChain []byte

// Fixture returns the simulated chain of testdata/simsnp-chain.pem: a
// chain made once, so that tests and the kmstest fake KMS need not
// generate RSA-4096 keys. Its certificates are valid from a fixed time in
// the past (see VCEK().NotBefore); verifiers must run on a clock inside
// their validity, as tkms dev's do not need to.
func Fixture() (*Chain, error) {
	return parseChainFile("testdata/"+ChainFile, fixtureChain)
}
