//! The AF_XDP backend: Sluice's XDP program on one interface, one AF_XDP socket and one
//! pinned worker per queue, each worker owning its own [`tcp::stack::Stack`] and serving a
//! simple TCP application ([`TcpApp`]).
//!
//! Startup: attach the XDP program (native, else generic), open one socket per queue
//! (zero-copy, else copy), listen, then print one `listening` line on stdout. SIGINT or
//! SIGTERM stops it: workers stop accepting, close their connections and drain (bounded by a
//! grace period), the sockets close and the program detaches with its bpf_link; exit 0.

pub mod app;
pub mod gateway;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dataplane::worker::{self, WorkerConfig};
use dataplane::{Clock, StartError, XdpConfig, XdpModeRequest, XdpProgram, XskConfig, XskDevice};
use tcp::iface::InterfaceConfig;
use tcp::stack::{Stack, StackConfig};
use tcp::wire::EthernetAddress;
use tracing::info;

pub use app::{StackWorker, TcpApp};

/// How long workers may drain their connections after a stop before they exit anyway.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Everything `sluice run --backend afxdp` needs, as parsed from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interface to attach to.
    pub iface: String,
    /// The stack's IPv4 address.
    pub addr: Ipv4Addr,
    /// Prefix length of the on-link subnet.
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// MAC address; `None` uses the interface's.
    pub mac: Option<EthernetAddress>,
    /// `--queues`: a count (`2`), a list (`0,1`) or ranges (`0-3`); `None` means every
    /// receive queue the driver reports (1 when it reports none).
    pub queues: Option<String>,
    /// `--cores`: a list of cores, one per queue in order; `None` pins queue i to core
    /// i mod (available cores).
    pub cores: Option<String>,
    /// Listening ports.
    pub ports: Vec<u16>,
    /// The application.
    pub app: TcpApp,
    /// Also open one connection here (from the first queue's worker) and serve `app` on it.
    pub connect: Option<std::net::SocketAddrV4>,
    /// Serve the WebSocket gateway or ws-echo instead of `app`.
    pub websocket: Option<gateway::GatewayOptions>,
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(|| format!("invalid MAC `{s}`"))?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| format!("invalid MAC `{s}`"))?;
    }
    if parts.next().is_some() {
        return Err(format!("invalid MAC `{s}`"));
    }
    Ok(EthernetAddress(mac))
}

/// The prefix length of the `--ip ADDR/PREFIX` argument in `args` (`--ip X` or `--ip=X`),
/// if it has one and it parses.
pub fn prefix_len_from_args(args: impl IntoIterator<Item = String>) -> Option<u8> {
    let mut args = args.into_iter();
    let mut value = None;
    while let Some(arg) = args.next() {
        if arg == "--ip" {
            value = args.next();
        } else if let Some(v) = arg.strip_prefix("--ip=") {
            value = Some(v.to_string());
        }
    }
    parse_ipv4_prefix(&value?).ok().map(|(_, p)| p)
}

/// Parses `ADDR/PREFIX` (IPv4; the prefix defaults to 32 when absent).
pub fn parse_ipv4_prefix(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("--backend afxdp needs an IPv4 address, got `{addr}`"))?;
    let prefix = match prefix {
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= 32 => n,
            _ => return Err(format!("invalid prefix length `{p}`")),
        },
        None => 32,
    };
    Ok((addr, prefix))
}

/// Parses a list like `0,1,4-6` into numbers, in order, without duplicates.
pub fn parse_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let lo: u32 = lo
            .parse()
            .map_err(|_| format!("invalid list item `{item}`"))?;
        let hi: u32 = hi
            .parse()
            .map_err(|_| format!("invalid list item `{item}`"))?;
        if lo > hi || hi - lo > 1024 {
            return Err(format!("invalid range `{item}`"));
        }
        for n in lo..=hi {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("empty list `{s}`"));
    }
    Ok(out)
}

/// `--queues`: a plain number without comma or dash is a count; anything else a list.
pub fn parse_queues(s: &str) -> Result<Vec<u32>, String> {
    if !s.contains([',', '-']) {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("invalid queue count `{s}`"))?;
        if n == 0 || n > dataplane::xdp::MAX_QUEUES {
            return Err(format!(
                "queue count must be 1..={}",
                dataplane::xdp::MAX_QUEUES
            ));
        }
        return Ok((0..n).collect());
    }
    parse_list(s)
}

