//! The transport-independent gateway worker: every connection of one worker, the local
//! topic table, limits and the slow-consumer policy. Sans-IO: the transport feeds received
//! bytes with the connection's transmit side ([`Worker::receive`]: answers are written
//! into it in place), calls [`Worker::flush`] when it has room again, and closes what
//! [`Worker::is_finished`] or [`Worker::handle_timeout`] name. No socket and no clock in
//! here: `now` is passed in.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tcp::timer::TimerWheel;
use tcp::Instant;

use ws::{CloseCode, Event, ServerConfig};

use super::broker::Publisher;
use super::session::{Phase, Session};
use super::{ConnId, ConnInfo, TcpInfo, WorkerMsg};
pub use crate::app::Refusal;
use crate::app::{App, Counted, TcpView, Tx};
use crate::config::{Config, Route, RouteKind};
use crate::metrics::worker::RouteStats;
use crate::metrics::{Metrics, WorkerStats};

/// A route with its handshake settings and metric handles.
#[derive(Debug)]
pub(super) struct RouteRt {
    pub(super) cfg: Route,
    pub(super) server: ServerConfig,
    /// The route's index, for its counters in this worker's [`WorkerStats`].
    pub(super) index: usize,
    pub(super) stats: Arc<WorkerStats>,
}

impl RouteRt {
    /// This route's counters in this worker's block.
    pub(super) fn stats(&self) -> &RouteStats {
        self.stats.route(Some(self.index))
    }
}

/// A per-process random value (std's SipHash keys come from the OS random source).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// One worker's gateway state.
#[derive(Debug)]
pub struct Worker {
    pub(super) index: usize,
    pub(super) config: Arc<Config>,
    pub(super) routes: Vec<RouteRt>,
    pub(super) base_server: ServerConfig,
    pub(super) ws_config: ws::Config,
    pub(super) sessions: Vec<Option<Session>>,
    pub(super) topics: HashMap<Arc<str>, HashSet<ConnId>>,
    pub(super) per_ip: HashMap<IpAddr, usize>,
    pub(super) live: usize,
    /// This worker's metrics block (written only here).
    pub(super) stats: Arc<WorkerStats>,
    pub(super) publisher: Option<Publisher>,
    pub(super) dirty: Vec<ConnId>,
    pub(super) draining: bool,
    /// Proxy connections waiting for the transport to open their upstream socket.
    pub(super) upstream_requests: Vec<(ConnId, String)>,
    /// Seeds upstream masking keys.
    pub(super) mask_seed: u64,
    /// Requests for unknown paths take the first route (ws-echo) instead of a 404.
    pub(super) any_path: bool,
    /// Reused list of WebSocket events of one received chunk.
    pub(super) events: Vec<Event>,
    /// Every connection's next deadline, by connection id (the worker's timer wheel).
    pub(super) timers: TimerWheel<ConnId>,
    /// Reused list of fired timers.
    pub(super) fired: Vec<ConnId>,
    /// Reused list of the connections one publication reached.
    pub(super) touched: Vec<ConnId>,
    /// Cluster mode: where this worker reports its topics.
    pub(super) interest: Option<crate::cluster::InterestTx>,
    /// Verifies connection tokens of `auth = "jwt"` routes.
    pub(super) verifier: Option<Arc<super::auth::Verifier>>,
    /// `limits.new_connections_per_ip_per_s` state.
    pub(super) connect_rates: super::limits::ConnectRates,
    /// `limits.max_messages_per_s` (0: off), read once.
    pub(super) msg_rate: u32,
}

