//! The WebSocket gateway (and ws-echo) on the AF_XDP backend: the same sans-IO gateway
//! [`Worker`] the kernel backend drives, fed from a per-queue [`Stack`].
//!
//! Mapping, per worker loop iteration:
//! - received in-order payload goes to [`Worker::receive`] straight from the RX frame
//!   (copied once into a scratch buffer, where WebSocket payloads are unmasked in place);
//!   whatever the worker does not take now (backpressure) stays in the stack's receive
//!   buffer and is read on a later `Readable`;
//! - stack events (accepted, readable, writable, peer closed, closed, reset) drive the
//!   connection: [`Worker::output`] is pushed with [`Stack::send`] as far as the send
//!   buffer takes it, and only what `send` took is consumed;
//! - publications from the broker are taken from this worker's bounded crossbeam queue,
//!   at most [`MSG_BUDGET`] per iteration;
//! - the worker's deadlines (handshake, pings, idle, close) run every [`TICK`];
//! - `proxy` upstreams are kernel sockets polled with a zero timeout on the same thread.
//!
//! A connection the worker has finished with gets our FIN ([`Stack::shutdown`]) and is
//! drained until the peer's FIN (or [`LINGER`]), so unread data never turns our last
//! frames into a reset.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Poll, Token};
use tcp::stack::{ConnHandle, Event, Stack};
use tracing::{debug, warn};

use crate::config::Config;
use crate::control;
use crate::drivers::upstream::Upstreams;
use crate::gateway::worker::Worker;
use crate::gateway::{broker, ConnId, ConnInfo, WorkerHandle, WorkerMsg};
use crate::metrics::{ActionLabel, Metrics, WorkerLabel, WorkerStateLabel};

/// Most broker/control messages handled per loop iteration (bounded work per iteration).
pub const MSG_BUDGET: usize = 256;
/// Timer tick for the worker's deadlines.
pub const TICK: Duration = Duration::from_millis(100);
/// How long a connection we closed may drain the peer's data before it is reset.
pub const LINGER: Duration = Duration::from_secs(2);
/// Scratch buffer for received payload (unmasked in place by the worker).
const SCRATCH: usize = 64 * 1024;

/// `--app gateway` or `--app ws-echo` on the AF_XDP backend.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The application's name in the `listening` line.
    pub app_name: &'static str,
    /// The gateway configuration (ws-echo: one echo route).
    pub config: Config,
    /// Serve every request path with the first route (ws-echo).
    pub any_path: bool,
}

/// What every worker of one gateway process shares: the config, metrics, the broker's
/// publishing side, and each worker's inbound queue until that worker takes it.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    publisher: broker::Publisher,
    receivers: Vec<Option<Receiver<WorkerMsg>>>,
    /// Where the control plane listens (`None`: disabled).
    pub control: Option<SocketAddr>,
    any_path: bool,
    /// XDP counters as last recorded.
    xdp_seen: dataplane::XdpCounters,
}

impl Shared {
    /// Starts the broker and the control plane for `workers` workers. `any_path` serves
    /// every request path with the first route (ws-echo).
    pub fn start(config: Config, workers: usize, any_path: bool) -> anyhow::Result<Shared> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded(config.limits.worker_queue);
            // Workers poll their queue every iteration (and sleep at most ~1 ms when idle):
            // nothing to wake.
            handles.push(WorkerHandle {
                tx,
                wake: Arc::new(|| {}),
            });
            receivers.push(Some(rx));
        }
        let publisher = broker::spawn(
            handles.clone(),
            config.limits.publish_queue,
            Arc::clone(&metrics),
        )
        .map_err(|e| anyhow::anyhow!("starting broker thread: {e}"))?;
        let control = if config.control.enabled {
            let ctx = control::Context {
                metrics: Arc::clone(&metrics),
                publisher: publisher.clone(),
                workers: handles,
                config: Arc::clone(&config),
            };
            Some(control::spawn(config.control.addr, ctx)?)
        } else {
            None
        };
        Ok(Shared {
            config,
            metrics,
            publisher,
            receivers,
            control,
            any_path,
            xdp_seen: dataplane::XdpCounters::default(),
        })
    }

    /// Adds what the XDP program counted since the last call to the metrics.
    pub fn record_xdp(&mut self, now: dataplane::XdpCounters) {
        let seen = &mut self.xdp_seen;
        for (action, new, old) in [
            ("redirected", now.redirected, &mut seen.redirected),
            ("passed", now.passed, &mut seen.passed),
            ("dropped", now.dropped, &mut seen.dropped),
        ] {
            let counter = self.metrics.xdp_packets.get_or_create(&ActionLabel {
                action: action.to_string(),
            });
            counter.inc_by(new.saturating_sub(*old));
            *old = new.max(*old);
        }
    }

    /// The parts worker `index` needs (each index once).
    pub fn part(&mut self, index: usize) -> Part {
        Part {
            index,
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            publisher: self.publisher.clone(),
            rx: self.receivers.get_mut(index).and_then(Option::take),
            any_path: self.any_path,
        }
    }
}

