#!/usr/bin/env bash
# Does the README hold on a fresh machine? Builds a minimal Debian bookworm root
# (`debootstrap --variant=minbase`, from the mirror in this machine's apt configuration),
# copies the repository into it (`git ls-files`: no target/, no .venv, no node_modules) and,
# chrooted there as root, runs `deploy/setup.sh` and then the README's first command,
# `deploy/demo.sh` (set-up again, which must change nothing, the release build from an empty
# cargo registry and target directory, with the profile's codegen-units, LTO and debug-info
# settings lowered to save minutes, the gateway demo with its own check of what the clients
# received). Any failure fails the command. CI runs it as a stage of deploy/test.sh.
#
#   deploy/fresh-check.sh           lean (CI): set-up without Node, npm, Chromium and DPDK
#                                   (SLUICE_SETUP_SKIP_NODE=1 SLUICE_SETUP_SKIP_DPDK=1), which
#                                   only the Node/Chromium client tests and the `dpdk` feature
#                                   use, not the demo (this also shows that the default build
#                                   and the demo need no DPDK); instead apt must show, by
#                                   simulating it, that they install in the root
#   deploy/fresh-check.sh --full    full set-up: Node, npm, Chromium, DPDK and `npm install` too
#
# What it covers: every Debian package, Python client and kernel feature that setup.sh,
# the release build and the demo need, starting from a root that has only Debian's
# `minbase` packages. What it does not: the Rust toolchain (this machine's ~/.rustup and
# ~/.cargo/bin are mounted read-only: setup.sh checks for Rust, it does not install it), the
# test suite itself (deploy/test.sh runs that on the machine), and, unless --full, the
# Node/Chromium installs beyond apt's simulation.
#
# This workplace reaches the package registries through its own certificate authority and
# client settings, which a bare root lacks: they are copied in (shared/LAB.md, last section)
# and SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and PIP_* are passed through.
# setup.sh itself only uses the ordinary clients (apt, pip, npm).
#
# Isolation and clean-up: everything (debootstrap included) runs in a private mount
# namespace and its own PID namespace (`unshare --mount --pid --fork --kill-child`), so every
# mount, every process and every network namespace the demo makes inside dies with it, even
# on SIGKILL; /run in the root is a fresh tmpfs, not the machine's. Inside, the mounts are
# also undone in reverse order on exit. The root directory is removed afterwards, only
# after `findmnt` shows nothing mounted beneath it (never `rm -rf` through a mount).
#
#   SLUICE_FRESH_DIR   where the root is made (default: /var/tmp); needs ~3 GB
#   SLUICE_FRESH_KEEP=1    keep the root directory afterwards (to look around)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
self="$repo/deploy/fresh-check.sh"

say() { echo "fresh-check: $*"; }
die() { echo "fresh-check: FAIL: $*" >&2; exit 1; }
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }

