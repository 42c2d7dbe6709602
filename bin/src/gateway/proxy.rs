//! The upstream side of a `proxy` route (sans-IO): a WebSocket client connection to the
//! route's upstream, bridged message by message to one gateway client.

use std::collections::VecDeque;

use bytes::Bytes;
use ws::{ClientHandshake, CloseCode, Connection, DeflateConfig, Event, MessageKind, Role};

use tcp::Instant;

use super::session::OutQueue;
use super::worker::Worker;
use super::ConnId;
use crate::config;
use crate::metrics::Drop;

/// Where the upstream connection is.
#[derive(Debug)]
enum Phase {
    /// The transport is connecting the TCP socket.
    Connecting,
    /// Our upgrade request is out; collecting the response.
    Handshake(ClientHandshake, Vec<u8>),
    /// Open.
    Open(Box<Connection>),
    /// Gone (closed, failed or never connected).
    Closed,
}

/// Something the upstream did that the client must see.
#[derive(Debug, PartialEq, Eq)]
pub enum UpEvent {
    /// A message to forward to the client.
    Message(MessageKind, Vec<u8>),
    /// The upstream closed with this code (reflected to the client).
    Closed(Option<CloseCode>),
    /// The upstream broke the protocol or refused the handshake.
    Failed,
}

/// One upstream WebSocket connection.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port` the transport connects to.
    pub authority: String,
    path: String,
    phase: Phase,
    /// Bytes for the transport to write to the upstream.
    pub out: OutQueue,
    /// Client messages waiting for the upstream handshake.
    pending: VecDeque<(MessageKind, Vec<u8>)>,
    pending_bytes: usize,
    ws_config: ws::Config,
    seed: u64,
}

