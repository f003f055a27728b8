#!/usr/bin/env bash
# Release throughput of a three-node tkms dev cluster against a single node
# (BENCHMARKS.md, "A cluster"): `tkms bench --scenario release-v1` (closed
# loop, WORKERS workers, DURATION) against a single node; against the
# cluster's leader; against a follower (which verifies, then forwards the
# entry to the leader); and against all three nodes at once (one bench per
# node, WORKERS/3 workers each; throughputs add up). Rate limits are off, as
# for every release benchmark. Prints bench's summary lines per run.
#
#   scripts/bench-cluster.sh
#   DURATION=20s WORKERS=24 scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
WORKERS="${WORKERS:-16}"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/tkms" ./cmd/tkms
echo '{"limits":{"per_address_rate":0,"per_identity_rate":0},"log_level":"warn"}' > "$work/tkms.json"

# start DIR ARGS...: starts tkms dev on DIR and waits for its dev.json.
start() {
  local dir=$1; shift
  "$work/tkms" dev --listen 127.0.0.1:0 --data "$dir" --config "$work/tkms.json" "$@" >"$dir.out" 2>"$dir.err" &
  pids+=($!)
  until grep -q 'listening on' "$dir.out" 2>/dev/null; do sleep 0.2; done
}
url() { jq -r .kms_url "$1/dev.json"; }
pid() { jq -r .pid "$1/dev.json"; }
bench() { # NAME DIR WORKERS
  echo "== $1"
  "$work/tkms" bench --url "$(url "$2")" --data "$2" --server-pid "$(pid "$2")" --scenario release-v1 \
    --workers "$3" --duration "$DURATION" --warmup 2s 2>/dev/null | grep -E '^(throughput|latency|errors|server) '
}

start "$work/single"
bench "single node" "$work/single" "$WORKERS"
kill "$(pid "$work/single")"

start "$work/n1" --cluster
start "$work/n2" --join "$work/n1"
start "$work/n3" --join "$work/n1"
sleep 3 # promotions
leader=$(curl -s "$(url "$work/n1")/v1/cluster" | jq -r .leader)
lead="" ; follow=""
for n in n1 n2 n3; do
  if [ "$(jq -r .node_id "$work/$n/dev.json")" = "$leader" ]; then lead=$n; else follow=$n; fi
done
bench "3-node cluster, the leader ($lead)" "$work/$lead" "$WORKERS"
bench "3-node cluster, a follower ($follow)" "$work/$follow" "$WORKERS"
echo "== 3-node cluster, all three nodes at once ($((WORKERS / 3)) workers each)"
benches=()
for n in n1 n2 n3; do
  "$work/tkms" bench --url "$(url "$work/$n")" --data "$work/$n" --scenario release-v1 \
    --workers $((WORKERS / 3)) --duration "$DURATION" --warmup 2s 2>/dev/null >"$work/$n.bench" &
  benches+=($!)
done
wait "${benches[@]}"
for n in n1 n2 n3; do grep -E '^(throughput|latency|errors) ' "$work/$n.bench" | sed "s/^/$n: /"; done
