#!/usr/bin/env bash
# fuzz.sh: runs every Go fuzz target of the module for FUZZTIME each
# (default 3s, what CI runs; for a long campaign: FUZZTIME=1h scripts/fuzz.sh,
# or one target: FUZZTIME=1h ONLY=FuzzParseMessage scripts/fuzz.sh).
# Targets are discovered with `go test -list`, so a new one is fuzzed
# without editing this file. A failure leaves the crashing input in the
# package's testdata/fuzz/<Target>/ (commit it: it becomes a regression
# seed) and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-3s}
ONLY=${ONLY:-}
n=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    if [ -n "$ONLY" ] && [ "$target" != "$ONLY" ]; then
      continue
    fi
    echo "== $pkg $target ($FUZZTIME)"
    if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1); then
      # With a short FUZZTIME on a busy machine the time can run out while
      # the fuzzer is still gathering baseline coverage: Go then reports
      # "context deadline exceeded" with no failing input. That is not a
      # finding; anything with an input, or any other error, is.
      if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
        echo "fuzz.sh: $target: time ran out before fuzzing started (not a failure; give more FUZZTIME)"
        continue
      fi
      echo "$out" | grep -v '^fuzz: elapsed' | tail -40
      echo "fuzz.sh: $target failed"
      exit 1
    fi
    echo "$out" | tail -1
    n=$((n + 1))
  done
done
echo "fuzz.sh: $n targets, $FUZZTIME each, no failure"
