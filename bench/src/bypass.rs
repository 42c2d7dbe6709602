//! `sluice-load bypass`: the load generator's connections on Sluice's own TCP/IP stack over
//! AF_XDP, so that neither end of a benchmark goes through the kernel's socket layer.
//!
//! One pinned worker (`dataplane::worker`) busy-polls one AF_XDP queue of the client's
//! interface; Sluice's XDP program steers to it only ARP and ICMP for the client's own
//! address and TCP to the client's local ports. The worker runs Sluice's stack driver
//! ([`sluice::drivers::stack::StackDriver`]) with a client application, [`LoadApp`]: the
//! driver makes every connection an active open and hands each established one to the
//! application as it hands an accepted one to a server.
//!
//! The application speaks exactly as the kernel-socket generator does: the same
//! per-connection engine (`client::Conn`: WebSocket upgrade and framing through the
//! generator's own codec, stamped payloads, every echoed byte compared), closed loop with
//! `pipeline` messages in flight per connection. Latency runs from the moment a message is
//! written into the connection's send buffer to the moment its whole echo has been
//! received and checked, both read from the monotonic clock (nanoseconds) on the worker's
//! core; the kernel generator reads the same two moments around its `write` and `read`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dataplane::worker::{self, WorkerConfig};
use dataplane::{Backoff, Clock, StartError, XdpConfig, XdpModeRequest, XdpProgram};
use dataplane::{XskConfig, XskDevice};
use rand::{Rng, RngCore};
use sluice::app::{App, ConnId, Refusal, Tx};
use sluice::drivers::stack::StackDriver;
use tcp::iface::InterfaceConfig;
use tcp::stack::{Stack, StackConfig};
use tcp::wire::EthernetAddress;

use crate::client::{Conn, ConnError, Ctx, Phase};
use crate::report::{ErrorKind, Report};
use crate::settings::{Mode, Proto, Settings};
use crate::wsframe::{self, Opcode};

/// Where the bypass generator's stack lives.
#[derive(Debug, Clone)]
pub struct BypassOptions {
    /// The client's interface (an AF_XDP socket on its queue `queue`).
    pub iface: String,
    /// The client stack's own IPv4 address (not the kernel's address of the interface:
    /// the XDP program takes ARP, ICMP and TCP for it from the kernel).
    pub addr: Ipv4Addr,
    /// Prefix length of the on-link subnet.
    pub prefix_len: u8,
    /// Default gateway, for a target off the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The receive queue to serve (the lab's veth has one).
    pub queue: u32,
}

/// How far the run has got, shared between the worker and the thread that waits for it.
#[derive(Debug, Default)]
struct Progress {
    /// When the load started (every connection open, or the connect timeout passed).
    start: OnceLock<Instant>,
    /// The drain is over: the worker may be stopped.
    done: AtomicBool,
}

/// Where [`LoadApp`] is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opening connections (and upgrading them) until every one is open or the connect
    /// timeout passes.
    Connecting,
    /// Sending (warm-up, then the measured window).
    Running,
    /// The window has closed: waiting for the replies still in flight.
    Draining { until: Instant },
    /// Over: the statistics are final.
    Done,
}

/// The load generator as a Sluice application: one [`Conn`] per established connection.
struct LoadApp {
    ctx: Ctx,
    host: String,
    conns: Vec<Option<Conn>>,
    /// Connections handed in so far (the stamp id of the next one).
    accepted: u32,
    /// Connections the run asked for.
    expected: usize,
    /// Connections that reached the open state.
    open: usize,
    stage: Stage,
    created: Instant,
    connect_timeout: Duration,
    warmup: Duration,
    duration: Duration,
    drain: Duration,
    /// Connections with output queued outside a receive (load start, close).
    dirty: Vec<ConnId>,
    /// The engine's clock at the last check and the wall instant it stood for: the next
    /// deadline in the engine's time (for [`App::poll_timeout`]).
    next_check: tcp::Instant,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for LoadApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadApp")
            .field("expected", &self.expected)
            .field("open", &self.open)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl LoadApp {
    fn new(settings: &Settings, progress: Arc<Progress>) -> LoadApp {
        LoadApp {
            ctx: Ctx::new(settings, None, settings.connections as u64),
            host: settings.host.clone(),
            conns: Vec::new(),
            accepted: 0,
            expected: settings.connections,
            open: 0,
            stage: Stage::Connecting,
            created: Instant::now(),
            connect_timeout: Duration::from_secs_f64(settings.connect_timeout_s),
            warmup: settings.warmup(),
            duration: settings.duration(),
            drain: Duration::from_secs_f64(settings.drain_timeout_s),
            dirty: Vec::new(),
            next_check: tcp::Instant::ZERO,
            progress,
        }
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id).and_then(Option::as_mut)
    }

