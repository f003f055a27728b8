#!/usr/bin/env bash
# A/B of attested release with and without the transparency log
# (BENCHMARKS.md, "Transparency log"): builds BenchmarkAppRelease at BASE
# (default 9c7edb4, the last commit before the log: no stored hashes, no
# checkpoints, no receipts, no recorded claims) and at the working tree,
# then runs them alternately, ROUNDS times (default 6), so that both see
# the same machine conditions. Prints releases/s per run; compare medians.
set -euo pipefail
BASE=${BASE:-9c7edb4}
ROUNDS=${ROUNDS:-6}
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/tkms-ab.XXXXXX)
trap 'git worktree remove --force "$W/base" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
git worktree add -q --detach "$W/base" "$BASE"
(cd "$W/base" && go test -c -o "$W/base.test" ./internal/release/)
go test -c -o "$W/head.test" ./internal/release/
cd internal/release
for r in $(seq "$ROUNDS"); do
  for v in base head; do
    printf '%s round %s: ' "$v" "$r"
    "$W/$v.test" -test.run '^$' -test.bench 'AppRelease/unwrapKey-http(-parallel)?$' -test.benchtime 3s |
      awk '/^BenchmarkAppRelease\/unwrap/ {printf "%s %s releases/s  ", $1, $5} END {print ""}'
  done
done
