#!/usr/bin/env bash
# A login soak: `firebreak up --services` with short sessions, RATE logins a second
# through the three gateways for MINUTES, and every 30 s the state group's key count, the
# state leader's latest snapshot and each login instance's memory. Expired sessions must
# be swept: the key count levels off near RATE x (TTL + sweep interval) while the
# sessions made keep growing; without sweeping it grows with them. Exits 1 if the key
# count grew in the second half of the run (the last sample above 1.25 times the one at
# half time, plus 50). Stops exactly the processes it started.
#
# usage: [FIREBREAK_BIN=...] scripts/login-soak.sh [MINUTES] [RATE] [TTL_SECS] [SWEEP_SECS]
set -euo pipefail
minutes=${1:-10}
rate=${2:-20}
ttl=${3:-30}
sweep=${4:-10}
work=$(mktemp -d /tmp/firebreak-soak.XXXXXX)
. "$(dirname "$0")/lib.sh"

start_up --services --session-ttl-secs "$ttl" --sweep-interval-secs "$sweep"
gateways=(127.0.1.1:7001 127.0.2.1:7001 127.0.3.1:7001)
credentials='{"user":"soak","password":"correct horse battery"}'
# Register the user (201; 409 if an earlier try was applied but its answer lost).
deadline=$(( $(date +%s) + 30 ))
until status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$FIREBREAK_CA" \
    -H 'content-type: application/json' -d "$credentials" "https://${gateways[0]}/login/users") &&
  { [ "$status" = 201 ] || [ "$status" = 409 ]; }; do
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "could not register the soak user: $status"; exit 1; fi
  sleep 0.5
done

# The load: RATE logins a second (bounded by the run's length), round-robin over the
# gateways, from four threads; prints "made failed" when it ends.
python3 - "$FIREBREAK_CA" "$rate" "$((minutes * 60))" "$credentials" "${gateways[@]}" \
  > "$work/load.out" <<'EOF' &
import http.client, ssl, sys, threading, time
ca, rate, secs, body, gateways = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
context = ssl.create_default_context(cafile=ca)
made, failed, lock = [0], [0], threading.Lock()
start = time.monotonic()
def worker(n, threads):
    conns = {}
    i = n
    while True:
        due = start + i / rate
        if due > start + secs:
            return
        time.sleep(max(0.0, due - time.monotonic()))
        host, port = gateways[i % len(gateways)].split(":")
        try:
            conn = conns.get(host) or http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
            conns[host] = conn
            conn.request("POST", "/login/sessions", body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            ok = response.status == 201
        except Exception:
            conns.pop(host, None)
            ok = False
        with lock:
            (made if ok else failed)[0] += 1
        i += threads
threads = [threading.Thread(target=worker, args=(n, 4)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(made[0], failed[0])
EOF
load=$!
pids+=("$load")

level=$(( rate * (ttl + sweep) ))
echo "soak: $minutes min, $rate logins/s, sessions live $ttl s, swept every $sweep s (expected level about $level keys)"
printf '%8s %10s %12s %16s %s\n' elapsed state_keys state_revision snapshot_bytes "login RSS (MB)"
keys=0 half=0
for ((t = 30; t <= minutes * 60; t += 30)); do
  sleep 30
  read -r keys revision < <(curl -sf --cacert "$FIREBREAK_CA" "https://${gateways[0]}/v1/cluster" |
    python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["state_keys"], c["state_revision"])')
  snapshot=$(find "$work/data" -path "*state/snapshot*" -type f -printf "%T@ %s\n" 2>/dev/null |
    sort -n | tail -1 | cut -d' ' -f2)
  rss=$(for site in pangyo gasan busan; do
    awk '/VmRSS/ { printf "%d ", $2 / 1024 }' "/proc/$(cat "$work/data/$site/login.pid")/status"
  done)
  printf '%7ss %10s %12s %16s %s\n' "$t" "$keys" "$revision" "${snapshot:-none}" "$rss"
  [ "$t" -le $((minutes * 30)) ] && half=$keys
done
wait "$load" || true
read -r made failed < "$work/load.out"
echo "logins made $made, failed $failed; state keys at half time $half, at the end $keys (level $level)"
if [ "$keys" -gt $((half * 5 / 4 + 50)) ]; then
  echo "FAILED: the state kept growing in the second half: expired sessions were not swept"
  exit 1
fi
echo "ok: the state stayed flat"
