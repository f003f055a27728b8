// Package devtee is the development stand-in for a TEE and a workload
// identity: an [Attester] whose evidence is signed by the SIMULATED SEV-SNP
// chain of a `tkms dev` data directory (a [TDXAttester] for its SIMULATED
// Intel TDX chain), and a [TokenSource] that mints
// tokens with that directory's OIDC issuer. Neither is secure: whoever
// reads the directory forges both, and a KMS accepts them only when told
// to (tkms dev, --insecure-simulated-tee). Production code imports package
// client alone, which does not depend on this package or its simulators.
package devtee
