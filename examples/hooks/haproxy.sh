#!/bin/sh
# A firebreak routing hook for HAProxy's runtime API: every site's server of the service's
# backend is set `ready` if the site serves, `maint` if not.
#
#   hooks:
#     - name: haproxy
#       exec: ["/etc/firebreak/hooks/haproxy.sh"]
#
# Assumes one backend per service named like the service, one server per site named like
# the site (backend payments / server gasan), and the runtime socket at $HAPROXY_SOCKET
# (`stats socket /run/haproxy/admin.sock level admin` in haproxy.cfg). Runtime changes are
# lost when HAProxy reloads: keep `server-state-file` with `load-server-state-from-file
# global` and dump the state (`show servers state`) after each change, as below, or a
# reload brings a burned site back.
#
# The change arrives as JSON on stdin; jq reads it. Exit 0 only when HAProxy took every
# command: firebreak retries otherwise, and repeats are harmless (the same state again).
set -eu
socket="${HAPROXY_SOCKET:-/run/haproxy/admin.sock}"
state_file="${HAPROXY_STATE_FILE:-/var/lib/haproxy/server-state}"
change=$(cat)
service=$(printf '%s' "$change" | jq -r .service)
serving=$(printf '%s' "$change" | jq -r '.serving[]')
servers=$(echo "show servers state $service" | socat stdio "unix-connect:$socket" |
  awk 'NR > 2 { print $4 }')
for server in $servers; do
  state=maint
  for site in $serving; do [ "$site" = "$server" ] && state=ready; done
  answer=$(echo "set server $service/$server state $state" | socat stdio "unix-connect:$socket")
  [ -z "$answer" ] || { echo "haproxy: $answer" >&2; exit 1; }
done
echo "show servers state" | socat stdio "unix-connect:$socket" > "$state_file.tmp"
mv "$state_file.tmp" "$state_file"