impl Worker {
    /// This worker's metrics block.
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Worker number `index` for `config`; client publishes go to `publisher`.
    pub fn new(
        index: usize,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        publisher: Option<Publisher>,
    ) -> Worker {
        let base_server = ServerConfig {
            max_header_bytes: config.limits.max_header_bytes,
            ..ServerConfig::default()
        };
        let paths: Vec<String> = config.routes.iter().map(|r| r.path.clone()).collect();
        let stats = metrics.worker(index, &paths);
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut server = base_server.clone();
                server.deflate.enabled = r.compression;
                if r.auth == crate::config::RouteAuth::Jwt {
                    // Selected when a browser offers its token as a subprotocol.
                    server.protocols = vec![super::auth::PROTOCOL.to_string()];
                }
                if r.kind == RouteKind::Pubsub {
                    // Shared frames are compressed once for all subscribers, which needs
                    // RFC 7692 7.1.1.1 server_no_context_takeover.
                    server.deflate.server_no_context_takeover = true;
                }
                RouteRt {
                    cfg: r.clone(),
                    server,
                    index: i,
                    stats: Arc::clone(&stats),
                }
            })
            .collect();
        let msg_rate = config.limits.max_messages_per_s;
        // The configuration was validated, so a verifier builds whenever a route needs it.
        let verifier = config
            .routes
            .iter()
            .any(|r| r.auth == crate::config::RouteAuth::Jwt)
            .then(|| super::auth::Verifier::new(&config.auth).ok().map(Arc::new))
            .flatten();
        Worker {
            index,
            ws_config: ws::Config {
                max_frame_size: config.limits.max_frame_size,
                max_message_size: config.limits.max_message_size,
            },
            config,
            routes,
            base_server,
            sessions: Vec::new(),
            topics: HashMap::new(),
            per_ip: HashMap::new(),
            live: 0,
            stats,
            publisher,
            dirty: Vec::new(),
            draining: false,
            upstream_requests: Vec::new(),
            mask_seed: random_seed(),
            any_path: false,
            events: Vec::new(),
            timers: TimerWheel::new(),
            fired: Vec::new(),
            touched: Vec::new(),
            interest: None,
            verifier,
            connect_rates: super::limits::ConnectRates::default(),
            msg_rate,
        }
    }

    /// Serves every request path with the first route (how `--app ws-echo` answers any
    /// path); by default an unknown path gets 404.
    pub fn serve_any_path(&mut self) {
        self.any_path = true;
    }

    /// Open connections.
    pub fn live(&self) -> usize {
        self.live
    }

    pub(super) fn session(&mut self, id: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(id).and_then(Option::as_mut)
    }

    /// Lists `id` for a flush and re-arms its deadline timer (its state changed).
    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
        self.arm(id);
    }

    pub(super) fn close_deadline(&self, now: Instant) -> Instant {
        now + Duration::from_millis(self.config.limits.close_timeout_ms)
    }

    /// Bytes received on `id`; payloads are unmasked in place and the answers written
    /// into `tx` while the bytes are still lent (or queued behind what is queued).
    pub fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        let Some(s) = self.session(id) else {
            return;
        };
        s.last_rx = now;
        s.ping_sent = false;
        s.bytes_in += data.len() as u64;
        let msgs_before = s.msgs_in;
        let route = s.route;
        self.stats.route(route).bytes_in.add(data.len() as u64);
        let mut tx = Counted::new(tx);
        // The echo route's common case first: when it answers everything, the state the
        // deadlines depend on is as it was.
        let (taken, failed) = self.echo_fast(id, data, &mut tx, now);
        let changed = if failed {
            true
        } else if taken == data.len() {
            false
        } else {
            let Some(s) = self.session(id) else {
                return;
            };
            let before = s.deadline_state();
            let rest = data.get_mut(taken..).unwrap_or_default();
            match &mut s.phase {
                Phase::Handshake(head) => {
                    head.extend_from_slice(rest);
                    self.upgrade(id, &mut tx, now);
                }
                Phase::Open(_) => self.feed(id, rest, &mut tx, now),
                Phase::Refused | Phase::Lent => {}
            }
            self.session(id)
                .is_some_and(|s| s.deadline_state() != before)
        };
        let sent = tx.bytes;
        let rate = self.msg_rate;
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        count_bytes_out(&self.stats, s, sent);
        let unarmed = s.timer.is_none();
        let mut changed = changed;
        if rate != 0 && s.msgs_in != msgs_before {
            let n = s.msgs_in - msgs_before;
            changed |= self.charge_messages(id, n, now);
        }
        // The driver flushes what is still queued right after this call. The deadline
        // timer moves only if the state it depends on changed: fresh bytes only push the
        // idle and ping deadlines later, and an earlier timer just fires and re-arms.
        if changed || unarmed {
            self.arm(id);
        }
    }

    /// `limits.max_messages_per_s`: charges `n` messages of one read to `id`'s budget
    /// (after the read: its messages are answered), and closes a client over it with
    /// 1008. Returns whether it closed.
    #[cold]
    fn charge_messages(&mut self, id: ConnId, n: u64, now: Instant) -> bool {
        let rate = self.msg_rate;
        let deadline = self.close_deadline(now);
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return false;
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let budget = s
            .msg_budget
            .get_or_insert_with(|| super::limits::Bucket::full(rate, now));
        if budget.take(n, rate, now) {
            return false;
        }
        self.stats.dropped(crate::metrics::Drop::MessageRate);
        s.close(CloseCode::POLICY, "message rate limit", deadline);
        true
    }

    /// Writes what `id` has queued (handshake response, engine frames, publications,
    /// answers that did not fit) into `tx` as far as it takes it.
    pub fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        let mut tx = Counted::new(tx);
        if let Some(s) = self.session(id) {
            s.flush(&mut tx);
        }
        self.count_out(id, tx.bytes);
    }

    /// `n` bytes of `id` went to the transport.
    fn count_out(&mut self, id: ConnId, n: usize) {
        if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
            count_bytes_out(&self.stats, s, n);
        }
    }

    /// The peer closed its side (TCP EOF).
    pub fn peer_closed(&mut self, id: ConnId) {
        if let Some(s) = self.session(id) {
            s.read_eof = true;
        }
    }

    /// Feeds WebSocket bytes of an open connection to its engine, in order, answering
    /// into `tx`. Echo and pub/sub routes without permessage-deflate take the borrowed
    /// path: whole messages are handed out unmasked in `data` itself
    /// ([`ws::Connection::read_with`]), no copy and no allocation; everything else (and
    /// any time output is queued) takes the engine's event path.
    pub(super) fn feed<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        let mut pos = 0;
        let mut general = false;
        while pos < data.len() {
            let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            // Queued output first (handshake response, pongs), to keep the order.
            s.flush(tx);
            let Phase::Open(ws) = &mut s.phase else {
                return;
            };
            if !ws.is_reading() {
                return;
            }
            let kind = s.route.and_then(|r| self.routes.get(r)).map(|r| r.cfg.kind);
            let borrowable = s.deflate_bits.is_none()
                && s.out.is_empty()
                && !ws.close_sent()
                && matches!(kind, Some(RouteKind::Echo | RouteKind::Pubsub));
            let input = data.get_mut(pos..).unwrap_or_default();
            let mut events = std::mem::take(&mut self.events);
            let borrowed = borrowable && !general;
            let n = if borrowed {
                // The engine is taken out of the session while it reads, so the routes
                // can use the worker (and the session) from its callback.
                let phase = std::mem::replace(&mut s.phase, Phase::Lent);
                let Phase::Open(mut ws) = phase else {
                    s.phase = phase;
                    self.events = events;
                    return;
                };
                let n = if kind == Some(RouteKind::Echo) {
                    // Echo needs only its session: every message goes straight back,
                    // counted once per read.
                    let (small, echoed) = super::echo::echo_small(&mut ws, input, tx);
                    let (mut msgs_in, mut msgs_out) = (echoed, echoed);
                    let rest = input.get_mut(small..).unwrap_or_default();
                    let n = small
                        + if rest.is_empty() || !ws.is_reading() {
                            0
                        } else {
                            ws.read_with(rest, &mut |kind, payload| {
                                msgs_in += 1;
                                msgs_out += u64::from(s.send_message(tx, kind, payload));
                            })
                        };
                    s.msgs_in += msgs_in;
                    s.msgs_out += msgs_out;
                    if let Some(route) = s.route.and_then(|r| self.routes.get(r)) {
                        route.stats().msgs_in.add(msgs_in);
                        route.stats().msgs_out.add(msgs_out);
                    }
                    n
                } else {
                    ws.read_with(input, &mut |kind, payload| {
                        self.on_message(id, kind, payload, tx);
                    })
                };
                while let Some(ev) = ws.poll_event() {
                    events.push(ev);
                }
                match self.session(id) {
                    Some(s) => s.phase = Phase::Open(ws),
                    None => {
                        self.events = events;
                        return;
                    }
                }
                n
            } else {
                let n = ws.read(input);
                while let Some(ev) = ws.poll_event() {
                    events.push(ev);
                }
                n
            };
            for ev in events.drain(..) {
                self.on_event(id, ev, tx, now);
            }
            self.events = events;
            // A read that took nothing (it cannot while reading) takes the general path
            // next, which always makes progress; if even that took nothing, stop rather
            // than spin (the engine then keeps no partial state of these bytes).
            if n == 0 && !borrowed {
                tracing::warn!(
                    id,
                    left = data.len() - pos,
                    "WebSocket read made no progress"
                );
                return;
            }
            general = n == 0;
            pos += n;
        }
    }

    /// The echo route's common case, before [`Worker::feed`]: an open session with
    /// nothing queued, and the input's leading small whole frames answered in one lend of
    /// `tx` ([`super::echo::echo_small`]), with no engine event to handle and nothing to
    /// flush. Returns the bytes taken, and whether a text frame with invalid UTF-8 failed
    /// the connection (then all of them are taken: nothing more is read, and the
    /// engine's events are handled here); `feed` takes the rest.
    fn echo_fast<T: Tx>(
        &mut self,
        id: ConnId,
        data: &[u8],
        tx: &mut T,
        now: Instant,
    ) -> (usize, bool) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return (0, false);
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return (0, false);
        };
        if route.cfg.kind != RouteKind::Echo || s.deflate_bits.is_some() || !s.out.is_empty() {
            return (0, false);
        }
        let Phase::Open(ws) = &mut s.phase else {
            return (0, false);
        };
        if !ws.pending_output().is_empty() || ws.close_sent() {
            return (0, false);
        }
        let (n, echoed) = super::echo::echo_small(ws, data, tx);
        s.msgs_in += echoed;
        s.msgs_out += echoed;
        route.stats().msgs_in.add(echoed);
        route.stats().msgs_out.add(echoed);
        if ws.is_reading() {
            return (n, false);
        }
        // Failed (1007): the failure event closes the session, as in the general loop.
        let mut events = std::mem::take(&mut self.events);
        while let Some(ev) = ws.poll_event() {
            events.push(ev);
        }
        for ev in events.drain(..) {
            self.on_event(id, ev, tx, now);
        }
        self.events = events;
        (data.len(), true)
    }

    /// One whole data message of `id`, routed (borrowed from the input on the borrowed
    /// path).
    fn on_message<T: Tx>(&mut self, id: ConnId, kind: ws::MessageKind, data: &[u8], tx: &mut T) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        s.msgs_in += 1;
        route.stats().msgs_in.add(1);
        match route.cfg.kind {
            RouteKind::Proxy => {
                if let Some(up) = s.upstream.as_mut() {
                    up.send(kind, data.to_vec());
                }
            }
            RouteKind::Echo => super::echo::echo(s, route, kind, data, tx),
            RouteKind::Pubsub => self.pubsub_request(id, kind, data, tx),
        }
    }

    fn on_event<T: Tx>(&mut self, id: ConnId, ev: Event, tx: &mut T, now: Instant) {
        let deadline = self.close_deadline(now);
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        match ev {
            Event::Message { kind, data } => {
                if route.cfg.kind == RouteKind::Proxy {
                    s.msgs_in += 1;
                    route.stats().msgs_in.add(1);
                    // The assembled message moves to the upstream as it is.
                    if let Some(up) = s.upstream.as_mut() {
                        up.send(kind, data);
                    }
                } else {
                    self.on_message(id, kind, &data, tx);
                }
            }
            Event::Close { code, .. } => {
                if s.close_deadline.is_none() {
                    s.close_deadline = Some(deadline);
                }
                if let Some(up) = s.upstream.as_mut() {
                    // Reflect the client's close to the upstream.
                    up.close(
                        code.filter(|c| c.is_valid_on_wire())
                            .unwrap_or(CloseCode::NORMAL),
                    );
                }
            }
            Event::Failed { .. } => {
                if s.close_deadline.is_none() {
                    s.close_deadline = Some(deadline);
                }
                if let Some(up) = s.upstream.as_mut() {
                    up.close(CloseCode::GOING_AWAY);
                }
            }
            Event::Ping(_) | Event::Pong(_) => {}
        }
    }

    /// Handles a message from the broker or the control plane.
    pub fn handle_msg(&mut self, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Deliver(p, ack) => self.deliver(&p, ack.as_deref(), now),
            WorkerMsg::Snapshot(tx) => {
                let _ = tx.send(self.snapshot(now));
            }
            WorkerMsg::InterestResync => {
                if let Some(i) = &self.interest {
                    i.snapshot(self.topics.keys().cloned().collect());
                }
            }
        }
    }

    /// Cluster mode: report this worker's topics (first and last local subscriber) to
    /// the cluster link.
    pub fn set_interest(&mut self, interest: crate::cluster::InterestTx) {
        self.interest = Some(interest);
    }

    /// `topic` got its first local subscriber on this worker (`on`) or lost its last.
    pub(super) fn interest_changed(&self, topic: &Arc<str>, on: bool) {
        if let Some(i) = &self.interest {
            i.changed(topic, on);
        }
    }

    /// Whether the transport should read `id` now: not once the WebSocket reads no more
    /// (Close received, failed, refused), nor while its queued output is above the route's
    /// bound (backpressure onto the client). After our Close it still reads, to receive
    /// the peer's answering Close (RFC 6455 7.1.1).
    pub fn wants_read(&self, id: ConnId) -> bool {
        let Some(s) = self.sessions.get(id).and_then(Option::as_ref) else {
            return false;
        };
        let reading = match &s.phase {
            Phase::Handshake(_) => true,
            Phase::Open(ws) => ws.is_reading(),
            Phase::Lent => true,
            Phase::Refused => false,
        };
        if s.out.is_empty() && s.upstream.is_none() {
            // Nothing queued to bound (the common case, without the route lookup).
            return reading;
        }
        let bound = s
            .route
            .and_then(|r| self.routes.get(r))
            .map_or(usize::MAX, |r| r.cfg.max_queued_bytes);
        let upstream = s.upstream.as_ref().map_or(0, |u| u.queued());
        reading && s.out.len() <= bound && upstream <= bound
    }

    /// Whether the transport should close `id` now (see [`Session::is_finished`]).
    pub fn is_finished(&self, id: ConnId) -> bool {
        self.sessions
            .get(id)
            .and_then(Option::as_ref)
            .is_none_or(|s| {
                s.is_finished()
                    // The peer closed TCP without a closing handshake: nothing to wait for.
                    || (s.read_eof && !s.is_closing())
            })
    }

    /// Connections with new output since the last call; flush each.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        let ids = std::mem::take(&mut self.dirty);
        for &id in &ids {
            if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
                s.dirty = false;
            }
        }
        ids
    }

    /// The per-connection table for `sluice stat`.
    pub fn snapshot(&self, now: Instant) -> Vec<ConnInfo> {
        self.snapshot_with(now, |_| None)
    }

    /// The per-connection table, with the transport's TCP view of each connection
    /// (`tcp(id)`, e.g. the AF_XDP stack's state, cwnd and RTT).
    pub fn snapshot_with(
        &self,
        now: Instant,
        tcp: impl Fn(ConnId) -> Option<TcpInfo>,
    ) -> Vec<ConnInfo> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_ref().map(|s| (id, s)))
            .map(|(id, s)| ConnInfo {
                worker: self.index,
                peer: s.peer.to_string(),
                route: s
                    .route
                    .and_then(|r| self.routes.get(r))
                    .map_or_else(|| "-".to_string(), |r| r.cfg.path.clone()),
                state: s.state_name().to_string(),
                topics: s.topics.len(),
                msgs_in: s.msgs_in,
                msgs_out: s.msgs_out,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                queued: s.out.len(),
                drops: s.drops,
                age_s: now.saturating_since(s.accepted).as_secs(),
                tcp: tcp(id),
            })
            .collect()
    }
}

