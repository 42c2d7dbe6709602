#!/usr/bin/env bash
# Sluice network-namespace lab: two namespaces joined by a veth pair.
#
#   deploy/lab.sh up   [--prefix P] [--queues N]   create a lab, print its variables
#   deploy/lab.sh down [--prefix P]                remove it (safe to run twice)
#   deploy/lab.sh exec [--prefix P] stack|peer CMD...   run CMD inside a namespace
#   deploy/lab.sh env  [--prefix P]                print the variables of an existing lab
#   deploy/lab.sh list                             list labs present on this host
#
# The prefix (default $SLUICE_LAB_PREFIX, else "sl<pid>") names everything the lab makes,
# so parallel labs never collide: namespaces P-stack and P-peer, interfaces P-s (stack side,
# in P-stack, no kernel IP) and P-p (peer side, in P-peer, 198.18.0.1/24). The stack's
# address is 198.18.0.2; the peer's offloads are off and IPv6 is disabled in both
# namespaces (see shared/LAB.md). Only 198.18.0.0/15 addresses are used.
#
# `up` prints shell-style KEY=VALUE lines (eval-able) describing the lab.
set -euo pipefail

PEER_IP=198.18.0.1
STACK_IP=198.18.0.2
PREFIX_LEN=24

die() { echo "lab.sh: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces and veths need CAP_NET_ADMIN)"

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
prefix=${SLUICE_LAB_PREFIX:-}
queues=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
    --queues) queues=${2:?--queues needs a value}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) break ;;
  esac
done
[ -n "$prefix" ] || prefix="sl$$"
# Interface names are limited to 15 bytes: "<prefix>-s" must fit.
[[ "$prefix" =~ ^[a-zA-Z0-9][a-zA-Z0-9_]{0,11}$ ]] ||
  die "prefix '$prefix' must be 1-12 characters of [A-Za-z0-9_] (interface names are limited to 15 bytes)"
[[ "$queues" =~ ^[1-9][0-9]*$ ]] && [ "$queues" -le 64 ] || die "--queues must be 1..64"

STACK_NS="$prefix-stack"
PEER_NS="$prefix-peer"
STACK_IF="$prefix-s"
PEER_IF="$prefix-p"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

print_env() {
  local smac pmac q
  smac=$(ip -n "$STACK_NS" -o link show "$STACK_IF" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
  pmac=$(ip -n "$PEER_NS" -o link show "$PEER_IF" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
  q=$(ip netns exec "$STACK_NS" sh -c "ls -d /sys/class/net/$STACK_IF/queues/rx-* | wc -l")
  cat <<EOF
LAB_PREFIX=$prefix
STACK_NS=$STACK_NS
PEER_NS=$PEER_NS
STACK_IF=$STACK_IF
PEER_IF=$PEER_IF
STACK_MAC=$smac
PEER_MAC=$pmac
STACK_IP=$STACK_IP
PEER_IP=$PEER_IP
PREFIX_LEN=$PREFIX_LEN
QUEUES=$q
EOF
}

down() {
  # Deleting a namespace deletes the veth end inside it, and with it the pair.
  local ns
  for ns in "$STACK_NS" "$PEER_NS"; do
    if ns_exists "$ns"; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -TERM 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

up() {
  if ns_exists "$STACK_NS" || ns_exists "$PEER_NS"; then
    die "a lab with prefix '$prefix' already exists (run: $0 down --prefix $prefix)"
  fi
  trap 'down; exit 1' ERR
  ip netns add "$STACK_NS"
  ip netns add "$PEER_NS"
  # Create both ends directly inside their namespaces: the host's own namespace is never touched.
  ip -n "$STACK_NS" link add "$STACK_IF" numtxqueues "$queues" numrxqueues "$queues" type veth \
    peer name "$PEER_IF" netns "$PEER_NS" numtxqueues "$queues" numrxqueues "$queues"
  for ns in "$STACK_NS" "$PEER_NS"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done
  ip -n "$PEER_NS" addr add "$PEER_IP/$PREFIX_LEN" dev "$PEER_IF"
  ip -n "$STACK_NS" link set "$STACK_IF" up
  ip -n "$PEER_NS" link set "$PEER_IF" up
  # The stack sees full checksums and MTU-sized frames only with the peer's offloads off.
  ip netns exec "$PEER_NS" ethtool -K "$PEER_IF" tx off tso off gso off gro off >/dev/null 2>&1 ||
    ip netns exec "$PEER_NS" ethtool -K "$PEER_IF" tx off tso off gso off >/dev/null
  trap - ERR
  print_env
}

case "$cmd" in
  up) up ;;
  down) down ;;
  env)
    ns_exists "$STACK_NS" || die "no lab with prefix '$prefix'"
    print_env ;;
  exec)
    side=${1:-}; shift || true
    case "$side" in
      stack) ns=$STACK_NS ;;
      peer) ns=$PEER_NS ;;
      *) die "exec needs 'stack' or 'peer', then a command" ;;
    esac
    [ $# -gt 0 ] || die "exec needs a command"
    ns_exists "$ns" || die "no lab with prefix '$prefix'"
    exec ip netns exec "$ns" "$@" ;;
  list)
    ip netns list | awk '{print $1}' | sed -n 's/-stack$//p' ;;
  *) usage ;;
esac
