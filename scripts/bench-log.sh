#!/usr/bin/env bash
# Transparency-log benchmarks at scale (BENCHMARKS.md, "Transparency log"):
# makes a dev data directory of N entries (default 1,000,000) through the
# service's own release path, starts `tkms dev` on it (start-up time, RSS),
# audits it over loopback HTTP with `tkms audit` (time, peak RSS), and
# times 200 inclusion and 200 consistency proofs over HTTP with curl.
# Needs curl, jq and GNU time (/usr/bin/time).
set -euo pipefail
N=${N:-1000000}
W=$(mktemp -d /tmp/tkms-bench-log.XXXXXX)
trap 'kill $PID 2>/dev/null || true' EXIT
PID=
cd "$(dirname "$0")/.."
go build -o "$W/tkms" ./cmd/tkms
echo "== fill: $N releases"
TKMS_BENCH_FILL_DIR=$W TKMS_BENCH_FILL_ENTRIES=$N go test -count=1 -run '^TestFillLedgerForBench$' -v ./cmd/tkms | grep 'releases recorded'
du -h "$W/tkms-dev/ledger.db"

echo "== start-up of tkms dev on that ledger"
t0=$(date +%s.%N)
"$W/tkms" dev --listen 127.0.0.1:0 --data "$W/tkms-dev" >"$W/out.txt" 2>"$W/err.txt" &
PID=$!
until grep -q 'listening on' "$W/out.txt" 2>/dev/null; do sleep 0.02; done
t1=$(date +%s.%N)
URL=$(jq -r .kms_url "$W/tkms-dev/dev.json")
KEY=$(jq -r .log_public_key "$W/tkms-dev/dev.json")
echo "start-up to listening: $(echo "$t1 - $t0" | bc) s; server RSS $(ps -o rss= -p $PID) KiB"
curl -s "$URL/log/checkpoint" | head -2

echo "== tkms audit over loopback HTTP"
/usr/bin/time -f 'audit: %e s wall, %U s user, %S s sys, peak RSS %M KiB' \
  "$W/tkms" audit --kms "$URL" --log-key "$KEY" --state "$W/audit.json" --quiet
echo "server RSS after the audit: $(ps -o rss= -p $PID) KiB"

SIZE=$(curl -s "$URL/log/checkpoint" | sed -n 2p)
echo "== 200 inclusion proofs, 200 consistency proofs at size $SIZE (curl time_total, ms)"
stats() { sort -n | awk '{a[NR]=$1*1000} END {printf "p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", a[int(NR*0.5)], a[int(NR*0.9)], a[int(NR*0.99)], a[NR]}'; }
for i in $(seq 200); do
  curl -s -o /dev/null -w '%{time_total}\n' "$URL/v1/log/proof/inclusion?index=$(( (i * 4999) % SIZE ))"
done | stats | sed 's/^/inclusion:   /'
for i in $(seq 200); do
  curl -s -o /dev/null -w '%{time_total}\n' "$URL/v1/log/proof/consistency?from=$(( 1 + (i * 4999) % (SIZE - 1) ))"
done | stats | sed 's/^/consistency: /'
for i in $(seq 200); do
  curl -s -o /dev/null -w '%{time_total}\n' "$URL/app/heartbeat"
done | stats | sed 's/^/heartbeat (curl and HTTP alone): /'
kill $PID; wait $PID 2>/dev/null || true
rm -rf "$W"
