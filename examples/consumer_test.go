package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goIn runs the go command in dir, outside this module and any workspace.
func goIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestConsumer builds, vets and tests examples/consumer, a module of its
// own that uses ohttphttp.Middleware, ohttphttp.Transport and the kmstest fake KMS
// end to end, as an integrator's service would.
func TestConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds another module")
	}
	goIn(t, "consumer", "vet", "./...")
	goIn(t, "consumer", "test", "-count=1", "./...")
	bin := filepath.Join(t.TempDir(), "tkms-consumer")
	goIn(t, "consumer", "build", "-trimpath", "-o", bin, ".")
	if fi, err := os.Stat(bin); err == nil {
		t.Logf("production consumer binary: %d bytes (BENCHMARKS.md)", fi.Size())
	}
}

// TestConsumerFootprint: a production build of a service (the ACI
// attester, IMDS tokens, Keys and the OHTTP middleware; package client,
// whose TDX, Azure CVM and MAA attesters come along) links no simulator
// (of SEV-SNP, TDX, Azure CVMs or MAA), no dev OIDC issuer, no server
// package and no package that registers global flags (none of its packages even imports flag, so none
// can; go-sev-guest's verify, which registers -workaround_kds_productname,
// is the one that did).
func TestConsumerFootprint(t *testing.T) {
	deps := strings.Fields(goIn(t, "consumer", "list", "-deps", "."))
	for _, want := range []string{
		"github.com/tkms-dev/tkms/client", "github.com/tkms-dev/tkms/ohttp", "github.com/tkms-dev/tkms/ohttp/ohttphttp", "github.com/openpcc/bhttp",
	} {
		if !slices.Contains(deps, want) {
			t.Errorf("the consumer does not link %s: is the test looking at the right build?", want)
		}
	}
	for _, dep := range deps {
		for _, bad := range []string{
			"flag",
			"github.com/google/go-sev-guest/verify",
			"github.com/tkms-dev/tkms/internal/attest/simsnp",
			"github.com/tkms-dev/tkms/internal/attest/simtdx",
			"github.com/tkms-dev/tkms/internal/attest/simazcvm",
			"github.com/tkms-dev/tkms/internal/attest/simmaa",
			"github.com/tkms-dev/tkms/internal/attest/snp",
			"github.com/tkms-dev/tkms/internal/oidcissuer",
			"github.com/tkms-dev/tkms/client/devtee",
			"github.com/tkms-dev/tkms/kmstest",
			"github.com/tkms-dev/tkms/internal/kms",
			"github.com/tkms-dev/tkms/internal/httpapi",
			"go.etcd.io/bbolt",
		} {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("a production consumer links %s", dep)
			}
		}
	}
}
