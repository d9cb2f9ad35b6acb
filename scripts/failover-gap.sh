#!/usr/bin/env bash
# Measures the leader-loss gap under load: SIGKILL of the leader's process -> first
# acknowledged put on a survivor, as the longest gap between acknowledged puts seen by
# `firebreak bench kv`. Runs firebreak (`firebreak up`) or a 3-member etcd on the same
# loopback addresses, one after the other, and stops exactly the processes it started.
#
# usage: [VALUE_BYTES=N] [PLAINTEXT=1] scripts/failover-gap.sh firebreak|etcd [connections] [--no-kill]
#   --no-kill: measure plain throughput and latency, with no fault.
#   VALUE_BYTES: size of each put's value (default 100).
#   PLAINTEXT=1: firebreak without TLS (`up --plaintext-for-debugging`), to price TLS.
set -euo pipefail
target=${1:?usage: $0 firebreak|etcd [connections]}
connections=${2:-64}
kill_leader=${3:-}
work=$(mktemp -d /tmp/firebreak-gap.XXXXXX)
. "$(dirname "$0")/lib.sh"

leader_pid_firebreak() {
  local site
  site=$("$bin" status --output json "${plain[@]}" | python3 -c '
import json, sys
views = json.load(sys.stdin)["nodes"]
for view in views.values():
    for g in view.get("groups", []):
        if g["name"] == "state" and g["role"] == "leader":
            print(view["site"]); sys.exit(0)
sys.exit(1)')
  cat "$work/data/$site/node.pid"
}

leader_pid_etcd() {
  for i in 1 2 3; do
    status=$(curl -s -X POST "http://127.0.$i.1:2379/v3/maintenance/status" -d '{}')
    if python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)' "$status"; then
      cat "$work/etcd$i.pid"; return
    fi
  done
  return 1
}

plain=()
if [ "$target" = firebreak ]; then
  if [ -n "${PLAINTEXT:-}" ]; then plain=(--plaintext-for-debugging); fi
  start_up "${plain[@]}"
  nodes=127.0.1.1:7001,127.0.2.1:7001,127.0.3.1:7001
else
  cluster=""
  for i in 1 2 3; do cluster+="etcd$i=http://127.0.$i.1:2380,"; done
  for i in 1 2 3; do
    etcd --name "etcd$i" --data-dir "$work/etcd$i" \
      --listen-client-urls "http://127.0.$i.1:2379" --advertise-client-urls "http://127.0.$i.1:2379" \
      --listen-peer-urls "http://127.0.$i.1:2380" --initial-advertise-peer-urls "http://127.0.$i.1:2380" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new > "$work/etcd$i.log" 2>&1 &
    pids+=($!); echo $! > "$work/etcd$i.pid"; disown
  done
  nodes=127.0.1.1:2379,127.0.2.1:2379,127.0.3.1:2379
  until leader_pid_etcd >/dev/null 2>&1; do sleep 0.2; done
fi

"$bin" bench kv --target "$target" --nodes "$nodes" --connections "$connections" "${plain[@]}" \
  --value-bytes "${VALUE_BYTES:-100}" --duration-secs 12 > "$work/bench.out" &
bench=$!
sleep 5
if [ "$kill_leader" != --no-kill ]; then
  victim=$("leader_pid_$target")
  echo "SIGKILL leader pid $victim at $(date +%T.%N)"
  kill -9 "$victim"
fi
wait "$bench" || true
cat "$work/bench.out"
