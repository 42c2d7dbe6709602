#!/usr/bin/env bash
# Prepare a NIC for Sluice's AF_XDP workers (see docs/OPERATIONS.md).
#
#   deploy/tune-nic.sh IFACE [--queues N] [--cores LIST] [--irq-match REGEX] [--dry-run]
#
#   --queues N         set the queue count with `ethtool -L` (combined channels, or rx/tx
#                      channels on drivers without combined ones, e.g. veth)
#   --cores LIST       the cores Sluice's workers run on (same syntax as `sluice run --cores`,
#                      e.g. 0,1 or 2-5); the NIC's IRQs are moved to the other online cores
#   --irq-match REGEX  also treat /proc/interrupts lines whose name matches REGEX as the
#                      NIC's (by default: the device's MSI IRQs and names naming IFACE)
#   --dry-run          print the commands that would change something; change nothing
#
# It also prints the RSS hash key and indirection table (`ethtool -x`), turns off the receive
# offloads that merge frames before XDP sees them (LRO, hardware GRO, GRO), and reports the
# XDP program attached to IFACE (`ip -d link show`). Running it twice changes nothing the
# second time. Run it in the namespace that owns IFACE (e.g. `ip netns exec NS ...`).
# Exit status: 0 done, 1 error (message on stderr), 2 usage.
#
# TUNE_NIC_PROC (default /proc) is where /proc/interrupts and /proc/irq/N live; the tests
# point it at a scratch copy.
set -euo pipefail

PROC=${TUNE_NIC_PROC:-/proc}

die() { echo "tune-nic: $*" >&2; exit 1; }
usage() {
  local code=${1:-2}
  if [ "$code" = 0 ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  else
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
  fi
  exit "$code"
}

iface=""
queues=""
cores=""
irq_match=""
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --queues) queues=${2:?--queues needs a value}; shift 2 ;;
    --cores) cores=${2:?--cores needs a value}; shift 2 ;;
    --irq-match) irq_match=${2:?--irq-match needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "tune-nic: unknown option $1" >&2; usage 2 ;;
    *)
      [ -z "$iface" ] || { echo "tune-nic: one interface only (got $iface and $1)" >&2; usage 2; }
      iface=$1; shift ;;
  esac
done
[ -n "$iface" ] || usage 2
if [ -n "$queues" ]; then
  [[ "$queues" =~ ^[1-9][0-9]{0,3}$ ]] || die "--queues must be a positive count, got '$queues'"
fi

# Everything below reads state first, so a dry run as a normal user still says what it would do.
[ "$dry_run" = 1 ] || [ "$(id -u)" = 0 ] ||
  die "must run as root (ethtool -L/-K and /proc/irq need CAP_NET_ADMIN/CAP_SYS_ADMIN); try --dry-run"
[ -e "/sys/class/net/$iface" ] ||
  die "no such interface '$iface' in this network namespace (see 'ip link'; use 'ip netns exec NS' for another namespace)"
command -v ethtool >/dev/null || die "ethtool is not installed (apt install ethtool)"

changes=0
# Runs a command that changes state, or prints it on a dry run.
change() {
  changes=$((changes + 1))
  if [ "$dry_run" = 1 ]; then
    echo "would run: $*"
  else
    echo "run: $*"
    "$@"
  fi
}

