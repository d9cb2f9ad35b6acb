#!/bin/sh
# A firebreak routing hook for Route 53 Application Recovery Controller: turns each site's
# routing control On when the site serves the service, Off when it does not.
#
#   hooks:
#     - name: route53-arc
#       exec: ["/etc/firebreak/hooks/route53-arc.sh"]
#       timeout_ms: 30000
#
# $ARC_CONTROLS names a file of `<service> <site> <routing-control-arn>` lines, and
# $ARC_ENDPOINT one of the cluster's regional endpoints (with its --region). ARC's own
# safety rules may refuse a change (for example "at least one cell On"): the hook then
# fails, firebreak audits the refusal and tries again.
set -eu
controls="${ARC_CONTROLS:-/etc/firebreak/arc-controls}"
change=$(cat)
service=$(printf '%s' "$change" | jq -r .service)
serving=" $(printf '%s' "$change" | jq -r '.serving | join(" ")') "
entries=""
while read -r svc site arn; do
  [ "$svc" = "$service" ] || continue
  case "$serving" in *" $site "*) state=On ;; *) state=Off ;; esac
  entries="$entries RoutingControlArn=$arn,RoutingControlState=$state"
done < "$controls"
[ -n "$entries" ] || { echo "no routing controls for $service in $controls" >&2; exit 1; }
# shellcheck disable=SC2086
aws route53-recovery-cluster update-routing-control-states \
  --endpoint-url "$ARC_ENDPOINT" --region "${ARC_REGION:?}" \
  --update-routing-control-state-entries $entries
