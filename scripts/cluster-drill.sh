#!/usr/bin/env bash
# The cluster drill (docs/operations.md, "Running a cluster"): a three-node
# (NODES) tkms dev cluster of real processes under a release storm against every
# node while the leader is killed with SIGKILL and restarted, CYCLES times
# (default 20; CI runs 2). After each cycle every acknowledged release's
# receipt must prove its entry on every node, the nodes must serve one
# checkpoint and `tkms audit` must pass against each node in turn with one
# state file; at the end the first node is stopped and every node's
# dev.json is used against the others. The last two lines give the time
# from each SIGKILL to a new leader and to the first committed write (the
# first release sent after the kill and acknowledged), with median and p99.
#
#   scripts/cluster-drill.sh
#   CYCLES=50 scripts/cluster-drill.sh
#   NODES=5 scripts/cluster-drill.sh          # a five-node cluster
#   RAFT='{"heartbeat_timeout":"700ms","election_timeout":"700ms"}' scripts/cluster-drill.sh  # cluster.raft
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES="${CYCLES:-20}"
NODES="${NODES:-3}"
TKMS_CLUSTER_CYCLES="$CYCLES" TKMS_CLUSTER_NODES="$NODES" TKMS_CLUSTER_RAFT="${RAFT:-}" exec go test ./cmd/tkms -run '^TestClusterKillLeader$' -count=1 -timeout 60m -v
