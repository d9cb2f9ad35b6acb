#!/usr/bin/env bash
# Replaces a burned site, as docs/membership.md tells an operator to, and times it:
# `firebreak up`, KEYS puts of 100 bytes, every process of pangyo SIGKILLed, then a new
# site anyang (node 4 on 127.0.4.1, its own certificate, `join: true`, an empty disk) and
# `firebreak site replace pangyo --with anyang`. Prints what the command printed (how long
# the new voter took to catch up), its wall time, and the state snapshot the new node may
# have been sent. Stops exactly the processes it started.
#
# usage: [FIREBREAK_BIN=...] scripts/site-replace.sh KEYS
set -euo pipefail
keys=${1:?usage: $0 KEYS}
work=$(mktemp -d /tmp/firebreak-replace.XXXXXX)
. "$(dirname "$0")/lib.sh"

start_up
"$bin" bench kv --max-requests "$keys" --duration-secs 600 --value-bytes 100 | grep throughput
kill -9 "$(cat "$work/data/pangyo/node.pid")"

# anyang: pangyo's config with a new id, addresses, certificate and data dir; it joins.
data=$work/data
mkdir -p "$data/anyang/tls"
"$bin" cert issue node --id 4 --host 127.0.4.1 --ca "$data/ca" --out "$data/anyang/tls" > /dev/null
sed -e 's/^node_id: 1$/node_id: 4/' -e 's/^site: pangyo$/site: anyang/' \
    -e 's/127\.0\.1\.1:/127.0.4.1:/g' -e 's#pangyo/tls/node\.#anyang/tls/node-4.#' \
    -e 's#pangyo/data#anyang/data#' "$data/pangyo/node.yaml" |
  python3 -c '
import sys
text = sys.stdin.read()
# peers: the running nodes and anyang itself (pangyo, now on 127.0.4.1 after the sed, out).
text = text.replace("peers:\n- id: 1\n  site: pangyo\n  addr: 127.0.4.1:7005\n", "join: true\npeers:\n")
text = text.replace("raft:", "- id: 4\n  site: anyang\n  addr: 127.0.4.1:7005\nraft:", 1)
print(text, end="")' > "$data/anyang/node.yaml"
grep -q "^join: true" "$data/anyang/node.yaml" || { echo "could not write anyang's config" >&2; exit 1; }
"$bin" node --config "$data/anyang/node.yaml" > "$data/anyang/node.log" 2>&1 &
pids+=($!)
disown

# The rule healthy-voter refuses while pangyo's lease is current (2 s by default).
sleep 3
started=$(date +%s%N)
"$bin" site replace pangyo --with anyang --id 4 --addr 127.0.4.1:7005
echo "site replace took $(( ($(date +%s%N) - started) / 1000000 )) ms"
snapshot="$data/anyang/data/state/snapshot"
if [ -f "$snapshot" ]; then
  echo "anyang installed a state snapshot of $(stat -c %s "$snapshot") bytes"
else
  echo "anyang caught up from the log alone"
fi