/// The gateway (and ws-echo) as the application both drivers serve; each method is the
/// inherent one of the same name.
/// `n` bytes of session `s` went to the transport: its count and its route's.
fn count_bytes_out(stats: &WorkerStats, s: &mut Session, n: usize) {
    if n == 0 {
        return;
    }
    s.bytes_out += n as u64;
    if s.route.is_some() {
        stats.route(s.route).bytes_out.add(n as u64);
    }
}

impl App for Worker {
    type Message = WorkerMsg;

    fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        Worker::accept(self, id, peer, now)
    }
    fn remove(&mut self, id: ConnId) {
        Worker::remove(self, id);
    }
    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        Worker::receive(self, id, data, tx, now);
    }
    fn peer_closed(&mut self, id: ConnId) {
        Worker::peer_closed(self, id);
    }
    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        Worker::flush(self, id, tx);
    }
    fn wants_read(&self, id: ConnId) -> bool {
        Worker::wants_read(self, id)
    }
    fn is_finished(&self, id: ConnId) -> bool {
        Worker::is_finished(self, id)
    }
    fn settled(&self, id: ConnId) -> bool {
        self.sessions
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(Session::settled)
    }
    fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        for &id in &self.dirty {
            if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
                s.dirty = false;
            }
        }
        out.append(&mut self.dirty);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout()
    }
    fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        expired.append(&mut Worker::handle_timeout(self, now));
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        Worker::shutdown(self, now, deadline);
    }
    fn live(&self) -> usize {
        Worker::live(self)
    }
    fn handle_message(&mut self, msg: WorkerMsg, now: Instant, tcp: TcpView<'_>) {
        match msg {
            WorkerMsg::Snapshot(tx) => {
                let _ = tx.send(self.snapshot_with(now, tcp));
            }
            other => self.handle_msg(other, now),
        }
    }
    fn take_upstream_requests(&mut self) -> Vec<(ConnId, String)> {
        Worker::take_upstream_requests(self)
    }
    fn upstream_connected(&mut self, id: ConnId) {
        Worker::upstream_connected(self, id);
    }
    fn upstream_output(&self, id: ConnId) -> &[u8] {
        Worker::upstream_output(self, id)
    }
    fn upstream_consume(&mut self, id: ConnId, n: usize) {
        Worker::upstream_consume(self, id, n);
    }
    fn wants_upstream_read(&self, id: ConnId) -> bool {
        Worker::wants_upstream_read(self, id)
    }
    fn upstream_finished(&self, id: ConnId) -> bool {
        Worker::upstream_finished(self, id)
    }
    fn upstream_receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        Worker::upstream_receive(self, id, data, now);
    }
    fn upstream_lost(&mut self, id: ConnId, now: Instant) {
        Worker::upstream_lost(self, id, now);
    }
}

#[cfg(test)]
mod tests;
