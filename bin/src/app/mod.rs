//! The application layer's one sans-IO trait, [`App`], and the applications that are not
//! the gateway ([`tcp`]: tcp-echo, tcp-discard, tcp-source). The gateway and ws-echo
//! implement it in `crate::gateway`; [`tls::Tls`] puts TLS (wss://) in front of any of them.
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
//! 2. while [`App::wants_read`]: hand in received bytes with [`App::receive`], with the
//!    connection's transmit side ([`Tx`]) so the application answers in place; at the
//!    peer's FIN call [`App::peer_closed`]; after a receive, the driver may skip its
//!    flush of a connection the application calls [`App::settled`];
//! 3. when the transport has room again (and for every dirty connection), call
//!    [`App::flush`]: the application writes what it had to keep queued;
//! 4. once [`App::is_finished`] (checked after the flush, and once the driver's own
//!    buffer is written): close the connection in order (FIN, then drain the peer) and
//!    call [`App::remove`];
//! 5. after every batch: flush the connections [`App::take_dirty`] names, and run
//!    [`App::handle_timeout`] when [`App::poll_timeout`] has passed.
//!
//! # Output: pushed, in place
//!
//! Output is pushed into the transport through [`Tx`], not pulled from the application:
//! on the stack driver a [`Tx`] writes straight into the connection's TCP send buffer
//! (`tcp::Stack::send_with`) or queues a shared chunk there (`tcp::Stack::send_chunk`),
//! so a WebSocket echo is copied twice in all (RX frame -> send buffer -> TX frame) and
//! a publication once per subscriber (its shared frame -> TX frame). The kernel driver's
//! [`Tx`] is the connection's write buffer ([`BufTx`]). What does not fit now stays in
//! the application's own queue until the next [`App::flush`].

pub mod tcp;
pub mod tls;

use ::tcp::Instant;
use bytes::Bytes;
use std::net::SocketAddr;

/// A connection's transmit side, lent to the application by the driver. Every method
/// takes what fits now and says how much; the application keeps the rest queued and
/// writes it from [`App::flush`] (the driver calls it when room frees up). Bytes are sent
/// in call order.
pub trait Tx {
    /// Lends at least `min_len` bytes (1 if 0) of contiguous space to `fill`, which
    /// writes from the start of the slice and returns how many bytes to send (capped at
    /// the slice). Returns the bytes taken; 0 without calling `fill` when fewer than
    /// `min_len` bytes are free now (or the connection cannot send any more).
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize;

    /// Copies as much of `data` as fits; returns how much.
    fn write(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let rest = data.get(done..).unwrap_or_default();
            let n = self.write_with(1, |buf| {
                let n = buf.len().min(rest.len());
                if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
                    to.copy_from_slice(from);
                }
                n
            });
            if n == 0 {
                break;
            }
            done += n;
        }
        done
    }

    /// Sends a shared immutable chunk whole (a transport that can queues it by
    /// reference, without copying it), or gives it back when it does not fit whole now.
    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes>;
}

/// A [`Tx`] over a byte buffer bounded at `limit` bytes: the kernel driver's write buffer
/// of a connection, and a test's output.
#[derive(Debug)]
pub struct BufTx<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl<'a> BufTx<'a> {
    /// What [`Tx::write_with`] lends for a `min_len` of 0 or 1 ("as much as you can"), at
    /// most; any other `min_len` gets exactly that, as the stack's send buffer lends. The
    /// lent bytes are zeroed first (safe code cannot lend uninitialised memory), so a
    /// lend the size of the answer costs the answer, not 16 KiB.
    const LEND: usize = 1024;

    /// Appends to `buf` while it holds at most `limit` bytes.
    pub fn new(buf: &'a mut Vec<u8>, limit: usize) -> BufTx<'a> {
        BufTx { buf, limit }
    }

    /// Free space.
    pub fn capacity(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }
}

impl Tx for BufTx<'_> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let min_len = min_len.max(1);
        let room = self.capacity();
        if room < min_len {
            return 0;
        }
        let lend = if min_len > 1 {
            min_len
        } else {
            room.min(Self::LEND)
        };
        let start = self.buf.len();
        self.buf.resize(start + lend, 0);
        let n = self.buf.get_mut(start..).map_or(0, fill).min(lend);
        self.buf.truncate(start + n);
        n
    }

    fn write(&mut self, data: &[u8]) -> usize {
        let n = self.capacity().min(data.len());
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        n
    }

    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        if chunk.len() > self.capacity() {
            return Err(chunk);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }
}

/// Counts what a [`Tx`] took (the application's bytes-out metrics).
#[derive(Debug)]
pub struct Counted<'a, T> {
    inner: &'a mut T,
    /// Bytes taken so far.
    pub bytes: usize,
}

impl<'a, T: Tx> Counted<'a, T> {
    /// Counts what `inner` takes.
    pub fn new(inner: &'a mut T) -> Counted<'a, T> {
        Counted { inner, bytes: 0 }
    }
}

impl<T: Tx> Tx for Counted<'_, T> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let n = self.inner.write_with(min_len, fill);
        self.bytes += n;
        n
    }

    fn write(&mut self, data: &[u8]) -> usize {
        let n = self.inner.write(data);
        self.bytes += n;
        n
    }

    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        let len = chunk.len();
        self.inner.write_chunk(chunk)?;
        self.bytes += len;
        Ok(())
    }
}

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
    /// The source is not allowed (`limits.allow_sources` / `deny_sources`).
    SourceDenied,
    /// The source opens connections faster than `limits.new_connections_per_ip_per_s`.
    ConnectionRate,
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

    /// [`App::accept`] with the local port the connection came in on (drivers call this
    /// one; a layer that serves ports differently, like [`tls::Tls`], overrides it).
    fn accept_on(
        &mut self,
        id: ConnId,
        local_port: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        let _ = local_port;
        self.accept(id, peer, now)
    }

    /// Forget slot `id`: the driver has closed or lost the connection. Called once per
    /// accepted connection, whatever ended it.
    fn remove(&mut self, id: ConnId);

    /// In-order bytes received on `id`, all of them taken; the application may modify them
    /// in place (WebSocket unmasking) and answer through `tx` (the connection's transmit
    /// side) while they are still lent (on the stack driver: in the RX frame). Called only
    /// while [`App::wants_read`] is true.
    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant);

    /// The peer closed its sending side (TCP FIN, after every byte was received).
    fn peer_closed(&mut self, id: ConnId);

    /// Writes what `id` has queued into `tx`, as far as it takes it (the rest stays
    /// queued). The driver calls it when the transport has room again, for every dirty
    /// connection, and before it checks [`App::is_finished`].
    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T);

    /// Whether to read `id` now (false: backpressure, or done reading). The driver leaves
    /// unread data to the transport (TCP flow control), and asks again after output moves.
    fn wants_read(&self, id: ConnId) -> bool;

    /// Whether to close `id` now (its queued output written); the driver checks it after
    /// [`App::flush`], and closes once its own buffer of the connection is written too.
    fn is_finished(&self, id: ConnId) -> bool;

    /// Whether `id`, right after [`App::receive`], has nothing for the driver to do before
    /// its next event: no output left queued, not finished, open. The stack driver then
    /// skips its flush of the connection for that receive. The default (false) always
    /// flushes.
    fn settled(&self, _id: ConnId) -> bool {
        false
    }

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
