//! The kernel-socket driver: one mio (epoll, edge-triggered) thread driving a sans-IO
//! [`App`]: the gateway [`Worker`] (gateway, ws-echo; plus the broker and control
//! threads) or a TCP application ([`TcpApp`]). One accept/read/write/close loop for
//! every application on `--backend kernel`.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tcp::Instant;
use tracing::{debug, info, warn};

use super::upstream::Upstreams;
use crate::app::tcp::{Kind, TcpApp};
use crate::app::{App, BufTx};
use crate::config::Config;
use crate::control;
use crate::gateway::worker::Worker;
use crate::gateway::WorkerHandle;
use crate::metrics::Metrics;

/// Size of the shared receive buffer.
const READ_BUF: usize = 64 * 1024;
/// The waker's token (listeners and connections use small numbers).
const WAKER: Token = Token(usize::MAX - 1);
/// How long a closed connection may drain the peer's data before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Timer tick for deadlines (handshake, ping, idle, close).
const TICK: Duration = Duration::from_millis(100);
/// Tokens from here on are upstream sockets of `proxy` connections (`UP_BASE + idx`).
const UP_BASE: usize = 1 << 30;

/// Binds a listener on `ip` for each of `ports` (0 picks one), registered as tokens 0..;
/// returns them with the bound port numbers.
pub fn bind(
    poll: &Poll,
    ip: std::net::IpAddr,
    ports: &[u16],
) -> anyhow::Result<(Vec<TcpListener>, Vec<u16>)> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let addr = SocketAddr::new(ip, port);
        let mut l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)
            .context("registering listener")?;
        bound.push(l.local_addr().context("listener address")?.port());
        listeners.push(l);
    }
    Ok((listeners, bound))
}

/// The event loop's heartbeat for `/healthz` (and the test-only fault to inject).
#[derive(Debug)]
pub struct Liveness {
    /// Written once per loop iteration.
    pub heartbeat: dataplane::Heartbeat,
    /// The clock the heartbeat is read against.
    pub clock: dataplane::Clock,
    /// **Testing only** (`SLUICE_TEST_WORKER_FAULT`): `stall` stops the loop until the
    /// stop signal; `exit` and `panic` end it (the process with it).
    pub fault: Option<dataplane::Fault>,
}

/// Serves `svc` on `listeners` (registered on `poll` by [`bind`]) until `stop` is set,
/// then shuts down gracefully within `shutdown_timeout`. `rx` carries broker and control
/// messages for a gateway worker; `liveness`, when given, is beaten every iteration.
/// `busy_poll`: wait in epoll_wait with a zero timeout (never sleep) instead of up to
/// `TICK` (100 ms).
#[allow(clippy::too_many_arguments)]
pub fn serve<S: App>(
    poll: Poll,
    mut listeners: Vec<TcpListener>,
    svc: &mut S,
    rx: Option<&Receiver<S::Message>>,
    stop: &AtomicBool,
    shutdown_timeout: Duration,
    metrics: Arc<Metrics>,
    liveness: Option<Liveness>,
    busy_poll: bool,
) -> anyhow::Result<()> {
    if busy_poll {
        info!("busy-polling: epoll_wait with a zero timeout, the event loop never sleeps");
    }
    let mut driver = Driver {
        poll,
        base: listeners.len(),
        conns: Vec::new(),
        free: Vec::new(),
        lingering: HashMap::new(),
        upstreams: Upstreams::new(),
        buf: vec![0u8; READ_BUF],
        stats: metrics.worker(0, &[]),
        clock: liveness
            .as_ref()
            .map_or_else(dataplane::Clock::new, |l| l.clock),
        now: Instant::ZERO,
        ids: Vec::new(),
        wait: if busy_poll { Duration::ZERO } else { TICK },
    };
    if let Some(l) = &liveness {
        l.heartbeat.start(l.clock.now());
    }
    driver.run(
        svc,
        &mut listeners,
        rx,
        stop,
        shutdown_timeout,
        liveness.as_ref(),
    )
}

/// Everything `sluice run --app gateway` needs from the command line, after overrides.
#[derive(Debug)]
pub struct Settings {
    /// Validated configuration (flags already applied).
    pub config: Config,
    /// The application's name in the `listening` line (`gateway`, `ws-echo`).
    pub app_name: &'static str,
    /// Serve every request path with the first route (ws-echo).
    pub any_path: bool,
    /// Busy-poll: never sleep in epoll_wait (`--busy-poll`).
    pub busy_poll: bool,
}

/// Most bytes a connection's write buffer holds (what the socket did not take yet).
const OUT_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    read_eof: bool,
    /// The connection's write buffer: the application writes into it ([`BufTx`]), the
    /// driver writes it to the socket.
    out: Vec<u8>,
    /// Bytes of `out` already written to the socket.
    head: usize,
}

