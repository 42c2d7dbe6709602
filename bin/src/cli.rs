//! The command line: `sluice info` and `sluice run`.

use std::net::IpAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// Sluice: a kernel-bypass TCP/IP stack and WebSocket gateway on AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the build's version and enabled components.
    Info,
    /// Serve an application on a backend until SIGINT/SIGTERM.
    ///
    /// Prints one `listening` line on stdout when ready. Example:
    /// `sluice run --backend kernel --ip 127.0.0.1 --port 9001 --app ws-echo`
    Run(Box<RunArgs>),
    /// Validate a gateway configuration file (TOML); prints the offending key on error.
    CheckConfig {
        /// The file, e.g. deploy/sluice.toml.
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Print the gateway's counters and per-connection table (from its control plane).
    Stat {
        /// Control-plane address of the running gateway.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
        control: String,
        /// The control plane's bearer token (`[control] token`), if it has one.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "SLUICE_CONTROL_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
    },
}

/// Packet I/O backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// AF_XDP rings with the userspace TCP stack, one pinned worker per queue (root).
    Afxdp,
    /// Linux kernel sockets driven by mio (epoll), one thread: the baseline.
    Kernel,
    /// DPDK poll-mode driver with the userspace TCP stack, one pinned worker per queue
    /// (`--dpdk-port`, `[dpdk]`; needs a build with the cargo feature `dpdk`).
    Dpdk,
}

/// Application served on every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum App {
    /// Echo every TCP byte back.
    TcpEcho,
    /// Read and drop everything.
    TcpDiscard,
    /// Send the byte pattern `offset % 251` until the peer closes.
    TcpSource,
    /// WebSocket echo (RFC 6455, permessage-deflate): every message sent back unchanged
    /// (the gateway with one echo route on every path).
    WsEcho,
    /// The WebSocket gateway: routes, pub/sub, control plane (docs/GATEWAY.md).
    Gateway,
}