    /// Ends connection `id` with a counted failure (the driver then closes it).
    fn fail(&mut self, id: ConnId, err: ConnError) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if conn.phase == Phase::Failed {
            return;
        }
        if conn.closing && err.kind == ErrorKind::PeerClosed {
            return;
        }
        conn.phase = Phase::Failed;
        conn.inflight.clear();
        conn.wbuf.clear();
        conn.wpos = 0;
        self.ctx
            .stats
            .error(err.kind, format!("connection {}: {}", conn.id, err.msg));
    }

    /// Counts `id` open, and starts the load once every connection is.
    fn opened(&mut self, id: ConnId) {
        self.open += 1;
        self.ctx.stats.connected += 1;
        if self.stage == Stage::Running {
            // Late (after the connect timeout started the load): join in.
            let now = Instant::now();
            if let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) {
                for _ in 0..self.ctx.pipeline {
                    conn.send_one(&mut self.ctx, now);
                }
            }
        } else if self.open == self.expected {
            self.start();
        }
    }

    /// Every open connection sends its first `pipeline` messages.
    fn start(&mut self) {
        let now = Instant::now();
        let t0 = *self.progress.start.get_or_init(|| now);
        self.ctx.measure_start = t0 + self.warmup;
        self.ctx.measure_end = self.ctx.measure_start + self.duration;
        self.ctx.sending = true;
        self.stage = Stage::Running;
        for (id, slot) in self.conns.iter_mut().enumerate() {
            let Some(conn) = slot.as_mut() else { continue };
            if conn.phase != Phase::Open {
                continue;
            }
            for _ in 0..self.ctx.pipeline {
                conn.send_one(&mut self.ctx, now);
            }
            self.dirty.push(id);
        }
        self.next_check = tcp::Instant::ZERO;
    }

    /// The run is over: what is still in flight is unanswered.
    fn finish(&mut self) {
        for conn in self.conns.iter().flatten() {
            if conn.phase == Phase::Open {
                self.ctx.stats.unanswered += conn.inflight.len() as u64;
            }
        }
        let missing = self.expected.saturating_sub(self.accepted as usize);
        for _ in 0..missing {
            self.ctx.stats.error(
                ErrorKind::ConnectTimeout,
                "connect not done in time".to_string(),
            );
        }
        self.stage = Stage::Done;
        self.progress.done.store(true, Ordering::Release);
    }

    /// Writes `id`'s queued output into `tx`.
    fn write_out<T: Tx>(conn: &mut Conn, tx: &mut T) {
        if conn.pending().is_empty() {
            return;
        }
        let n = tx.write(conn.pending());
        conn.wrote(n);
    }
}

impl App for LoadApp {
    type Message = ();

    fn accept(&mut self, id: ConnId, peer: SocketAddr, _now: tcp::Instant) -> Result<(), Refusal> {
        let _ = peer;
        if self.stage == Stage::Done || self.accepted as usize >= self.expected {
            return Err(Refusal::MaxConnections);
        }
        let mut conn = Conn::new(self.accepted, u64::from(self.accepted), self.ctx.pipeline);
        self.accepted += 1;
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        let result = conn.connected(&mut self.ctx, &self.host);
        if let Some(slot) = self.conns.get_mut(id) {
            *slot = Some(conn);
        }
        match result {
            Ok(()) => {
                if self.conn(id).is_some_and(|c| c.phase == Phase::Open) {
                    self.opened(id);
                }
            }
            Err(e) => self.fail(id, e),
        }
        Ok(())
    }