# ---- inside the private mount + PID namespaces (pid 1 there) ----------------------------
if [ "${1:-}" = --inside ]; then
  root=$2 mirror=$3 full=$4
  mounted=()
  undo_mounts() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
      umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" ||
        echo "fresh-check: could not unmount ${mounted[i]}" >&2
    done
  }
  trap undo_mounts EXIT
  trap 'exit 130' INT TERM # pid 1 of a PID namespace ignores signals it has no handler for
  mnt() { mount "$@"; mounted+=("${*: -1}"); }

  say "debootstrap --variant=minbase bookworm from $mirror"
  if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1; then
    tail -n 20 "$root.debootstrap.log" >&2
    die "debootstrap failed (log above)"
  fi
  say "root made ($(elapsed))"

  # This machine's apt sources (bookworm, -updates, -security) instead of debootstrap's
  # single line, and its registry settings (see the header).
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
  fi
  cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
  mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  [ -d /usr/local/share/ca-certificates ] &&
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  [ -f /root/.npmrc ] && install -m 600 /root/.npmrc "$root/root/.npmrc"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"

  say "copying the repository (git ls-files)"
  mkdir -p "$root/root/sluice"
  git -C "$repo" ls-files -z |
    tar -C "$repo" --null --ignore-failed-read -T - -cf - |
    tar -C "$root/root/sluice" -xf -

  # The root must be a mount point (`ip netns exec` makes / an rslave mount).
  mnt --bind "$root" "$root"
  mnt -t proc proc "$root/proc"
  mnt --bind /sys "$root/sys"
  mnt --bind /dev "$root/dev"
  mnt --bind /dev/pts "$root/dev/pts"
  mnt -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
  mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin"
  mnt --bind -o ro "$HOME/.rustup" "$root/root/.rustup"
  mnt --bind -o ro "$HOME/.cargo/bin" "$root/root/.cargo/bin"

  envs=(HOME=/root LANG=C.UTF-8 TERM=dumb CARGO_TERM_COLOR=never
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  # The release profile's slowest settings (one codegen unit per crate, thin LTO, debug
  # info) cost minutes here and need nothing from the system that the defaults do not; the
  # test command's own release-build stage builds with them.
  envs+=(CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_LTO=false
    CARGO_PROFILE_RELEASE_DEBUG=0)
  for v in SSL_CERT_FILE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS $(compgen -e | grep '^PIP_' || true); do
    if [ -n "${!v:-}" ]; then envs+=("$v=${!v}"); fi
  done
  if [ "$full" = 1 ]; then
    script='deploy/setup.sh'
  else
    envs+=(SLUICE_SETUP_SKIP_NODE=1 SLUICE_SETUP_SKIP_DPDK=1)
    script='deploy/setup.sh || exit
      echo "fresh-check: apt simulates installing nodejs npm chromium dpdk libdpdk-dev"
      apt-get -q -s install --no-install-recommends nodejs npm chromium dpdk libdpdk-dev >/tmp/simulate.log || {
        tail -n 20 /tmp/simulate.log >&2
        echo "fresh-check: FAIL: apt cannot install nodejs npm chromium dpdk libdpdk-dev" >&2
        exit 1
      }'
  fi
  say "chroot: deploy/setup.sh ($(elapsed))"
  chroot "$root" /usr/bin/env -i "${envs[@]}" bash -c "cd /root/sluice && $script" ||
    die "deploy/setup.sh failed in the fresh root"
  say "chroot: deploy/demo.sh (set-up again, release build, demo) ($(elapsed))"
  chroot "$root" /usr/bin/env -i "${envs[@]}" bash -c 'cd /root/sluice && deploy/demo.sh' ||
    die "deploy/demo.sh failed in the fresh root"
  say "setup.sh and demo.sh passed in a fresh bookworm root ($(elapsed))"
  exit 0
fi

# ---- on the machine ----------------------------------------------------------------------
full=0
case "${1:-}" in
  "") ;;
  --full) full=1 ;;
  -h | --help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: deploy/fresh-check.sh [--full]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap is missing: run deploy/setup.sh"
command -v unshare >/dev/null || die "unshare is missing (util-linux)"

mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }' \
    /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 ~ /bookworm( |$)/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
    /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list.d/debian.sources (URIs:) or /etc/apt/sources.list"

base=${SLUICE_FRESH_DIR:-/var/tmp}
root=$(mktemp -d "$base/sluice-fresh.XXXXXX")
chmod 755 "$root" # it is / in the chroot: apt's _apt user and others must traverse it
inner=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$inner" ] && kill -0 "$inner" 2>/dev/null; then
    # unshare itself blocks SIGTERM: ask its child (pid 1 inside) to stop, which undoes its
    # mounts; after 15 s, SIGKILL unshare, whose --kill-child ends the PID namespace.
    local child
    child=$(cat "/proc/$inner/task/$inner/children" 2>/dev/null || true)
    [ -z "$child" ] || kill -TERM $child 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$inner" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$inner" 2>/dev/null || true
    wait "$inner" 2>/dev/null || true
  fi
  # The mounts lived in the private namespace, which is gone with its last process; check.
  local left
  left=$(findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r) == 1' || true)
  if [ -n "$left" ]; then
    echo "fresh-check: FAIL: still mounted under $root, not removing it:" >&2
    echo "$left" >&2
    exit 1
  fi
  if [ "${SLUICE_FRESH_KEEP:-0}" = 1 ]; then
    say "kept $root"
  else
    rm -rf --one-file-system "$root" "$root.debootstrap.log"
    say "removed $root ($(elapsed))"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "root $root (mirror $mirror; $([ "$full" = 1 ] && echo full || echo lean) set-up)"
unshare --mount --pid --fork --kill-child --mount-proc --propagation private -- \
  "$self" --inside "$root" "$mirror" "$full" &
inner=$!
wait "$inner"
inner=""
say "passed in $(elapsed)"