/// On/off switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `sluice run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Gateway configuration file (TOML, see docs/CONFIG.md; --app gateway only): routes,
    /// limits, control plane, `[cluster]` (pub/sub across nodes over NATS), PROXY protocol
    /// and trusted proxies; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// Control-plane address (metrics, health, ingest, stat): gateway default 127.0.0.1:9100;
    /// ws-echo has one only when this is given.
    #[arg(long, value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// Network interface for the AF_XDP backend.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// NIC queues: AF_XDP a count or a list (e.g. `2` or `0,1`); DPDK a count of queue
    /// pairs (overrides `[dpdk] queues`).
    #[arg(long, value_name = "N|LIST")]
    pub queues: Option<String>,
    /// Cores to pin workers to, one per queue in order (e.g. `0,1`; DPDK: overrides
    /// `[dpdk] lcores`).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Address to serve on. AF_XDP and DPDK backends: the stack's own address and its on-link subnet
    /// (`/PREFIX`; without one the subnet is the address alone, /32, and every other
    /// address is reached through --gateway-ip). Kernel backend: the bind address (a
    /// prefix is accepted and ignored).
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = parse_ip, default_value = "0.0.0.0")]
    pub ip: IpArg,
    /// Default gateway for the AF_XDP and DPDK backends.
    #[arg(long, value_name = "ADDR")]
    pub gateway_ip: Option<IpAddr>,
    /// MAC address for the AF_XDP and DPDK backends (default: the interface's or port's;
    /// DPDK then receives promiscuously).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Packet I/O backend.
    #[arg(long, value_enum, default_value = "afxdp")]
    pub backend: Backend,
    /// Kernel backend: busy-poll. The event loop calls epoll_wait with a zero timeout and
    /// never sleeps, so its core is always 100 % busy; a wake-up no longer costs a
    /// scheduler round trip (the AF_XDP and DPDK workers spin by --idle-spin instead).
    /// For dedicated cores and like-for-like benchmarks against spinning servers.
    #[arg(long)]
    pub busy_poll: bool,
    /// TCP port to serve (repeatable; 0 picks a free port, shown in the `listening` line).
    #[arg(long = "port", value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    /// AF_XDP and DPDK backends: write every frame each worker receives and sends to FILE (pcap,
    /// readable by `tcpdump -r`); with several queues, one file per queue with `.qN`
    /// before the extension (`cap.pcap` -> `cap.q0.pcap`, docs/AFXDP.md). Frames the
    /// writer cannot keep up with are dropped and counted, never waited for.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<String>,
    /// wss://: serve TLS on PORT (repeatable; added to the --port list) with --tls-cert and
    /// --tls-key (gateway and ws-echo; a `[[listen.tls]]` entry of --config does the same).
    #[arg(long = "tls-port", value_name = "PORT", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ports: Vec<u16>,
    /// PEM certificate chain (leaf first) for --tls-port.
    #[arg(long, value_name = "FILE", requires = "tls_ports")]
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_ports")]
    pub tls_key: Option<String>,
    /// Application to serve.
    #[arg(long, value_enum)]
    pub app: App,
    /// AF_XDP and DPDK backends: every queue's worker also opens one connection to ADDR:PORT (from a
    /// local port whose answers reach its own queue) and serves the application on it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Option<std::net::SocketAddrV4>,
    /// Largest WebSocket message accepted (bytes, after decompression); larger ones close with 1009.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_message_size: usize,
    /// Largest WebSocket frame payload accepted (bytes); larger ones close with 1009.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_frame_size: usize,
    /// Most concurrent connections; further ones are accepted and closed at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Per-connection output queue bound (bytes): above it the connection is not read.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_output_queue: usize,
    /// TCP apps (tcp-echo, tcp-discard, tcp-source): abort (RST) a connection that moves
    /// no byte either way for this many seconds, so abandoned peers never pin it; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub tcp_idle_timeout: u64,
    /// permessage-deflate (RFC 7692) for ws-echo.
    #[arg(long, value_enum, default_value = "on")]
    pub compression: Switch,
    /// Seconds a client has to complete the WebSocket handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,
    /// AF_XDP tuning (override `[dataplane]` of --config; docs/CONFIG.md).
    #[command(flatten)]
    pub tuning: Tuning,
    /// DPDK backend (override `[dpdk]` of --config; docs/CONFIG.md).
    #[command(flatten)]
    pub dpdk: DpdkFlags,
}

/// DPDK backend flags (`--backend dpdk`). Each overrides the `[dpdk]` key of the same name
/// in the `--config` file.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "DPDK (--backend dpdk)")]
pub struct DpdkFlags {
    /// The port: a PCI address (0000:3b:00.0, bound to vfio-pci) or a virtual device spec
    /// (net_af_packet0,iface=eth1). Sluice adds `-a ADDR` or `--vdev SPEC` to the EAL arguments.
    #[arg(long, value_name = "PCI|VDEV")]
    pub dpdk_port: Option<String>,
    /// EAL arguments, whitespace-separated [default: --in-memory], e.g.
    /// "--no-huge --no-pci -m 512 --file-prefix lab1" for a machine without hugepages.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal_args: Option<String>,
    /// Mbufs in the pool [default: 0, sized from queues and rings; else 1024..=16777215].
    #[arg(long, value_name = "N")]
    pub mbufs: Option<u32>,
    /// Receive descriptors per queue [default: 1024; 32..=16384].
    #[arg(long, value_name = "N")]
    pub rx_ring: Option<u16>,
    /// Transmit descriptors per queue [default: 1024; 32..=16384].
    #[arg(long, value_name = "N")]
    pub tx_ring: Option<u16>,
}