impl Conn {
    /// The application's [`Tx`] on this connection: room up to [`OUT_LIMIT`].
    fn tx(&mut self) -> BufTx<'_> {
        if self.head > 0 {
            self.out.drain(..self.head);
            self.head = 0;
        }
        BufTx::new(&mut self.out, OUT_LIMIT)
    }

    /// Whether the write buffer is empty.
    fn written(&self) -> bool {
        self.head == self.out.len()
    }

    /// Writes the buffer to the socket as far as it takes it; `Err` when the connection
    /// is broken.
    fn write_out(&mut self) -> Result<(), ()> {
        while self.head < self.out.len() {
            match self
                .stream
                .write(self.out.get(self.head..).unwrap_or_default())
            {
                Ok(0) => return Err(()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        self.out.clear();
        self.head = 0;
        Ok(())
    }
}

/// Runs the gateway on kernel sockets until SIGINT/SIGTERM, then shuts down gracefully.
pub fn run_gateway(settings: Settings) -> anyhow::Result<()> {
    let config = Arc::new(settings.config);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let poll = Poll::new().context("creating epoll instance")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating waker")?);
    let metrics = Arc::new(Metrics::build(config.cluster.enabled));

    let (tx, rx) = crossbeam_channel::bounded(config.limits.worker_queue);
    let wake_ref = Arc::clone(&waker);
    let handle = WorkerHandle {
        tx,
        wake: Arc::new(move || {
            let _ = wake_ref.wake();
        }),
    };
    let workers = vec![handle];
    let clock = dataplane::Clock::new();
    let health = control::health::Health::new(
        vec!["kernel event loop".to_string()],
        clock,
        config.control.worker_stall(),
    );
    let fault = control::health::fault_from_env()?;
    let liveness = health.beats.writer(0).map(|heartbeat| Liveness {
        heartbeat,
        clock,
        fault: fault.filter(|f| f.worker == 0),
    });
    // Running before the `listening` line, so `/healthz` right after it answers 200.
    if let Some(l) = &liveness {
        l.heartbeat.start(clock.now());
    }
    let publishing = crate::drivers::gateway::start_publishing(&config, &metrics, &workers)?;
    let publisher = publishing.publisher;
    let (interest, cluster_status) = match publishing.cluster {
        Some(c) => (c.interest.into_iter().next(), Some(c.status)),
        None => (None, None),
    };

    let tls = crate::app::tls::Listeners::from_config(&config)?;
    tls.reload_on_sighup(Arc::clone(&metrics.tls))?;
    let (listeners, bound) = bind(&poll, config.listen.ip, &config.listen.ports)?;
    let bound: Vec<String> = bound.iter().map(u16::to_string).collect();
    let control_addr = if config.control.enabled {
        let ctx = control::Context {
            metrics: Arc::clone(&metrics),
            publisher: publisher.clone(),
            workers: workers.clone(),
            config: Arc::clone(&config),
            health,
            cluster: cluster_status,
        };
        Some(control::spawn(config.control.addr, ctx).context("starting control plane")?)
    } else {
        None
    };
    let control_text = control_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    println!(
        "listening ip={} port={} backend=kernel app={} control={control_text}",
        config.listen.ip,
        bound.join(","),
        settings.app_name,
    );
    io::stdout().flush().ok();
    info!(ip = %config.listen.ip, ports = %bound.join(","), control = %control_text, "gateway listening");

    let mut worker = Worker::new(
        0,
        Arc::clone(&config),
        Arc::clone(&metrics),
        Some(publisher),
    );
    if settings.any_path {
        worker.serve_any_path();
    }
    if let Some(i) = interest {
        worker.set_interest(i);
    }
    let stats = worker.stats();
    let mut app = crate::app::tls::Tls::new(worker, tls.for_worker(), Some(stats));
    let result = serve(
        poll,
        listeners,
        &mut app,
        Some(&rx),
        &stop,
        config.limits.shutdown_timeout(),
        metrics,
        liveness,
        settings.busy_poll,
    );
    drop(workers);
    result
}

/// Testing only (`SLUICE_TEST_WORKER_FAULT`): `stall` stops the loop, without beating,
/// until the stop signal (the shutdown then runs as usual); `exit` and `panic` end the
/// process, the event loop being its only worker.
fn inject_fault(kind: dataplane::FaultKind, stop: &AtomicBool) {
    match kind {
        dataplane::FaultKind::Stall => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        dataplane::FaultKind::Exit => {
            tracing::error!("injected fault: the event loop exits (testing only)");
            std::process::exit(1);
        }
        dataplane::FaultKind::Panic => panic!("injected fault: event loop panics (testing only)"),
    }
}

/// How long a TCP application's shutdown waits for connections to flush and close.
const TCP_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs a TCP application on kernel sockets until SIGINT/SIGTERM.
pub fn run_tcp(
    kind: Kind,
    ip: std::net::IpAddr,
    ports: &[u16],
    max_connections: usize,
    max_output: usize,
    idle: Option<Duration>,
    busy_poll: bool,
) -> anyhow::Result<()> {
    let name = kind.name();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let poll = Poll::new().context("creating epoll instance")?;
    let (listeners, bound) = bind(&poll, ip, ports)?;
    let ports: Vec<String> = bound.iter().map(u16::to_string).collect();
    println!(
        "listening ip={ip} port={} backend=kernel app={name}",
        ports.join(",")
    );
    io::stdout().flush().ok();
    info!(ip = %ip, ports = %ports.join(","), app = name, "listening");
    let mut app = TcpApp::new(kind, max_connections, max_output).with_idle_timeout(idle);
    serve(
        poll,
        listeners,
        &mut app,
        None,
        &stop,
        TCP_SHUTDOWN_GRACE,
        Arc::new(Metrics::new()),
        None,
        busy_poll,
    )
}

struct Driver {
    poll: Poll,
    base: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Closed by us (FIN sent), draining the peer until EOF or the deadline.
    lingering: HashMap<usize, Instant>,
    /// Upstream sockets of proxy connections, by connection slot.
    upstreams: Upstreams,
    buf: Vec<u8>,
    /// The driver's metrics block (busy ratio, processing time).
    stats: Arc<crate::metrics::WorkerStats>,
    /// The worker's one clock (the same type the stack driver uses).
    clock: dataplane::Clock,
    /// `clock` as read at the start of the current batch.
    now: Instant,
    /// Reused list of connection ids (dirty, expired).
    ids: Vec<usize>,
    /// Longest wait in epoll_wait: `TICK`, or zero when busy-polling.
    wait: Duration,
}

impl Driver {
    fn run<S: App>(
        &mut self,
        worker: &mut S,
        listeners: &mut Vec<TcpListener>,
        rx: Option<&Receiver<S::Message>>,
        stop: &AtomicBool,
        shutdown_timeout: Duration,
        liveness: Option<&Liveness>,
    ) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        let fault_at = liveness.and_then(|l| l.fault.map(|f| (l.clock.now() + f.after, f.kind)));
        let mut shutdown_deadline: Option<Instant> = None;
        let mut last_tick = self.clock.now();
        // Time spent outside epoll_wait since the last tick (the busy ratio).
        let mut busy = Duration::ZERO;
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(self.wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e).context("epoll_wait");
                }
            }
            // The worker's clock, read once per batch: every call below gets this `now`.
            let now = self.clock.now();
            self.now = now;
            if let Some(l) = liveness {
                if let Some((_, kind)) = fault_at.filter(|(at, _)| now >= *at) {
                    inject_fault(kind, stop);
                }
                l.heartbeat.beat(now);
            }
            for event in events.iter() {
                let Token(t) = event.token();
                if event.token() == WAKER {
                    continue;
                }
                if t >= UP_BASE {
                    self.drive(worker, t - UP_BASE, now);
                    continue;
                }
                if t < self.base {
                    if let Some(l) = listeners.get(t) {
                        self.accept_all(l, worker, now);
                    }
                    continue;
                }
                let idx = t - self.base;
                if self.lingering.contains_key(&idx) {
                    self.drain_lingering(idx);
                } else {
                    self.drive(worker, idx, now);
                }
            }
            for (idx, authority) in worker.take_upstream_requests() {
                self.upstreams.open(
                    self.poll.registry(),
                    Token(UP_BASE + idx),
                    worker,
                    idx,
                    &authority,
                    now,
                );
            }
            // Publications and control requests; every one queued before an ack was sent.
            while let Some(msg) = rx.and_then(|rx| rx.try_recv().ok()) {
                worker.handle_message(msg, now, &|_| None);
            }
            self.flush(worker, now);
            if worker.poll_timeout().is_some_and(|at| at <= now) {
                let mut expired = std::mem::take(&mut self.ids);
                worker.handle_timeout(now, &mut expired);
                for &idx in &expired {
                    debug!(idx, "deadline expired");
                    self.close(worker, idx, true);
                }
                expired.clear();
                self.ids = expired;
                self.flush(worker, now);
            }
            // One more read per batch: the batch's processing time (and the busy ratio).
            let done = self.clock.now();
            let batch = done - now;
            busy += batch;
            if !events.is_empty() {
                self.stats.processing(batch);
            }
            if now - last_tick >= TICK {
                let window = (now - last_tick).as_secs_f64();
                self.stats.set_busy((busy.as_secs_f64() / window).min(1.0));
                busy = Duration::ZERO;
                last_tick = now;
                let expired: Vec<usize> = self
                    .lingering
                    .iter()
                    .filter(|(_, &d)| now >= d)
                    .map(|(&i, _)| i)
                    .collect();
                for idx in expired {
                    self.drop_conn(idx);
                }
            }
            if shutdown_deadline.is_none() && stop.load(Ordering::Relaxed) {
                info!(
                    connections = worker.live(),
                    "stopping: closing connections with 1001"
                );
                for l in listeners.iter_mut() {
                    self.poll.registry().deregister(l).ok();
                }
                listeners.clear();
                let deadline = now + shutdown_timeout;
                shutdown_deadline = Some(deadline);
                while let Some(msg) = rx.and_then(|rx| rx.try_recv().ok()) {
                    worker.handle_message(msg, now, &|_| None);
                }
                worker.shutdown(now, deadline);
                self.flush(worker, now);
            }
            if let Some(deadline) = shutdown_deadline {
                if (worker.live() == 0 && self.lingering.is_empty()) || now >= deadline {
                    info!(remaining = worker.live(), "stopped");
                    return Ok(());
                }
            }
        }
    }

    /// Drives every connection the application names dirty.
    fn flush<S: App>(&mut self, worker: &mut S, now: Instant) {
        let mut ids = std::mem::take(&mut self.ids);
        worker.take_dirty(&mut ids);
        for &idx in &ids {
            self.drive(worker, idx, now);
        }
        ids.clear();
        self.ids = ids;
    }

    fn accept_all<S: App>(&mut self, listener: &TcpListener, worker: &mut S, now: Instant) {
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    return;
                }
            };
            stream.set_nodelay(true).ok();
            let idx = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let local_port = listener.local_addr().map_or(0, |a| a.port());
            if let Err(why) = worker.accept_on(idx, local_port, peer, now) {
                debug!(%peer, ?why, "connection refused");
                self.free.push(idx);
                continue;
            }
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(self.base + idx),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!(error = %e, "register failed");
                worker.remove(idx);
                self.free.push(idx);
                continue;
            }
            self.conns[idx] = Some(Conn {
                stream,
                read_eof: false,
                out: Vec::new(),
                head: 0,
            });
        }
    }

    /// Writes, reads and closes connection `idx` as far as it can go now.
    fn drive<S: App>(&mut self, worker: &mut S, idx: usize, now: Instant) {
        if self.lingering.contains_key(&idx) {
            return;
        }
        if self.upstreams.contains(idx) {
            self.upstreams.drive(self.poll.registry(), worker, idx, now);
        }
        loop {
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            // What the application queued into the write buffer, then everything the
            // socket takes, again while the socket drains the buffer: epoll is
            // edge-triggered, so output left queued in the application behind a full
            // buffer would never see another writable event.
            loop {
                worker.flush(idx, &mut c.tx());
                if c.written() {
                    break;
                }
                if c.write_out().is_err() {
                    return self.close(worker, idx, true);
                }
                if !c.written() {
                    break;
                }
            }
            if worker.is_finished(idx) {
                if c.written() {
                    return self.close(worker, idx, false);
                }
                // Finished once the socket takes the rest (a writable event follows).
                return;
            }
            if c.read_eof || !worker.wants_read(idx) {
                return;
            }
            match c.stream.read(&mut self.buf) {
                Ok(0) => {
                    c.read_eof = true;
                    worker.peer_closed(idx);
                }
                Ok(n) => worker.receive(idx, &mut self.buf[..n], &mut c.tx(), now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close(worker, idx, true),
            }
        }
    }

    /// Closes `idx`: at once (`abort`) or by a lingering close (FIN, then drain the peer so
    /// unread data causes no RST that could destroy our last frames in flight).
    fn close<S: App>(&mut self, worker: &mut S, idx: usize, abort: bool) {
        worker.remove(idx);
        self.upstreams.remove(self.poll.registry(), idx);
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if abort || c.read_eof || c.stream.shutdown(Shutdown::Write).is_err() {
            self.drop_conn(idx);
            return;
        }
        self.lingering.insert(idx, self.now + LINGER);
        self.drain_lingering(idx);
    }

    fn drain_lingering(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        loop {
            match c.stream.read(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.drop_conn(idx);
    }

    fn drop_conn(&mut self, idx: usize) {
        self.lingering.remove(&idx);
        if let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) {
            self.poll.registry().deregister(&mut c.stream).ok();
            self.free.push(idx);
        }
    }
}
