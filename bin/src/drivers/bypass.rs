//! The kernel-bypass backends: one pinned worker per queue, each worker a [`StackDriver`]
//! (its own [`tcp::stack::Stack`]) serving the application, a TCP application ([`TcpApp`])
//! or the gateway / ws-echo, over that queue's device. The backends differ only in how the
//! devices are opened ([`Io`]):
//!
//! - AF_XDP (`--backend afxdp`): attach the XDP program (native, else generic) with a port
//!   filter of the listening ports and the active-open range, open one AF_XDP socket per
//!   queue (zero-copy, else copy);
//! - DPDK (`--backend dpdk`, cargo feature `dpdk`): start the EAL, the mbuf pool and the
//!   port with one queue pair per worker; each worker registers its thread and opens its
//!   queue pair (`dataplane::dpdk`).
//!
//! Then: wrap each device for `--pcap` ([`dataplane::PcapDevice`]) and, without a readable
//! RSS configuration on several queues, for steering ([`dataplane::SteerDevice`]), listen,
//! print one `listening` line on stdout. SIGINT or SIGTERM stops it: workers stop
//! accepting, close their connections and drain (bounded by a grace period); then the
//! sockets close and the XDP program detaches with its bpf_link, or the DPDK port stops and
//! closes, every mbuf is checked back in the pool and the EAL is released; exit 0.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dataplane::worker::{self, WorkerConfig};
use dataplane::{
    Clock, PcapDevice, PortChooser, StartError, SteerDevice, XdpConfig, XdpModeRequest, XdpProgram,
    XskConfig, XskDevice,
};
use tcp::iface::InterfaceConfig;
use tcp::stack::{Stack, StackConfig};
use tcp::wire::EthernetAddress;
use tracing::info;

use super::gateway;
use super::stack::StackDriver;
use crate::app::tcp::{Kind, TcpApp};
use crate::app::App;
use crate::metrics::Metrics;

/// Everything `sluice run --backend afxdp` (or `dpdk`) needs, as parsed from the command
/// line.
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
    /// The TCP application (when `websocket` is `None`).
    pub app: Kind,
    /// `--max-connections` of a TCP application (per worker).
    pub max_connections: usize,
    /// `--max-output-queue` of a TCP application.
    pub max_output: usize,
    /// TCP apps: abort connections idle this long (`None`: never).
    pub tcp_idle_timeout: Option<std::time::Duration>,
    /// Every worker also opens one connection here (from a local port whose answers reach
    /// its queue) and serves `app` on it.
    pub connect: Option<std::net::SocketAddrV4>,
    /// Idle backoff, stop grace, UMEM and ring sizes (`[dataplane]`, tuning flags).
    pub dataplane: crate::config::Dataplane,
    /// `--pcap FILE`: capture every frame (one file per queue when there are several,
    /// see [`pcap_path`]).
    pub pcap: Option<std::path::PathBuf>,
    /// Serve the WebSocket gateway or ws-echo instead of `app`.
    pub websocket: Option<gateway::GatewayOptions>,
    /// `--backend dpdk`: the DPDK port, queue count and EAL set-up (`iface` and `queues` are
    /// then unused; `cores` holds `[dpdk] lcores` or `--cores`). `None`: AF_XDP on `iface`.
    pub dpdk: Option<crate::config::Dpdk>,
}

impl Options {
    /// The backend's name as `sluice run --backend` spells it.
    pub fn backend(&self) -> &'static str {
        if self.dpdk.is_some() {
            "dpdk"
        } else {
            "afxdp"
        }
    }
}

