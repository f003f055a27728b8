#!/usr/bin/env bash
# bench-pubkeys.sh: requests/s of tkms's public-key endpoints against nginx
# serving the same bytes as a static file, measured by wrk with identical
# settings in the same run. See BENCHMARKS.md.
#
# Usage: scripts/bench-pubkeys.sh
# Environment (defaults in brackets):
#   DURATION [10s]  THREADS [2]  CONNS [64]   wrk settings, the same for every target
#   WARMUP [2s]     a short unmeasured wrk run before each measured one
#   ROUNDS [3]      measured rounds; each round runs every target once, the
#                   summary gives medians over rounds
#   TKMS_PORT [18080]  NGINX_PORT [18081]   loopback ports, must be free
#   KEEP [0]        1 keeps the temporary directory (logs, configs)
#   PIN [1]         1 pins the server under test to CPU 1 and wrk to CPU 0
#                   (taskset), so that the two do not fight over cores and
#                   rounds repeat; 0 lets the scheduler place them
#
# Everything listens on 127.0.0.1 only. Both servers are started by this
# script and stopped on exit, also on error or Ctrl-C.
set -euo pipefail

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
TKMS_PORT=${TKMS_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
KEEP=${KEEP:-0}
PIN=${PIN:-1}
server_cpu=() wrk_cpu=() nginx_workers=auto
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
	server_cpu=(taskset -c 1) wrk_cpu=(taskset -c 0) nginx_workers=1
fi

say() { printf 'bench-pubkeys: %s\n' "$*"; }
die() { printf 'bench-pubkeys: error: %s\n' "$*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Tools. apt-get needs root; say so rather than fail obscurely.
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or rerun as root"
	say "installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || die "apt-get update failed"
	apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v go >/dev/null || die "go is not on PATH"
for v in DURATION WARMUP; do
	[[ ${!v} =~ ^[0-9]+[smh]?$ ]] || die "$v=${!v}: want a wrk duration such as 10s"
done
for v in THREADS CONNS ROUNDS TKMS_PORT NGINX_PORT; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
case $DURATION in
*m) duration_s=$((${DURATION%m} * 60)) ;;
*h) duration_s=$((${DURATION%h} * 3600)) ;;
*) duration_s=${DURATION%s} ;;
esac
[ "$TKMS_PORT" != "$NGINX_PORT" ] || die "TKMS_PORT and NGINX_PORT must differ"

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for p in "$TKMS_PORT" "$NGINX_PORT"; do
	port_busy "$p" && die "port $p is already in use; set TKMS_PORT / NGINX_PORT to free ports"
done

tmp=$(mktemp -d /tmp/bench-pubkeys.XXXXXX)
tkms_pid=
nginx_pid=

# stop sends TERM to one process we started, waits up to 10 s, then KILLs.
stop() {
	local pid=$1 name=$2
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	say "$name (pid $pid) did not stop; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop "$nginx_pid" nginx # nginx's master stops its workers on TERM
	stop "$tkms_pid" tkms
	if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
		say "kept $tmp (logs: tkms.log, nginx.out, nginx-error.log, wrk.log)"
	else
		rm -rf "$tmp"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_http URL PID NAME LOG: wait until URL answers 200, at most 30 s,
# failing at once if the server process has exited.
wait_http() {
	local url=$1 pid=$2 name=$3 log=$4
	for _ in $(seq 300); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$log" >&2 || true
			die "$name exited before answering $url (log above)"
		fi
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ]; then
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$log" >&2 || true
	die "$name did not answer 200 on $url within 30 s (log above)"
}

# tkms
say "building tkms"
(cd "$repo" && go build -o "$tmp/tkms" ./cmd/tkms) || die "go build ./cmd/tkms failed"
printf '{"log_level":"warn"}\n' >"$tmp/tkms.json"
"${server_cpu[@]}" "$tmp/tkms" dev --listen "127.0.0.1:$TKMS_PORT" --data "$tmp/data" --config "$tmp/tkms.json" \
	>"$tmp/tkms.log" 2>&1 &
tkms_pid=$!
tkms_url="http://127.0.0.1:$TKMS_PORT"
wait_http "$tkms_url/app/heartbeat" "$tkms_pid" tkms "$tmp/tkms.log"

