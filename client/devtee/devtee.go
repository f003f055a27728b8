// Package devtee is the development stand-in for a TEE and a workload
// identity: an [Attester] whose evidence is signed by the SIMULATED SEV-SNP
// chain of a `tkms dev` data directory (a [TDXAttester] for its SIMULATED
// Intel TDX chain, an [AzureCVMAttester] and a simulated Azure Attestation
// attester for its other simulated TEEs), and a [TokenSource] that mints
// tokens with that directory's OIDC issuer. Neither is secure: whoever
// reads the directory forges both, and a KMS accepts them only when told
// to (tkms dev, --insecure-simulated-tee). Production code imports package
// client alone, which does not depend on this package or its simulators.
package devtee

import (
	"fmt"
	"os"
	"path/filepath"
)

// needDevFile refuses a data directory without the simulated TEE's file
// (name, relative to dataDir) unless create is set: `tkms dev` creates
// every simulated TEE of its directory when it starts, so a directory
// without one is most likely a mistyped path, where loading would create a
// new chain that no KMS trusts.
func needDevFile(dataDir, name string, create bool) error {
	if create {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dataDir, name)); err != nil {
		return fmt.Errorf("devtee: no simulated TEE in %s (%w); start 'tkms dev --data %s' once first", dataDir, err, dataDir)
	}
	return nil
}