    fn remove(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::take) else {
            return;
        };
        if conn.phase != Phase::Failed && !conn.closing {
            self.ctx.stats.unanswered += conn.inflight.len() as u64;
            self.ctx.stats.error(
                ErrorKind::Reset,
                format!("connection {}: reset or timed out", conn.id),
            );
        }
    }

    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, _now: tcp::Instant) {
        let now = Instant::now();
        let ctx = &mut self.ctx;
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let was_open = conn.phase == Phase::Open;
        let result = conn.feed(ctx, data, now);
        let is_open = conn.phase == Phase::Open;
        if result.is_ok() {
            Self::write_out(conn, tx);
        }
        if let Err(e) = result {
            self.fail(id, e);
            return;
        }
        if !was_open && is_open {
            self.opened(id);
            self.dirty.push(id);
        }
        if let Stage::Draining { .. } = self.stage {
            // The check for the end of the drain runs after this batch.
            self.next_check = tcp::Instant::ZERO;
        }
    }

    fn peer_closed(&mut self, id: ConnId) {
        self.fail(
            id,
            ConnError::new(ErrorKind::PeerClosed, "peer closed (FIN)"),
        );
    }

    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        if let Some(conn) = self.conn(id) {
            Self::write_out(conn, tx);
        }
    }

    fn wants_read(&self, id: ConnId) -> bool {
        self.conns
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.phase != Phase::Failed)
    }

    fn is_finished(&self, id: ConnId) -> bool {
        self.conns
            .get(id)
            .and_then(Option::as_ref)
            .is_none_or(|c| c.phase == Phase::Failed || (c.closing && c.pending().is_empty()))
    }

    fn settled(&self, id: ConnId) -> bool {
        self.conns
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.phase != Phase::Failed && !c.closing && c.pending().is_empty())
    }

    fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        out.append(&mut self.dirty);
    }

    fn poll_timeout(&self) -> Option<tcp::Instant> {
        (self.stage != Stage::Done).then_some(self.next_check)
    }

    fn handle_timeout(&mut self, now: tcp::Instant, expired: &mut Vec<ConnId>) {
        let wall = Instant::now();
        let deadline = match self.stage {
            Stage::Connecting => {
                let deadline = self.created + self.connect_timeout;
                if wall < deadline {
                    deadline
                } else {
                    // Whatever is still upgrading has run out of time.
                    for id in 0..self.conns.len() {
                        if self.conn(id).is_some_and(|c| c.phase != Phase::Open) {
                            self.fail(
                                id,
                                ConnError::new(
                                    ErrorKind::ConnectTimeout,
                                    "upgrade not done in time",
                                ),
                            );
                            expired.push(id);
                        }
                    }
                    self.start();
                    self.ctx.measure_end
                }
            }
            Stage::Running if wall < self.ctx.measure_end => self.ctx.measure_end,
            Stage::Running => {
                self.ctx.sending = false;
                let until = wall + self.drain;
                self.stage = Stage::Draining { until };
                // Check after every batch from here: the drain ends with the last reply.
                wall
            }
            Stage::Draining { until } => {
                let idle = self
                    .conns
                    .iter()
                    .flatten()
                    .all(|c| c.phase != Phase::Open || c.inflight.is_empty());
                if idle || wall >= until {
                    self.finish();
                }
                wall
            }
            Stage::Done => wall,
        };
        let wait = deadline.saturating_duration_since(wall);
        self.next_check = now + wait;
    }

    fn shutdown(&mut self, _now: tcp::Instant, _deadline: tcp::Instant) {
        if self.stage != Stage::Done {
            self.finish();
        }
        for (id, slot) in self.conns.iter_mut().enumerate() {
            let Some(conn) = slot.as_mut() else { continue };
            if conn.phase != Phase::Open || conn.closing {
                continue;
            }
            conn.closing = true;
            if self.ctx.proto == Proto::Ws {
                // RFC 6455 5.5.1: start the closing handshake with a Close frame (1000).
                let m: [u8; 4] = self.ctx.rng.gen();
                wsframe::write_frame(
                    &mut conn.wbuf,
                    Opcode::Close,
                    Some(m),
                    &1000u16.to_be_bytes(),
                );
            }
            self.dirty.push(id);
        }
    }

    fn live(&self) -> usize {
        self.conns.iter().flatten().count()
    }
}

/// Runs the load of `settings` from a bypass stack on `opts`: one AF_XDP worker, pinned
/// to the first CPU of `settings.pin`, always busy-polling. Closed loop, plain WebSocket
/// or TCP, one thread; the target must be IPv4.
pub fn run(settings: &Settings, opts: &BypassOptions) -> anyhow::Result<Report> {
    let targets = check(settings)?;
    let mac = dataplane::sys::mac_address(&opts.iface)
        .map_err(|e| anyhow::Error::new(StartError::from_os("read the MAC of", &opts.iface, e)))?;
    let mut iface = InterfaceConfig::new(EthernetAddress(mac), opts.addr, opts.prefix_len);
    iface.gateway = opts.gateway;
    let stack_cfg = stack_config(iface, targets.len());
    let (lo, hi) = stack_cfg.ephemeral_ports;
    let program = Arc::new(XdpProgram::attach(
        &opts.iface,
        &XdpConfig {
            ipv4: opts.addr,
            tcp_ports: vec![lo..=hi],
            mode: XdpModeRequest::Auto,
        },
    )?);
    let xsk = XskConfig::new(&opts.iface, opts.queue);
    let worker_program = Arc::clone(&program);
    let report = run_with(settings, targets, stack_cfg, move || {
        XskDevice::open(&xsk, &worker_program)
    });
    // The worker is gone: detach the program.
    drop(program);
    report
}

