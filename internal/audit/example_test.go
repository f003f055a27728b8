package audit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
)

// A service publishes its log as a static mirror (every tile the tree has,
// from the service's hashes and leaves); an auditor who holds the log's
// verifier key checks it offline, and again later against the state file.
func ExampleRun() {
	tmp, _ := os.MkdirTemp("", "tkms-audit-example")
	defer os.RemoveAll(tmp)

	// The operator's side: a service with its first key, mirrored.
	sealer, _ := seal.New(seal.NewKey())
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: filepath.Join(tmp, "data"), Sealer: sealer, ServiceName: "example",
		RotationPolicy: state.DefaultRotationPolicy(), LogOrigin: "kms.example/depa",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	if _, err := svc.Tick(context.Background()); err != nil {
		panic(err)
	}
	mirrorDir := filepath.Join(tmp, "mirror")
	if err := mirrorService(mirrorDir, svc); err != nil {
		panic(err)
	}
	logKey := svc.LogVerifierKey() // published at /v1/log/key

	// The auditor's side.
	r, err := Run(context.Background(), Options{
		Source:    NewDirSource(mirrorDir),
		LogKey:    logKey,
		StateFile: filepath.Join(tmp, "audit-state.json"),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("log:", r.Checkpoint.Origin)
	fmt.Println("entries:", r.Checkpoint.Size, "keys:", len(r.Keys))
	fmt.Println("passed:", r.Passed())
	// Output:
	// log: kms.example/depa
	// entries: 6 keys: 1
	// passed: true
}
