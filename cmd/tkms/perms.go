package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// warnOpenDataDir logs a warning for the data directory, and for each file
// directly in it, that group or others may access, naming the path and
// the command that fixes it. tkms creates them 0700 and 0600; looser modes
// come from a copy, a restore or a volume mount, and let other local users
// read the ledger (whose secrets are sealed, but whose metadata is not) or
// replace files. It warns rather than refuses: a directory mounted by an
// orchestrator may carry modes the operator does not choose. (The master
// key and operator token files are refused when open, by seal.LoadFile and
// readSecretFile: they are secrets themselves.)
func warnOpenDataDir(log *slog.Logger, dir string) {
	warn := func(path string, mode os.FileMode, fix string) {
		log.Warn("data directory path is accessible by group or others", "path", path,
			"mode", fmt.Sprintf("%04o", mode.Perm()), "fix", fix+" "+path)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return // not created yet: tkms creates it 0700
	}
	if fi.Mode().Perm()&0o077 != 0 {
		warn(dir, fi.Mode(), "chmod 700")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err == nil && info.Mode().Perm()&0o077 != 0 {
			warn(filepath.Join(dir, e.Name()), info.Mode(), "chmod 600")
		}
	}
}
