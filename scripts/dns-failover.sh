#!/usr/bin/env bash
# Measures one client's failover when pangyo burns, through the gateways and through DNS,
# in the same run: `firebreak up --services --dns-ttl-secs TTL`, two `firebreak bench
# failover` probes reading payments (active-passive, primary pangyo) every 50 ms, SIGKILL of
# every process of pangyo at 5 s. Stops exactly the processes it started.
#
# usage: scripts/dns-failover.sh [TTL_SECS] [DURATION_SECS]
set -euo pipefail
ttl=${1:-5}
duration=${2:-25}
bin=${FIREBREAK_BIN:-target/release/firebreak}
work=$(mktemp -d /tmp/firebreak-dns.XXXXXX)
pids=()
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

"$bin" up --data-dir "$work/data" --services --dns-ttl-secs "$ttl" > "$work/up.log" 2>&1 &
pids+=($!)
disown  # no "Killed" notice when cleanup stops it
until grep -q "Ctrl-C stops" "$work/up.log"; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/up.log"; exit 1; }
  sleep 0.2
done
for site in pangyo gasan busan; do
  for pid_file in "$work/data/$site"/*.pid; do pids+=("$(cat "$pid_file")"); done
done
export FIREBREAK_CA="$work/data/ca/ca.pem"
"$bin" bench failover --via gateway --duration-secs "$duration" > "$work/gateway.out" &
gateway=$!
"$bin" bench failover --via dns --duration-secs "$duration" > "$work/dns.out" &
dns=$!
sleep 5
kill -9 $(cat "$work/data/pangyo"/*.pid)
wait "$gateway" "$dns"
echo "pangyo burned at 5.0 s; DNS TTL ${ttl} s"
cat "$work/gateway.out" "$work/dns.out"