# The bytes nginx serves are the bytes tkms serves.
mkdir -p "$tmp/www/app" "$tmp/nginx-temp"
ctype=$(curl -sS --fail --max-time 5 -o "$tmp/www/app/listpubkeys" -w '%{content_type}' "$tkms_url/app/listpubkeys") ||
	die "GET $tkms_url/app/listpubkeys failed"
[ -s "$tmp/www/app/listpubkeys" ] || die "GET /app/listpubkeys returned an empty body"
grep -q '"key"' "$tmp/www/app/listpubkeys" || die "GET /app/listpubkeys has no key: $(cat "$tmp/www/app/listpubkeys")"
[ -n "$ctype" ] || die "GET /app/listpubkeys has no content-type"
# nginx workers (user nobody when started as root) must read the file.
chmod 755 "$tmp" "$tmp/www" "$tmp/www/app"
chmod 644 "$tmp/www/app/listpubkeys"

# nginx: its own config, prefix and temp paths; nothing of /etc/nginx.
cat >"$tmp/nginx.conf" <<EOF
worker_processes $nginx_workers;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx-temp/body;
	proxy_temp_path $tmp/nginx-temp/proxy;
	fastcgi_temp_path $tmp/nginx-temp/fastcgi;
	uwsgi_temp_path $tmp/nginx-temp/uwsgi;
	scgi_temp_path $tmp/nginx-temp/scgi;
	# nginx closes a keep-alive connection after 1000 requests by default;
	# Go's server does not. Lift the limit so that only the server differs.
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		root $tmp/www;
		location = /app/listpubkeys {
			types { }
			default_type "$ctype";
		}
	}
}
EOF
"$NGINX" -t -q -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" 2>"$tmp/nginx-test.log" || {
	cat "$tmp/nginx-test.log" >&2
	die "nginx rejected $tmp/nginx.conf"
}
"${server_cpu[@]}" "$NGINX" -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" >"$tmp/nginx.out" 2>&1 &
nginx_pid=$!
nginx_url="http://127.0.0.1:$NGINX_PORT"
wait_http "$nginx_url/app/listpubkeys" "$nginx_pid" nginx "$tmp/nginx-error.log"
cmp -s "$tmp/www/app/listpubkeys" <(curl -sS --max-time 5 "$nginx_url/app/listpubkeys") ||
	die "nginx does not serve the bytes of tkms's /app/listpubkeys"
[ "$(curl -sS --max-time 5 -o /dev/null -w '%{content_type}' "$nginx_url/app/listpubkeys")" = "$ctype" ] ||
	die "nginx does not serve content-type $ctype"

# cpu_ticks PID...: the CPU time (user + system, in clock ticks) the
# processes and their children processes (nginx's workers) have used.
cpu_ticks() {
	local p pids=() total=0
	for p in "$@"; do
		pids+=("$p")
		mapfile -t -O "${#pids[@]}" pids < <(pgrep -P "$p" || true)
	done
	for p in "${pids[@]}"; do
		# Fields 14 and 15 of /proc/PID/stat, counted after the ')' that
		# ends the command name.
		total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
	done
	echo "$total"
}
clk_tck=$(getconf CLK_TCK)