/// Everything one worker's [`GatewayApp`] is built from (sent to the worker thread).
#[derive(Debug)]
pub struct Part {
    index: usize,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    publisher: broker::Publisher,
    rx: Option<Receiver<WorkerMsg>>,
    any_path: bool,
}

/// A TCP connection of the stack and what the driver knows about it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    conn: ConnHandle,
    /// The peer's FIN has been read.
    eof: bool,
}

/// The gateway on one AF_XDP worker.
#[derive(Debug)]
pub struct GatewayApp {
    worker: Worker,
    rx: Option<Receiver<WorkerMsg>>,
    slots: Vec<Option<Slot>>,
    free: Vec<ConnId>,
    by_conn: HashMap<ConnHandle, ConnId>,
    /// Closed by us (FIN queued), draining the peer until its FIN or the deadline.
    lingering: HashMap<ConnHandle, Instant>,
    scratch: Vec<u8>,
    last_tick: Instant,
    /// The wall clock read once per iteration (the worker's deadlines use std instants).
    wall: Instant,
    upstreams: Upstreams,
    poll: Option<Poll>,
    events: Events,
    stopping: bool,
    ports: Vec<u16>,
    shutdown_timeout: Duration,
    metrics: Arc<Metrics>,
    index: usize,
    /// Loop iterations and busy ones (a frame received or work done) since the last tick.
    iterations: u64,
    busy: u64,
    frame_seen: bool,
    /// The stack's retransmit counter as last recorded.
    retransmits_seen: u64,
    /// TCP states with a non-zero gauge after the last tick.
    states_seen: Vec<String>,
}

impl GatewayApp {
    /// Worker `part.index`, serving on `ports`.
    pub fn new(part: Part, ports: &[u16]) -> GatewayApp {
        let shutdown_timeout = part.config.limits.shutdown_timeout();
        let metrics = Arc::clone(&part.metrics);
        let mut worker = Worker::new(part.index, part.config, part.metrics, Some(part.publisher));
        if part.any_path {
            worker.serve_any_path();
        }
        let now = Instant::now();
        GatewayApp {
            worker,
            rx: part.rx,
            slots: Vec::new(),
            free: Vec::new(),
            by_conn: HashMap::new(),
            lingering: HashMap::new(),
            scratch: vec![0; SCRATCH],
            last_tick: now,
            wall: now,
            upstreams: Upstreams::new(),
            poll: None,
            events: Events::with_capacity(256),
            stopping: false,
            ports: ports.to_vec(),
            shutdown_timeout,
            metrics,
            index: part.index,
            iterations: 0,
            busy: 0,
            frame_seen: false,
            retransmits_seen: 0,
            states_seen: Vec::new(),
        }
    }

