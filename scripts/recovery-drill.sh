#!/usr/bin/env bash
# The recovery drill (docs/recovery.md): a three-node tkms dev cluster of
# real processes, three members with encryption keys and a recovery
# threshold of two, releases; then every node is killed, one node's ledger
# is copied (never a master key), a node recovers it with two members'
# shares, `tkms audit` with the state file saved before the disaster passes
# across the recovery and reports it, a key released before the disaster
# is released again with the same kid and public key, and a new node joins
# the recovered one. It exits 0 only if all of that holds, and leaves the
# recovered service running with its dev data directory at WORKDIR/recovered
# (so that `tkms fetch --data WORKDIR/recovered` works against it), unless
# RECOVERY_DRILL_STOP=1 (CI) stops it at the end.
#
#   scripts/recovery-drill.sh WORKDIR
#   RECOVERY_DRILL_STOP=1 scripts/recovery-drill.sh "$(mktemp -d)"
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: scripts/recovery-drill.sh WORKDIR (a new or empty directory)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
W="$(realpath -m "$1")"
mkdir -p "$W"
if [ -n "$(ls -A "$W")" ]; then
  echo "recovery-drill: $W is not empty: give a new or empty directory" >&2
  exit 2
fi
T="$W/tkms"
go build -o "$T" ./cmd/tkms

