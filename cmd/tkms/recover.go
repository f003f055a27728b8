package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/audit"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/recovery"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
)

// Recovery mode (docs/recovery.md): `tkms serve --recover` (and `tkms dev
// --recover`) on a data directory holding a copy of a ledger, without its
// master key, audits the whole public log, serves the recovery API and
// waits for members' shares; at the threshold the ledger secret is
// installed as a joining node's is (memSealer.set), and the node founds a
// new cluster on the recovered ledger, whose first new entry is
// service.recovered under a new log key.

// recoverOptions are the flags of a recovery.
type recoverOptions struct {
	// logKey pins the log key the copy must have been signed with
	// (default: the copy's own); stateFile is a `tkms audit` state file
	// whose checkpoint the copy must extend (a fork or a truncated copy
	// fails the audit).
	logKey, stateFile string
}

// recoveryLockFile marks a data directory whose recovery is under way.
const recoveryLockFile = "recovery.lock"

// recoveryInfoFile tells operators (and the drill) where the recovering
// node listens and which recovery it runs.
const recoveryInfoFile = "recovery.json"

// recoveryError is a recovery refused before it starts, with its code.
func recoveryError(code, format string, a ...any) error {
	return &recovery.Error{Code: code, Err: fmt.Errorf(format, a...)}
}

// lockRecovery takes the data directory's recovery lock: a second recovery
// of the same copy while one runs is refused. A lock left by a process
// that is gone is taken over.
func lockRecovery(dir string) (func(), error) {
	path := filepath.Join(dir, recoveryLockFile)
	for range 2 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			fmt.Fprintf(f, "%d\n", os.Getpid())
			f.Close()
			return func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if err := recoveryUnderWay(dir); err != nil {
			return nil, err
		}
		os.Remove(path) // stale
	}
	return nil, recoveryError(recovery.CodeInProgress, "cannot take the recovery lock %s", path)
}

// recoveryUnderWay returns a RECOVERY_IN_PROGRESS error if a live process
// holds the recovery lock of dir.
func recoveryUnderWay(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, recoveryLockFile))
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
		return recoveryError(recovery.CodeInProgress, "a recovery of %s is under way (process %d): wait for it, or stop it first", dir, pid)
	}
	return nil
}

// auditCopy opens the ledger copy in dir read-only, audits it (the code of
// `tkms audit`, against the copy's own tree head and, if given, the
// state file's checkpoint) and replays it. Nothing in it is opened: the
// master key is what the recovery brings back.
func auditCopy(ctx context.Context, dir string, opts recoverOptions, log *slog.Logger) (*state.State, api.RecoveryStatus, error) {
	s, status, st, err := openCopy(ctx, dir, opts, log)
	if st != nil {
		st.Close()
	}
	return s, status, err
}

// openCopy is auditCopy, and returns the ledger copy open read-only (the
// caller closes it, also on error when it is not nil).
func openCopy(ctx context.Context, dir string, opts recoverOptions, log *slog.Logger) (*state.State, api.RecoveryStatus, *store.Store, error) {
	var status api.RecoveryStatus
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err != nil {
		return nil, status, nil, fmt.Errorf("recovery: %s holds no ledger (%s): copy the ledger of a node there", dir, store.FileName)
	}
	st, err := store.Open(dir, store.Options{ReadOnly: true, Logger: log})
	if err != nil {
		return nil, status, nil, recoveryError(recovery.CodeAuditFailed, "the ledger copy does not open: %v", err)
	}
	s, status, err := auditOpenCopy(ctx, st, opts, log)
	return s, status, st, err
}

