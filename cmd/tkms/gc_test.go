package main

import (
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	t.Setenv("GOGC", "") // restores the environment's GOGC (or its absence) after the test

	os.Unsetenv("GOGC")
	tuneGC(log)
	if got := debug.SetGCPercent(100); got != serverGCPercent {
		t.Errorf("GOGC unset: the goal is %d, want %d", got, serverGCPercent)
	}

	os.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime read from the environment
	tuneGC(log)
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("GOGC=150: the goal is %d, want the environment's 150", got)
	}
}
