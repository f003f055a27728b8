#!/usr/bin/env bash
# Public-key latency under a flood of invalid releases (BENCHMARKS.md,
# "Flood of invalid releases"): for each setting, ROUNDS interleaved runs of
# `tkms bench --scenario flood` (public keys at RATE req/s, open loop) with
# the flood paced at a given rate, plus a baseline without flood. Prints
# one line per run and the median of each setting.
#
#   scripts/bench-flood.sh                      # 3 rounds, 10 s each
#   ROUNDS=5 DURATION=20s scripts/bench-flood.sh
#   SETTINGS="default:2000 off:1000" scripts/bench-flood.sh
#
# A setting is LIMITS:FLOOD_RATE (LIMITS as tkms bench --limits; FLOOD_RATE
# 0 = closed loop, 32 workers as fast as answered); "base" is no flood.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
RATE="${RATE:-2000}"
SETTINGS="${SETTINGS:-base default:1000 default:2000 default:4000 default:0 off:500 off:1000}"

bin="$(mktemp -d)/tkms"
go build -o "$bin" ./cmd/tkms
out="$(mktemp)"

for round in $(seq "$ROUNDS"); do
  for s in $SETTINGS; do
    if [ "$s" = base ]; then
      args=(--scenario pubkeys)
    else
      args=(--scenario flood --limits "${s%%:*}" --flood-rate "${s##*:}")
    fi
    "$bin" bench --rate "$RATE" --duration "$DURATION" --json "${args[@]}" 2>/dev/null |
      python3 -c '
import json, sys
d = json.load(sys.stdin)
l, f, srv = d["latency"], d.get("flood") or {}, d.get("server") or {}
st = f.get("by_status", {})
print(json.dumps({"setting": sys.argv[1], "round": int(sys.argv[2]),
  "p50": l["p50_ms"], "p90": l["p90_ms"], "p99": l["p99_ms"], "p999": l["p99_9_ms"], "max": l["max_ms"],
  "flood_per_s": f.get("answered_per_s", 0), "s400": st.get("400", 0), "s429": st.get("429", 0), "s503": st.get("503", 0),
  "ok": f.get("ok", 0), "bad": f.get("bad_shape", 0), "server_cpu": srv.get("cpu_percent", 0), "client_cpu": d.get("client_cpu_percent", 0)}))
' "$s" "$round" | tee -a "$out"
  done
done

python3 - "$out" "$DURATION" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
secs = float(sys.argv[2].rstrip("s"))
print()
print("| setting | runs | p50 ms | p90 ms | p99 ms (range) | max ms | flood answered req/s | 400 / 429 / 503 per s | 200 / wrong shape | server CPU % | client CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
order = []
for r in rows:
    if r["setting"] not in order:
        order.append(r["setting"])
for s in order:
    rs = [r for r in rows if r["setting"] == s]
    m = lambda k: statistics.median(r[k] for r in rs)
    p99s = [r["p99"] for r in rs]
    print(f"| {s} | {len(rs)} | {m('p50'):.2f} | {m('p90'):.2f} | {m('p99'):.2f} ({min(p99s):.2f}-{max(p99s):.2f}) | {m('max'):.1f} | "
          f"{m('flood_per_s'):.0f} | {m('s400')/secs:.0f} / {m('s429')/secs:.0f} / {m('s503')/secs:.0f} | "
          f"{sum(r['ok'] for r in rs)} / {sum(r['bad'] for r in rs)} | {m('server_cpu'):.0f} | {m('client_cpu'):.0f} |")
EOF