func auditOpenCopy(ctx context.Context, st *store.Store, opts recoverOptions, log *slog.Logger) (*state.State, api.RecoveryStatus, error) {
	var status api.RecoveryStatus
	s := state.New()
	if err := st.Scan(1, func(e *ledger.Entry) error { return s.Apply(e) }); err != nil {
		return nil, status, recoveryError(recovery.CodeAuditFailed, "the ledger copy does not replay: %v", err)
	}
	if s.LogKey == nil {
		return nil, status, recoveryError(recovery.CodeAuditFailed, "the ledger copy has no log key")
	}
	size, root := st.TreeHead()
	vkey := opts.logKey
	if vkey == "" {
		vkey = s.LogKey.VerifierKey
	}
	r, err := audit.Run(ctx, audit.Options{
		Source: audit.NewLocalSource(size, st, st), LogKey: vkey, StateFile: opts.stateFile,
		Head: &translog.Checkpoint{Origin: s.LogKey.Origin, Size: size, Root: root},
	})
	if err != nil {
		return nil, status, recoveryError(recovery.CodeAuditFailed, "the audit of the ledger copy could not run: %v", err)
	}
	if !r.Passed() {
		var vs []string
		for i, v := range r.Violations {
			if i == 5 {
				vs = append(vs, fmt.Sprintf("... and %d more", int64(len(r.Violations)-5)+r.OmittedViolations))
				break
			}
			vs = append(vs, v.String())
		}
		return nil, status, recoveryError(recovery.CodeAuditFailed, "the ledger copy fails its audit; recover from another copy:\n  %s", strings.Join(vs, "\n  "))
	}
	log.Info("recovery: the ledger copy passed its audit", "entries", size, "root", hex.EncodeToString(root[:]), "log_key", vkey)
	status = api.RecoveryStatus{LogOrigin: s.LogKey.Origin, LogKey: s.LogKey.VerifierKey, TreeSize: size, TreeRoot: hex.EncodeToString(root[:])}
	return s, status, nil
}

// waitForRecovery runs the waiting phase of a recovery on cfg.DataDir and
// returns the recovered ledger secret and what the service.recovered
// entry records. It serves the recovery API on cfg.Listen until the
// threshold is reached, then frees the address for the service.
func waitForRecovery(ctx context.Context, cfg *Config, opts recoverOptions, log *slog.Logger) ([]byte, *kms.Recovered, func(), error) {
	unlock, err := lockRecovery(cfg.DataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unlock()
		}
	}()
	st, status, copyStore, err := openCopy(ctx, cfg.DataDir, opts, log)
	if copyStore != nil {
		// Closed before the service opens the ledger for writing.
		defer copyStore.Close()
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if st.Recovery == nil {
		return nil, nil, nil, recoveryError(recovery.CodeNoShares, "the ledger copy holds no recovery shares (no recovery_threshold, or no member had an encryption key): it cannot be recovered")
	}
	if secret, rec := tryAutoRecovery(ctx, cfg, st, log); secret != nil {
		ok = true
		return secret, rec, unlock, nil
	}
	window := 10 * time.Minute
	if st.Constitution != nil {
		window = st.Constitution.CreatedAtWindow()
	}
	sess := recovery.NewSession(recovery.SessionConfig{
		ID: recovery.NewSessionID(), Shares: &st.Recovery.Shares, SharesSeq: st.Recovery.Seq, Window: window, Status: status,
		Public: copyLogHandler(copyStore, status),
		Member: func(kid string) (gov.Member, bool) {
			m := st.MemberBySigner(kid)
			if m == nil || !m.Active {
				return gov.Member{}, false
			}
			return m.Member, true
		},
	})
	tlsConf, err := newServerTLS(cfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, nil, err
	}
	addr := ln.Addr().String()
	scheme := "http://"
	if tlsConf != nil {
		scheme = "https://"
	}
	info, _ := json.MarshalIndent(map[string]any{"kms_url": scheme + addr, "recovery_id": sess.Status().RecoveryID, "pid": os.Getpid()}, "", "  ")
	if err := writeFileAtomic(filepath.Join(cfg.DataDir, recoveryInfoFile), append(info, '\n'), 0o600); err != nil {
		ln.Close()
		return nil, nil, nil, err
	}
	srv := httpapi.NewHTTPServer(addr, sess.Handler(), log, httpapi.DefaultLimits())
	srv.TLSConfig = tlsConf
	sctx, stop := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-sctx.Done():
		}
		stop()
	}()
	s0 := sess.Status()
	if err := serveUntil(sctx, srv, ln, log, func() {
		log.Info("recovery: waiting for members' recovery shares", "addr", addr, "recovery_id", s0.RecoveryID, "threshold", s0.Threshold, "holders", len(s0.Holders), "shares_seq", s0.SharesSeq)
	}); err != nil {
		return nil, nil, nil, err
	}
	if ctx.Err() != nil {
		return nil, nil, nil, ctx.Err()
	}
	secret, members := sess.Result()
	os.Remove(filepath.Join(cfg.DataDir, recoveryInfoFile)) // dev.json and the logs say where the service is now
	// The service listens where the recovery did.
	cfg.Listen = addr
	ok = true
	log.Info("recovery: the members' shares recovered the ledger secret", "members", len(members), "recovery_id", s0.RecoveryID)
	return secret, &kms.Recovered{RecoveryID: s0.RecoveryID, SharesSeq: s0.SharesSeq, Members: members}, unlock, nil
}

