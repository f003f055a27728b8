package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/store"
)

// errUngoverned is serve's refusal to create an ungoverned ledger.
var errUngoverned = errors.New("refusing to create an ungoverned ledger")

// checkNewLedger refuses, unless allow (--allow-ungoverned), to let serve
// create a new ledger in dataDir: a ledger serve creates has no members and
// no constitution, and nothing can add them later. tkms init creates a
// governed one.
func checkNewLedger(dataDir string, allow bool) error {
	_, err := os.Stat(filepath.Join(dataDir, store.FileName))
	switch {
	case err == nil, allow:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	return fmt.Errorf("%w: %s holds no ledger. Create a governed service first with "+
		"'tkms init --members MEMBERS.json --data %s' (docs/operations.md), then serve it; "+
		"or pass --allow-ungoverned for a service without members, run by an operator token (it can never be governed later)",
		errUngoverned, dataDir, dataDir)
}

// warnUngoverned says what an ungoverned service lacks: without an
// operator token, nothing can rotate its keys on demand. A governed one
// rotates by proposals and needs no token.
func warnUngoverned(svc *kms.Service, token string, log *slog.Logger) {
	if svc.Governed() {
		if token != "" {
			log.Warn("the operator token is ignored: this service is governed; POST /app/refresh takes a member's signed proposal")
		}
		return
	}
	log.Warn("this service is not governed: its policies come from the configuration file")
	if token == "" {
		log.Warn("no operator token configured: POST /app/refresh is disabled")
	}
}