pids=()
recovered_pid=""
ok=0
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
finish() {
  if [ "$ok" = 1 ] && [ "${RECOVERY_DRILL_STOP:-0}" != 1 ]; then
    # Leave the recovered node running; stop the rest.
    local keep=()
    for p in "${pids[@]}"; do
      if [ "$p" = "$recovered_pid" ]; then keep+=("$p"); else kill "$p" 2>/dev/null || true; fi
    done
    echo "recovery-drill: the recovered service runs as process $recovered_pid; its data directory is $W/recovered (stop it with: kill $recovered_pid)"
  else
    stop_all
  fi
}
trap finish EXIT
fail() { echo "recovery-drill: FAILED: $*" >&2; for f in "$W"/*.log; do echo "--- $f (tail)" >&2; tail -n 15 "$f" >&2; done; exit 1; }
step() { echo "recovery-drill: $*"; }

# wait_for FILE [SECONDS]: until FILE exists.
wait_for() {
  local i
  for ((i = 0; i < ${2:-60} * 10; i++)); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  fail "$1 did not appear"
}
# checkpoint_size URL: the size of the log's checkpoint.
checkpoint_size() { curl -fsS "$1/log/checkpoint" 2>/dev/null | sed -n 2p; }

step "1. a three-node dev cluster"
"$T" dev --cluster --data "$W/n1" --listen 127.0.0.1:0 >"$W/n1.log" 2>&1 &
pids+=($!)
wait_for "$W/n1/dev.json"
for n in 2 3; do
  "$T" dev --join "$W/n1" --data "$W/n$n" --listen 127.0.0.1:0 >"$W/n$n.log" 2>&1 &
  pids+=($!)
done
wait_for "$W/n2/dev.json"
wait_for "$W/n3/dev.json"
URL1="$(jq -r .kms_url "$W/n1/dev.json")"
DEVID="$(jq -r .member_id "$W/n1/dev.json")"

step "2. three members with encryption keys, recovery threshold 2"
"$T" gov encryption-key --out "$W/dev.enc" --member-id "$DEVID" >"$W/act-dev.json"
"$T" gov keygen --out "$W/alice" --name alice >"$W/act-alice.json"
"$T" gov keygen --out "$W/bob" --name bob >"$W/act-bob.json"
jq -s '{actions: (. + [{name: "set_constitution", args: {rules: {default: {approvals: 1}}, proposal_ttl_seconds: 604800, created_at_window_seconds: 600, withdraw: "proposer", recovery_threshold: 2}}])}' \
  "$W/act-dev.json" "$W/act-alice.json" "$W/act-bob.json" >"$W/proposal.json"
"$T" gov propose --data "$W/n1" "$W/proposal.json" >"$W/propose.out" 2>&1 || fail "the proposal: $(cat "$W/propose.out")"
grep -q accepted "$W/propose.out" || fail "the proposal was not accepted: $(cat "$W/propose.out")"

step "3. releases"
"$T" fetch --data "$W/n2" --out "$W/before.json" >"$W/fetch-before.log" 2>&1 || fail "release before the disaster"
KID="$(jq -r '.[0].kid' "$W/before.json")"
PUB="$(jq -r '.[0].public_key' "$W/before.json")"
"$T" fetch --data "$W/n3" --kid "$KID" >"$W/fetch-before3.log" 2>&1 || fail "release before the disaster (node 3)"

step "4. the recovery shares are in the ledger; every node holds the whole log"
LOGKEY="$(jq -r .log_public_key "$W/n1/dev.json")"
for ((i = 0; i < 300; i++)); do
  n=$("$T" audit --kms "$URL1" --log-key "$LOGKEY" --json --quiet 2>/dev/null | jq -r '.counts["recovery.shares"] // 0' || echo 0)
  [ "$n" -ge 1 ] && break
  sleep 0.2
done
[ "$n" -ge 1 ] || fail "no recovery.shares entry"
for ((i = 0; i < 300; i++)); do
  s1=$(checkpoint_size "$URL1"); s2=$(checkpoint_size "$(jq -r .kms_url "$W/n2/dev.json")"); s3=$(checkpoint_size "$(jq -r .kms_url "$W/n3/dev.json")")
  [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$s1" = "$s3" ] && break
  sleep 0.2
done
[ "$s1" = "$s2" ] || fail "the nodes do not converge on one checkpoint ($s1, $s2, $s3)"
"$T" audit --kms "$URL1" --log-key "$LOGKEY" --state "$W/pre-disaster.state" --quiet >"$W/audit-before.log" 2>&1 || fail "the audit before the disaster"
cp "$W/pre-disaster.state" "$W/pre-disaster.state.saved"

step "5. the disaster: every node killed"
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

step "6. a copy of node 2's ledger (no master key), recovered with two members' shares"
mkdir -m 700 "$W/copy"
cp -p "$W/n2/ledger.db" "$W/n2/keyring" "$W/n2/oidc-signing-key.pem" "$W/n2/simsnp-chain.pem" "$W/n2/member.key" "$W/n2/member.pub" "$W/copy/"
[ ! -e "$W/copy/master.key" ] || fail "a master key in the copy"
"$T" dev --recover "$W/copy" --data "$W/recovered" --listen 127.0.0.1:0 --recover-state "$W/pre-disaster.state" >"$W/recovered.log" 2>&1 &
recovered_pid=$!
pids+=("$recovered_pid")
wait_for "$W/recovered/recovery.json"
URL="$(jq -r .kms_url "$W/recovered/recovery.json")"
# While it waits, the node serves the copy's public log read-only.
[ "$(curl -fsS "$URL/v1/log/key")" = "$LOGKEY" ] || fail "the waiting node serves another log key"
curl -fsS "$URL/log/tile/0/000.p/$(curl -fsS "$URL/v1/recovery" | jq -r '.tree_size % 256')" >/dev/null || fail "the waiting node serves no log tile"

# Bad input: a second recovery of the same directory races the first.
if "$T" dev --recover "$W/copy" --data "$W/recovered" --listen 127.0.0.1:0 >"$W/recover2.log" 2>&1; then
  fail "a second recovery started"
fi
grep -q RECOVERY_IN_PROGRESS "$W/recover2.log" || fail "a second recovery: $(cat "$W/recover2.log")"
# Bad input: a stranger's share is refused, nothing is opened.
"$T" gov keygen --out "$W/mallory" --name mallory >/dev/null
if "$T" gov share --kms "$URL" --key "$W/mallory.key" --encryption-key "$W/mallory.enc" >"$W/share-mallory.out" 2>&1; then
  fail "a non-member's share was accepted"
fi
grep -q RECOVERY_NOT_MEMBER "$W/share-mallory.out" || fail "a non-member's share: $(cat "$W/share-mallory.out")"
"$T" gov share --kms "$URL" --key "$W/alice.key" --encryption-key "$W/alice.enc" >"$W/share-alice.out" 2>&1 || fail "alice's share: $(cat "$W/share-alice.out")"
# Bad input: alice's share again is a replay.
if "$T" gov share --kms "$URL" --key "$W/alice.key" --encryption-key "$W/alice.enc" >"$W/share-alice2.out" 2>&1; then
  fail "a replayed share was accepted"
fi
grep -q RECOVERY_SHARE_REPLAYED "$W/share-alice2.out" || fail "a replayed share: $(cat "$W/share-alice2.out")"
curl -fsS "$URL/v1/recovery" | jq -e '.state == "waiting" and (.received | length) == 1' >/dev/null || fail "one share of two must leave the node waiting"
"$T" gov share --kms "$URL" --key "$W/bob.key" --encryption-key "$W/bob.enc" >"$W/share-bob.out" 2>&1 || fail "bob's share: $(cat "$W/share-bob.out")"
grep -q recovered "$W/share-bob.out" || fail "two shares did not recover the service: $(cat "$W/share-bob.out")"
wait_for "$W/recovered/dev.json" 120

step "7. the audit with the pre-disaster state file passes across the recovery"
"$T" audit --kms "$URL" --log-key "$LOGKEY" --state "$W/pre-disaster.state" >"$W/audit-after.log" 2>&1 || fail "the audit across the recovery: $(tail -n 20 "$W/audit-after.log")"
grep -q "recovered at seq" "$W/audit-after.log" || fail "the audit does not report the recovery"
NEWKEY="$(jq -r .log_public_key "$W/recovered/dev.json")"
[ "$NEWKEY" != "$LOGKEY" ] || fail "the recovered service kept the previous log key"
"$T" audit --kms "$URL" --log-key "$NEWKEY" --quiet >"$W/audit-newkey.log" 2>&1 || fail "the audit with the new log key: $(cat "$W/audit-newkey.log")"

step "8. a key released before the disaster is released again, same kid and public key"
"$T" fetch --data "$W/recovered" --kid "$KID" --out "$W/after.json" >"$W/fetch-after.log" 2>&1 || fail "release after the recovery: $(tail -n 5 "$W/fetch-after.log")"
[ "$(jq -r '.[0].kid' "$W/after.json")" = "$KID" ] || fail "another kid"
[ "$(jq -r '.[0].public_key' "$W/after.json")" = "$PUB" ] || fail "another public key for $KID"

step "9. a new node joins the recovered service"
"$T" dev --join "$W/recovered" --data "$W/n4" --listen 127.0.0.1:0 >"$W/n4.log" 2>&1 &
pids+=($!)
wait_for "$W/n4/dev.json" 120
"$T" fetch --data "$W/n4" --kid "$KID" >"$W/fetch-n4.log" 2>&1 || fail "release from the node that joined the recovered one"

ok=1
step "passed"
