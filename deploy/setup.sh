#!/usr/bin/env bash
# Sluice set-up for a fresh Debian bookworm machine (root). Idempotent: run it as often as
# you like; it installs only what is missing.
#
# Installs: the C toolchain for the BPF parts (clang llvm m4 libelf-dev zlib1g-dev pkg-config
# make gcc libpcap-dev), the lab tools (iproute2 ethtool nftables ping tcpdump), the real
# peers the tests start (iperf3, openssl and socat for wss://, Python `websockets` and `kosoku` in a venv at .venv/, Node
# `ws` and `playwright-core` in tests/clients/node_modules, Debian's chromium), debootstrap
# (for deploy/fresh-check.sh), DPDK (dpdk libdpdk-dev, for the `dpdk` feature), and checks the kernel (XDP sockets, BPF syscall, veth, network
# namespaces) and the Rust toolchain (which it does not install).
#
# Exit status is non-zero, with one line per problem, if anything is missing.
#
#   SLUICE_SETUP_SKIP_CLIENTS=1   skip the Python/Node/Chromium test clients
#   SLUICE_SETUP_SKIP_NODE=1      skip only Node, npm, Chromium and the npm install (only the
#                                 Node/Chromium client tests use them; deploy/demo.sh does not)
#   SLUICE_SETUP_SKIP_DPDK=1      skip DPDK (dpdk, libdpdk-dev): only the `dpdk` cargo feature
#                                 (--backend dpdk) and its tests need it; the default build
#                                 and deploy/demo.sh do not
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
problems=()
say() { echo "setup: $*"; }
problem() { echo "setup: MISSING: $*" >&2; problems+=("$*"); }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (apt, network namespaces, XDP)" >&2
  exit 1
fi

# ---- Debian packages -------------------------------------------------------------------
apt_pkgs=(
  # C toolchain for libbpf/libxdp (xsk-rs, libbpf-rs) and the XDP program
  clang llvm m4 libelf-dev zlib1g-dev pkg-config make gcc libc6-dev linux-libc-dev
  # libxdp-sys runs xdp-tools' configure, which requires pcap headers
  libpcap-dev
  # lab
  iproute2 ethtool nftables iputils-ping procps kmod util-linux tcpdump
  # kernel peers used by the tests and benchmarks
  iperf3 python3 python3-venv python3-pip curl ca-certificates git
  # the cluster tests and benchmark: NATS, the bus between gateway nodes
  nats-server
  # the attack tests: SYN flood and blind RST/SYN/data injection from the peer namespace
  hping3
  # deploy/fresh-check.sh (a minimal Debian root to check this script and the demo in)
  debootstrap
  # wss:// tests: openssl s_client as a TLS peer, and socat as the TLS relay in front of
  # kosoku (which has no TLS) for the Autobahn cases over wss
  openssl socat
)
skip_node=0
if [ "${SLUICE_SETUP_SKIP_CLIENTS:-0}" = 1 ] || [ "${SLUICE_SETUP_SKIP_NODE:-0}" = 1 ]; then
  skip_node=1
fi
if [ "$skip_node" != 1 ]; then
  apt_pkgs+=(nodejs npm chromium)
fi
if [ "${SLUICE_SETUP_SKIP_DPDK:-0}" != 1 ]; then
  # The DPDK backend (cargo feature `dpdk`): DPDK 22.11's headers and libraries (bindgen and
  # the C shim build against them; pkg-config finds them), its poll-mode drivers
  # (net_af_packet for the lab) and tools (dpdk-devbind.py, dpdk-testpmd)
  apt_pkgs+=(dpdk libdpdk-dev)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  # Node and npm may come from elsewhere on some machines: accept the commands.
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    python3) command -v python3 >/dev/null && continue ;;
    python3-pip) python3 -m pip --version >/dev/null 2>&1 && continue ;;
    python3-venv) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing from apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-y -q -o DPkg::Lock::Timeout=600)
  apt-get "${apt_opts[@]}" update >/dev/null
  if ! apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null; then
    # A machine left mid-install (interrupted dpkg, held-back dependencies) needs a repair
    # before anything else installs.
    say "apt install failed; repairing (apt-get -f install) and retrying"
    apt-get "${apt_opts[@]}" -f install >/dev/null
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# ---- Rust --------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  problem "cargo: install a stable Rust toolchain (rustup, >= 1.80) with rustfmt and clippy"
else
  cargo fmt --version >/dev/null 2>&1 || problem "rustfmt: rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || problem "clippy: rustup component add clippy"
fi

# ---- Kernel ------------------------------------------------------------------------------
kconfig() {
  if [ -r /proc/config.gz ]; then zcat /proc/config.gz
  elif [ -r "/boot/config-$(uname -r)" ]; then cat "/boot/config-$(uname -r)"
  fi
}
cfg=$(kconfig || true)
if [ -n "$cfg" ]; then
  for opt in CONFIG_XDP_SOCKETS CONFIG_BPF_SYSCALL CONFIG_VETH CONFIG_NET_NS CONFIG_BPF_JIT; do
    grep -Eq "^$opt=(y|m)" <<<"$cfg" || problem "kernel option $opt is not enabled"
  done
else
  say "no kernel config readable; probing features instead"
fi
[ -e /sys/kernel/btf/vmlinux ] || say "note: no kernel BTF (/sys/kernel/btf/vmlinux); XDP still works"
probe_ns="slsetup$$"
if ip netns add "$probe_ns" 2>/dev/null; then
  if ! ip -n "$probe_ns" link add "${probe_ns}a" type veth peer name "${probe_ns}b" 2>/dev/null; then
    problem "veth: cannot create a veth pair (CONFIG_VETH)"
  fi
  ip netns del "$probe_ns"
else
  problem "network namespaces: 'ip netns add' failed (CONFIG_NET_NS, CAP_SYS_ADMIN)"
fi

# ---- Test clients (Python venv, Node modules) -------------------------------------------
if [ "${SLUICE_SETUP_SKIP_CLIENTS:-0}" != 1 ]; then
  venv="$repo/.venv"
  if [ -f "$repo/tests/clients/requirements.txt" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$repo/tests/clients/requirements.txt"; then
      problem "python test clients: pip install -r tests/clients/requirements.txt failed"
    fi
  fi
  if [ "$skip_node" != 1 ] && [ -f "$repo/tests/clients/package.json" ]; then
    if ! (cd "$repo/tests/clients" && npm install --no-audit --no-fund --silent >/dev/null); then
      problem "node test clients: npm install in tests/clients failed"
    fi
  fi
  if [ "$skip_node" != 1 ] && [ ! -x /usr/bin/chromium ]; then
    problem "chromium: apt-get install chromium"
  fi
fi

if [ ${#problems[@]} -gt 0 ]; then
  echo "setup: ${#problems[@]} problem(s); see the MISSING lines above" >&2
  exit 1
fi
say "ok ($(uname -r), $(cargo --version 2>/dev/null))"