// copyLedgerCopy copies into dir, a new data directory, what a dev
// recovery needs of the ledger copy in from: the ledger and its keyring
// (sealed under the master key the recovery brings back), and the dev
// environment a joining dev node copies too (the OIDC issuer's key, the
// simulated TEE's chain, the dev member's key). Never a master key.
func copyLedgerCopy(from, dir string) error {
	if err := recoveryUnderWay(dir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err == nil {
		return fmt.Errorf("--recover: %s holds a ledger already: give a new --data directory", dir)
	}
	if _, err := os.Stat(filepath.Join(from, store.FileName)); err != nil {
		return fmt.Errorf("--recover %s: no ledger (%s) there: give a copy of a node's data directory", from, store.FileName)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{store.FileName, keyring.FileName, oidcissuer.KeyFile, simsnp.ChainFile, devMemberKeyFile, devMemberPubFile} {
		if err := copyIfMissing(filepath.Join(from, f), filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("--recover %s: %w", from, err)
		}
	}
	return nil
}

// devRecover is the recovery of `tkms dev --recover`: as serve's, and the
// recovered master key is then kept in the data directory's file, as the
// first node of a dev cluster keeps its own (insecure, for development).
func devRecover(ctx context.Context, cfg *Config, ro recoverOptions, log *slog.Logger) (func(), error) {
	secret, rec, unlock, err := waitForRecovery(ctx, cfg, ro, log)
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	if err := cfg.node.mem.set(secret); err != nil {
		unlock()
		return nil, fmt.Errorf("recovery: %w", err)
	}
	// The dev master key file holds version 1 of the ledger secret, as
	// the first node of a dev cluster keeps it; a secret rekeyed since
	// stays in memory only.
	v, key, err := seal.ParseSecret(secret)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("recovery: %w", err)
	}
	defer clear(key)
	if v == 1 {
		if _, err := seal.WriteFile(cfg.MasterKeyFile, key); err != nil {
			unlock()
			return nil, fmt.Errorf("recovery: %w", err)
		}
	} else {
		log.Warn("recovery: the recovered ledger secret was rekeyed (version > 1): the dev master key file holds version 1 only, so this node keeps it in memory only", "version", v)
	}
	cfg.recovered = rec
	return unlock, nil
}

// copyLogHandler serves the public log of the audited ledger copy while
// the node waits: its tiles (C2SP tlog-tiles) and its log key. Its
// checkpoint is signed only once the log key is recovered: until then
// GET /v1/recovery gives the tree size and root the audit verified.
func copyLogHandler(st *store.Store, status api.RecoveryStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/log/key":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, status.LogKey)
		case strings.HasPrefix(r.URL.Path, "/log/tile/"):
			t, err := translog.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/log/"))
			if err != nil {
				apierror.Write(w, http.StatusNotFound, httpapi.CodeNotFound, "not a tile path")
				return
			}
			data, err := translog.ReadTile(t, status.TreeSize, st, st)
			if err != nil {
				apierror.Write(w, http.StatusNotFound, httpapi.CodeNotFound, "no such tile in the ledger copy")
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(data)
		default:
			apierror.Write(w, http.StatusServiceUnavailable, recovery.CodeWaiting, "this node is recovering a ledger and waits for members' recovery shares: it serves /v1/recovery, the copy's log tiles and /v1/log/key")
		}
	})
}
