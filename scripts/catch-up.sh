#!/usr/bin/env bash
# Measures how fast a follower that fell behind catches up: `firebreak up`, pause one
# follower of the state group (SIGSTOP), put KEYS new keys through the two others (the
# leader snapshots and purges its log behind them), resume it (SIGCONT) and time until the
# leader sees it matched. Prints the time, the leader's snapshot size and the rate.
# Stops exactly the processes it started.
#
# usage: [FIREBREAK_BIN=...] scripts/catch-up.sh KEYS [VALUE_BYTES]
set -euo pipefail
keys=${1:?usage: $0 KEYS [VALUE_BYTES]}
value_bytes=${2:-100}
work=$(mktemp -d /tmp/firebreak-catchup.XXXXXX)
. "$(dirname "$0")/lib.sh"

declare -A addr=([pangyo]=127.0.1.1 [gasan]=127.0.2.1 [busan]=127.0.3.1)

# `status` of the state group as one node sees it: "role site last_log_index matched..."
state_of() {
  "$bin" status --output json --admin-nodes "${addr[$1]}:7006" | python3 -c '
import json, sys
for view in json.load(sys.stdin)["nodes"].values():
    for g in view.get("groups", []):
        if g["name"] == "state":
            matched = {m["site"]: m["matched_index"] for m in g["members"]}
            print(g["role"], view["site"], g["last_log_index"] or 0, json.dumps(matched))'
}

start_up

leader="" follower=""
for site in pangyo gasan busan; do
  read -r role _ _ _ < <(state_of "$site")
  if [ "$role" = leader ]; then leader=$site; elif [ -z "$follower" ]; then follower=$site; fi
done
others=()
for site in pangyo gasan busan; do
  [ "$site" != "$follower" ] && others+=("${addr[$site]}:7001")
done
echo "state leader $leader; pausing follower $follower"
kill -STOP "$(cat "$work/data/$follower/node.pid")"

"$bin" bench kv --nodes "$(IFS=,; echo "${others[*]}")" --connections 64 \
  --max-requests "$keys" --duration-secs 600 --value-bytes "$value_bytes" | tail -3
read -r _ _ target _ < <(state_of "$leader")
snapshot=$(find "$work/data/$leader" -path "*state/snapshot" -type f -printf "%s" | head -1)
snapshot=${snapshot:-0}
echo "leader's log at $target; snapshot $snapshot bytes; resuming $follower"

start=$(date +%s.%N)
kill -CONT "$(cat "$work/data/$follower/node.pid")"
deadline=$(( $(date +%s) + 300 ))
until state_of "$leader" | python3 -c '
import json, sys
_, _, _, matched = sys.stdin.read().split(" ", 3)
sys.exit(0 if (json.loads(matched).get(sys.argv[1]) or 0) >= int(sys.argv[2]) else 1)' \
  "$follower" "$target"; do
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "not caught up within 300 s"; exit 1; fi
  sleep 0.05
done
end=$(date +%s.%N)
python3 -c '
import sys
took, size = float(sys.argv[2]) - float(sys.argv[1]), int(sys.argv[3])
print(f"caught up in {took:.2f} s; snapshot {size / 1e6:.1f} MB, {size / 1e6 / took:.1f} MB/s")' \
  "$start" "$end" "$snapshot"