# run_wrk NAME URL PID: a warm-up, then a measured run; prints requests/s
# and the server's CPU time per request in microseconds. The CPU time per
# request does not change when other processes take CPU from the server,
# so its ratio holds on a loaded machine where requests/s does not.
run_wrk() {
	local name=$1 url=$2 pid=$3 out c0 c1 n
	timeout --foreground 120 "${wrk_cpu[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null ||
		die "wrk warm-up against $name failed"
	c0=$(cpu_ticks "$pid")
	out=$(timeout --foreground $((duration_s + 60)) "${wrk_cpu[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url") ||
		die "wrk against $name failed: $out"
	c1=$(cpu_ticks "$pid")
	printf '%s\n' "$out" >>"$tmp/wrk.log"
	if ! kill -0 "$tkms_pid" 2>/dev/null || ! kill -0 "$nginx_pid" 2>/dev/null; then
		die "a server exited during the run against $name (interrupted?)"
	fi
	if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
		printf '%s\n' "$out" >&2
		die "wrk against $name saw errors (above); the figures would not be comparable"
	fi
	n=$(awk '/ requests in / { print $1 }' <<<"$out")
	awk -v d="$((c1 - c0))" -v n="$n" -v hz="$clk_tck" '/^Requests\/sec:/ { printf "%s %.2f\n", $2, d * 1e6 / hz / n }' <<<"$out"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

say "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(go version | awk '{ print $3 }'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')"
say "wrk -t$THREADS -c$CONNS -d$DURATION (after a $WARMUP warm-up), $ROUNDS round(s), loopback only"
if [ ${#server_cpu[@]} -gt 0 ]; then
	say "pinned: servers on CPU 1 (nginx: 1 worker; tkms: GOMAXPROCS follows the affinity), wrk on CPU 0"
fi
say "note: wrk and the server under test share the same $(nproc) CPUs, so each server gets what wrk leaves;"
say "      the ratio tkms/nginx is the figure to compare, not the absolute requests/s"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
say "load average before: $(loadavg) (other work on the machine skews every figure)"

declare -a r_nginx r_list r_v1 q_list q_v1 c_nginx c_list c_v1 k_list k_v1
for round in $(seq "$ROUNDS"); do
	read -r n cn < <(run_wrk nginx "$nginx_url/app/listpubkeys" "$nginx_pid")
	read -r l cl < <(run_wrk "tkms /app/listpubkeys" "$tkms_url/app/listpubkeys" "$tkms_pid")
	read -r v cv < <(run_wrk "tkms /v1/keys" "$tkms_url/v1/keys" "$tkms_pid")
	r_nginx+=("$n") r_list+=("$l") r_v1+=("$v")
	q_list+=("$(ratio "$l" "$n")") q_v1+=("$(ratio "$v" "$n")")
	c_nginx+=("$cn") c_list+=("$cl") c_v1+=("$cv")
	# CPU ratio: nginx's CPU per request / tkms's (higher is better for tkms, as x nginx).
	k_list+=("$(ratio "$cn" "$cl")") k_v1+=("$(ratio "$cn" "$cv")")
	say "round $round: nginx $n, tkms /app/listpubkeys $l (${q_list[-1]} x nginx), tkms /v1/keys $v (${q_v1[-1]} x nginx) requests/s"
	say "         CPU us/request: nginx $cn, tkms /app/listpubkeys $cl (${k_list[-1]} x nginx), tkms /v1/keys $cv (${k_v1[-1]} x nginx)"
done
say "load average after: $(loadavg)"

# Medians over rounds; the ratios are medians of the per-round ratios,
# which cancel load that drifts from one round to the next.
n=$(printf '%s\n' "${r_nginx[@]}" | median)
l=$(printf '%s\n' "${r_list[@]}" | median)
v=$(printf '%s\n' "${r_v1[@]}" | median)
ql=$(printf '%s\n' "${q_list[@]}" | median)
qv=$(printf '%s\n' "${q_v1[@]}" | median)
cn=$(printf '%s\n' "${c_nginx[@]}" | median)
cl=$(printf '%s\n' "${c_list[@]}" | median)
cv=$(printf '%s\n' "${c_v1[@]}" | median)
kl=$(printf '%s\n' "${k_list[@]}" | median)
kv=$(printf '%s\n' "${k_v1[@]}" | median)
echo
printf '%-36s %12s %8s %14s %8s\n' "target (median of $ROUNDS)" "requests/s" "x nginx" "CPU us/request" "x nginx"
printf '%-36s %12s %8s %14s %8s\n' "nginx static /app/listpubkeys" "$n" "1.00" "$cn" "1.00"
printf '%-36s %12s %8.2f %14s %8.2f\n' "tkms /app/listpubkeys" "$l" "$ql" "$cl" "$kl"
printf '%-36s %12s %8.2f %14s %8.2f\n' "tkms /v1/keys" "$v" "$qv" "$cv" "$kv"
echo
say "CPU x nginx is nginx's CPU time per request / tkms's: what x nginx in requests/s would be"
say "if both servers had their CPU to themselves (it holds while other work loads the machine)"
say "goal: tkms >= 0.80 x nginx"