/// The capture file of `queue`: `file` itself when it is the only queue, otherwise `file`
/// with `.qN` before its extension (`cap.pcap` -> `cap.q1.pcap`; `cap` -> `cap.q1`).
pub fn pcap_path(file: &std::path::Path, queue: u32, queues: usize) -> std::path::PathBuf {
    if queues <= 1 {
        return file.to_path_buf();
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match file.extension() {
        Some(ext) => format!("{stem}.q{queue}.{}", ext.to_string_lossy()),
        None => format!("{stem}.q{queue}"),
    };
    file.with_file_name(name)
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

/// Whether the XDP program redirects every TCP port of the stack's address
/// (`redirect_all_tcp`, evaluated once here at start, and logged). `auto`: RFC 9293
/// 3.10.7.1 wants an RST for a closed port; when the kernel does not own the address
/// nobody but Sluice can send it, so every port comes to Sluice; when the kernel owns it
/// (any interface of this network namespace), its sockets keep the other ports.
fn redirects_all_tcp(opts: &Options) -> bool {
    use crate::config::RedirectAllTcp;
    let setting = opts.dataplane.redirect_all_tcp;
    let mut why = String::new();
    let all = setting.redirects_all(|| match dataplane::sys::kernel_ipv4_owner(opts.addr) {
        Ok(Some(iface)) => {
            why = format!(
                "redirect_all_tcp=auto: the kernel owns {} on {iface}",
                opts.addr
            );
            true
        }
        Ok(None) => {
            why = format!(
                "redirect_all_tcp=auto: the kernel does not own {}",
                opts.addr
            );
            false
        }
        // Cannot tell: keep the port filter, the choice that never takes a port from a
        // kernel socket.
        Err(e) => {
            why = format!("redirect_all_tcp=auto: cannot list the kernel's addresses ({e})");
            true
        }
    });
    if setting != RedirectAllTcp::Auto {
        why = format!("redirect_all_tcp={all}");
    }
    let policy = if all { "all-ports" } else { "port-filter" };
    info!(tcp_policy = policy, reason = %why, "XDP TCP policy");
    all
}

/// Runs the AF_XDP or DPDK backend (see [`Options::dpdk`]) until SIGINT/SIGTERM.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let backend = opts.backend();
    if opts.ports.is_empty() {
        anyhow::bail!("--backend {backend} needs at least one --port");
    }
    if opts.ports.contains(&0) {
        anyhow::bail!("--backend {backend} needs explicit ports (port 0 is not supported)");
    }
    // Active opens: every worker may connect, from a local port whose answers reach its
    // own queue (docs/AFXDP.md, "RSS and source ports").
    let local_ports = {
        let (lo, hi) = StackConfig::new(
            InterfaceConfig::new(EthernetAddress([0; 6]), opts.addr, opts.prefix_len),
            [0; 16],
        )
        .ephemeral_ports;
        lo..=hi
    };
    let opened = match &opts.dpdk {
        None => open_xdp(opts, &local_ports)?,
        #[cfg(feature = "dpdk")]
        Some(d) => open_dpdk(opts, d)?,
        #[cfg(not(feature = "dpdk"))]
        Some(_) => anyhow::bail!(
            "--backend dpdk: this sluice was built without DPDK; rebuild with \
             `cargo build --release -p sluice --features dpdk` (needs apt libdpdk-dev)"
        ),
    };
    let Opened {
        queues,
        mac,
        rss,
        io,
    } = opened;
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
    let secret = secret()?;
    let mut steering = match (&rss, queues.len()) {
        (None, n) if n > 1 => dataplane::steer::group(n, opts.addr, local_ports.clone())
            .into_iter()
            .map(Some)
            .collect(),
        _ => Vec::new(),
    };
    steering.resize_with(queues.len(), || None);
    let clock = Clock::new();

    // One heartbeat per queue's worker: `/healthz` (gateway, ws-echo) reads them, and the
    // main loop below logs when one stalls or dies (every app). An idle worker beats once
    // per idle sleep, so the stall threshold is at least twice that sleep.
    let stall_after = opts
        .websocket
        .as_ref()
        .map_or_else(
            || crate::config::Control::default().worker_stall(),
            |g| g.config.control.worker_stall(),
        )
        .max(opts.dataplane.backoff().sleep * 2);
    let health = crate::control::health::Health::new(
        queues.iter().map(|q| format!("sluice-q{q}")).collect(),
        clock,
        stall_after,
    );
    let fault = crate::control::health::fault_from_env()?;
    let setup = Setup {
        queues,
        cores,
        mac,
        secret,
        local_ports,
        rss,
        steering,
        io,
        clock,
        health,
        fault,
    };
    match &opts.websocket {
        Some(g) => {
            let mut shared = gateway::Shared::start(
                g.config.clone(),
                setup.queues.len(),
                g.any_path,
                setup.health.clone(),
            )?;
            // The gateway flushes and closes with 1001 within its shutdown timeout: the
            // workers get at least that long (plus a margin) to drain.
            let shutdown = shared.config.limits.shutdown_timeout();
            let stop_grace = opts
                .dataplane
                .stop_grace()
                .max(shutdown + Duration::from_secs(1));
            let metrics = Arc::clone(&shared.metrics);
            let apps = (0..setup.queues.len())
                .map(|i| shared.part(i).into_worker())
                .collect();
            let control = shared.control;
            serve(
                opts,
                setup,
                apps,
                Workers {
                    name: g.app_name,
                    stop_grace,
                    shutdown,
                    metrics,
                    control,
                    shared: Some(&mut shared),
                },
                &stop,
            )
        }
        None => {
            let apps = (0..setup.queues.len())
                .map(|_| {
                    let app = TcpApp::new(opts.app, opts.max_connections, opts.max_output)
                        .with_idle_timeout(opts.tcp_idle_timeout);
                    (app, None)
                })
                .collect();
            serve(
                opts,
                setup,
                apps,
                Workers {
                    name: opts.app.name(),
                    stop_grace: opts.dataplane.stop_grace(),
                    shutdown: opts.dataplane.stop_grace(),
                    metrics: Arc::new(Metrics::new()),
                    control: None,
                    shared: None,
                },
                &stop,
            )
        }
    }
}

/// What opening a backend's packet I/O gives the workers.
struct Opened {
    /// Queue numbers, one worker each.
    queues: Vec<u32>,
    /// The stack's MAC address.
    mac: EthernetAddress,
    /// The NIC's RSS configuration, when it has a readable one.
    rss: Option<dataplane::RssTable>,
    /// The XDP program or the DPDK port.
    io: Io,
}

/// The backend-specific half of the packet I/O: what every worker's device is opened on.
#[derive(Debug)]
enum Io {
    /// AF_XDP sockets, fed by this XDP program.
    Xdp(Arc<XdpProgram>),
    /// DPDK queue pairs of this port; `tx_limit` frames at most queued per burst.
    #[cfg(feature = "dpdk")]
    Dpdk {
        port: Arc<dataplane::dpdk::Port>,
        tx_limit: usize,
    },
}

/// AF_XDP: checks the interface and privileges, reads queues, MAC and RSS, attaches the XDP
/// program with the port filter.
fn open_xdp(opts: &Options, local_ports: &std::ops::RangeInclusive<u16>) -> anyhow::Result<Opened> {
    dataplane::sys::ifindex(&opts.iface)
        .map_err(|e| anyhow::Error::new(StartError::from_os("look up", &opts.iface, e)))?;
    if !is_root() {
        return Err(StartError::NotRoot {
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
    let mac = match opts.mac {
        Some(mac) => mac,
        None => EthernetAddress(dataplane::sys::mac_address(&opts.iface).map_err(|e| {
            anyhow::Error::new(StartError::from_os("read the MAC of", &opts.iface, e))
        })?),
    };
    let rss = dataplane::sys::rss_config(&opts.iface).ok();

    // Every TCP port, or only Sluice's own (the kernel keeps the others); an empty list
    // redirects every port.
    let mut tcp_ports: Vec<_> = Vec::new();
    if !redirects_all_tcp(opts) {
        tcp_ports.extend(opts.ports.iter().map(|&p| p..=p));
        tcp_ports.push(local_ports.clone());
    }
    let program = Arc::new(XdpProgram::attach(
        &opts.iface,
        &XdpConfig {
            ipv4: opts.addr,
            tcp_ports,
            mode: XdpModeRequest::Auto,
        },
    )?);
    Ok(Opened {
        queues,
        mac,
        rss,
        io: Io::Xdp(program),
    })
}

/// DPDK: starts the EAL, the mbuf pool and the port (`--queues` queue pairs), reads its MAC
/// and RSS configuration.
#[cfg(feature = "dpdk")]
fn open_dpdk(opts: &Options, d: &crate::config::Dpdk) -> anyhow::Result<Opened> {
    use dataplane::dpdk::{Eal, Pool, Port, PortConfig};
    let spec = d.port.as_deref().ok_or_else(|| {
        anyhow::anyhow!("--backend dpdk needs --dpdk-port (or `port` in [dpdk] of --config)")
    })?;
    // `--queues` over `[dpdk] queues`, checked by `config::dpdk_for_run`.
    let queues = d.queues;
    let (name, added) = dpdk_port_args(spec);
    let mut eal = d.eal_args.clone();
    eal.extend(added);
    Eal::init(&eal)?;
    let mbufs = d.pool_size(u32::from(queues));
    let pool = Pool::create("sluice_mbufs", mbufs)?;
    let port = Port::open(
        &PortConfig {
            name: name.clone(),
            queues,
            rx_ring: d.rx_ring,
            tx_ring: d.tx_ring,
            promiscuous: d.promiscuous || opts.mac.is_some(),
        },
        Arc::clone(&pool),
    );
    let port = match port {
        Ok(port) => port,
        Err(e) => {
            // `open` closed the port again.
            release_dpdk(pool, "DPDK start failed");
            return Err(e.into());
        }
    };
    drop(pool);
    let mac = opts.mac.unwrap_or(EthernetAddress(port.mac()));
    let rss = port.rss();
    info!(
        port = %name,
        driver = port.driver(),
        queues,
        mbufs,
        rss = rss.is_some(),
        eal = %eal.join(" "),
        "DPDK port started"
    );
    Ok(Opened {
        queues: (0..u32::from(queues)).collect(),
        mac,
        rss,
        io: Io::Dpdk {
            port,
            tx_limit: usize::from(d.tx_ring),
        },
    })
}

/// The ethdev name of a `--dpdk-port` spec and the EAL arguments that make DPDK probe it:
/// a virtual device (`net_af_packet0,iface=eth1`: name `net_af_packet0`, `--vdev SPEC`) or a
/// PCI address (`3b:00.0` or `0000:3b:00.0`, devargs after a comma: name `0000:3b:00.0`,
/// `-a 0000:3b:00.0[,devargs]`).
pub fn dpdk_port_args(spec: &str) -> (String, Vec<String>) {
    let name = spec.split(',').next().unwrap_or(spec).trim().to_string();
    let is_pci = name.contains(':')
        && name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    if is_pci {
        let full = if name.matches(':').count() == 1 {
            format!("0000:{name}")
        } else {
            name
        };
        let allow = match spec.split_once(',') {
            Some((_, devargs)) => format!("{full},{devargs}"),
            None => full.clone(),
        };
        (full, vec!["-a".into(), allow])
    } else {
        (name, vec!["--vdev".into(), spec.to_string()])
    }
}

/// What the process set up before the workers start.
struct Setup {
    queues: Vec<u32>,
    cores: Vec<usize>,
    mac: EthernetAddress,
    secret: [u8; 16],
    local_ports: std::ops::RangeInclusive<u16>,
    rss: Option<dataplane::RssTable>,
    steering: Vec<Option<dataplane::steer::Steering>>,
    /// What the workers' devices are opened on.
    io: Io,
    /// The workers' one clock.
    clock: Clock,
    /// The workers' heartbeats (`/healthz`, and the stall log of the main loop).
    health: crate::control::health::Health,
    /// **Testing only**: the fault to inject into one worker.
    fault: Option<dataplane::Fault>,
}

/// How the workers of one application run.
struct Workers<'a> {
    /// The application's name in the `listening` line.
    name: &'static str,
    stop_grace: Duration,
    /// How long the application may take to finish its connections on a stop.
    shutdown: Duration,
    metrics: Arc<Metrics>,
    control: Option<std::net::SocketAddr>,
    /// The gateway's shared parts (for the XDP counters).
    shared: Option<&'a mut gateway::Shared>,
}

/// Spawns one pinned worker per queue, each serving its application from `apps`, prints
/// the `listening` line, and waits for a stop.
fn serve<A>(
    opts: &Options,
    setup: Setup,
    apps: Vec<(A, Option<crossbeam_channel::Receiver<A::Message>>)>,
    mut run: Workers<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<()>
where
    A: App + Send + std::fmt::Debug + 'static,
{
    let Setup {
        queues,
        cores,
        mac,
        secret,
        local_ports,
        rss,
        steering,
        io,
        clock,
        health,
        fault,
    } = setup;
    let stop_grace = run.stop_grace;
    let mut workers = Vec::new();
    let mut copy_modes = Vec::new();
    let mut apps = apps.into_iter();
    for (index, ((&queue, &core), steering)) in queues.iter().zip(&cores).zip(steering).enumerate()
    {
        let Some((app, rx)) = apps.next() else {
            anyhow::bail!("no application for queue {queue}");
        };
        let metrics = Arc::clone(&run.metrics);
        let shutdown = run.shutdown;
        let mut iface = InterfaceConfig::new(mac, opts.addr, opts.prefix_len);
        iface.gateway = opts.gateway;
        let mut stack_cfg = StackConfig::new(iface, secret);
        // The connection table holds every state (TIME_WAIT too): room for the
        // application's bound and a quarter more, never below the engine's default.
        let app_max = opts.max_connections.max(
            opts.websocket
                .as_ref()
                .map_or(0, |g| g.config.limits.max_connections),
        );
        stack_cfg.max_connections = stack_cfg
            .max_connections
            .max(app_max.saturating_add(app_max / 4));
        let ports = opts.ports.clone();
        let chooser = match &rss {
            Some(table) => PortChooser::Toeplitz {
                table: table.clone(),
                queue,
            },
            None => PortChooser::Partition {
                queue: index as u32,
                queues: queues.len() as u32,
            },
        };
        let connect = opts.connect.map(|remote| {
            // Start somewhere different on every run, so a restart does not meet its
            // previous connections in the peer's TIME_WAIT.
            let start = u16::from_be_bytes([secret[0], secret[1]]);
            let port = chooser.choose(
                opts.addr,
                *remote.ip(),
                remote.port(),
                local_ports.clone(),
                start,
                |p| !opts.ports.contains(&p),
            );
            (remote, port)
        });
        let config = WorkerConfig {
            core: Some(core),
            stop_grace,
            backoff: opts.dataplane.backoff(),
            clock,
            heartbeat: Some((Arc::clone(&health.beats), index)),
            fault: fault.filter(|f| f.worker == index),
            ..WorkerConfig::new(&format!("sluice-q{queue}"))
        };
        let pcap = opts
            .pcap
            .as_deref()
            .map(|file| pcap_path(file, queue, queues.len()));
        let part = WorkerPart {
            pcap,
            steering,
            stack: stack_cfg,
            app,
            rx,
            ports,
            index,
            metrics,
            clock,
            shutdown,
            connect,
        };
        let handle = match &io {
            Io::Xdp(program) => {
                let xsk = XskConfig {
                    ring_size: opts.dataplane.ring_size,
                    frame_size: opts.dataplane.frame_size,
                    rx_frames: opts.dataplane.umem_frames,
                    tx_frames: opts.dataplane.umem_frames,
                    ..XskConfig::new(&opts.iface, queue)
                };
                let program = Arc::clone(program);
                let (mode_tx, mode_rx) = crossbeam_channel::bounded(1);
                let handle = start_worker(config, part, move || {
                    let device = XskDevice::open(&xsk, &program)?;
                    let _ = mode_tx.send(device.copy_mode());
                    Ok(device)
                })?;
                if let Ok(mode) = mode_rx.recv() {
                    copy_modes.push(mode);
                }
                handle
            }
            #[cfg(feature = "dpdk")]
            Io::Dpdk { port, tx_limit } => {
                let (port, tx_limit) = (Arc::clone(port), *tx_limit);
                let queue = u16::try_from(queue).map_err(|_| anyhow::anyhow!("queue {queue}"))?;
                start_worker(config, part, move || {
                    Ok(dataplane::dpdk::DpdkDevice::open(port, queue, tx_limit)?)
                })?
            }
        };
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
    let app_name = run.name;
    let control = run
        .control
        .map_or_else(String::new, |a| format!(" control={a}"));
    // What the line says about the I/O: the interface and XDP mode, or the DPDK port.
    let io_line = match &io {
        Io::Xdp(program) => format!(
            "iface={} queues={} xdp={} mode={copy}",
            opts.iface,
            queue_list.join(","),
            program.mode()
        ),
        #[cfg(feature = "dpdk")]
        Io::Dpdk { port, .. } => format!(
            "dpdk_port={} driver={} queues={} rss={} mode=zero-copy",
            port.name(),
            port.driver(),
            queue_list.join(","),
            if port.rss_enabled() { "on" } else { "off" }
        ),
    };
    println!(
        "listening ip={} port={} ports={} backend={} app={app_name} {io_line}{control}",
        opts.addr,
        opts.ports.first().copied().unwrap_or(0),
        ports.join(","),
        opts.backend(),
    );
    info!(
        ip = %opts.addr,
        ports = %ports.join(","),
        backend = opts.backend(),
        io = %io_line,
        "listening"
    );

    let mut polls = 0u32;
    let mut unhealthy = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        polls = polls.wrapping_add(1);
        if let (Some(shared), 0) = (run.shared.as_deref_mut(), polls % 10) {
            match &io {
                Io::Xdp(program) => {
                    if let Ok(c) = program.counters() {
                        shared.record_xdp(c);
                    }
                }
                #[cfg(feature = "dpdk")]
                Io::Dpdk { port, .. } => shared.record_dpdk(&dpdk_counters(port)),
            }
        }
        // Log when `/healthz` turns (the report names the worker and since when).
        if polls.is_multiple_of(10) {
            let problems = health.problems();
            if problems.is_some() != unhealthy {
                unhealthy = problems.is_some();
                match problems {
                    Some(p) => {
                        tracing::error!(report = %p.trim_end().replace('\n', "; "), "workers unhealthy")
                    }
                    None => info!("every worker polling again"),
                }
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
                    fast_retransmits = s.conn.fast_retransmits,
                    sack_recoveries = s.conn.sack_recoveries,
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
    match io {
        Io::Xdp(program) => {
            if let Ok(c) = program.counters() {
                info!(
                    redirected = c.redirected,
                    passed = c.passed,
                    dropped = c.dropped,
                    "XDP counters"
                );
            }
            drop(program);
        }
        #[cfg(feature = "dpdk")]
        Io::Dpdk { port, .. } => {
            if let Some(s) = port.stats() {
                info!(
                    ipackets = s.ipackets,
                    opackets = s.opackets,
                    imissed = s.imissed,
                    ierrors = s.ierrors,
                    oerrors = s.oerrors,
                    rx_nombuf = s.rx_nombuf,
                    "DPDK port counters"
                );
            }
            // The workers are joined: this is the last owner. Stopping the port returns
            // the mbufs its queues held.
            let pool = Arc::clone(port.pool());
            drop(port);
            release_dpdk(pool, "DPDK port closed");
        }
    }
    if let Some(e) = failed {
        return Err(e).context("a worker failed");
    }
    info!("stopped");
    Ok(())
}

/// After the port is closed (at stop, or when its start failed): logs whether every mbuf
/// is back in `pool` (`WHEN, every mbuf returned`, else an error naming how many are
/// missing), frees the pool (its last owner) and releases the EAL.
#[cfg(feature = "dpdk")]
fn release_dpdk(pool: Arc<dataplane::dpdk::Pool>, when: &str) {
    match pool.in_use() {
        0 => info!(mbufs = pool.size(), "{when}, every mbuf returned"),
        n => tracing::error!(in_use = n, mbufs = pool.size(), "{when} with mbufs missing"),
    }
    drop(pool);
    dataplane::dpdk::Eal::cleanup();
}

/// The port's counters for `/metrics`: `rte_eth_stats` by field name, then the driver's
/// extended statistics as `xstat_NAME`.
#[cfg(feature = "dpdk")]
fn dpdk_counters(port: &dataplane::dpdk::Port) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Some(s) = port.stats() {
        for (name, v) in [
            ("ipackets", s.ipackets),
            ("opackets", s.opackets),
            ("ibytes", s.ibytes),
            ("obytes", s.obytes),
            ("imissed", s.imissed),
            ("ierrors", s.ierrors),
            ("oerrors", s.oerrors),
            ("rx_nombuf", s.rx_nombuf),
        ] {
            out.push((name.to_string(), v));
        }
    }
    out.extend(
        port.xstats()
            .into_iter()
            .map(|(name, v)| (format!("xstat_{name}"), v)),
    );
    out
}

/// The parts of one worker that do not depend on the device kind.
struct WorkerPart<A: App> {
    pcap: Option<std::path::PathBuf>,
    steering: Option<dataplane::steer::Steering>,
    stack: StackConfig,
    app: A,
    rx: Option<crossbeam_channel::Receiver<A::Message>>,
    ports: Vec<u16>,
    index: usize,
    metrics: Arc<Metrics>,
    clock: Clock,
    shutdown: Duration,
    connect: Option<(std::net::SocketAddrV4, Option<u16>)>,
}

/// Spawns one pinned worker: on its own thread, `open` gives the device, wrapped for
/// `--pcap` and software steering, serving a [`StackDriver`] of `part`'s application.
fn start_worker<A, D, O>(
    config: WorkerConfig,
    part: WorkerPart<A>,
    open: O,
) -> Result<worker::WorkerHandle<StackDriver<A>>, StartError>
where
    A: App + Send + std::fmt::Debug + 'static,
    D: dataplane::Device + 'static,
    O: FnOnce() -> Result<D, StartError> + Send + 'static,
{
    worker::spawn(config, move || {
        let WorkerPart {
            pcap,
            steering,
            stack,
            app,
            rx,
            ports,
            index,
            metrics,
            clock,
            shutdown,
            connect,
        } = part;
        let device = open()?;
        let device = match pcap {
            None => PcapDevice::passthrough(device),
            Some(path) => PcapDevice::create(device, &path).map_err(|e| StartError::Os {
                what: "create the --pcap file",
                source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            })?,
        };
        let device = SteerDevice::new(device, steering);
        let mut worker = StackDriver::new(Stack::new(stack), app, rx, &ports)
            .map_err(StartError::Config)?
            .with_metrics(index, metrics)
            .with_clock(clock)
            .with_shutdown_timeout(shutdown);
        if let Some((remote, port)) = connect {
            worker.connect_to(remote, port);
        }
        Ok((device, worker))
    })
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
    fn pcap_path_one_queue_as_given_several_suffixed() {
        use std::path::Path;
        assert_eq!(
            pcap_path(Path::new("/t/c.pcap"), 0, 1),
            Path::new("/t/c.pcap")
        );
        assert_eq!(
            pcap_path(Path::new("/t/c.pcap"), 1, 2),
            Path::new("/t/c.q1.pcap")
        );
        assert_eq!(pcap_path(Path::new("cap"), 3, 4), Path::new("cap.q3"));
    }

    #[test]
    fn dpdk_port_args_vdev_or_pci_allow_listed() {
        assert_eq!(
            dpdk_port_args("net_af_packet0,iface=eth1,qpairs=2"),
            (
                "net_af_packet0".to_string(),
                vec![
                    "--vdev".to_string(),
                    "net_af_packet0,iface=eth1,qpairs=2".to_string()
                ]
            )
        );
        assert_eq!(
            dpdk_port_args("3b:00.0"),
            (
                "0000:3b:00.0".to_string(),
                vec!["-a".to_string(), "0000:3b:00.0".to_string()]
            )
        );
        assert_eq!(
            dpdk_port_args("0000:3b:00.1,rxq_cqe_comp_en=0"),
            (
                "0000:3b:00.1".to_string(),
                vec![
                    "-a".to_string(),
                    "0000:3b:00.1,rxq_cqe_comp_en=0".to_string()
                ]
            )
        );
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