/// The stack's 128-bit secret (ISNs, SYN cookies, table hashing), from the OS.
fn secret() -> anyhow::Result<[u8; 16]> {
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("cannot read randomness for the stack's secret: {e}"))?;
    Ok(secret)
}

/// Whether the process has an effective uid of 0 (read from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(true)
}

/// Runs the AF_XDP backend until SIGINT/SIGTERM.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    if opts.ports.is_empty() {
        anyhow::bail!("--backend afxdp needs at least one --port");
    }
    if opts.ports.contains(&0) {
        anyhow::bail!("--backend afxdp needs explicit ports (port 0 is not supported)");
    }
    dataplane::sys::ifindex(&opts.iface)
        .map_err(|e| anyhow::Error::new(StartError::from_os("look up", &opts.iface, e)))?;
    if !is_root() {
        return Err(StartError::NoPrivileges {
            what: "load an XDP program and open AF_XDP sockets",
        }
        .into());
    }
    let queues = match &opts.queues {
        Some(q) => parse_queues(q).map_err(anyhow::Error::msg)?,
        None => {
            let n = dataplane::sys::channels(&opts.iface)
                .map(|c| c.rx_queues())
                .unwrap_or(1)
                .clamp(1, dataplane::xdp::MAX_QUEUES);
            (0..n).collect()
        }
    };
    let available = core_count();
    let cores: Vec<usize> = match &opts.cores {
        Some(c) => {
            let list = parse_list(c).map_err(anyhow::Error::msg)?;
            if list.len() < queues.len() {
                anyhow::bail!(
                    "--cores lists {} core(s) for {} queue(s)",
                    list.len(),
                    queues.len()
                );
            }
            list.into_iter().map(|c| c as usize).collect()
        }
        None => (0..queues.len()).map(|i| i % available).collect(),
    };
    let mac = match opts.mac {
        Some(mac) => mac,
        None => EthernetAddress(dataplane::sys::mac_address(&opts.iface).map_err(|e| {
            anyhow::Error::new(StartError::from_os("read the MAC of", &opts.iface, e))
        })?),
    };
    let secret = secret()?;

    let program = Arc::new(XdpProgram::attach(
        &opts.iface,
        &XdpConfig {
            ipv4: opts.addr,
            tcp_ports: Vec::new(),
            mode: XdpModeRequest::Auto,
        },
    )?);

    let mut shared = match &opts.websocket {
        Some(g) => Some(gateway::Shared::start(
            g.config.clone(),
            queues.len(),
            g.any_path,
        )?),
        None => None,
    };
    let stop_grace = shared.as_ref().map_or(STOP_GRACE, |s| {
        s.config.limits.shutdown_timeout() + Duration::from_secs(1)
    });

    let clock = Clock::new();
    let mut workers = Vec::new();
    let mut copy_modes = Vec::new();
    for (&queue, &core) in queues.iter().zip(&cores) {
        let mut iface = InterfaceConfig::new(mac, opts.addr, opts.prefix_len);
        iface.gateway = opts.gateway;
        let stack_cfg = StackConfig::new(iface, secret);
        let program = Arc::clone(&program);
        let name = opts.iface.clone();
        let app = opts.app;
        let ports = opts.ports.clone();
        let connect = if workers.is_empty() {
            opts.connect
        } else {
            None
        };
        let part = shared.as_mut().map(|s| s.part(workers.len()));
        let (mode_tx, mode_rx) = crossbeam_channel::bounded(1);
        let config = WorkerConfig {
            core: Some(core),
            stop_grace,
            clock,
            ..WorkerConfig::new(&format!("sluice-q{queue}"))
        };
        let handle = worker::spawn(config, move || {
            let device = XskDevice::open(&XskConfig::new(&name, queue), &program)?;
            let _ = mode_tx.send(device.copy_mode());
            let mut worker =
                StackWorker::new(Stack::new(stack_cfg), app, &ports).map_err(StartError::Config)?;
            worker.connect_to(connect);
            if let Some(part) = part {
                worker.serve_gateway(gateway::GatewayApp::new(part, &ports));
            }
            Ok((device, worker))
        })?;
        if let Ok(mode) = mode_rx.recv() {
            copy_modes.push(mode);
        }
        workers.push(handle);
    }

    let copy = if copy_modes
        .iter()
        .all(|m| *m == dataplane::CopyMode::ZeroCopy)
    {
        "zero-copy"
    } else {
        "copy"
    };
    let ports: Vec<String> = opts.ports.iter().map(u16::to_string).collect();
    let queue_list: Vec<String> = queues.iter().map(u32::to_string).collect();
    let app_name = match (&opts.websocket, opts.app) {
        (Some(g), _) => g.app_name,
        (None, TcpApp::Echo) => "tcp-echo",
        (None, TcpApp::Discard) => "tcp-discard",
        (None, TcpApp::Source) => "tcp-source",
    };
    let control = shared
        .as_ref()
        .and_then(|s| s.control)
        .map_or_else(String::new, |a| format!(" control={a}"));
    println!(
        "listening ip={} port={} ports={} backend=afxdp app={app_name} iface={} queues={} xdp={} mode={copy}{control}",
        opts.addr,
        opts.ports.first().copied().unwrap_or(0),
        ports.join(","),
        opts.iface,
        queue_list.join(","),
        program.mode(),
    );
    info!(
        ip = %opts.addr,
        ports = %ports.join(","),
        queues = %queue_list.join(","),
        xdp = %program.mode(),
        mode = copy,
        "listening"
    );

    let mut polls = 0u32;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        polls = polls.wrapping_add(1);
        if let (Some(shared), 0) = (shared.as_mut(), polls % 10) {
            if let Ok(c) = program.counters() {
                shared.record_xdp(c);
            }
        }
    }
    info!("stopping: draining connections");
    // Every worker starts draining at once; then wait for each.
    for w in &workers {
        let _ = w.control().send(worker::Control::Stop);
    }
    let mut failed = None;
    for w in workers {
        match w.join() {
            Ok(exit) => {
                let s = exit.handler.stack().counters();
                info!(
                    segments_in = s.segments_in,
                    segments_out = s.segments_out,
                    retransmits = s.conn.retransmits,
                    opened = s.opened,
                    time_wait = s.time_wait,
                    rx_frames = exit.stats.rx_frames,
                    tx_frames = exit.stats.tx_frames,
                    "worker stopped"
                );
            }
            Err(e) => failed = Some(e),
        }
    }
    if let Ok(c) = program.counters() {
        info!(
            redirected = c.redirected,
            passed = c.passed,
            dropped = c.dropped,
            "XDP counters"
        );
    }
    drop(program);
    if let Some(e) = failed {
        return Err(e).context("a worker failed");
    }
    info!("stopped");
    Ok(())
}