/// What the bypass generator runs: the settings it supports, and connection i's target.
fn check(settings: &Settings) -> anyhow::Result<Vec<SocketAddrV4>> {
    settings.validate()?;
    if settings.tls.is_some() {
        anyhow::bail!("bypass: --tls is not supported (plain ws and tcp only)");
    }
    if settings.mode != Mode::Closed {
        anyhow::bail!("bypass: closed loop only (--mode closed)");
    }
    if settings.threads != 1 {
        anyhow::bail!("bypass: one worker (-t 1) on one queue");
    }
    (0..settings.connections)
        .map(
            |i| match settings.target_of(u32::try_from(i).unwrap_or(u32::MAX)) {
                SocketAddr::V4(a) => Ok(a),
                SocketAddr::V6(a) => Err(anyhow::anyhow!("bypass: IPv4 targets only ({a})")),
            },
        )
        .collect()
}

/// The client stack on `iface`, with room for `connections`.
fn stack_config(iface: InterfaceConfig, connections: usize) -> StackConfig {
    let mut secret = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut secret);
    let mut cfg = StackConfig::new(iface, secret);
    cfg.max_connections = cfg.max_connections.max(connections.saturating_mul(2));
    cfg
}

/// [`run`] on the device `open` gives (on the worker's thread), with the stack
/// `stack_cfg`; connection i goes to `targets[i]`.
fn run_with<D, O>(
    settings: &Settings,
    targets: Vec<SocketAddrV4>,
    stack_cfg: StackConfig,
    open: O,
) -> anyhow::Result<Report>
where
    D: dataplane::Device + 'static,
    O: FnOnce() -> Result<D, StartError> + Send + 'static,
{
    let n = targets.len();
    let (lo, hi) = stack_cfg.ephemeral_ports;
    let span = usize::from(hi.saturating_sub(lo)) + 1;
    if n > span {
        anyhow::bail!("bypass: at most {span} connections (the stack's ephemeral ports)");
    }
    // Local ports from a random start, in order, so a rerun does not meet its previous
    // connections in the server's TIME_WAIT.
    let start = rand::thread_rng().gen_range(0..=span - n);
    let progress = Arc::new(Progress::default());
    let app = LoadApp::new(settings, Arc::clone(&progress));
    let config = WorkerConfig {
        core: settings.pin.first().copied(),
        // Busy-poll always: never yield or sleep between batches.
        backoff: Backoff {
            spin: u32::MAX,
            yields: 0,
            sleep: Duration::from_millis(1),
        },
        clock: Clock::new(),
        stop_grace: Duration::from_secs(2),
        ..WorkerConfig::new("sluice-load-bypass")
    };
    let handle = worker::spawn(config, move || {
        let device = open()?;
        let mut driver =
            StackDriver::new(Stack::new(stack_cfg), app, None, &[]).map_err(StartError::Config)?;
        for (i, remote) in targets.into_iter().enumerate() {
            let port = u16::try_from(usize::from(lo) + start + i).unwrap_or(hi);
            driver.connect_to(remote, Some(port));
        }
        Ok((device, driver))
    })
    .context("starting the bypass worker")?;
    let cpu_busy = crate::client::sample_cpu_window(settings, &progress.start, || {
        progress.done.load(Ordering::Acquire)
    });
    let limit = Duration::from_secs_f64(
        settings.connect_timeout_s
            + settings.warmup_s
            + settings.duration_s
            + settings.drain_timeout_s,
    ) + Duration::from_secs(5);
    let began = Instant::now();
    while !progress.done.load(Ordering::Acquire) && began.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut exit = handle.stop().context("the bypass worker failed")?;
    let app = exit.handler.app_mut();
    if app.stage != Stage::Done {
        app.finish();
    }
    let stats = std::mem::take(&mut app.ctx.stats);
    drop(exit);
    let mut spinning = settings.clone();
    spinning.spin = true;
    let mut report = Report::from_stats("bypass", &spinning, vec![stats]);
    report.cpu_busy = cpu_busy;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    //! The bypass generator against Sluice's own servers over an in-memory link: two
    //! stack drivers, each on its own spinning worker thread.

    use super::*;
    use dataplane::{MemConfig, MemDevice};
    use sluice::app::tcp::{Kind, TcpApp};
    use std::sync::Mutex;

    /// Two spinning workers per test: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);

    fn iface(last: u8, addr: Ipv4Addr) -> InterfaceConfig {
        InterfaceConfig::new(EthernetAddress([2, 0, 0, 0, 0, last]), addr, 24)
    }

    /// Serves `app` on port 7 of the server end of a fresh link; returns the client end.
    fn serve<A>(
        app: A,
        rx: Option<crossbeam_channel::Receiver<A::Message>>,
    ) -> (MemDevice, dataplane::WorkerHandle<StackDriver<A>>)
    where
        A: App + Send + std::fmt::Debug + 'static,
    {
        let (client, server) = MemDevice::pair(MemConfig::default());
        let cfg = stack_config(iface(2, SERVER), 16);
        let handle = worker::spawn(WorkerConfig::new("test-server"), move || {
            let driver =
                StackDriver::new(Stack::new(cfg), app, rx, &[7]).map_err(StartError::Config)?;
            Ok((server, driver))
        })
        .unwrap();
        (client, handle)
    }

    fn settings(proto: Proto, connections: usize, size: usize, pipeline: usize) -> Settings {
        let mut s = Settings::new(SocketAddr::V4(SocketAddrV4::new(SERVER, 7)));
        s.host = "198.18.0.2:7".to_string();
        s.proto = proto;
        s.connections = connections;
        s.message_size = size;
        s.pipeline = pipeline;
        s.warmup_s = 0.1;
        s.duration_s = 0.4;
        s
    }

    fn load(s: &Settings, client: MemDevice) -> Report {
        let targets = check(s).unwrap();
        let cfg = stack_config(iface(5, CLIENT), targets.len());
        run_with(s, targets, cfg, move || Ok(client)).unwrap()
    }

    #[test]
    fn tcp_echo_every_reply_checked_none_lost() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (client, server) = serve(TcpApp::new(Kind::Echo, 100, 1 << 20), None);
        // Messages of several segments each, several in flight on every connection.
        let s = settings(Proto::Tcp, 4, 3000, 4);
        let r = load(&s, client);
        server.stop().unwrap();
        assert!(r.is_ok(), "{}", r.human());
        assert_eq!(r.connected, 4);
        assert!(r.messages > 100, "{}", r.human());
        assert_eq!(r.sent, r.replies, "{}", r.human());
        assert_eq!(r.unanswered, 0);
        assert_eq!(r.kind, "bypass");
        assert_eq!(r.client_wait, "spin");
    }

    #[test]
    fn ws_echo_upgraded_every_reply_checked_closed_with_1000() {
        use sluice::config::{Config, Route, RouteKind};
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut config = Config::default();
        config.listen.ports = vec![7];
        config.control.enabled = false;
        config.routes = vec![Route {
            path: "/".to_string(),
            kind: RouteKind::Echo,
            compression: false,
            ..Route::default()
        }];
        let health = sluice::control::health::Health::new(
            vec!["q0".to_string()],
            Clock::new(),
            config.control.worker_stall(),
        );
        let mut shared = sluice::drivers::gateway::Shared::start(config, 1, true, health).unwrap();
        let (worker, rx) = shared.part(0).into_worker();
        let (client, server) = serve(worker, rx);
        let s = settings(Proto::Ws, 3, 200, 2);
        let r = load(&s, client);
        let exit = server.stop().unwrap();
        assert!(r.is_ok(), "{}", r.human());
        assert_eq!(r.connected, 3);
        assert!(r.messages > 100, "{}", r.human());
        assert_eq!(r.sent, r.replies);
        // The generator closed every connection (Close 1000, then FIN): none left open.
        assert_eq!(exit.handler.app().live(), 0);
    }

    #[test]
    fn unasked_bytes_are_an_echo_mismatch() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A source server sends a pattern nobody asked for: not the echo of a message.
        let (client, server) = serve(TcpApp::new(Kind::Source, 100, 1 << 20), None);
        let s = settings(Proto::Tcp, 1, 64, 1);
        let r = load(&s, client);
        server.stop().unwrap();
        assert!(!r.is_ok());
        assert!(
            r.errors.get("echo_mismatch").is_some_and(|&n| n >= 1),
            "{}",
            r.human()
        );
    }

    #[test]
    fn nobody_listening_connect_timeout_counted() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (client, server) = serve(TcpApp::new(Kind::Echo, 100, 1 << 20), None);
        let mut s = settings(Proto::Tcp, 2, 64, 1);
        s.target = SocketAddr::V4(SocketAddrV4::new(SERVER, 8));
        s.connect_timeout_s = 0.3;
        let r = load(&s, client);
        server.stop().unwrap();
        assert_eq!(r.connected, 0);
        assert_eq!(r.errors.get("connect_timeout"), Some(&2), "{}", r.human());
        assert_eq!(r.messages, 0);
    }
}
