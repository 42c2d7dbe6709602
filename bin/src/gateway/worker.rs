//! The transport-independent gateway worker: every connection of one worker, the local
//! topic table, limits and the slow-consumer policy. Sans-IO: the transport feeds received
//! bytes ([`Worker::receive`]), writes [`Worker::output`], reports what it wrote
//! ([`Worker::consume`]) and closes what [`Worker::is_finished`] or
//! [`Worker::handle_timeout`] name. No socket and no clock in here: `now` is passed in.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tcp::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use ws::{CloseCode, Connection, Event, MessageKind, Role, ServerConfig};

use super::broker::Publisher;
use super::protocol::{Reply, Request};
use super::proxy::{UpEvent, Upstream};
use super::session::{Phase, Session};
use super::{Ack, ConnId, ConnInfo, Publication, TcpInfo, WorkerMsg};
pub use crate::app::Refusal;
use crate::app::{App, TcpView};
use crate::config::{parse_upstream, Config, Route, RouteKind, SlowConsumer};
use crate::metrics::{route_label, Metrics};

/// How often the deadlines are scanned.
const SCAN: Duration = Duration::from_millis(100);

/// A route with its handshake settings and metric handles.
#[derive(Debug)]
struct RouteRt {
    cfg: Route,
    server: ServerConfig,
    msgs_in: Counter,
    msgs_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// What a handshake produced.
enum Upgrade {
    Incomplete,
    Open {
        route: usize,
        ws: Box<Connection>,
        response: Vec<u8>,
        rest: Vec<u8>,
        bits: Option<u8>,
    },
    Refuse(Vec<u8>, &'static str),
}

/// A minimal HTTP error response that closes the connection.
fn http_refusal(status: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
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
    index: usize,
    config: Arc<Config>,
    routes: Vec<RouteRt>,
    base_server: ServerConfig,
    ws_config: ws::Config,
    sessions: Vec<Option<Session>>,
    topics: HashMap<Arc<str>, HashSet<ConnId>>,
    per_ip: HashMap<IpAddr, usize>,
    live: usize,
    metrics: Arc<Metrics>,
    publisher: Option<Publisher>,
    dirty: Vec<ConnId>,
    draining: bool,
    unrouted_bytes_in: Counter,
    /// Proxy connections waiting for the transport to open their upstream socket.
    upstream_requests: Vec<(ConnId, String)>,
    /// Seeds upstream masking keys.
    mask_seed: u64,
    /// Requests for unknown paths take the first route (ws-echo) instead of a 404.
    any_path: bool,
    /// When the deadlines are scanned next ([`Worker::handle_timeout`]).
    next_scan: Instant,
}

impl Worker {
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
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let mut server = base_server.clone();
                server.deflate.enabled = r.compression;
                if r.kind == RouteKind::Pubsub {
                    // Shared frames are compressed once for all subscribers, which needs
                    // RFC 7692 7.1.1.1 server_no_context_takeover.
                    server.deflate.server_no_context_takeover = true;
                }
                let label = route_label(&r.path);
                RouteRt {
                    cfg: r.clone(),
                    server,
                    msgs_in: metrics.messages_in.get_or_create(&label).clone(),
                    msgs_out: metrics.messages_out.get_or_create(&label).clone(),
                    bytes_in: metrics.bytes_in.get_or_create(&label).clone(),
                    bytes_out: metrics.bytes_out.get_or_create(&label).clone(),
                }
            })
            .collect();
        let unrouted_bytes_in = metrics.bytes_in.get_or_create(&route_label("-")).clone();
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
            metrics,
            publisher,
            dirty: Vec::new(),
            draining: false,
            unrouted_bytes_in,
            upstream_requests: Vec::new(),
            mask_seed: random_seed(),
            any_path: false,
            next_scan: Instant::ZERO,
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

    fn session(&mut self, id: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(id).and_then(Option::as_mut)
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn close_deadline(&self, now: Instant) -> Instant {
        now + Duration::from_millis(self.config.limits.close_timeout_ms)
    }

    /// A new TCP connection in slot `id` (chosen by the transport, unused until
    /// [`Worker::remove`]). On `Err` the transport closes it at once.
    pub fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        let limits = &self.config.limits;
        if self.draining || self.live >= limits.max_connections {
            self.metrics.refused("max_connections");
            return Err(Refusal::MaxConnections);
        }
        let count = self.per_ip.entry(peer.ip()).or_insert(0);
        if *count >= limits.max_connections_per_ip {
            self.metrics.refused("max_connections_per_ip");
            return Err(Refusal::MaxPerIp);
        }
        *count += 1;
        if self.sessions.len() <= id {
            self.sessions.resize_with(id + 1, || None);
        }
        self.sessions[id] = Some(Session::new(peer, now));
        self.live += 1;
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        Ok(())
    }