    /// Whether broker or control messages are waiting (the worker loop should not sleep).
    pub fn has_pending(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| !rx.is_empty())
    }

    /// A frame arrived in this iteration (for the busy ratio).
    pub fn note_frame(&mut self) {
        self.frame_seen = true;
    }

    /// Feeds received bytes to the worker, timing it for the processing histogram.
    fn receive(&mut self, id: ConnId, len: usize, now: Instant) {
        let started = Instant::now();
        if let Some(data) = self.scratch.get_mut(..len) {
            self.worker.receive(id, data, now);
        }
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Every tick: busy ratio, TCP connections by state, retransmits.
    fn record(&mut self, stack: &Stack) {
        let ratio = if self.iterations == 0 {
            0.0
        } else {
            self.busy as f64 / self.iterations as f64
        };
        self.metrics.set_busy(self.index, ratio);
        self.iterations = 0;
        self.busy = 0;
        let mut counts: HashMap<String, i64> = HashMap::new();
        for conn in self.by_conn.keys().chain(self.lingering.keys()) {
            if let Ok(s) = stack.stats(*conn) {
                *counts.entry(format!("{:?}", s.state)).or_default() += 1;
            }
        }
        let worker = self.index.to_string();
        for state in self.states_seen.drain(..) {
            if !counts.contains_key(&state) {
                self.metrics
                    .tcp_connections
                    .get_or_create(&WorkerStateLabel {
                        worker: worker.clone(),
                        state,
                    })
                    .set(0);
            }
        }
        for (state, n) in counts {
            self.metrics
                .tcp_connections
                .get_or_create(&WorkerStateLabel {
                    worker: worker.clone(),
                    state: state.clone(),
                })
                .set(n);
            self.states_seen.push(state);
        }
        let retransmits = stack.counters().conn.retransmits;
        self.metrics
            .tcp_retransmits
            .get_or_create(&WorkerLabel { worker })
            .inc_by(retransmits.saturating_sub(self.retransmits_seen));
        self.retransmits_seen = retransmits.max(self.retransmits_seen);
    }

    /// In-order payload offered straight from an RX frame: feeds the worker as much as it
    /// wants now and returns how much it took (the rest is buffered by the stack).
    pub fn sink(&mut self, conn: ConnHandle, data: &[u8]) -> usize {
        let Some(&id) = self.by_conn.get(&conn) else {
            return 0;
        };
        if self.slots.get(id).and_then(|s| *s).is_none_or(|s| s.eof) {
            return 0;
        }
        let mut taken = 0;
        while taken < data.len() && self.worker.wants_read(id) {
            let rest = data.get(taken..).unwrap_or_default();
            let n = rest.len().min(self.scratch.len());
            let Some(buf) = self.scratch.get_mut(..n) else {
                break;
            };
            buf.copy_from_slice(rest.get(..n).unwrap_or_default());
            self.receive(id, n, self.wall);
            taken += n;
        }
        taken
    }

    /// One stack event.
    pub fn on_event(&mut self, stack: &mut Stack, event: Event) {
        let now = self.wall;
        match event {
            Event::Accepted { conn, .. } | Event::Established(conn) => self.accept(stack, conn),
            Event::Readable(conn) | Event::Writable(conn) | Event::PeerClosed(conn) => {
                if self.lingering.contains_key(&conn) {
                    self.drain_lingering(stack, conn);
                } else if let Some(&id) = self.by_conn.get(&conn) {
                    self.drive(stack, id, now);
                }
            }
            Event::Closed(conn) => {
                if self.lingering.remove(&conn).is_some() {
                    let _ = stack.close(conn);
                } else if let Some(&id) = self.by_conn.get(&conn) {
                    // Read what is still buffered, then the connection is gone.
                    self.drive(stack, id, now);
                    if self.by_conn.contains_key(&conn) {
                        self.forget(id);
                        let _ = stack.close(conn);
                    }
                }
            }
            Event::Reset(conn) | Event::TimedOut(conn) => {
                self.lingering.remove(&conn);
                if let Some(&id) = self.by_conn.get(&conn) {
                    self.forget(id);
                }
            }
        }
    }

    fn accept(&mut self, stack: &mut Stack, conn: ConnHandle) {
        if self.stopping {
            let _ = stack.abort(conn);
            return;
        }
        let Some(tuple) = stack.tuple(conn) else {
            return;
        };
        let peer = SocketAddr::V4(SocketAddrV4::new(tuple.remote_addr, tuple.remote_port));
        let id = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(why) = self.worker.accept(id, peer, self.wall) {
            debug!(%peer, ?why, "connection refused");
            self.free.push(id);
            let _ = stack.close(conn);
            return;
        }
        let _ = stack.set_nodelay(conn, true);
        if let Some(slot) = self.slots.get_mut(id) {
            *slot = Some(Slot { conn, eof: false });
        }
        self.by_conn.insert(conn, id);
        // Data may have arrived with the handshake's last ACK.
        self.drive(stack, id, self.wall);
    }

    /// Forgets connection `id` (its handle is stale or released by the caller).
    fn forget(&mut self, id: ConnId) {
        self.worker.remove(id);
        if let Some(poll) = &self.poll {
            self.upstreams.remove(poll.registry(), id);
        }
        if let Some(slot) = self.slots.get_mut(id).and_then(Option::take) {
            self.by_conn.remove(&slot.conn);
            self.free.push(id);
        }
    }

    /// Pushes output, reads and closes connection `id` as far as it can go now.
    fn drive(&mut self, stack: &mut Stack, id: ConnId, now: Instant) {
        if let Some(poll) = &self.poll {
            if self.upstreams.contains(id) {
                self.upstreams
                    .drive(poll.registry(), &mut self.worker, id, now);
            }
        }
        loop {
            let Some(slot) = self.slots.get(id).and_then(|s| *s) else {
                return;
            };
            // Push everything the send buffer takes; keep the rest in the worker.
            loop {
                let out = self.worker.output(id);
                if out.is_empty() {
                    break;
                }
                match stack.send(slot.conn, out) {
                    Ok(0) => break,
                    Ok(n) => self.worker.consume(id, n),
                    Err(_) => return self.abort(stack, id),
                }
            }
            if self.worker.is_finished(id) {
                return self.close(stack, id);
            }
            if slot.eof || !self.worker.wants_read(id) {
                return;
            }
            let n = match stack.recv(slot.conn, &mut self.scratch) {
                Ok(n) => n,
                Err(_) => return self.abort(stack, id),
            };
            if n == 0 {
                if stack.at_eof(slot.conn).unwrap_or(true) {
                    if let Some(Some(s)) = self.slots.get_mut(id) {
                        s.eof = true;
                    }
                    self.worker.peer_closed(id);
                    continue;
                }
                return;
            }
            self.receive(id, n, now);
        }
    }

    /// Resets connection `id` and forgets it.
    fn abort(&mut self, stack: &mut Stack, id: ConnId) {
        if let Some(slot) = self.slots.get(id).and_then(|s| *s) {
            let _ = stack.abort(slot.conn);
        }
        self.forget(id);
    }

    /// Closes connection `id` in order: FIN after the queued data, then drain the peer.
    fn close(&mut self, stack: &mut Stack, id: ConnId) {
        let Some(slot) = self.slots.get(id).and_then(|s| *s) else {
            return;
        };
        self.forget(id);
        if slot.eof {
            // Everything the peer sent has been read: close releases the handle at once.
            let _ = stack.close(slot.conn);
            return;
        }
        if stack.shutdown(slot.conn).is_err() {
            return;
        }
        self.lingering.insert(slot.conn, self.wall + LINGER);
        self.drain_lingering(stack, slot.conn);
    }

    fn drain_lingering(&mut self, stack: &mut Stack, conn: ConnHandle) {
        loop {
            match stack.recv_with(conn, |data| data.len()) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    self.lingering.remove(&conn);
                    return;
                }
            }
        }
        if stack.at_eof(conn).unwrap_or(true) {
            self.lingering.remove(&conn);
            let _ = stack.close(conn);
        }
    }

    /// Per-iteration work after the stack's events: broker messages (bounded), output
    /// queued by them, upstream sockets, and deadlines. Returns whether it did anything.
    pub fn poll(&mut self, stack: &mut Stack) -> bool {
        let now = self.wall;
        let mut worked = false;
        for _ in 0..MSG_BUDGET {
            let Some(rx) = &self.rx else {
                break;
            };
            match rx.try_recv() {
                Ok(msg) => {
                    self.handle_msg(stack, msg, now);
                    worked = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.rx = None;
                    break;
                }
            }
        }
        let requests = self.worker.take_upstream_requests();
        if !requests.is_empty() && self.poll.is_none() {
            match Poll::new() {
                Ok(p) => self.poll = Some(p),
                Err(e) => warn!(error = %e, "cannot create the upstream poller"),
            }
        }
        for (id, authority) in requests {
            match &self.poll {
                Some(poll) => self.upstreams.open(
                    poll.registry(),
                    Token(id),
                    &mut self.worker,
                    id,
                    &authority,
                    now,
                ),
                None => self.worker.upstream_lost(id, now),
            }
            worked = true;
        }
        if !self.upstreams.is_empty() {
            worked |= self.poll_upstreams(stack, now);
        }
        for id in self.worker.take_dirty() {
            self.drive(stack, id, now);
            worked = true;
        }
        self.iterations += 1;
        if worked || std::mem::take(&mut self.frame_seen) {
            self.busy += 1;
        }
        if now.saturating_duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            self.record(stack);
            for id in self.worker.handle_timeout(now) {
                debug!(id, "deadline expired");
                self.abort(stack, id);
            }
            for id in self.worker.take_dirty() {
                self.drive(stack, id, now);
            }
            let expired: Vec<ConnHandle> = self
                .lingering
                .iter()
                .filter(|(_, &d)| now >= d)
                .map(|(&c, _)| c)
                .collect();
            for conn in expired {
                self.lingering.remove(&conn);
                let _ = stack.abort(conn);
            }
        }
        worked
    }

    /// Zero-timeout poll of the upstream sockets; drives the clients whose upstream fired.
    fn poll_upstreams(&mut self, stack: &mut Stack, now: Instant) -> bool {
        let Some(poll) = self.poll.as_mut() else {
            return false;
        };
        if poll.poll(&mut self.events, Some(Duration::ZERO)).is_err() {
            return false;
        }
        let ids: Vec<ConnId> = self.events.iter().map(|e| e.token().0).collect();
        for &id in &ids {
            self.drive(stack, id, now);
        }
        !ids.is_empty()
    }

    fn handle_msg(&mut self, stack: &Stack, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Snapshot(tx) => {
                let _ = tx.send(self.snapshot(stack, now));
            }
            other => self.worker.handle_msg(other, now),
        }
    }

    /// The per-connection table, with the TCP engine's view of each connection.
    fn snapshot(&self, stack: &Stack, now: Instant) -> Vec<ConnInfo> {
        self.worker.snapshot_with(now, |id| {
            let slot = self.slots.get(id).and_then(|s| *s)?;
            let s = stack.stats(slot.conn).ok()?;
            Some(crate::gateway::TcpInfo {
                state: format!("{:?}", s.state),
                cwnd: s.cwnd,
                srtt_us: s
                    .srtt
                    .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                rto_ms: u64::try_from(s.rto.as_millis()).unwrap_or(u64::MAX),
                retransmits: s.retransmits,
            })
        })
    }

    /// Refreshes the wall clock; call once per iteration before anything else.
    pub fn tick_clock(&mut self) {
        self.wall = Instant::now();
    }

    /// Graceful stop: stop listening, queue every publication already received, then
    /// close every WebSocket with 1001 behind its queued messages; the worker then flushes
    /// until `limits.shutdown_timeout_ms` has passed.
    pub fn stop(&mut self, stack: &mut Stack) {
        self.stopping = true;
        self.wall = Instant::now();
        let now = self.wall;
        let deadline = now + self.shutdown_timeout;
        for &port in &self.ports {
            stack.unlisten(port);
        }
        if let Some(rx) = &self.rx {
            let pending: Vec<WorkerMsg> = rx.try_iter().collect();
            for msg in pending {
                self.handle_msg(stack, msg, now);
            }
        }
        tracing::info!(
            connections = self.worker.live(),
            "stopping: closing connections with 1001"
        );
        self.worker.shutdown(now, deadline);
        for id in self.worker.take_dirty() {
            self.drive(stack, id, now);
        }
    }

    /// Whether every connection is closed (after [`GatewayApp::stop`]).
    pub fn drained(&self) -> bool {
        self.worker.live() == 0 && self.lingering.is_empty()
    }
}
