// Package fuzzalloc holds only a fuzz target: FuzzAllocBound checks that
// the module's decoders of untrusted bytes whose formats carry lengths or
// counts (OHTTP key configurations, tile entry bundles, ledger records and
// leaves, COSE_Sign1 governance messages and UVM endorsements, SEV-SNP
// certificate tables, ACI evidence, receipts, policies) allocate in
// proportion to their input, never to a length the input claims.
// docs/fuzzing.md lists every fuzz target of the module.
package fuzzalloc