    /// Forgets connection `id` (closed by the transport).
    pub fn remove(&mut self, id: ConnId) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::take) else {
            return;
        };
        for t in &s.topics {
            if let Some(set) = self.topics.get_mut(t) {
                set.remove(&id);
                if set.is_empty() {
                    self.topics.remove(t);
                }
            }
        }
        if let Some(c) = self.per_ip.get_mut(&s.peer.ip()) {
            *c -= 1;
            if *c == 0 {
                self.per_ip.remove(&s.peer.ip());
            }
        }
        self.live -= 1;
        self.metrics.connections_open.dec();
    }

    /// Bytes received on `id`; payloads are unmasked in place.
    pub fn receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let Some(s) = self.session(id) else {
            return;
        };
        s.last_rx = now;
        s.ping_sent = false;
        s.bytes_in += data.len() as u64;
        let route = s.route;
        match route.and_then(|r| self.routes.get(r)) {
            Some(r) => r.bytes_in.inc_by(data.len() as u64),
            None => self.unrouted_bytes_in.inc_by(data.len() as u64),
        };
        let Some(s) = self.session(id) else {
            return;
        };
        match &mut s.phase {
            Phase::Handshake(head) => {
                head.extend_from_slice(data);
                self.upgrade(id, now);
            }
            Phase::Open(_) => self.feed(id, data, now),
            Phase::Refused => {}
        }
        self.mark_dirty(id);
    }

    /// The peer closed its side (TCP EOF).
    pub fn peer_closed(&mut self, id: ConnId) {
        if let Some(s) = self.session(id) {
            s.read_eof = true;
        }
    }

    fn upgrade(&mut self, id: ConnId, now: Instant) {
        let outcome = {
            let Some(Some(s)) = self.sessions.get(id) else {
                return;
            };
            let Phase::Handshake(head) = &s.phase else {
                return;
            };
            match ws::handshake::parse_request(head, &self.base_server) {
                Ok(None) => Upgrade::Incomplete,
                Err(e) => Upgrade::Refuse(e.response(), "bad_request"),
                Ok(Some(req)) => {
                    let allowed = &self.config.limits.allowed_origins;
                    let fallback = (self.any_path && !self.routes.is_empty()).then_some(0);
                    match self.config.route(req.path).map(|(i, _)| i).or(fallback) {
                        None => Upgrade::Refuse(http_refusal(404, "Not Found"), "not_found"),
                        // RFC 6455 4.2.2 item 4 / 10.2: the server may refuse an origin
                        // it does not accept with an HTTP error (403).
                        Some(_)
                            if !allowed.is_empty()
                                && !req.origin.is_some_and(|o| allowed.iter().any(|a| a == o)) =>
                        {
                            Upgrade::Refuse(http_refusal(403, "Forbidden"), "origin")
                        }
                        Some(i) => {
                            let acc = req.accept(&self.routes[i].server);
                            Upgrade::Open {
                                route: i,
                                ws: Box::new(Connection::new(
                                    Role::Server,
                                    self.ws_config,
                                    acc.deflate,
                                    0,
                                )),
                                response: acc.response,
                                rest: head.get(req.head_len..).unwrap_or_default().to_vec(),
                                bits: acc.deflate.map(|p| p.server_max_window_bits),
                            }
                        }
                    }
                }
            }
        };
        let deadline = self.close_deadline(now);
        let draining = self.draining;
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        match outcome {
            Upgrade::Incomplete => {}
            Upgrade::Refuse(resp, why) => {
                s.out.push(Bytes::from(resp));
                s.phase = Phase::Refused;
                s.close_deadline = Some(deadline);
                self.metrics.handshake(why);
            }
            Upgrade::Open {
                route,
                ws,
                response,
                mut rest,
                bits,
            } => {
                s.out.push(Bytes::from(response));
                s.phase = Phase::Open(ws);
                s.route = Some(route);
                s.deflate_bits = bits;
                self.metrics.handshake("ok");
                let rt = &self.routes[route].cfg;
                if rt.kind == RouteKind::Proxy && !draining {
                    if let Some(target) =
                        rt.upstream.as_deref().and_then(|u| parse_upstream(u).ok())
                    {
                        self.mask_seed = self
                            .mask_seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let up = Upstream::new(&target, self.ws_config, self.mask_seed);
                        self.upstream_requests.push((id, up.authority.clone()));
                        s.upstream = Some(Box::new(up));
                    }
                }
                if draining {
                    s.close(CloseCode::GOING_AWAY, "server shutting down", deadline);
                } else if !rest.is_empty() {
                    self.feed(id, &mut rest, now);
                }
            }
        }
    }

    fn feed(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let mut pos = 0;
        let mut events = Vec::new();
        loop {
            let Some(s) = self.session(id) else {
                return;
            };
            let Phase::Open(ws) = &mut s.phase else {
                return;
            };
            pos += ws.read(&mut data[pos..]);
            while let Some(ev) = ws.poll_event() {
                events.push(ev);
            }
            let reading = ws.is_reading();
            s.pull_engine_output();
            for ev in events.drain(..) {
                self.on_event(id, ev, now);
            }
            if pos >= data.len() || !reading {
                return;
            }
        }
    }

    fn on_event(&mut self, id: ConnId, ev: Event, now: Instant) {
        let deadline = self.close_deadline(now);
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        match ev {
            Event::Message { kind, data } => {
                s.msgs_in += 1;
                route.msgs_in.inc();
                match route.cfg.kind {
                    RouteKind::Proxy => {
                        if let Some(up) = s.upstream.as_mut() {
                            up.send(kind, data);
                        }
                    }
                    RouteKind::Echo => {
                        if let Some(ws) = s.ws() {
                            if ws.send(kind, &data).is_ok() {
                                s.msgs_out += 1;
                                route.msgs_out.inc();
                            }
                        }
                        s.pull_engine_output();
                    }
                    RouteKind::Pubsub => self.pubsub_request(id, kind, &data),
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

    fn pubsub_request(&mut self, id: ConnId, kind: MessageKind, data: &[u8]) {
        let req = if kind == MessageKind::Text {
            Request::parse(data).map_err(|e| e.to_string())
        } else {
            Err("binary messages are not part of the protocol".to_string())
        };
        let max_subs = self.config.limits.max_subscriptions;
        let reply = match req {
            Err(e) => Reply::Error {
                error: &e,
                id: None,
            }
            .to_json(),
            Ok(Request::Subscribe { topic, id: rid }) => {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    return;
                };
                if !s.topics.contains(topic.as_str()) && s.topics.len() >= max_subs {
                    Reply::Error {
                        error: "too many subscriptions",
                        id: rid.as_ref(),
                    }
                    .to_json()
                } else {
                    let key: Arc<str> = self
                        .topics
                        .get_key_value(topic.as_str())
                        .map_or_else(|| Arc::from(topic.as_str()), |(k, _)| Arc::clone(k));
                    s.topics.insert(Arc::clone(&key));
                    self.topics.entry(key).or_default().insert(id);
                    Reply::Subscribed {
                        topic: &topic,
                        id: rid.as_ref(),
                    }
                    .to_json()
                }
            }
            Ok(Request::Unsubscribe { topic, id: rid }) => {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    return;
                };
                s.topics.remove(topic.as_str());
                if let Some(set) = self.topics.get_mut(topic.as_str()) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.topics.remove(topic.as_str());
                    }
                }
                Reply::Unsubscribed {
                    topic: &topic,
                    id: rid.as_ref(),
                }
                .to_json()
            }
            Ok(Request::Publish {
                topic,
                data,
                id: rid,
            }) => {
                let ok = self
                    .publisher
                    .as_ref()
                    .is_some_and(|p| p.try_publish(topic.clone(), data));
                if ok {
                    Reply::Published {
                        topic: &topic,
                        id: rid.as_ref(),
                    }
                    .to_json()
                } else {
                    self.metrics.dropped("publish_queue_full");
                    Reply::Error {
                        error: "publish queue full, try again",
                        id: rid.as_ref(),
                    }
                    .to_json()
                }
            }
        };
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        if let Some(ws) = s.ws() {
            if ws.send(MessageKind::Text, reply.as_bytes()).is_ok() {
                s.msgs_out += 1;
                route.msgs_out.inc();
            }
        }
        s.pull_engine_output();
    }

    /// Handles a message from the broker or the control plane.
    pub fn handle_msg(&mut self, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Deliver(p, ack) => self.deliver(&p, ack.as_deref(), now),
            WorkerMsg::Snapshot(tx) => {
                let _ = tx.send(self.snapshot(now));
            }
        }
    }

    /// Queues a publication to this worker's subscribers of its topic.
    pub fn deliver(&mut self, p: &Publication, ack: Option<&Ack>, now: Instant) {
        let deadline = self.close_deadline(now);
        let mut delivered = 0;
        let mut touched = Vec::new();
        if let Some(ids) = self.topics.get(&p.topic) {
            for &id in ids {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    continue;
                };
                let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
                    continue;
                };
                if s.is_closing() {
                    continue;
                }
                let frame = p.frame(s.deflate_bits);
                if s.out.len() + frame.len() > route.cfg.max_queued_bytes {
                    s.drops += 1;
                    match route.cfg.slow_consumer {
                        SlowConsumer::DropNewest => self.metrics.dropped("slow_consumer_dropped"),
                        SlowConsumer::Close => {
                            self.metrics.dropped("slow_consumer_closed");
                            s.out.truncate_unstarted();
                            s.close(
                                CloseCode(route.cfg.slow_close_code),
                                "slow consumer",
                                deadline,
                            );
                            touched.push(id);
                        }
                    }
                    continue;
                }
                s.out.push(frame);
                s.msgs_out += 1;
                route.msgs_out.inc();
                delivered += 1;
                touched.push(id);
            }
        }
        for id in touched {
            self.mark_dirty(id);
        }
        if let Some(a) = ack {
            a.worker_done(delivered);
        }
    }

    /// The bytes to write next on `id` (empty when nothing is queued).
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.sessions
            .get(id)
            .and_then(Option::as_ref)
            .map_or(&[], |s| s.out.front())
    }

    /// The transport wrote `n` bytes of [`Worker::output`].
    pub fn consume(&mut self, id: ConnId, n: usize) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        s.out.consume(n);
        s.bytes_out += n as u64;
        if let Some(r) = s.route.and_then(|r| self.routes.get(r)) {
            r.bytes_out.inc_by(n as u64);
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
            Phase::Refused => false,
        };
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

    /// Runs deadlines (handshake, idle, ping, close) at `now`; returns connections the
    /// transport must drop at once. Call every ~100 ms.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ConnId> {
        self.next_scan = now + SCAN;
        let limits = &self.config.limits;
        let handshake = limits.handshake_timeout();
        let ping = Duration::from_millis(limits.ping_interval_ms);
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let deadline = now + Duration::from_millis(limits.close_timeout_ms);
        let mut expired = Vec::new();
        let mut touched = Vec::new();
        for (id, slot) in self.sessions.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else {
                continue;
            };
            if s.close_deadline.is_some_and(|d| now >= d) {
                self.metrics.dropped("close_timeout");
                expired.push(id);
                continue;
            }
            let silent = now.saturating_since(s.last_rx);
            match &mut s.phase {
                Phase::Handshake(_) => {
                    if now.saturating_since(s.accepted) >= handshake {
                        self.metrics.handshake("timeout");
                        expired.push(id);
                    }
                }
                Phase::Open(ws) if !ws.close_sent() => {
                    if !idle.is_zero() && silent >= idle {
                        self.metrics.dropped("idle_timeout");
                        s.close(CloseCode::GOING_AWAY, "idle timeout", deadline);
                        touched.push(id);
                    } else if !ping.is_zero() && silent >= ping && !s.ping_sent {
                        // RFC 6455 5.5.2: a Ping as a keepalive; the client answers Pong.
                        let _ = ws.ping(b"sluice");
                        s.ping_sent = true;
                        s.pull_engine_output();
                        touched.push(id);
                    }
                }
                Phase::Open(_) | Phase::Refused => {}
            }
        }
        for id in touched {
            self.mark_dirty(id);
        }
        expired
    }

    /// Graceful shutdown: refuse new connections and close every WebSocket with 1001
    /// behind its queued messages (RFC 6455 7.4.1: 1001, going away).
    pub fn shutdown(&mut self, now: Instant, deadline: Instant) {
        self.draining = true;
        let _ = now;
        let mut touched = Vec::new();
        for (id, slot) in self.sessions.iter_mut().enumerate() {
            if let Some(s) = slot.as_mut() {
                s.close(CloseCode::GOING_AWAY, "server shutting down", deadline);
                touched.push(id);
            }
        }
        for id in touched {
            self.mark_dirty(id);
        }
    }

    /// Proxy connections whose upstream socket the transport must open now: `(id,
    /// "host:port")`. Report the outcome with [`Worker::upstream_connected`] or
    /// [`Worker::upstream_lost`].
    pub fn take_upstream_requests(&mut self) -> Vec<(ConnId, String)> {
        std::mem::take(&mut self.upstream_requests)
    }

    /// The upstream TCP connection of `id` is established.
    pub fn upstream_connected(&mut self, id: ConnId) {
        if let Some(up) = self.session(id).and_then(|s| s.upstream.as_mut()) {
            up.connected();
        }
    }

    /// The next bytes to write to `id`'s upstream.
    pub fn upstream_output(&self, id: ConnId) -> &[u8] {
        self.sessions
            .get(id)
            .and_then(Option::as_ref)
            .and_then(|s| s.upstream.as_ref())
            .map_or(&[], |u| u.out.front())
    }

    /// The transport wrote `n` bytes of [`Worker::upstream_output`].
    pub fn upstream_consume(&mut self, id: ConnId, n: usize) {
        if let Some(up) = self.session(id).and_then(|s| s.upstream.as_mut()) {
            up.out.consume(n);
        }
    }

    /// Whether the transport should read `id`'s upstream now (not while the client's
    /// queued output is above the route's bound: backpressure onto the upstream).
    pub fn wants_upstream_read(&self, id: ConnId) -> bool {
        let Some(s) = self.sessions.get(id).and_then(Option::as_ref) else {
            return false;
        };
        let bound = s
            .route
            .and_then(|r| self.routes.get(r))
            .map_or(usize::MAX, |r| r.cfg.max_queued_bytes);
        s.upstream.as_ref().is_some_and(|u| !u.is_finished()) && s.out.len() <= bound
    }

    /// Whether `id`'s upstream socket should be closed (closed, failed, or the client gone).
    pub fn upstream_finished(&self, id: ConnId) -> bool {
        self.sessions
            .get(id)
            .and_then(Option::as_ref)
            .and_then(|s| s.upstream.as_ref())
            .is_none_or(|u| u.is_finished() && u.out.is_empty())
    }

    /// Bytes received from `id`'s upstream.
    pub fn upstream_receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let events = match self.session(id).and_then(|s| s.upstream.as_mut()) {
            Some(up) => up.receive(data),
            None => return,
        };
        self.upstream_events(id, events, now);
    }

    /// `id`'s upstream connection failed or closed without a closing handshake.
    pub fn upstream_lost(&mut self, id: ConnId, now: Instant) {
        let events = match self.session(id).and_then(|s| s.upstream.as_mut()) {
            Some(up) => up.lost().into_iter().collect(),
            None => return,
        };
        self.upstream_events(id, events, now);
    }

    fn upstream_events(&mut self, id: ConnId, events: Vec<UpEvent>, now: Instant) {
        let deadline = self.close_deadline(now);
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        for ev in events {
            match ev {
                UpEvent::Message(kind, data) => {
                    if let Some(ws) = s.ws() {
                        if ws.send(kind, &data).is_ok() {
                            s.msgs_out += 1;
                            route.msgs_out.inc();
                        }
                    }
                    s.pull_engine_output();
                }
                // The upstream's close is reflected to the client with its code.
                UpEvent::Closed(code) => {
                    let code = code
                        .filter(|c| c.is_valid_on_wire())
                        .unwrap_or(CloseCode::NORMAL);
                    s.close(code, "upstream closed", deadline);
                }
                UpEvent::Failed => {
                    self.metrics.dropped("upstream_failed");
                    // 1014: bad gateway (IANA WebSocket close code registry).
                    s.close(CloseCode(1014), "upstream failed", deadline);
                }
            }
        }
        self.mark_dirty(id);
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
impl App for Worker {
    type Message = WorkerMsg;

    fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        Worker::accept(self, id, peer, now)
    }
    fn remove(&mut self, id: ConnId) {
        Worker::remove(self, id);
    }
    fn receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        Worker::receive(self, id, data, now);
    }
    fn peer_closed(&mut self, id: ConnId) {
        Worker::peer_closed(self, id);
    }
    fn output(&self, id: ConnId) -> &[u8] {
        Worker::output(self, id)
    }
    fn consume(&mut self, id: ConnId, n: usize) {
        Worker::consume(self, id, n);
    }
    fn wants_read(&self, id: ConnId) -> bool {
        Worker::wants_read(self, id)
    }
    fn is_finished(&self, id: ConnId) -> bool {
        Worker::is_finished(self, id)
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
        (self.live > 0).then_some(self.next_scan)
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
