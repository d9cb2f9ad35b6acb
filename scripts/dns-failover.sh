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
work=$(mktemp -d /tmp/firebreak-dns.XXXXXX)
. "$(dirname "$0")/lib.sh"

start_up --services --dns-ttl-secs "$ttl"
"$bin" bench failover --via gateway --duration-secs "$duration" > "$work/gateway.out" &
gateway=$!
"$bin" bench failover --via dns --duration-secs "$duration" > "$work/dns.out" &
dns=$!
sleep 5
kill -9 $(cat "$work/data/pangyo"/*.pid)
wait "$gateway" "$dns"
echo "pangyo burned at 5.0 s; DNS TTL ${ttl} s"
cat "$work/gateway.out" "$work/dns.out"