# Expands a list like 0,2-3 into one number per line.
expand_list() {
  local item lo hi
  local IFS=,
  for item in $1; do
    [ -n "$item" ] || continue
    if [[ "$item" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      lo=${BASH_REMATCH[1]}; hi=${BASH_REMATCH[2]}
    elif [[ "$item" =~ ^[0-9]+$ ]]; then
      lo=$item; hi=$item
    else
      return 1
    fi
    [ "$lo" -le "$hi" ] || return 1
    seq "$lo" "$hi"
  done
}

driver=$(ethtool -i "$iface" 2>/dev/null | sed -n "s/^driver: //p" || true)
driver=${driver:-unknown}
if [ "$dry_run" = 1 ]; then
  echo "tune-nic: iface=$iface driver=$driver (dry run: nothing is changed)"
else
  echo "tune-nic: iface=$iface driver=$driver"
fi

# --- Queues (ethtool -l / -L) -----------------------------------------------------------
# ethtool -l prints a "Pre-set maximums" block then a "Current hardware settings" block.
channel() { # channel BLOCK(1|2) NAME -> the value, or "n/a"
  awk -v want="$1" -v name="$2:" '
    /^Pre-set maximums/ { block = 1; next }
    /^Current hardware settings/ { block = 2; next }
    block == want && $1 == name { print $2; exit }' <<<"$channels"
}
if channels=$(ethtool -l "$iface" 2>&1); then
  max_comb=$(channel 1 Combined); cur_comb=$(channel 2 Combined)
  max_rx=$(channel 1 RX); cur_rx=$(channel 2 RX)
  max_tx=$(channel 1 TX); cur_tx=$(channel 2 TX)
  echo "queues: combined=$cur_comb rx=$cur_rx tx=$cur_tx (max combined=$max_comb rx=$max_rx tx=$max_tx)"
else
  echo "queues: not reported by driver $driver ($(tail -n1 <<<"$channels"))"
  channels=""
fi
nonzero() { [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
if [ -n "$queues" ]; then
  [ -n "$channels" ] ||
    die "driver $driver does not support changing the queue count (ethtool -l/-L not supported on $iface)"
  if nonzero "$max_comb"; then
    [ "$queues" -le "$max_comb" ] ||
      die "--queues $queues exceeds the driver's maximum of $max_comb combined channels on $iface"
    if [ "$cur_comb" = "$queues" ]; then
      echo "queues: already combined=$queues"
    else
      change ethtool -L "$iface" combined "$queues" ||
        die "ethtool -L $iface combined $queues failed (driver $driver)"
    fi
  elif nonzero "$max_rx" && nonzero "$max_tx"; then
    { [ "$queues" -le "$max_rx" ] && [ "$queues" -le "$max_tx" ]; } ||
      die "--queues $queues exceeds the driver's maximum of rx=$max_rx tx=$max_tx channels on $iface"
    if [ "$cur_rx" = "$queues" ] && [ "$cur_tx" = "$queues" ]; then
      echo "queues: already rx=$queues tx=$queues"
    else
      change ethtool -L "$iface" rx "$queues" tx "$queues" ||
        die "ethtool -L $iface rx $queues tx $queues failed (driver $driver)"
    fi
  else
    die "driver $driver does not support changing the queue count on $iface (no combined or rx/tx channels)"
  fi
fi

# --- IRQ affinity -------------------------------------------------------------------------
online=$(expand_list "$(cat /sys/devices/system/cpu/online)") || die "cannot read the online cores"
if [ -n "$cores" ]; then
  { workers=$(expand_list "$cores") && [ -n "$workers" ]; } ||
    die "--cores: invalid list '$cores' (expected e.g. 0,1 or 2-5)"
  for c in $workers; do
    grep -qx "$c" <<<"$online" || die "--cores: core $c is not online (online: $(paste -sd, <<<"$online"))"
  done
  irq_cores=$(grep -vxF -f <(echo "$workers") <<<"$online" | paste -sd, || true)
  [ -n "$irq_cores" ] ||
    die "--cores $cores covers every online core; leave at least one core for the NIC's IRQs"
fi
# The NIC's IRQs: its PCI device's MSI vectors (virtio-net: the parent's), plus lines of
# /proc/interrupts naming the interface (e.g. "eth0-TxRx-3", "ice-eth0-TxRx-0") or --irq-match.
irqs=""
dev=/sys/class/net/$iface/device
for d in "$dev" "$dev/.."; do
  if [ -d "$d/msi_irqs" ]; then
    irqs=$(ls "$d/msi_irqs")
    break
  fi
done
# The interface's name must stand alone in the IRQ's name ("eth1" is not "eth10-TxRx-0").
named=$(awk -v ifc="$iface" -v re="$irq_match" '
  function names_iface(name,    rest, at, before, after) {
    rest = name
    while ((at = index(rest, ifc)) > 0) {
      before = at == 1 ? "" : substr(rest, at - 1, 1)
      after = substr(rest, at + length(ifc), 1)
      if ((before == "" || before ~ /[-@:]/) && (after == "" || after ~ /[-@:]/)) return 1
      rest = substr(rest, at + 1)
    }
    return 0
  }
  $1 ~ /^[0-9]+:$/ {
    name = $NF
    if (names_iface(name) || (re != "" && name ~ re)) { sub(":", "", $1); print $1 }
  }' "$PROC/interrupts")
irqs=$(printf '%s\n%s\n' "$irqs" "$named" | grep -E '^[0-9]+$' | sort -nu || true)
if [ -z "$irqs" ]; then
  echo "irq: none found for $iface (a virtual device such as veth has none; try --irq-match)"
else
  for irq in $irqs; do
    name=$(awk -v n="$irq:" '$1 == n { print $NF }' "$PROC/interrupts")
    file=$PROC/irq/$irq/smp_affinity_list
    [ -r "$file" ] || { echo "irq: $irq $name has no $file, skipped"; continue; }
    was=$(cat "$file")
    if [ -z "$cores" ]; then
      echo "irq: $irq ${name:-?} cores=$was (no --cores given: left alone)"
    elif [ "$(expand_list "$was" | paste -sd,)" = "$irq_cores" ]; then
      echo "irq: $irq ${name:-?} already on cores $irq_cores"
    else
      echo "irq: $irq ${name:-?} cores $was -> $irq_cores"
      changes=$((changes + 1))
      if [ "$dry_run" = 1 ]; then
        echo "would run: echo $irq_cores > $file"
      else
        echo "run: echo $irq_cores > $file"
        echo "$irq_cores" >"$file" 2>/dev/null ||
          echo "irq: $irq: the kernel refused the affinity (managed IRQ?); left at $was" >&2
      fi
    fi
  done
  if [ -n "$cores" ] && pgrep -x irqbalance >/dev/null 2>&1; then
    echo "irq: warning: irqbalance is running and may move these IRQs back; ban the worker cores (IRQBALANCE_BANNED_CPULIST=$cores) or stop it" >&2
  fi
fi

# --- RSS (ethtool -x) ---------------------------------------------------------------------
if rss=$(ethtool -x "$iface" 2>&1); then
  echo "rss: hash key and indirection table (ethtool -x $iface):"
  while IFS= read -r l; do echo "rss:   $l"; done <<<"$rss"
else
  echo "rss: not reported by driver $driver ($(tail -n1 <<<"$rss")); flows spread by the driver's default hash"
fi

# --- Receive offloads that merge frames before XDP ------------------------------------------
# LRO and hardware GRO build super-frames the XDP program (and the stack's MSS) cannot take;
# software GRO only touches frames passed to the kernel, but merged frames then differ from
# the wire, so it is turned off too on the stack's NIC.
features=$(ethtool -k "$iface" 2>/dev/null || true)
for f in large-receive-offload rx-gro-hw generic-receive-offload; do
  line=$(grep -E "^[[:space:]]*$f:" <<<"$features" || true)
  if [ -z "$line" ]; then
    echo "offload: $f not present"
  elif [[ "$line" == *": off"* ]]; then
    echo "offload: $f already off"
  elif [[ "$line" == *"[fixed]"* ]]; then
    echo "offload: $f is on and fixed by the driver (cannot change)" >&2
  else
    change ethtool -K "$iface" "$f" off || die "ethtool -K $iface $f off failed"
  fi
done

# --- XDP attachment -------------------------------------------------------------------------
link=$(ip -d link show dev "$iface")
mode=$(head -n1 <<<"$link" | grep -oE ' (xdp|xdpgeneric|xdpdrv|xdpoffload|xdpmulti) ' | tr -d ' ' || true)
prog=$(grep -oE 'prog/xdp id [0-9]+( name [^ ]+)?' <<<"$link" | head -n1 || true)
if [ -n "$mode" ] || [ -n "$prog" ]; then
  echo "xdp: attached mode=${mode:-?} ${prog#prog/xdp }"
else
  echo "xdp: none attached"
fi

if [ "$dry_run" = 1 ]; then
  echo "tune-nic: dry run, $changes change(s) would be made"
else
  echo "tune-nic: done, $changes change(s) made"
fi