fn core_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parse_queues_count_expands() {
        assert_eq!(parse_queues("2").unwrap(), vec![0, 1]);
    }

    #[test]
    fn parse_queues_list_and_range_kept_in_order() {
        assert_eq!(parse_queues("3,0-1").unwrap(), vec![3, 0, 1]);
    }

    #[test]
    fn parse_queues_zero_or_garbage_rejected() {
        assert!(parse_queues("0").is_err());
        assert!(parse_queues("x").is_err());
        assert!(parse_queues("2-1").is_err());
    }

    #[test]
    fn prefix_len_from_args_both_spellings_found() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            prefix_len_from_args(args(&["sluice", "run", "--ip", "198.18.0.2/24"])),
            Some(24)
        );
        assert_eq!(prefix_len_from_args(args(&["--ip=10.0.0.1/8"])), Some(8));
        assert_eq!(prefix_len_from_args(args(&["--ip", "10.0.0.1"])), Some(32));
        assert_eq!(prefix_len_from_args(args(&["--port", "7"])), None);
    }

    #[test]
    fn parse_mac_colons_accepted_short_rejected() {
        assert_eq!(
            parse_mac("02:00:00:00:00:0a").unwrap(),
            EthernetAddress([2, 0, 0, 0, 0, 10])
        );
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:00:01").is_err());
    }
}