/// AF_XDP backend tuning flags. Each overrides the `[dataplane]` key of the same name in
/// the `--config` file; absent, the file's value or the default applies.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "AF_XDP tuning")]
pub struct Tuning {
    /// Idle poll-loop iterations that only spin before yielding [default: 2000; 0..=100000000].
    #[arg(long, value_name = "N")]
    pub idle_spin: Option<u32>,
    /// Further idle iterations that yield the CPU before sleeping [default: 200; 0..=100000000].
    #[arg(long, value_name = "N")]
    pub idle_yield: Option<u32>,
    /// Longest idle sleep in poll(), microseconds, rounded up to ms [default: 1000; 1..=1000000].
    #[arg(long, value_name = "US")]
    pub idle_poll_timeout_us: Option<u64>,
    /// How long workers drain connections after SIGINT/SIGTERM, ms [default: 2000; 0..=600000].
    #[arg(long, value_name = "MS")]
    pub stop_grace_ms: Option<u64>,
    /// UMEM frames per queue for receiving, and as many for sending [default: 2048; 64..=262144].
    #[arg(long, value_name = "N")]
    pub umem_frames: Option<u32>,
    /// UMEM frame size in bytes [default: 2048; 2048 or 4096].
    #[arg(long, value_name = "BYTES")]
    pub frame_size: Option<u32>,
    /// Entries of each AF_XDP ring (RX, TX, fill, completion) [default: 2048; power of two, 64..=32768].
    #[arg(long, value_name = "N")]
    pub ring_size: Option<u32>,
    /// Which TCP ports of --ip the XDP program takes [default: auto]. true: every port
    /// (closed ports get Sluice's RST, RFC 9293 3.10.7.1); false: only --port and the
    /// active-open range 32768-60999, the kernel keeps the rest; auto: true unless the
    /// kernel itself has the --ip address on an interface (checked once at start). A bare
    /// --redirect-all-tcp means true.
    #[arg(
        long,
        value_name = "true|false|auto",
        value_enum,
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "true"
    )]
    pub redirect_all_tcp: Option<crate::config::RedirectAllTcp>,
}

/// `--ip ADDR[/PREFIX]`: the address and, when given, the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpArg {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length, when the argument had one (checked against the family's width).
    pub prefix: Option<u8>,
}

/// Parses `ADDR` or `ADDR/PREFIX`.
pub fn parse_ip(s: &str) -> Result<IpArg, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid IP address `{addr}`"))?;
    let prefix = match prefix {
        None => None,
        Some(p) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match p.parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => return Err(format!("invalid prefix length `{p}`")),
            }
        }
    };
    Ok(IpArg { addr: ip, prefix })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parse_ip_with_and_without_prefix_accepted() {
        assert_eq!(
            parse_ip("198.18.0.1/24").unwrap(),
            IpArg {
                addr: "198.18.0.1".parse::<IpAddr>().unwrap(),
                prefix: Some(24)
            }
        );
        assert_eq!(
            parse_ip("127.0.0.1").unwrap(),
            IpArg {
                addr: "127.0.0.1".parse::<IpAddr>().unwrap(),
                prefix: None
            }
        );
    }

    #[test]
    fn parse_ip_bad_prefix_rejected() {
        assert!(parse_ip("198.18.0.1/33").is_err());
        assert!(parse_ip("198.18.0.1/").is_err());
        assert!(parse_ip("::1/129").is_err());
        assert!(parse_ip("nope").is_err());
    }

    #[test]
    fn cli_run_shape_parsed() {
        let cli = Cli::try_parse_from([
            "sluice",
            "run",
            "--iface",
            "eth0",
            "--queues",
            "0,1",
            "--cores",
            "0,1",
            "--ip",
            "198.18.0.1/24",
            "--gateway-ip",
            "198.18.0.254",
            "--mac",
            "02:00:00:00:00:01",
            "--backend",
            "kernel",
            "--port",
            "80",
            "--port",
            "81",
            "--app",
            "ws-echo",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.ports, vec![80, 81]);
        assert_eq!(run.backend, Backend::Kernel);
        assert_eq!(run.app, App::WsEcho);
        assert_eq!(run.ip.prefix, Some(24));
    }
}
