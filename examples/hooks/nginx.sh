#!/bin/sh
# A firebreak routing hook for nginx: renders the service's upstream from the serving
# sites' endpoints, checks the configuration, and reloads.
#
#   hooks:
#     - name: nginx
#       exec: ["/etc/firebreak/hooks/nginx.sh"]
#
# nginx.conf includes /etc/nginx/firebreak/*.conf inside `http { }`, and proxies to
# `http://<service>` (e.g. proxy_pass http://payments;). Endpoints are firebreak's
# topology endpoints (http://10.1.0.5:8002); the upstream gets their host:port.
set -eu
dir="${NGINX_UPSTREAM_DIR:-/etc/nginx/firebreak}"
change=$(cat)
service=$(printf '%s' "$change" | jq -r .service)
epoch=$(printf '%s' "$change" | jq -r .epoch)
mkdir -p "$dir"
{
  echo "# firebreak: $service at epoch $epoch ($FIREBREAK_IDEMPOTENCY_KEY)"
  echo "upstream $service {"
  printf '%s' "$change" | jq -r '.endpoints[] | sub("^https?://"; "") | sub("/.*$"; "") | "    server \(.);"'
  echo "}"
} > "$dir/$service.conf.tmp"
mv "$dir/$service.conf.tmp" "$dir/$service.conf"
nginx -t -q
nginx -s reload