impl Upstream {
    /// A connection to `target`, waiting for the transport's TCP connect. `seed` seeds the
    /// masking keys (RFC 6455 5.3: a client masks with unpredictable keys).
    pub fn new(target: &config::Upstream, ws_config: ws::Config, seed: u64) -> Upstream {
        Upstream {
            authority: target.authority.clone(),
            path: target.path.clone(),
            phase: Phase::Connecting,
            out: OutQueue::default(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            ws_config,
            seed,
        }
    }

    /// The TCP connection is up: send the upgrade request.
    pub fn connected(&mut self) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.seed.to_le_bytes());
        nonce[8..].copy_from_slice(&self.seed.rotate_left(29).to_le_bytes());
        let hs = ClientHandshake::new(
            nonce,
            Vec::new(),
            DeflateConfig {
                enabled: false,
                ..DeflateConfig::default()
            },
        );
        self.out
            .push(Bytes::from(hs.request(&self.authority, &self.path)));
        self.phase = Phase::Handshake(hs, Vec::new());
    }

    /// Forwards a client message (queued until the upstream is open).
    pub fn send(&mut self, kind: MessageKind, data: Vec<u8>) {
        match &mut self.phase {
            Phase::Open(c) => {
                // Fails only once a Close was sent; then nothing more may be sent.
                let _ = c.send(kind, &data);
                self.pull();
            }
            Phase::Connecting | Phase::Handshake(..) => {
                self.pending_bytes += data.len();
                self.pending.push_back((kind, data));
            }
            Phase::Closed => {}
        }
    }

    /// Starts the closing handshake with the upstream (the client closed).
    pub fn close(&mut self, code: CloseCode) {
        match &mut self.phase {
            Phase::Open(c) => {
                let _ = c.close(code, "");
                self.pull();
            }
            _ => self.phase = Phase::Closed,
        }
    }

    /// The transport lost the connection (EOF, error, connect failure).
    pub fn lost(&mut self) -> Option<UpEvent> {
        let was_open = !matches!(self.phase, Phase::Closed);
        self.phase = Phase::Closed;
        was_open.then_some(UpEvent::Failed)
    }

    /// Bytes received from the upstream; returns what the client must see.
    pub fn receive(&mut self, data: &mut [u8]) -> Vec<UpEvent> {
        let mut events = Vec::new();
        let mut data = data;
        let mut owned;
        if let Phase::Handshake(hs, buf) = &mut self.phase {
            buf.extend_from_slice(data);
            match hs.parse_response(buf) {
                Ok(None) => return events,
                Err(_) => {
                    self.phase = Phase::Closed;
                    events.push(UpEvent::Failed);
                    return events;
                }
                Ok(Some(acc)) => {
                    owned = buf.get(acc.head_len..).unwrap_or_default().to_vec();
                    let mut c = Box::new(Connection::new(
                        Role::Client,
                        self.ws_config,
                        acc.deflate,
                        self.seed,
                    ));
                    for (kind, msg) in self.pending.drain(..) {
                        let _ = c.send(kind, &msg);
                    }
                    self.pending_bytes = 0;
                    self.phase = Phase::Open(c);
                    self.pull();
                    data = &mut owned;
                }
            }
        }
        let Phase::Open(c) = &mut self.phase else {
            return events;
        };
        let mut pos = 0;
        loop {
            pos += c.read(&mut data[pos..]);
            while let Some(ev) = c.poll_event() {
                match ev {
                    Event::Message { kind, data } => events.push(UpEvent::Message(kind, data)),
                    Event::Close { code, .. } => events.push(UpEvent::Closed(code)),
                    Event::Failed { .. } => events.push(UpEvent::Failed),
                    Event::Ping(_) | Event::Pong(_) => {}
                }
            }
            if pos >= data.len() || !c.is_reading() {
                break;
            }
        }
        self.pull();
        events
    }

    fn pull(&mut self) {
        if let Phase::Open(c) = &mut self.phase {
            let p = c.pending_output();
            if !p.is_empty() {
                let n = p.len();
                self.out.push(Bytes::copy_from_slice(p));
                c.consume_output(n);
            }
        }
    }

    /// Bytes queued toward the upstream (written or waiting for the handshake).
    pub fn queued(&self) -> usize {
        self.out.len() + self.pending_bytes
    }

    /// Whether the transport should close the upstream socket once `out` is written.
    pub fn is_finished(&self) -> bool {
        match &self.phase {
            Phase::Open(c) => c.is_closed(),
            Phase::Closed => true,
            Phase::Connecting | Phase::Handshake(..) => false,
        }
    }
}

/// The `proxy` route's side of the gateway worker: the transport opens, writes and reads
/// each client's upstream socket through these.
impl Worker {
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

    pub(super) fn upstream_events(&mut self, id: ConnId, events: Vec<UpEvent>, now: Instant) {
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
                            route.stats().msgs_out.add(1);
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
                    self.stats.dropped(Drop::UpstreamFailed);
                    // 1014: bad gateway (IANA WebSocket close code registry).
                    s.close(CloseCode(1014), "upstream failed", deadline);
                }
            }
        }
        self.mark_dirty(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn upstream() -> Upstream {
        let target = config::parse_upstream("ws://127.0.0.1:9/x").unwrap();
        Upstream::new(
            &target,
            ws::Config {
                max_frame_size: 1024,
                max_message_size: 1024,
            },
            42,
        )
    }

    #[test]
    fn upstream_connecting_queues_messages() {
        let mut u = upstream();
        u.send(MessageKind::Text, b"abc".to_vec());
        assert_eq!(u.queued(), 3);
        assert!(u.out.is_empty());
        u.connected();
        assert!(u.out.front().starts_with(b"GET /x HTTP/1.1\r\n"));
    }

    #[test]
    fn upstream_bad_handshake_response_failed() {
        let mut u = upstream();
        u.connected();
        let evs = u.receive(&mut b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec());
        assert_eq!(evs, vec![UpEvent::Failed]);
        assert!(u.is_finished());
    }

    #[test]
    fn upstream_lost_while_open_failed_once() {
        let mut u = upstream();
        assert_eq!(u.lost(), Some(UpEvent::Failed));
        assert_eq!(u.lost(), None);
    }
}
