#!/usr/bin/env bash
# Server memory and start-up at scale (BENCHMARKS.md, "Memory and
# start-up"): a `tkms serve` data directory with KEYS keys (default 1,000,
# rotated hourly over the past KEYS hours) and N ledger entries (default
# 1,000,000), then the time from start to listening and the RSS after
# start-up and after some requests.
set -euo pipefail
N=${N:-1000000}
KEYS=${KEYS:-1000}
W=$(mktemp -d /tmp/tkms-bench-mem.XXXXXX)
PID=
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$(dirname "$0")/.."
go build -o "$W/tkms" ./cmd/tkms
TKMS_BENCH_FILL_DIR=$W TKMS_BENCH_FILL_KEYS=$KEYS TKMS_BENCH_FILL_ENTRIES=$N \
  go test -count=1 -run '^TestFillManyKeysForBench$' -v ./cmd/tkms | grep 'ledger entries written'
du -h "$W/data/ledger.db"
for run in 1 2; do
  t0=$(date +%s.%N)
  "$W/tkms" serve --config "$W/tkms.json" >"$W/out.txt" 2>"$W/err.txt" &
  PID=$!
  until grep -q '"msg":"tkms listening"' "$W/err.txt" 2>/dev/null; do sleep 0.02; done
  t1=$(date +%s.%N)
  ADDR=$(grep -o '"msg":"tkms listening","addr":"[^"]*"' "$W/err.txt" | cut -d'"' -f8)
  echo "start $run: to listening $(echo "$t1 - $t0" | bc) s; RSS $(ps -o rss= -p $PID) KiB; $(grep -o '"msg":"ledger replayed"[^}]*' "$W/err.txt")"
  for i in $(seq 200); do curl -s "http://$ADDR/app/listpubkeys" >/dev/null; curl -s "http://$ADDR/v1/keys?all=true" >/dev/null; done
  echo "        after 400 requests: RSS $(ps -o rss= -p $PID) KiB"
  kill $PID; wait $PID 2>/dev/null || true
done
