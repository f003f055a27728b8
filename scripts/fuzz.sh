#!/usr/bin/env bash
# fuzz.sh: runs every Go fuzz target of the module for FUZZTIME each
# (default 3s, what CI runs; for a long campaign: FUZZTIME=1h scripts/fuzz.sh,
# or one target: FUZZTIME=1h ONLY=FuzzParseMessage scripts/fuzz.sh).
# Targets are found by their `func FuzzXxx(` lines in the packages' test
# files (as `go test -list` would, without compiling every package first),
# so a new one is fuzzed without editing this file. A failure leaves the
# crashing input in the package's testdata/fuzz/<Target>/ (commit it: it
# becomes a regression seed); the other targets still run, and the script
# exits non-zero. docs/fuzzing.md lists the targets.
#
# JOBS (default 2) targets run at once, each with -parallel PARALLEL
# (default 1): on CI's 2 CPUs that overlaps one target's start-up (go
# command, test binary, seeds) with another's fuzzing. FUZZMINIMIZETIME
# (default 1s) bounds the minimization of each new interesting input: with
# go's default of 60s a target whose executions are slow (certificate
# chains, RSA) spends its whole run minimizing its first finds (the snp
# targets ran under 20 executions in 3s). scripts/fuzz-report.sh runs the
# same targets one at a time and tabulates executions per target.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZTIME=${FUZZTIME:-3s}
export FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
export PARALLEL=${PARALLEL:-1}
JOBS=${JOBS:-2}
ONLY=${ONLY:-}

# fuzz_one PKG TARGET runs one target and prints its result as one block.
fuzz_one() {
  local pkg=$1 target=$2 out status=0
  out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
    -parallel "$PARALLEL" "$pkg" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    # With a short FUZZTIME on a busy machine the time can run out while
    # the fuzzer is still gathering baseline coverage: Go then reports
    # "context deadline exceeded" with no failing input. That is not a
    # finding; anything with an input, or any other error, is.
    if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
      printf '== %s %s (%s)\nfuzz.sh: %s: the time ran out while a worker was busy (baseline coverage or minimizing), with no failing input: not a failure\n' \
        "$pkg" "$target" "$FUZZTIME" "$target"
      return 0
    fi
    printf '== %s %s (%s)\n%s\nfuzz.sh: %s failed\n' "$pkg" "$target" "$FUZZTIME" \
      "$(grep -v '^fuzz: elapsed' <<<"$out" | tail -40)" "$target"
    return 1
  fi
  printf '== %s %s (%s)\n%s\n' "$pkg" "$target" "$FUZZTIME" "$(tail -1 <<<"$out")"
}
export -f fuzz_one

list=()
while read -r pkg dir; do
  for target in $(cat "$dir"/*_test.go 2>/dev/null | sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' | sort -u); do
    if [ -n "$ONLY" ] && [ "$target" != "$ONLY" ]; then
      continue
    fi
    list+=("$pkg" "$target")
  done
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
n=$((${#list[@]} / 2))
if [ "$n" -eq 0 ]; then
  echo "fuzz.sh: no fuzz target${ONLY:+ named $ONLY}"
  exit 1
fi
if printf '%s\n' "${list[@]}" | xargs -n 2 -P "$JOBS" bash -c 'fuzz_one "$@"' _; then
  echo "fuzz.sh: $n targets, $FUZZTIME each ($JOBS at a time), no failure"
else
  echo "fuzz.sh: $n targets, $FUZZTIME each: a target failed (see above)"
  exit 1
fi
