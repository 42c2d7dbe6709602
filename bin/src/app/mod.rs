//! The application layer's one sans-IO trait, [`App`], and the applications that are not
//! the gateway ([`tcp`]: tcp-echo, tcp-discard, tcp-source). The gateway and ws-echo
//! implement it in `crate::gateway`.
//!
//! An application serves every connection of one worker. It owns no socket, no stack and
//! no clock: a driver (`crate::drivers`: the stack driver over any `dataplane::Device`, or
//! the kernel-socket driver on mio) owns the transport, reads the worker's clock once per
//! batch and calls the methods below with that `now`. The same application code therefore
//! behaves the same on both transports.
//!
//! The driver's loop, per connection, is always the same:
//!
//! 1. a new connection: [`App::accept`] (on `Err`, the driver closes it at once);
//! 2. while [`App::wants_read`]: hand in received bytes with [`App::receive`]; at the
//!    peer's FIN call [`App::peer_closed`];
//! 3. write [`App::output`] as far as the transport takes it and report what it took
//!    with [`App::consume`] (never more than was offered);
//! 4. once [`App::is_finished`] (checked after the output is written): close the
//!    connection in order (FIN, then drain the peer) and call [`App::remove`];
//! 5. after every batch: flush the connections [`App::take_dirty`] names, and run
//!    [`App::handle_timeout`] when [`App::poll_timeout`] has passed.

pub mod tcp;

use ::tcp::Instant;
use std::net::SocketAddr;

/// Index of a connection inside one worker (the driver's slot number, reused after
/// [`App::remove`]).
pub type ConnId = usize;

/// Why an accepted TCP connection is refused at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached (or the application is stopping).
    MaxConnections,
    /// `limits.max_connections_per_ip` reached for this source.
    MaxPerIp,
}

/// One connection's TCP state as a stack driver sees it (like `ss -ti`); the kernel
/// driver has none.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TcpInfo {
    /// RFC 9293 state (`Established`, `FinWait1`, ...).
    pub state: String,
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Smoothed RTT in microseconds, once measured.
    pub srtt_us: Option<u64>,
    /// Retransmission timeout in milliseconds.
    pub rto_ms: u64,
    /// Segments retransmitted.
    pub retransmits: u32,
}

/// The transport's view of connections, offered to [`App::handle_message`] (e.g. for the
/// gateway's per-connection table).
pub type TcpView<'a> = &'a dyn Fn(ConnId) -> Option<TcpInfo>;

/// A sans-IO application serving every connection of one worker (see the module docs for
/// the order in which a driver calls these).
pub trait App {
    /// Messages other threads send this worker (the broker's publications, control
    /// requests) over a bounded queue the driver polls once per batch.
    type Message: Send + std::fmt::Debug + 'static;

    /// A new connection in slot `id` (unused since its last [`App::remove`]), from `peer`.
    /// On `Err` the driver closes it at once and the slot stays free.
    fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal>;

    /// Forget slot `id`: the driver has closed or lost the connection. Called once per
    /// accepted connection, whatever ended it.
    fn remove(&mut self, id: ConnId);

    /// In-order bytes received on `id`, all of them taken; the application may modify them
    /// in place (WebSocket unmasking). Called only while [`App::wants_read`] is true.
    fn receive(&mut self, id: ConnId, data: &mut [u8], now: Instant);

    /// The peer closed its sending side (TCP FIN, after every byte was received).
    fn peer_closed(&mut self, id: ConnId);

    /// The next bytes to send on `id` (empty when nothing is queued). The driver writes a
    /// prefix of them and reports it with [`App::consume`].
    fn output(&self, id: ConnId) -> &[u8];

    /// `n` bytes of [`App::output`] were handed to the transport.
    fn consume(&mut self, id: ConnId, n: usize);

    /// Whether to read `id` now (false: backpressure, or done reading). The driver leaves
    /// unread data to the transport (TCP flow control), and asks again after output moves.
    fn wants_read(&self, id: ConnId) -> bool;

    /// Whether to close `id` now; the driver checks it once [`App::output`] is empty.
    fn is_finished(&self, id: ConnId) -> bool;

    /// Appends to `out` the connections with new output or state since the last call
    /// (from messages or deadlines); the driver flushes each. Call after every batch.
    fn take_dirty(&mut self, out: &mut Vec<ConnId>);

    /// An instant no later than the earliest at which [`App::handle_timeout`] has work
    /// (`None`: none; a timer wheel may answer earlier, and a call then just advances
    /// it). The driver never sleeps past it.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs the deadlines due at `now` (handshake, idle, ping, close); appends to
    /// `expired` the connections the driver must drop at once (abort). Call when
    /// [`App::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>);

    /// Graceful stop: accept nothing new and finish every connection by `deadline` (the
    /// driver keeps flushing and closes what [`App::is_finished`] names).
    fn shutdown(&mut self, now: Instant, deadline: Instant);

    /// Open connections (accepted, not yet removed).
    fn live(&self) -> usize;

    /// A message from another thread; `tcp` gives the transport's view of a connection.
    fn handle_message(&mut self, msg: Self::Message, now: Instant, tcp: TcpView<'_>) {
        let _ = (msg, now, tcp);
    }

    /// Connections whose upstream kernel socket the driver must open now: `(id,
    /// "host:port")` (the gateway's proxy routes). Report the outcome with
    /// [`App::upstream_connected`] or [`App::upstream_lost`].
    fn take_upstream_requests(&mut self) -> Vec<(ConnId, String)> {
        Vec::new()
    }

    /// The upstream TCP connection of `id` is established.
    fn upstream_connected(&mut self, id: ConnId) {
        let _ = id;
    }

    /// The next bytes to write to `id`'s upstream.
    fn upstream_output(&self, id: ConnId) -> &[u8] {
        let _ = id;
        &[]
    }

    /// The driver wrote `n` bytes of [`App::upstream_output`].
    fn upstream_consume(&mut self, id: ConnId, n: usize) {
        let _ = (id, n);
    }

    /// Whether to read `id`'s upstream now.
    fn wants_upstream_read(&self, id: ConnId) -> bool {
        let _ = id;
        false
    }

    /// Whether `id`'s upstream socket should be closed.
    fn upstream_finished(&self, id: ConnId) -> bool {
        let _ = id;
        true
    }

    /// Bytes received from `id`'s upstream.
    fn upstream_receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let _ = (id, data, now);
    }

    /// `id`'s upstream connection failed or closed.
    fn upstream_lost(&mut self, id: ConnId, now: Instant) {
        let _ = (id, now);
    }
}
