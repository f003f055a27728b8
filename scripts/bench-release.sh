#!/usr/bin/env bash
# bench-release.sh: every ratio of the release path's performance targets
# (BENCHMARKS.md, "The release path at the crypto floor") in one run, one
# after the other on this machine, with the load average before each step so
# that a reader can tell a quiet run from a shared one:
#
#   1. BenchmarkAppRelease: /app/unwrapKey over HTTP, 16 clients, against the
#      crypto floor measured in the same process (throughput and CPU ratios);
#   2. tkms bench release-app (closed loop, WORKERS workers): /app/key then
#      /app/unwrapKey against its own tkms dev, ratio and CPU ratio;
#   3. the same, open loop at half the rate step 2 reached, 64 in flight: p99;
#   4. tkms bench release-v1 (HPKE), closed loop: ratio and CPU ratio;
#   5. scripts/bench-pubkeys.sh with ROUNDS rounds: /app/listpubkeys x nginx;
#   6. scripts/bench-cluster.sh: a 3-node cluster against one node.
#
# Ends with a summary table (also in OUT/summary.md).
#
#   scripts/bench-release.sh
#   DURATION=20s WORKERS=16 ROUNDS=5 SKIP=pubkeys,cluster scripts/bench-release.sh
#
# Environment: DURATION [10s] measured time of each tkms bench run;
# WORKERS [8]; ROUNDS [5] for bench-pubkeys.sh; BENCHTIME [3s] for the Go
# benchmark; SKIP, a comma-separated list of gobench, app, open, v1, pubkeys,
# cluster; OUT [a temporary directory] where each step's output is kept.
# bench-pubkeys.sh installs nginx and wrk with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
WORKERS=${WORKERS:-8}
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-3s}
SKIP=",${SKIP:-},"
OUT=${OUT:-$(mktemp -d /tmp/bench-release.XXXXXX)}
mkdir -p "$OUT"
command -v jq >/dev/null || { echo "bench-release: jq is needed" >&2; exit 1; }

say() { printf 'bench-release: %s\n' "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
skip() { [[ $SKIP == *",$1,"* ]]; }
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

go build -o "$OUT/tkms" ./cmd/tkms
say "output in $OUT; $(nproc) CPUs; $(go version | cut -d' ' -f3)"

# bench SCENARIO NAME ARGS...: one tkms bench run with its JSON report kept.
bench() {
	local name=$1
	shift
	"$OUT/tkms" bench --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
}

if ! skip gobench; then
	l=$(load)
	say "1. BenchmarkAppRelease (load $l)"
	go test -run '^$' -bench 'AppRelease' -benchtime "$BENCHTIME" -count 1 -v ./internal/release/ >"$OUT/gobench.txt" 2>&1
	r=$(grep -o 'ratio (b)/(a) [0-9.]*' "$OUT/gobench.txt" | tail -1 | awk '{print $3}')
	c=$(grep -o 'ratio floor/request [0-9.]*' "$OUT/gobench.txt" | tail -1 | awk '{print $3}')
	row "BenchmarkAppRelease, 16 clients: releases/s over the floor's (CPU ratio)" "${r:-?} (${c:-?})" ">= 0.85" "$l"
fi

rate=0
if ! skip app; then
	l=$(load)
	say "2. tkms bench release-app, $WORKERS workers (load $l)"
	bench app --scenario release-app --workers "$WORKERS" --duration "$DURATION" --warmup 2s
	read -r ops ratio cpu p99 < <(jq -r '[(.ops_per_s|floor), (.floor.ratio*1000|round/1000), (.floor.cpu_ratio*1000|round/1000), (.latency.p99_ms*10|round/10)] | @tsv' "$OUT/app.json")
	rate=$ops
	row "\`tkms bench release-app\`, $WORKERS workers: ratio (CPU ratio), ops/s, p99 ms" "$ratio ($cpu), $ops/s, p99 $p99" ">= 0.85" "$l"
fi

if ! skip open && [ "${rate:-0}" -gt 1 ]; then
	half=$((rate / 2))
	l=$(load)
	say "3. tkms bench release-app, open loop at $half/s (load $l)"
	bench open --scenario release-app --rate "$half" --workers 64 --duration "$DURATION" --warmup 2s
	read -r p99 errs < <(jq -r '[(.latency.p99_ms*10|round/10), .errors] | @tsv' "$OUT/open.json")
	row "\`release-app\` open loop at half that rate ($half/s), 64 in flight: p99 ms (errors)" "$p99 ($errs)" "< 50 ms" "$l"
fi

if ! skip v1; then
	l=$(load)
	say "4. tkms bench release-v1, $WORKERS workers (load $l)"
	bench v1 --scenario release-v1 --workers "$WORKERS" --duration "$DURATION" --warmup 2s
	read -r ops ratio cpu p99 < <(jq -r '[(.ops_per_s|floor), (.floor.ratio*1000|round/1000), (.floor.cpu_ratio*1000|round/1000), (.latency.p99_ms*10|round/10)] | @tsv' "$OUT/v1.json")
	row "\`tkms bench release-v1\`, $WORKERS workers: ratio (CPU ratio), ops/s, p99 ms" "$ratio ($cpu), $ops/s, p99 $p99" ">= 0.85" "$l"
fi

if ! skip pubkeys; then
	l=$(load)
	say "5. scripts/bench-pubkeys.sh, $ROUNDS rounds (load $l)"
	ROUNDS=$ROUNDS scripts/bench-pubkeys.sh >"$OUT/pubkeys.txt" 2>&1
	# the summary line: tkms /app/listpubkeys REQ/S X-NGINX CPU-US X-NGINX
	read -r q k < <(awk '$1 == "tkms" && $2 == "/app/listpubkeys" { print $4, $6 }' "$OUT/pubkeys.txt")
	rounds=$(sed -n 's/.*round [0-9]*: nginx .* tkms \/app\/listpubkeys [0-9.]* (\([0-9.]*\) x nginx).*/\1/p' "$OUT/pubkeys.txt" | sort -g | sed -n '1p;$p' | paste -sd- -)
	row "\`/app/listpubkeys\` x nginx, median of $ROUNDS rounds (rounds; CPU per request x nginx)" "${q:-?} (${rounds:-?}; CPU ${k:-?})" ">= 0.8" "$l"
fi

if ! skip cluster; then
	l=$(load)
	say "6. scripts/bench-cluster.sh (load $l)"
	scripts/bench-cluster.sh >"$OUT/cluster.txt" 2>&1
	single=$(awk '/^== single node/{f=1;next} f&&/^throughput/{print $2; exit}' "$OUT/cluster.txt")
	leader=$(awk '/^== 3-node cluster, the leader/{f=1;next} f&&/^throughput/{print $2; exit}' "$OUT/cluster.txt")
	r=$(awk -v a="${leader:-0}" -v b="${single:-0}" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "?" }')
	row "3-node cluster through its leader x one node (release-v1)" "$r ($leader vs $single ops/s)" ">= 0.6" "$l"
fi

{
	echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load at the end $(load)"
	echo
	echo "| measure | result | target | load before |"
	echo "|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
} | tee "$OUT/summary.md"
