#!/usr/bin/env bash
# fuzz-report.sh: a fuzz campaign over every Go fuzz target of the module,
# with a table of what each target did. For each target (discovered with
# `go test -list`, as scripts/fuzz.sh does) it runs
#   go test -run '^$' -fuzz '^T$' -fuzztime FUZZTIME -fuzzminimizetime FUZZMINIMIZETIME -parallel PARALLEL
# reads the last "fuzz: elapsed: Ns, execs: N (R/sec), new interesting: K
# (total: C)" line, and prints one row: package, target, fuzz time,
# executions, executions per second (execs / elapsed), new interesting
# inputs, corpus size, crashes. Unlike fuzz.sh it does not stop at a
# failure: a crashing input is left in the package's testdata/fuzz/<T>/
# (commit it with its fix), counted, and the campaign goes on. The exit
# status is non-zero when any target failed.
#
#   FUZZTIME=80s PARALLEL=1 scripts/fuzz-report.sh                 # table on stdout
#   FUZZTIME=10m PARALLEL=2 REPORT=/tmp/fuzz.md ONLY='FuzzParse.*' scripts/fuzz-report.sh
#
# Environment: FUZZTIME (default 60s), PARALLEL (default 1), FUZZMINIMIZETIME
# (default 1s, see fuzz.sh), ONLY (a regexp of target names), REPORT (a file
# that also receives the table). The fuzz cache (interesting inputs found
# so far, reused by later runs) is go's, under $(go env GOCACHE)/fuzz,
# outside the repository; only crashers are written into testdata/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-60s}
PARALLEL=${PARALLEL:-1}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
ONLY=${ONLY:-.*}
REPORT=${REPORT:-}

rows=()
total_secs=0
total_execs=0
failed=0
n=0
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "fuzz-report: FUZZTIME=$FUZZTIME PARALLEL=$PARALLEL FUZZMINIMIZETIME=$FUZZMINIMIZETIME, started $start"
while read -r pkg dir; do
  for target in $(cat "$dir"/*_test.go 2>/dev/null | sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' | sort -u); do
    if ! grep -Eq "^(${ONLY})\$" <<<"$target"; then
      continue
    fi
    n=$((n + 1))
    short=${pkg#github.com/tkms-dev/tkms/}
    echo "== $short $target ($FUZZTIME, -parallel $PARALLEL) $(date -u +%H:%M:%S)"
    status=0
    out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
      -parallel "$PARALLEL" "$pkg" 2>&1) || status=$?
    last=$(grep '^fuzz: elapsed:.*execs:' <<<"$out" | tail -1 || true) # not the "minimizing" lines
    # go prints the elapsed time as a time.Duration rounded to seconds:
    # 45s, 1m10s, 1h0m5s.
    secs=0 execs=0 interesting=0 corpus=0
    if [[ $last =~ elapsed:\ (([0-9]+)h)?(([0-9]+)m)?([0-9]+)s,\ execs:\ ([0-9]+)\ .*new\ interesting:\ ([0-9]+)\ \(total:\ ([0-9]+)\) ]]; then
      secs=$(( ${BASH_REMATCH[2]:-0} * 3600 + ${BASH_REMATCH[4]:-0} * 60 + ${BASH_REMATCH[5]} ))
      execs=${BASH_REMATCH[6]} interesting=${BASH_REMATCH[7]} corpus=${BASH_REMATCH[8]}
    fi
    crashes=0
    result=ok
    if [ "$status" -ne 0 ]; then
      if grep -q 'Failing input written' <<<"$out"; then
        crashes=1
        result="CRASH: $(grep -o 'testdata/fuzz/[^ ]*' <<<"$out" | head -1)"
        failed=$((failed + 1))
      elif grep -q 'context deadline exceeded' <<<"$out"; then
        result="ok (deadline hit while a worker was busy; no failing input)"
      else
        result="FAIL"
        failed=$((failed + 1))
      fi
      echo "$out" | grep -v '^fuzz: elapsed' | tail -30
    fi
    rate=0
    if [ "$secs" -gt 0 ]; then
      rate=$((execs / secs))
    fi
    total_secs=$((total_secs + secs))
    total_execs=$((total_execs + execs))
    echo "$last"
    rows+=("| $short | $target | ${secs}s | $execs | $rate | $interesting | $corpus | $crashes | $result |")
  done
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
end=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  echo
  echo "Fuzz campaign $start to $end on $(nproc) CPUs: FUZZTIME=$FUZZTIME, -parallel $PARALLEL, -fuzzminimizetime $FUZZMINIMIZETIME, $(go version | cut -d' ' -f3)."
  echo
  echo "| package | target | fuzz time | execs | execs/s | new interesting | corpus | crashes | result |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  printf '%s\n' "${rows[@]}"
  printf '| **total** | %d targets | %dm%02ds | %d | | | | %d | |\n' "$n" $((total_secs / 60)) $((total_secs % 60)) "$total_execs" "$failed"
} | tee ${REPORT:+"$REPORT"}
[ "$failed" -eq 0 ]
