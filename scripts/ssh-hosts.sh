#!/usr/bin/env bash
# Three drill hosts on this machine, reachable only over ssh, for the ssh driver.
#
#   scripts/ssh-hosts.sh up [RUN]    make them; the last line printed is the inventory's path
#   scripts/ssh-hosts.sh down RUN    remove them and everything they hold
#
# Each host is a network namespace fbh-RUN-N (N = 1..3) at 10.252.0.N running its own sshd
# (throwaway host key; root logs in with a throwaway client key only). The namespaces join
# a bridge inside a namespace of their own (fbh-RUN-net), which this machine reaches over
# one veth pair (fbhRUNh, 10.252.0.254), so the drill talks to the hosts' addresses like a
# control machine would. Everything is under /tmp/fbh-RUN and carries RUN; `down` removes
# exactly that. Needs root, iproute2 and openssh-server.
#
#   firebreak drill playbooks/pangyo-fire.yaml --inventory "$(scripts/ssh-hosts.sh up | tail -1)"
set -euo pipefail

SITES=(pangyo gasan busan)
SUBNET=10.252.0

die() { echo "ssh-hosts: $*" >&2; exit 1; }

need() {
  [ "$(id -u)" = 0 ] || die "needs root (it makes network namespaces)"
  command -v ip >/dev/null || die "no ip (install iproute2)"
  [ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd (install openssh-server)"
  command -v ssh-keygen >/dev/null || die "no ssh-keygen (install openssh-client)"
}

host_config() { # dir address
  cat <<EOF
ListenAddress $2
Port 22
HostKey $1/host_key
PidFile $1/sshd.pid
AuthorizedKeysFile $BASE/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
EOF
}

up() {
  need
  RUN=${1:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
  [[ $RUN =~ ^[0-9a-f]{6}$ ]] || die "RUN must be six lowercase hex digits"
  BASE=/tmp/fbh-$RUN
  [ -e "$BASE" ] && die "$BASE exists: run '$0 down $RUN' first"
  mkdir -p "$BASE" /run/sshd
  chmod 700 "$BASE"
  ssh-keygen -q -t ed25519 -N '' -C "firebreak-drill-$RUN" -f "$BASE/client_key"
  cp "$BASE/client_key.pub" "$BASE/authorized_keys"
  ip netns add "fbh-$RUN-net"
  ip -n "fbh-$RUN-net" link add br0 type bridge
  ip -n "fbh-$RUN-net" link set br0 up
  ip link add "fbh${RUN}h" type veth peer name up0 netns "fbh-$RUN-net"
  ip -n "fbh-$RUN-net" link set up0 master br0 up
  ip addr add "$SUBNET.254/24" dev "fbh${RUN}h"
  ip link set "fbh${RUN}h" up
  : > "$BASE/known_hosts"
  {
    echo "# three local drill hosts (scripts/ssh-hosts.sh up $RUN)"
    echo "known_hosts: $BASE/known_hosts"
    echo "sites:"
  } > "$BASE/inventory.yaml"
  for i in 1 2 3; do
    local ns="fbh-$RUN-$i" dir="$BASE/host$i" address="$SUBNET.$i"
    mkdir -p "$dir/firebreak"
    ip netns add "$ns"
    ip link add "fbh${RUN}p$i" netns "fbh-$RUN-net" type veth peer name eth0 netns "$ns"
    ip -n "fbh-$RUN-net" link set "fbh${RUN}p$i" master br0 up
    ip -n "$ns" addr add "$address/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    host_config "$dir" "$address" > "$dir/sshd_config"
    ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd_config"
    echo "$address $(cut -d' ' -f1,2 "$dir/host_key.pub")" >> "$BASE/known_hosts"
    cat >> "$BASE/inventory.yaml" <<EOF
  ${SITES[$((i - 1))]}:
    hosts:
      - { address: $address, user: root, key: $BASE/client_key, dir: $dir/firebreak }
EOF
  done
  # Wait (bounded) until every sshd answers.
  for i in 1 2 3; do
    for _ in $(seq 50); do
      ssh -o BatchMode=yes -o ConnectTimeout=2 -o UserKnownHostsFile="$BASE/known_hosts" \
        -o StrictHostKeyChecking=yes -i "$BASE/client_key" -o IdentitiesOnly=yes \
        "root@$SUBNET.$i" true 2>/dev/null && break
      sleep 0.1
    done
  done
  echo "hosts up: run $RUN, ${SITES[*]} at $SUBNET.1-3 (ssh only); remove with: $0 down $RUN"
  echo "$BASE/inventory.yaml"
}

down() {
  need
  RUN=${1:-}
  [[ $RUN =~ ^[0-9a-f]{6}$ ]] || die "usage: $0 down RUN (the six hex digits 'up' printed)"
  BASE=/tmp/fbh-$RUN
  for i in 1 2 3; do
    local ns="fbh-$RUN-$i"
    if [ -f "$BASE/host$i/sshd.pid" ]; then
      kill "$(cat "$BASE/host$i/sshd.pid")" 2>/dev/null || true
    fi
    # Whatever else still runs on that host (drill processes, guards) was started there.
    if ip netns list | grep -qw "$ns"; then
      for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
  ip link del "fbh${RUN}h" 2>/dev/null || true
  if ip netns list | grep -qw "fbh-$RUN-net"; then ip netns del "fbh-$RUN-net"; fi
  rm -rf "$BASE"
  echo "hosts of run $RUN removed"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) die "usage: $0 up [RUN] | down RUN" ;;
esac
