#!/usr/bin/env bash
# The footprint of a three-node tkms dev cluster at N ledger entries
# (default 1,000,000) against a single node with the same ledger
# (BENCHMARKS.md, "A cluster"): RSS per node and disk per node.
#
# 1. N releases are recorded in a dev data directory through the
#    service's own release path (TestFillLedgerForBench, as
#    scripts/bench-log.sh does): the single node's ledger.
# 2. The single node runs on it under `tkms bench --scenario release-v1`
#    (WORKERS workers, DURATION): its RSS (VmRSS at the end, VmHWM the
#    peak) and its disk.
# 3. The same directory founds a cluster (`tkms dev --cluster`: the raft
#    log starts with a snapshot of the ledger and is trimmed before it) and
#    two nodes join (`--join`: each receives that snapshot). Once the
#    three serve one checkpoint, each node's disk (ledger.db, raft/) is
#    measured; then the three run the same release benchmark at once and
#    each node's RSS and disk are measured again.
#
#   scripts/bench-cluster-footprint.sh
#   N=100000 DURATION=10s scripts/bench-cluster-footprint.sh
#
# Needs curl and jq. Uses about 3 x 2 GB of disk in a temporary directory
# (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
DURATION="${DURATION:-20s}"
WORKERS="${WORKERS:-6}"
work=$(mktemp -d /tmp/tkms-cluster-footprint.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/tkms" ./cmd/tkms
echo '{"limits":{"per_address_rate":0,"per_identity_rate":0},"log_level":"warn"}' >"$work/tkms.json"

echo "== fill: $N releases"
TKMS_BENCH_FILL_DIR=$work TKMS_BENCH_FILL_ENTRIES=$N go test -count=1 -timeout 60m -run '^TestFillLedgerForBench$' -v ./cmd/tkms | grep 'releases recorded'
d1=$work/tkms-dev

# start DIR ARGS...: starts tkms dev on DIR and waits for its dev.json.
start() {
  local dir=$1; shift
  rm -f "$dir.out" # a restarted node's earlier output
  "$work/tkms" dev --listen 127.0.0.1:0 --data "$dir" --config "$work/tkms.json" "$@" >"$dir.out" 2>"$dir.err" &
  pids+=($!)
  until grep -q 'listening on' "$dir.out" 2>/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir.err"; exit 1; }
    sleep 0.5
  done
}
url() { jq -r .kms_url "$1/dev.json"; }
pid() { jq -r .pid "$1/dev.json"; }
mib() { echo $(( $1 / 1048576 )); }
bytes() { du -sb "$1" | cut -f1; }
rss() { # DIR: "VmRSS X MB, VmHWM Y MB"
  awk '/^VmRSS|^VmHWM/ {printf "%s %d MB  ", $1, $2/1024}' "/proc/$(pid "$1")/status"
}
bench() { # DIR WORKERS
  "$work/tkms" bench --url "$(url "$1")" --data "$1" --scenario release-v1 \
    --workers "$2" --duration "$DURATION" --warmup 2s 2>/dev/null | grep -E '^(throughput|latency|errors) '
}
entries() { curl -s "$(url "$1")/log/checkpoint" | sed -n 2p; }
size() { # DIR: disk of its ledger and raft log
  local l r=0
  l=$(bytes "$1/ledger.db")
  [ -d "$1/raft" ] && r=$(bytes "$1/raft")
  echo "ledger.db $(mib "$l") MiB, raft/ $(mib "$r") MiB, total $(mib $((l + r))) MiB = $(echo "scale=2; ($l + $r) / $single" | bc) x the single node"
}

single=$(bytes "$d1/ledger.db")
echo "== single node: ledger.db $(mib "$single") MiB at $N releases"
start "$d1"
echo "start-up RSS: $(rss "$d1")"
bench "$d1" "$WORKERS"
echo "single node after the benchmark: $(rss "$d1"); $(entries "$d1") log entries"
single_after=$(bytes "$d1/ledger.db")
kill "$(pid "$d1")"
while kill -0 "$(pid "$d1")" 2>/dev/null; do sleep 0.2; done
# The cluster is compared with the single node's ledger as it is now.
single=$single_after

echo "== the same ledger founds a 3-node cluster"
t0=$(date +%s)
start "$d1" --cluster
start "$work/n2" --join "$d1"
start "$work/n3" --join "$d1"
nodes=("$d1" "$work/n2" "$work/n3")
until [ "$(curl -s "$(url "$d1")/v1/cluster" | jq '[.nodes[] | select(.suffrage == "voter")] | length')" = 3 ] &&
  [ "$(for n in "${nodes[@]}"; do curl -s "$(url "$n")/log/checkpoint" | sed -n 2,3p; done | sort -u | wc -l)" = 2 ]; do
  sleep 2
done
echo "three voters, one checkpoint after $(( $(date +%s) - t0 )) s"
for n in "${nodes[@]}"; do echo "$(basename "$n"): $(rss "$n"); $(entries "$n") log entries; $(size "$n")"; done
echo "== release-v1 at all three nodes at once ($WORKERS workers each, $DURATION)"
benches=()
for n in "${nodes[@]}"; do
  bench "$n" "$WORKERS" >"$n.bench" &
  benches+=($!)
done
wait "${benches[@]}"
for n in "${nodes[@]}"; do
  sed "s/^/$(basename "$n"): /" "$n.bench"
  echo "$(basename "$n") after the benchmark: $(rss "$n"); $(entries "$n") log entries; $(size "$n")"
done
