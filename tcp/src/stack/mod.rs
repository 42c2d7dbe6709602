//! The per-core TCP/IP stack: one [`Interface`] (Ethernet/ARP/IPv4/ICMP), a connection
//! table, listeners, a timer wheel and an event queue, behind a handle-based socket API.
//!
//! Sans-IO (see `DESIGN.md`, Contracts). A worker drives it like this, once per batch:
//! 1. [`Stack::handle_frame`] (or [`Stack::handle_frame_with`]) for each received frame;
//! 2. [`Stack::handle_timeout`] when [`Stack::poll_timeout`] is due;
//! 3. [`Stack::poll_event`] until `None`, calling the socket functions as it likes;
//! 4. [`Stack::poll_transmit`] to build every segment due into TX buffers.
//!
//! The engine never reads randomness or a clock: the caller supplies the 128-bit secret
//! (ISNs, SYN cookies, table hashing) and `now`.

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::conn::{
    reset_for, CloseReason, ConnConfig, ConnStats, CookieTcb, Counters, Events, OutSegment,
    SocketError, State, Tcb,
};
use crate::cookie::{IsnGenerator, SynCookies, SynOptions};
use crate::iface::{
    ClosedPortPolicy, Inbound, Interface, InterfaceConfig, InterfaceStats, SendResult, TxQueue,
};
use crate::ratelimit::{RateLimit, TokenBucket};
use crate::seq::SeqNumber;
use crate::table::{ConnId, ConnTable, FourTuple, InsertError};
use crate::time::Instant;
use crate::timer::TimerWheel;
use crate::wire::icmpv4::{DstUnreachable, OriginalDatagram};
use crate::wire::ipv4::IpProtocol;
use crate::wire::tcp::{TcpFlags, TcpOptions, TcpRepr, TcpTimestamps};

pub use crate::conn::SocketError as Error;

/// A connection, as the application holds it. Stale once the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle(ConnId);

impl ConnHandle {
    /// The handle's slot: dense from 0 and below the stack's connection limit, reused
    /// once the connection is gone (the handle itself then no longer matches). For side
    /// tables indexed by connection instead of hashed by handle.
    pub fn slot(self) -> usize {
        self.0.index() as usize
    }
}

/// Something the application should know about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A connection to one of our listeners completed its handshake.
    Accepted {
        /// The listening port.
        port: u16,
        /// The new connection.
        conn: ConnHandle,
    },
    /// An active open ([`Stack::connect`]) completed.
    Established(ConnHandle),
    /// Data (or end of stream) can be read.
    Readable(ConnHandle),
    /// Send buffer space is available again after a write (`send`, `send_with`,
    /// `send_chunk`) found it full or took only part; like an edge-triggered EPOLLOUT,
    /// it is not raised for acknowledgments nobody waits on.
    Writable(ConnHandle),
    /// The peer closed its sending side; reads hit end of stream once drained.
    PeerClosed(ConnHandle),
    /// The connection closed in order. Data still buffered can be read; the handle
    /// goes stale once that is drained (or at once if nothing is buffered).
    Closed(ConnHandle),
    /// The peer reset (or refused) the connection; the handle is now stale.
    Reset(ConnHandle),
    /// Retransmissions or keepalives went unanswered; the handle is now stale.
    TimedOut(ConnHandle),
}

/// Why [`Stack::connect`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// No free local port for this destination (or none the port filter accepted).
    NoFreePort,
    /// The connection table is full.
    TableFull,
    /// The destination is not a unicast address.
    InvalidAddress,
}

/// Why [`Stack::listen`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenError {
    /// Port 0 is not a port.
    InvalidPort,
    /// Something already listens there.
    InUse,
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConnectError::NoFreePort => "no free local port for this destination",
            ConnectError::TableFull => "connection table full",
            ConnectError::InvalidAddress => "destination is not a unicast address and port",
        })
    }
}

impl std::error::Error for ConnectError {}

impl core::fmt::Display for ListenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ListenError::InvalidPort => "port 0 cannot be listened on",
            ListenError::InUse => "port already has a listener",
        })
    }
}

impl std::error::Error for ListenError {}

/// One connection's send side, lent to the receive sink of
/// [`Stack::handle_frame_with_tx`] (the stack itself is borrowed then). The calls behave
/// as the [`Stack`] methods of the same names on that connection; what they queue goes
/// out on the next [`Stack::poll_transmit`].
#[derive(Debug)]
pub struct ConnTx<'a> {
    tcb: &'a mut Tcb,
    cfg: &'a ConnConfig,
}

impl ConnTx<'_> {
    /// As [`Stack::send`].
    pub fn send(&mut self, data: &[u8]) -> Result<usize, SocketError> {
        self.tcb.send(self.cfg, data)
    }

    /// As [`Stack::send_with`].
    pub fn send_with(
        &mut self,
        min_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, SocketError> {
        self.tcb.send_with(min_len, fill)
    }

    /// As [`Stack::send_chunk`].
    pub fn send_chunk(&mut self, chunk: Bytes) -> Result<(), ChunkRefused> {
        self.tcb
            .send_chunk(chunk)
            .map_err(|(reason, chunk)| ChunkRefused { chunk, reason })
    }

    /// As [`Stack::send_capacity`].
    pub fn send_capacity(&self) -> usize {
        self.tcb.send_capacity(self.cfg)
    }
}

/// A chunk [`Stack::send_chunk`] refused, given back with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRefused {
    /// The chunk, unchanged.
    pub chunk: Bytes,
    /// [`SocketError::NoRoom`] (retry after [`Event::Writable`]), or the connection
    /// cannot send ([`SocketError::Closed`], [`SocketError::InvalidState`]).
    pub reason: SocketError,
}

impl core::fmt::Display for ChunkRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "chunk of {} bytes refused: {}",
            self.chunk.len(),
            self.reason
        )
    }
}

impl std::error::Error for ChunkRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

/// Stack configuration: every limit has a safe default.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// L2/L3 settings (addresses, MTU, ARP).
    pub iface: InterfaceConfig,
    /// Per-connection TCP settings.
    pub conn: ConnConfig,
    /// 128-bit secret for ISNs (RFC 6528) and SYN cookies; supply fresh randomness.
    pub secret: [u8; 16],
    /// Most connections (all states, including TIME_WAIT).
    pub max_connections: usize,
    /// Default accept backlog: established connections not yet announced.
    pub backlog: usize,
    /// Half-open (SYN-RECEIVED) connections per listener before SYN cookies take over.
    pub syn_backlog: usize,
    /// Answer SYNs with cookies when the SYN backlog is full (RFC 4987 3.6).
    pub syn_cookies: bool,
    /// Most connections in TIME_WAIT; beyond it they are dropped at once (counted).
    pub time_wait_cap: usize,
    /// Timer wheel tick.
    pub timer_tick: Duration,
    /// Ephemeral port range for active opens (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// Which local ports an active open may use (e.g. RSS steering: only tuples whose
    /// hash lands on this core's queue). `None` accepts all.
    pub port_filter: Option<fn(&FourTuple) -> bool>,
    /// Most replies (RSTs) waiting for `poll_transmit`.
    pub reply_queue_limit: usize,
    /// RFC 5961 7: challenge ACKs, stack-wide (default 1000/s, randomised, as Linux).
    pub challenge_ack_limit: RateLimit,
    /// RSTs and ICMP port-unreachables answering segments no connection or listener
    /// wants (default 1000/s, bursts of 50, as Linux limits ICMP); the excess is
    /// dropped and counted in [`StackStats::replies_rate_limited`].
    pub closed_port_reply_limit: RateLimit,
    /// Header prediction (on by default): an established connection's next in-order
    /// segment, or a pure ACK of new data, skips the general receive path's checks
    /// (same outcome; see [`Stack::handle_frame_with_tx`]). Off runs every segment
    /// through the general path: for comparison and diagnosis only.
    pub header_prediction: bool,
}

impl StackConfig {
    /// Defaults around `iface` and the caller's `secret`.
    pub fn new(iface: InterfaceConfig, secret: [u8; 16]) -> StackConfig {
        let mss = u16::try_from(iface.mtu.saturating_sub(40).clamp(536, 65_535)).unwrap_or(1460);
        StackConfig {
            conn: ConnConfig {
                mss,
                ..ConnConfig::default()
            },
            iface,
            secret,
            max_connections: 65_536,
            backlog: 1024,
            syn_backlog: 1024,
            syn_cookies: true,
            time_wait_cap: 16_384,
            timer_tick: Duration::from_millis(1),
            ephemeral_ports: (32_768, 60_999),
            port_filter: None,
            reply_queue_limit: 256,
            challenge_ack_limit: RateLimit::CHALLENGE_ACK_DEFAULT,
            closed_port_reply_limit: RateLimit::CLOSED_PORT_REPLY_DEFAULT,
            header_prediction: true,
        }
    }
}

/// Stack-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackStats {
    /// TCP segments handed to connections or listeners.
    pub segments_in: u64,
    /// TCP segments sent (including RSTs).
    pub segments_out: u64,
    /// Connection-level counters summed over all connections.
    pub conn: Counters,
    /// Segments for ports nobody listens on (answered per the closed-port policy).
    pub no_listener: u64,
    /// SYNs dropped: SYN backlog full and cookies off.
    pub syn_backlog_drops: u64,
    /// Connections reset because the accept backlog was full.
    pub accept_backlog_drops: u64,
    /// SYNs dropped because the table was full.
    pub table_full_drops: u64,
    /// TIME_WAIT entries dropped early because of the cap.
    pub time_wait_drops: u64,
    /// TIME_WAIT entries replaced by a newer SYN (RFC 6191).
    pub time_wait_reused: u64,
    /// SYN cookies sent.
    pub syn_cookies_sent: u64,
    /// Cookie ACKs that validated into connections.
    pub syn_cookies_validated: u64,
    /// ACKs to a listener that were not valid cookies (answered with RST).
    pub syn_cookies_invalid: u64,
    /// Segments lost because the TX queue had no buffer.
    pub tx_full: u64,
    /// Replies dropped because the reply queue was full.
    pub reply_drops: u64,
    /// ICMP destination-unreachable messages received.
    pub icmp_errors: u64,
    /// Path MTU reductions applied from ICMP fragmentation-needed (RFC 1191).
    pub pmtu_updates: u64,
    /// Connections opened (active + passive).
    pub opened: u64,
    /// Connections currently in TIME_WAIT.
    pub time_wait: u64,
    /// Closed-port RSTs / ICMP port-unreachables not sent because of
    /// [`StackConfig::closed_port_reply_limit`].
    pub replies_rate_limited: u64,
    /// Segments taken by header prediction ([`StackConfig::header_prediction`]); the
    /// rest of `segments_in` went through the general path.
    pub header_predicted: u64,
    /// Pure ACKs taken by ACK coalescing ([`ConnConfig::coalesce_acks`]): their
    /// processing was done once per connection and burst, with the last of them.
    pub acks_coalesced: u64,
}

/// Ethernet and IPv4 headers of a frame header prediction accepted (no IP options).
const ETH_IP_HEADERS: usize = 34;

/// A segment answering a received one, waiting for `poll_transmit`.
#[derive(Debug)]
enum Reply {
    /// A TCP segment (RST, cookie SYN-ACK) on `tuple`.
    Tcp(FourTuple, OutSegment),
    /// A closed-port answer by the interface's policy (ICMP port unreachable); the
    /// received header (payload dropped) as the peer sent it.
    Reject(FourTuple, TcpRepr<'static>),
}

#[derive(Debug)]
struct Listener {
    backlog: usize,
    half_open: usize,
    unannounced: usize,
}

const F_PASSIVE: u16 = 1; // created from a listener
const F_ANNOUNCED: u16 = 2; // the application knows the handle
const F_RELEASED: u16 = 4; // the application closed/aborted: no more events
const F_IN_EVENTS: u16 = 8;
const F_IN_TX: u16 = 16;
const F_DONE: u16 = 32; // terminal event delivered
const F_HALF_OPEN: u16 = 64; // counted in its listener's half_open
const F_TIME_WAIT: u16 = 128; // counted in time_wait
const F_ACCEPT_QUEUED: u16 = 256; // counted in its listener's unannounced

/// The flags an entry's `flags & PREDICTABLE` must equal `F_ANNOUNCED` under for header
/// prediction and ACK coalescing: a connection the application knows, not released,
/// half-open or in TIME_WAIT (so none of `Stack::sync`'s accounting can apply).
const PREDICTABLE: u16 = F_ANNOUNCED | F_RELEASED | F_HALF_OPEN | F_TIME_WAIT;

#[derive(Debug)]
struct Entry {
    tcb: Tcb,
    timer: Option<(crate::timer::TimerId, Instant)>,
    flags: u16,
}

/// The per-core stack. See the module documentation.
#[derive(Debug)]
pub struct Stack {
    cfg: StackConfig,
    iface: Interface,
    table: ConnTable<Entry>,
    listeners: HashMap<u16, Listener>,
    timers: TimerWheel<ConnId>,
    events: VecDeque<ConnId>,
    tx_ready: Vec<ConnId>,
    replies: VecDeque<Reply>,
    isn: IsnGenerator,
    cookies: SynCookies,
    next_port: u16,
    /// The latest `now` the stack was given, for the socket calls that take none (a
    /// segment header prediction takes does not move it: it changes no deadline of
    /// theirs, and `poll_transmit` follows every burst).
    now: Instant,
    stats: StackStats,
    /// Largest TCP payload the MTU allows (the TCB caps it further by the MSS).
    max_payload: usize,
    expired: Vec<ConnId>,
    /// RFC 5961 7 challenge ACKs, shared by every connection.
    challenge: TokenBucket,
    /// Closed-port RSTs and ICMP port-unreachables.
    reply_limit: TokenBucket,
    /// `cfg.conn`'s RTO bounds in microseconds.
    rto_bounds: crate::conn::RtoBounds,
    /// `stats.acks_coalesced` at the last [`Stack::end_burst`]: when it has moved since,
    /// some connection holds coalesced ACKs to settle.
    acks_settled_at: u64,
    /// Segments the interface's predicted path accepted that the stack's prediction
    /// gave to the general path (see [`Stack::counters`]).
    prediction_fallbacks: u64,
}

impl Stack {
    /// A stack with configuration `cfg`.
    pub fn new(cfg: StackConfig) -> Stack {
        let seed = u64::from_le_bytes([
            cfg.secret[0],
            cfg.secret[1],
            cfg.secret[2],
            cfg.secret[3],
            cfg.secret[4],
            cfg.secret[5],
            cfg.secret[6],
            cfg.secret[7],
        ]);
        let mut cookie_key = cfg.secret;
        cookie_key[15] ^= 0x5a;
        let mss = usize::from(cfg.conn.mss);
        Stack {
            iface: Interface::new(cfg.iface.clone()),
            table: ConnTable::with_seed(cfg.max_connections, seed),
            listeners: HashMap::new(),
            timers: TimerWheel::with_tick(cfg.timer_tick),
            events: VecDeque::new(),
            tx_ready: Vec::new(),
            replies: VecDeque::new(),
            isn: IsnGenerator::new(cfg.secret),
            cookies: SynCookies::new(cookie_key),
            next_port: cfg.ephemeral_ports.0,
            now: Instant::ZERO,
            stats: StackStats::default(),
            max_payload: mss.max(536),
            expired: Vec::new(),
            challenge: TokenBucket::new(cfg.challenge_ack_limit, seed.rotate_left(17)),
            reply_limit: TokenBucket::new(cfg.closed_port_reply_limit, seed.rotate_left(41)),
            rto_bounds: crate::conn::RtoBounds::of(&cfg.conn),
            acks_settled_at: 0,
            prediction_fallbacks: 0,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// Stack-wide counters (a copy).
    pub fn counters(&self) -> StackStats {
        let mut c = self.stats.clone();
        // A predicted segment is counted once, by the interface: the segments its
        // predicted path accepted, less those the stack's prediction gave back to the
        // general path (counted in `segments_in` there).
        c.header_predicted = self.iface.tcp_rx_predicted() - self.prediction_fallbacks;
        c.segments_in += c.header_predicted;
        c
    }

    /// L2/L3 counters (malformed frames, bad checksums, ARP, ICMP).
    pub fn iface_stats(&self) -> InterfaceStats {
        self.iface.stats()
    }

    /// The interface, e.g. to seed the ARP cache.
    pub fn iface_mut(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// Connections in the table (all states).
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }

    // ---- listeners --------------------------------------------------------------------

    /// Accepts connections on `port` with an accept backlog of `backlog` (0 = default).
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<(), ListenError> {
        if port == 0 {
            return Err(ListenError::InvalidPort);
        }
        if self.listeners.contains_key(&port) {
            return Err(ListenError::InUse);
        }
        let backlog = if backlog == 0 {
            self.cfg.backlog
        } else {
            backlog
        };
        self.listeners.insert(
            port,
            Listener {
                backlog,
                half_open: 0,
                unannounced: 0,
            },
        );
        Ok(())
    }

    /// Stops listening on `port`; existing connections are unaffected.
    pub fn unlisten(&mut self, port: u16) -> bool {
        self.listeners.remove(&port).is_some()
    }

    // ---- input ------------------------------------------------------------------------

    /// Processes one received frame. Payload is copied into receive buffers; see
    /// [`Stack::handle_frame_with`] for the zero-copy path.
    #[inline]
    pub fn handle_frame(&mut self, now: Instant, frame: &mut [u8]) {
        self.handle_frame_with(now, frame, &mut |_, _| 0);
    }

    /// Processes one received frame, lending in-order payload to `sink` mutably, in place
    /// in the frame (so a WebSocket layer can unmask it there): `sink` returns how many
    /// bytes it consumed, the rest is copied into the connection's receive buffer (and
    /// [`Event::Readable`] follows). Checksums are verified before anything is offered.
    ///
    /// Payload is offered only while that connection's receive buffer holds no
    /// in-order data (so order is kept); otherwise it is buffered and read with
    /// [`Stack::recv`] / [`Stack::recv_with`]. Only connections the application knows
    /// (announced, not closed by it) are offered payload. The bytes past the count
    /// `sink` returns are buffered as `sink` left them, so it should modify (e.g.
    /// unmask) only what it consumes. `sink` runs after the segment's header was
    /// processed (ACK, window, FIN): it may see a connection whose peer has already
    /// closed.
    pub fn handle_frame_with(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        sink: &mut impl FnMut(ConnHandle, &mut [u8]) -> usize,
    ) {
        self.handle_frame_with_tx(now, frame, &mut |h, data, _| sink(h, data));
    }

    /// Like [`Stack::handle_frame_with`], and `sink` also gets the connection's send side
    /// ([`ConnTx`]), so it can answer from the payload while it is still lent in the
    /// frame: e.g. a WebSocket echo unmasks a message in place and writes header and
    /// payload straight into the send buffer with [`ConnTx::send_with`] (two payload
    /// copies in all: RX frame -> send buffer -> TX frame), or a publisher queues a
    /// shared chunk with [`ConnTx::send_chunk`].
    pub fn handle_frame_with_tx(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        sink: &mut impl FnMut(ConnHandle, &mut [u8], &mut ConnTx<'_>) -> usize,
    ) {
        // (`self.now` is not moved here: only off the predicted path, see `Stack::now`.)
        if self.cfg.header_prediction {
            if let Some(seg) = self.iface.receive_predicted(now, frame) {
                self.on_predicted(now, &seg, frame, sink);
                return;
            }
        }
        self.handle_frame_general(now, frame, sink);
    }

    /// [`Stack::handle_frame_with_tx`] past header prediction: the general path.
    fn handle_frame_general(
        &mut self,
        now: Instant,
        frame: &mut [u8],
        sink: &mut impl FnMut(ConnHandle, &mut [u8], &mut ConnTx<'_>) -> usize,
    ) {
        self.now = self.now.max(now);
        let offered = match self.iface.receive(now, frame) {
            Inbound::Tcp {
                src,
                dst,
                segment,
                payload_offset,
                ..
            } => {
                self.stats.segments_in += 1;
                let tuple = FourTuple {
                    local_addr: dst,
                    local_port: segment.dst_port,
                    remote_addr: src,
                    remote_port: segment.src_port,
                };
                let found = self.table.lookup(&tuple);
                self.on_tcp(now, tuple, found, &segment)
                    .map(|(id, offer)| (id, payload_offset, offer))
            }
            Inbound::IcmpError {
                reason,
                next_hop_mtu,
                original,
                ..
            } => {
                self.stats.icmp_errors += 1;
                if reason == DstUnreachable::FragRequired {
                    self.end_burst();
                    self.on_frag_needed(next_hop_mtu, &original);
                }
                None
            }
            Inbound::Handled | Inbound::Dropped(_) => None,
        };
        if let Some((id, offset, offer)) = offered {
            self.lend_payload(id, offer, offset, frame, sink);
            self.sync(id);
        }
    }

    /// Lends offered in-order payload (`offer.range` from `offset` in `frame`) to `sink`
    /// in place, and buffers what it leaves ([`Tcb::finish_offer`]).
    #[inline]
    fn lend_payload(
        &mut self,
        id: ConnId,
        offer: crate::conn::Offer,
        offset: usize,
        frame: &mut [u8],
        sink: &mut impl FnMut(ConnHandle, &mut [u8], &mut ConnTx<'_>) -> usize,
    ) {
        // The segment's borrow of the frame has ended: lend the payload mutably.
        let range = offer.range.start + offset..offer.range.end + offset;
        let payload = frame.get_mut(range).unwrap_or_default();
        let cfg = &self.cfg.conn;
        if let Some(e) = self.table.get_mut(id) {
            let mut tx = ConnTx {
                tcb: &mut e.tcb,
                cfg,
            };
            let k = sink(ConnHandle(id), payload, &mut tx);
            e.tcb.finish_offer(offer, k, payload);
        }
    }

    /// A segment [`Interface::receive_predicted`] accepted. Header prediction: an
    /// ESTABLISHED connection the application knows (so none of [`Stack::sync`]'s
    /// listener and TIME_WAIT accounting can apply) whose TCB predicts the segment
    /// ([`Tcb::on_predicted`]) takes it with one table lookup and the rest of `sync`
    /// (events, transmit list, timer) inline; anything else goes through the general
    /// path ([`Stack::on_tcp`]), parsed from the already verified bytes.
    #[inline]
    fn on_predicted(
        &mut self,
        now: Instant,
        seg: &crate::iface::Predicted,
        frame: &mut [u8],
        sink: &mut impl FnMut(ConnHandle, &mut [u8], &mut ConnTx<'_>) -> usize,
    ) {
        let tuple = FourTuple {
            local_addr: self.iface.addr(),
            local_port: seg.dst_port,
            remote_addr: seg.src,
            remote_port: seg.src_port,
        };
        let found = if let Some((id, e)) = self.table.lookup_mut(&tuple) {
            let cfg = &self.cfg.conn;
            {
                let payload = frame.get(seg.payload_at..seg.end).unwrap_or_default();
                let predicted = if e.flags & PREDICTABLE == F_ANNOUNCED {
                    e.tcb.on_predicted(
                        cfg,
                        self.rto_bounds,
                        now,
                        seg,
                        payload,
                        &mut self.stats.acks_coalesced,
                    )
                } else {
                    None
                };
                if let Some(p) = predicted {
                    if let Some(offer) = p.offer {
                        let payload = frame.get_mut(seg.payload_at..seg.end).unwrap_or_default();
                        let mut tx = ConnTx {
                            tcb: &mut e.tcb,
                            cfg,
                        };
                        let k = sink(ConnHandle(id), payload, &mut tx);
                        // Consumed whole (a predicted offer has no holes to step over):
                        // nothing to buffer.
                        if k < payload.len() {
                            e.tcb.finish_offer(offer, k, payload);
                        }
                    }
                    // `sync` for an established, announced connection.
                    let flags = e.flags;
                    if flags & F_IN_EVENTS == 0 && !e.tcb.peek_events().is_empty() {
                        e.flags |= F_IN_EVENTS;
                        self.events.push_back(id);
                    }
                    if flags & F_IN_TX == 0 {
                        e.flags |= F_IN_TX;
                        self.tx_ready.push(id);
                    }
                    // The wheel entry is no later than every deadline the TCB had (see
                    // `rearm_entry`); the segment moved deadlines only later, except
                    // `armed`: the entry changes only if that one is earlier.
                    if p.armed
                        .is_some_and(|at| e.timer.is_none_or(|(_, have)| at < have))
                    {
                        rearm_entry(&mut self.timers, cfg, id, e);
                    }
                    debug_assert!(
                        entry_early_enough(cfg, e),
                        "header prediction left a timer entry later than a deadline"
                    );
                    return;
                }
            }
            Some(id)
        } else {
            None
        };
        self.now = self.now.max(now);
        self.stats.segments_in += 1;
        self.prediction_fallbacks += 1;
        let tcp = frame.get(ETH_IP_HEADERS..seg.end).unwrap_or_default();
        let Ok(repr) = TcpRepr::parse_bytes(tcp, seg.src, tuple.local_addr, false) else {
            return;
        };
        if let Some((id, offer)) = self.on_tcp(now, tuple, found, &repr) {
            self.lend_payload(id, offer, seg.payload_at, frame, sink);
            self.sync(id);
        }
    }

    /// Hands a segment to its connection (`found`, the table's entry for `tuple`) or
    /// listener. Returns the connection and the
    /// payload to offer the application (then the caller finishes with `finish_offer`
    /// and `sync`).
    fn on_tcp(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        found: Option<ConnId>,
        repr: &TcpRepr<'_>,
    ) -> Option<(ConnId, crate::conn::Offer)> {
        if let Some(id) = found {
            if self.time_wait_reusable(id, repr) {
                self.stats.time_wait_reused += 1;
                self.remove(id);
            } else {
                let cfg = &self.cfg.conn;
                let e = self.table.get_mut(id)?;
                // ACK coalescing decides as header prediction would, on either path.
                if e.flags & PREDICTABLE == F_ANNOUNCED
                    && repr.payload.is_empty()
                    && repr.flags.bits() & !TcpFlags::PSH.bits() == TcpFlags::ACK.bits()
                    && repr.options.sack_blocks.is_empty()
                {
                    let seg = crate::iface::Predicted {
                        src: tuple.remote_addr,
                        src_port: tuple.remote_port,
                        dst_port: tuple.local_port,
                        seq: repr.seq,
                        ack: repr.ack,
                        window: repr.window,
                        ts: repr.options.timestamps,
                        // (Frame offsets: unused by the TCB, which gets no payload.)
                        payload_at: 0,
                        end: 0,
                    };
                    if e.tcb.coalesce_ack(
                        cfg,
                        self.rto_bounds,
                        now,
                        &seg,
                        &mut self.stats.acks_coalesced,
                    ) {
                        self.sync(id);
                        return None;
                    }
                }
                if e.tcb.has_coalesced_acks() {
                    // Anything else on the connection: its coalesced ACKs first.
                    let _ = e.tcb.settle_acks(self.rto_bounds);
                }
                // Only connections the application has heard of are offered payload.
                let announced = e.flags & F_ANNOUNCED != 0 && e.flags & F_RELEASED == 0;
                let arrival = e.tcb.on_segment_offer(
                    cfg,
                    now,
                    repr,
                    announced,
                    &mut self.challenge,
                    &mut self.stats.conn,
                );
                if let Some(r) = arrival.reply {
                    self.queue_reply(tuple, r);
                }
                if let Some(offer) = arrival.offer {
                    return Some((id, offer));
                }
                self.sync(id);
                return None;
            }
        }
        self.on_listener(now, tuple, repr);
        None
    }

    /// RFC 1191 path MTU discovery: shrink the MSS of the connection the quoted
    /// segment belongs to.
    fn on_frag_needed(&mut self, mtu: u16, original: &OriginalDatagram<'_>) {
        let p = original.payload;
        let (Some(sp), Some(dp), Some(sq)) = (p.get(0..2), p.get(2..4), p.get(4..8)) else {
            return;
        };
        if original.protocol != IpProtocol::Tcp {
            return;
        }
        let tuple = FourTuple {
            local_addr: original.src_addr,
            local_port: u16::from_be_bytes([sp[0], sp[1]]),
            remote_addr: original.dst_addr,
            remote_port: u16::from_be_bytes([dp[0], dp[1]]),
        };
        let seq = SeqNumber(u32::from_be_bytes([sq[0], sq[1], sq[2], sq[3]]));
        let Some(id) = self.table.lookup(&tuple) else {
            return;
        };
        let acted = self
            .table
            .get_mut(id)
            .is_some_and(|e| e.tcb.on_path_mtu(mtu, seq));
        if acted {
            self.stats.pmtu_updates += 1;
            self.sync(id);
        }
    }

    /// RFC 6191: a SYN may reuse a TIME_WAIT tuple if it is clearly newer — by
    /// timestamp when both used them, else by sequence number.
    fn time_wait_reusable(&self, id: ConnId, seg: &TcpRepr<'_>) -> bool {
        let Some(e) = self.table.get(id) else {
            return false;
        };
        if e.tcb.state() != State::TimeWait || !seg.flags.syn() || seg.flags.ack() {
            return false;
        }
        match (e.tcb.ts_recent(), seg.options.timestamps) {
            (Some(recent), Some(ts)) => (ts.tsval.wrapping_sub(recent) as i32) > 0,
            _ => seg.seq > e.tcb.rcv_nxt(),
        }
    }

    /// Whether a RST or ICMP error answering a segment nobody wants may go out now
    /// (the closed-port token bucket); counts the ones that may not.
    fn reply_allowed(&mut self, now: Instant) -> bool {
        let ok = self.reply_limit.allow(now);
        self.stats.replies_rate_limited += u64::from(!ok);
        ok
    }

    fn on_listener(&mut self, now: Instant, tuple: FourTuple, seg: &TcpRepr<'_>) {
        let Some(listener) = self.listeners.get(&tuple.local_port) else {
            self.stats.no_listener += 1;
            let policy = self.cfg.iface.closed_port;
            match policy {
                // RFC 9293 3.10.7.1
                ClosedPortPolicy::Rst => {
                    if let Some(r) = reset_for(seg) {
                        if self.reply_allowed(now) {
                            self.stats.conn.resets_sent += 1;
                            self.queue_reply(tuple, r);
                        }
                    }
                }
                ClosedPortPolicy::IcmpUnreachable
                    if !seg.flags.rst() && self.reply_allowed(now) =>
                {
                    let repr = seg.header();
                    self.push_reply(Reply::Reject(tuple, repr));
                }
                _ => {}
            }
            return;
        };
        // RFC 9293 3.10.7.2 LISTEN: ignore RST; an ACK is bad unless it is a cookie.
        if seg.flags.rst() {
            return;
        }
        if seg.flags.ack() {
            if !seg.flags.syn() && self.cfg.syn_cookies && self.accept_cookie(now, tuple, seg) {
                return;
            }
            self.stats.syn_cookies_invalid += u64::from(!seg.flags.syn());
            if let Some(r) = reset_for(seg) {
                if self.reply_allowed(now) {
                    self.stats.conn.resets_sent += 1;
                    self.queue_reply(tuple, r);
                }
            }
            return;
        }
        if !seg.flags.syn() {
            return;
        }
        let syn_full = listener.half_open >= self.cfg.syn_backlog;
        let accept_full = listener.unannounced >= listener.backlog;
        if syn_full || accept_full || self.table.len() >= self.cfg.max_connections {
            if self.cfg.syn_cookies && !accept_full {
                self.send_cookie(now, tuple, seg);
            } else if self.table.len() >= self.cfg.max_connections {
                self.stats.table_full_drops += 1;
            } else {
                self.stats.syn_backlog_drops += 1;
            }
            return;
        }
        let iss = self.isn.isn(now, &tuple);
        let tcb = Tcb::accept(&self.cfg.conn, now, iss, seg);
        let entry = Entry {
            tcb,
            timer: None,
            flags: F_PASSIVE | F_HALF_OPEN,
        };
        match self.table.insert(tuple, entry) {
            Ok(id) => {
                if let Some(l) = self.listeners.get_mut(&tuple.local_port) {
                    l.half_open += 1;
                }
                self.stats.opened += 1;
                self.sync(id);
            }
            Err(_) => self.stats.table_full_drops += 1,
        }
    }

    /// Answers a SYN statelessly with a cookie SYN-ACK (RFC 4987 3.6).
    fn send_cookie(&mut self, now: Instant, tuple: FourTuple, seg: &TcpRepr<'_>) {
        let c = &self.cfg.conn;
        let ts = seg.options.timestamps.filter(|_| c.timestamps);
        let opts = SynOptions {
            wscale: seg.options.window_scale.filter(|_| c.window_scaling),
            sack_permitted: seg.options.sack_permitted && c.sack,
            ecn: false,
            ts_clock: ts.map(|_| now.total_millis() as u32),
        };
        let peer_mss = seg.options.mss.unwrap_or(536).min(c.mss);
        let (cookie, tsval) = self.cookies.encode(now, &tuple, seg.seq, peer_mss, &opts);
        let mut options = TcpOptions {
            mss: Some(c.mss),
            ..TcpOptions::default()
        };
        // Without timestamps the cookie cannot remember these, so do not offer them.
        if let (Some(tsval), Some(peer)) = (tsval, ts) {
            options.timestamps = Some(TcpTimestamps {
                tsval,
                tsecr: peer.tsval,
            });
            if opts.wscale.is_some() {
                options.window_scale = Some(crate::conn::our_wscale(c));
            }
            options.sack_permitted = opts.sack_permitted;
        }
        let window = u16::try_from(c.rcv_buf.min(65_535)).unwrap_or(u16::MAX);
        let out = OutSegment {
            repr: TcpRepr {
                seq: cookie,
                ack: seg.seq + 1u32,
                flags: TcpFlags::SYN | TcpFlags::ACK,
                window,
                options,
                ..TcpRepr::default()
            },
            payload_len: 0,
        };
        self.stats.syn_cookies_sent += 1;
        self.queue_reply(tuple, out);
    }

    /// Validates an ACK as the end of a cookie handshake and creates the connection.
    fn accept_cookie(&mut self, now: Instant, tuple: FourTuple, seg: &TcpRepr<'_>) -> bool {
        let tsecr = seg.options.timestamps.map(|t| t.tsecr);
        let Some(d) = self
            .cookies
            .decode(now, &tuple, seg.ack - 1u32, seg.seq - 1u32, tsecr)
        else {
            return false;
        };
        if self.table.len() >= self.cfg.max_connections {
            self.stats.table_full_drops += 1;
            return true;
        }
        let ck = CookieTcb {
            iss: seg.ack - 1u32,
            irs: seg.seq - 1u32,
            mss: d.mss,
            snd_wscale: d.wscale,
            sack: d.sack_permitted,
        };
        let tcb = Tcb::from_cookie(&self.cfg.conn, now, &ck, seg);
        let entry = Entry {
            tcb,
            timer: None,
            flags: F_PASSIVE,
        };
        if let Ok(id) = self.table.insert(tuple, entry) {
            self.stats.syn_cookies_validated += 1;
            self.stats.opened += 1;
            // The ACK may carry data: process it as the first segment.
            if !seg.payload.is_empty() || seg.flags.fin() {
                let cfg = &self.cfg.conn;
                if let Some(e) = self.table.get_mut(id) {
                    let _ = e.tcb.on_segment(
                        cfg,
                        now,
                        seg,
                        None,
                        &mut self.challenge,
                        &mut self.stats.conn,
                    );
                }
            }
            self.sync(id);
        }
        true
    }

    fn queue_reply(&mut self, tuple: FourTuple, out: OutSegment) {
        self.push_reply(Reply::Tcp(tuple, out));
    }

    fn push_reply(&mut self, r: Reply) {
        if self.replies.len() >= self.cfg.reply_queue_limit {
            self.stats.reply_drops += 1;
            return;
        }
        self.replies.push_back(r);
    }

    // ---- the end of a burst ---------------------------------------------------------

    /// Finishes what [`Stack::handle_frame`] and its variants leave for the end of a
    /// burst of frames: the pure ACKs coalesced per connection
    /// ([`ConnConfig::coalesce_acks`]). Every other method of the stack does this first
    /// (and [`Stack::poll_timeout`] answers "now" while it is due), so a driver need not
    /// call it; it is for a caller that wants a burst's effects complete at once.
    #[inline]
    pub fn end_burst(&mut self) {
        if self.acks_pending() {
            self.settle_coalesced();
        }
    }

    /// Whether some connection holds coalesced ACKs.
    #[inline(always)]
    fn acks_pending(&self) -> bool {
        self.stats.acks_coalesced != self.acks_settled_at
    }

    /// [`Stack::end_burst`]'s work: every connection holding coalesced ACKs is in the
    /// transmit list (the segment that started its run was synced, and only
    /// `poll_transmit`, which settles first, empties the list).
    #[inline(never)]
    fn settle_coalesced(&mut self) {
        self.acks_settled_at = self.stats.acks_coalesced;
        let cfg = &self.cfg.conn;
        for &id in &self.tx_ready {
            let Some(e) = self.table.get_mut(id) else {
                continue;
            };
            if !e.tcb.has_coalesced_acks() {
                continue;
            }
            let armed = e.tcb.settle_acks(self.rto_bounds);
            if e.flags & F_IN_EVENTS == 0 && !e.tcb.peek_events().is_empty() {
                e.flags |= F_IN_EVENTS;
                self.events.push_back(id);
            }
            if armed.is_some_and(|at| e.timer.is_none_or(|(_, have)| at < have)) {
                rearm_entry(&mut self.timers, cfg, id, e);
            }
            debug_assert!(entry_early_enough(cfg, e));
        }
    }

    // ---- bookkeeping after any change to a connection ---------------------------------

    /// Re-arms the connection's timer, queues it for events and transmission, does the
    /// listener accounting and frees it when it is finished.
    fn sync(&mut self, id: ConnId) {
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        let state = e.tcb.state();
        // Listener accounting.
        if e.flags & F_HALF_OPEN != 0 && state != State::SynReceived {
            e.flags &= !F_HALF_OPEN;
            let port = self.table.tuple(id).map(|t| t.local_port).unwrap_or(0);
            if let Some(l) = self.listeners.get_mut(&port) {
                l.half_open = l.half_open.saturating_sub(1);
            }
        }
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        if e.flags & F_PASSIVE != 0 && e.flags & F_ANNOUNCED == 0 {
            if state == State::Closed {
                // Died before the application heard of it: no events.
                e.tcb.take_events();
                e.flags |= F_DONE;
                if e.flags & F_ACCEPT_QUEUED != 0 {
                    e.flags &= !F_ACCEPT_QUEUED;
                    let port = self.table.tuple(id).map(|t| t.local_port).unwrap_or(0);
                    if let Some(l) = self.listeners.get_mut(&port) {
                        l.unannounced = l.unannounced.saturating_sub(1);
                    }
                }
            } else if state != State::SynReceived
                && e.flags & F_ACCEPT_QUEUED == 0
                && e.tcb.peek_events().contains(Events::ESTABLISHED)
            {
                let port = self.table.tuple(id).map(|t| t.local_port).unwrap_or(0);
                match self.listeners.get_mut(&port) {
                    Some(l) if l.unannounced < l.backlog => {
                        l.unannounced += 1;
                        if let Some(e) = self.table.get_mut(id) {
                            e.flags |= F_ACCEPT_QUEUED;
                        }
                    }
                    _ => {
                        // Accept backlog full (or listener gone): reset, counted.
                        self.stats.accept_backlog_drops += 1;
                        if let Some(e) = self.table.get_mut(id) {
                            e.tcb.abort(self.now);
                            e.tcb.take_events();
                            e.flags |= F_DONE | F_RELEASED;
                        }
                    }
                }
            }
        }
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        // TIME_WAIT accounting and cap.
        if state == State::TimeWait && e.flags & F_TIME_WAIT == 0 {
            if self.stats.time_wait >= self.cfg.time_wait_cap as u64 {
                self.stats.time_wait_drops += 1;
                e.tcb.abort(self.now);
                e.tcb.take_events();
                e.flags |= F_DONE | F_RELEASED;
            } else {
                e.flags |= F_TIME_WAIT;
                self.stats.time_wait += 1;
            }
        }
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        if e.flags & F_RELEASED != 0 {
            e.tcb.take_events();
        }
        if !e.tcb.peek_events().is_empty() && e.flags & F_IN_EVENTS == 0 {
            e.flags |= F_IN_EVENTS;
            self.events.push_back(id);
        }
        if e.flags & F_IN_TX == 0 {
            e.flags |= F_IN_TX;
            self.tx_ready.push(id);
        }
        self.rearm(id);
        self.maybe_free(id);
    }

    /// Frees a closed connection once nobody needs it.
    fn maybe_free(&mut self, id: ConnId) {
        if self.table.get(id).is_some_and(Self::freeable) {
            self.remove(id);
        }
    }

    /// Whether a connection's entry can go: closed, no RST waiting to go out (a stale id
    /// left in the event queue is skipped by `poll_event`), and released, or done with
    /// nothing left to read (after the terminal event the application may still read
    /// what is buffered).
    fn freeable(e: &Entry) -> bool {
        e.tcb.state() == State::Closed
            && e.flags & F_IN_TX == 0
            && (e.flags & F_RELEASED != 0 || (e.flags & F_DONE != 0 && e.tcb.recv_queue() == 0))
    }

    fn remove(&mut self, id: ConnId) {
        let port = self.table.tuple(id).map(|t| t.local_port);
        if let Some(e) = self.table.remove(id) {
            if let Some((tid, _)) = e.timer {
                self.timers.cancel(tid);
            }
            if e.flags & F_TIME_WAIT != 0 {
                self.stats.time_wait = self.stats.time_wait.saturating_sub(1);
            }
            if let Some(l) = port.and_then(|p| self.listeners.get_mut(&p)) {
                if e.flags & F_HALF_OPEN != 0 {
                    l.half_open = l.half_open.saturating_sub(1);
                }
                if e.flags & F_ACCEPT_QUEUED != 0 {
                    l.unannounced = l.unannounced.saturating_sub(1);
                }
            }
        }
    }

    // ---- timers -----------------------------------------------------------------------

    /// The next instant at which [`Stack::handle_timeout`] has work (connection timers,
    /// ARP retries). Call after every batch.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.acks_pending() {
            // Coalesced ACKs to settle: `handle_timeout` does it.
            return Some(self.now);
        }
        match (self.timers.next_deadline(), self.iface.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.end_burst();
        self.now = self.now.max(now);
        self.iface.handle_timeout(now);
        let mut expired = core::mem::take(&mut self.expired);
        expired.clear();
        self.timers.expire(now, &mut expired);
        for &id in &expired {
            let cfg = &self.cfg.conn;
            if let Some(e) = self.table.get_mut(id) {
                e.timer = None;
                e.tcb.handle_timeout(cfg, now, &mut self.stats.conn);
            }
            self.sync(id);
        }
        self.expired = expired;
    }

    // ---- output -----------------------------------------------------------------------

    /// Builds every segment due (replies, data, ACKs, retransmissions, ARP) into TX
    /// buffers from `tx`. Call after a batch of input, timeouts or socket calls, and
    /// again when `tx` has room if it ran out.
    pub fn poll_transmit(&mut self, now: Instant, tx: &mut impl TxQueue) {
        self.end_burst();
        self.now = self.now.max(now);
        self.iface.poll_transmit(now, tx);
        while let Some(reply) = self.replies.front() {
            let r = match reply {
                Reply::Tcp(t, out) => {
                    let repr = out.with_ports(t.local_port, t.remote_port);
                    self.iface
                        .send_tcp(now, tx, t.local_addr, t.remote_addr, &repr)
                }
                Reply::Reject(t, repr) => {
                    self.iface
                        .reject(now, tx, t.remote_addr, t.local_addr, repr)
                }
            };
            match r {
                SendResult::Dropped(crate::iface::DropReason::TxFull) => {
                    self.stats.tx_full += 1;
                    return;
                }
                SendResult::Sent | SendResult::Queued => self.stats.segments_out += 1,
                _ => {}
            }
            self.replies.pop_front();
        }
        // In list order; nothing below adds to the list, so the done prefix goes at the
        // end (a `Vec`: the receive path's push is cheaper than a `VecDeque`'s).
        let mut done = 0;
        while let Some(&id) = self.tx_ready.get(done) {
            let full = self.dispatch_conn(now, id, tx);
            if full {
                // It stays on the list; its timer follows what it sent meanwhile.
                self.rearm(id);
                break;
            }
            done += 1;
            self.sync_after_tx(id);
        }
        self.tx_ready.drain(..done);
    }

    /// Sends everything one connection has, building each segment straight into a TX
    /// buffer (the payload is copied once, from the send buffer into the frame), and
    /// takes it off the transmit list (`F_IN_TX`) unless the TX queue filled up first;
    /// true if it did. One table lookup for all of it.
    fn dispatch_conn(&mut self, now: Instant, id: ConnId, tx: &mut impl TxQueue) -> bool {
        let Stack {
            table,
            iface,
            cfg,
            stats,
            max_payload,
            ..
        } = self;
        let Some((&tuple, e)) = table.get_with_tuple_mut(id) else {
            return false;
        };
        loop {
            let Some(mut out) =
                e.tcb
                    .dispatch_header(&cfg.conn, now, *max_payload, &mut stats.conn)
            else {
                e.flags &= !F_IN_TX;
                return false;
            };
            // The ports set in place (no copy of the header and its options).
            out.repr.src_port = tuple.local_port;
            out.repr.dst_port = tuple.remote_port;
            let tcb = &e.tcb;
            let r = iface.send_tcp_with(
                now,
                tx,
                tuple.local_addr,
                tuple.remote_addr,
                &out.repr,
                out.payload_len,
                |buf| {
                    tcb.write_payload(&out, buf);
                },
            );
            match r {
                SendResult::Sent | SendResult::Queued => stats.segments_out += 1,
                SendResult::Dropped(crate::iface::DropReason::TxFull) => {
                    // The TCB counts it as sent; the RTO recovers it like a loss.
                    stats.tx_full += 1;
                    return true;
                }
                _ => {}
            }
        }
    }

    /// After a connection's transmit: its timer re-armed, and the connection freed if it
    /// is done (one table lookup, as [`Stack::rearm`] and [`Stack::maybe_free`]).
    fn sync_after_tx(&mut self, id: ConnId) {
        let Some(e) = self.table.get_mut(id) else {
            return;
        };
        rearm_entry(&mut self.timers, &self.cfg.conn, id, e);
        if Self::freeable(e) {
            self.remove(id);
        }
    }

    /// Brings connection `id`'s wheel entry in line with its earliest deadline. An entry
    /// due no later than wanted stays in the wheel: when it fires early,
    /// `handle_timeout` finds nothing due and this re-arms it at the deadline then. So a
    /// busy connection whose deadlines only move later (the RTO pushed by every ACK, the
    /// send buffer's keep time) costs no wheel operation per segment.
    fn rearm(&mut self, id: ConnId) {
        if let Some(e) = self.table.get_mut(id) {
            rearm_entry(&mut self.timers, &self.cfg.conn, id, e);
        }
    }

    // ---- events -----------------------------------------------------------------------

    /// The next event, if any. Events are coalesced per connection, so the queue never
    /// holds more than one entry per connection.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.end_burst();
        while let Some(&id) = self.events.front() {
            let Some(e) = self.table.get_mut(id) else {
                self.events.pop_front();
                continue;
            };
            let ev = if e.flags & F_RELEASED != 0 {
                e.tcb.take_events();
                None
            } else {
                e.tcb.take_event()
            };
            let Some(ev) = ev else {
                e.flags &= !F_IN_EVENTS;
                self.events.pop_front();
                self.maybe_free(id);
                continue;
            };
            let h = ConnHandle(id);
            let event = if ev == Events::ESTABLISHED {
                if e.flags & F_PASSIVE != 0 {
                    let counted = e.flags & F_ACCEPT_QUEUED != 0;
                    e.flags = (e.flags | F_ANNOUNCED) & !F_ACCEPT_QUEUED;
                    let port = self.table.tuple(id).map(|t| t.local_port).unwrap_or(0);
                    if let Some(l) = self.listeners.get_mut(&port).filter(|_| counted) {
                        l.unannounced = l.unannounced.saturating_sub(1);
                    }
                    Event::Accepted { port, conn: h }
                } else {
                    Event::Established(h)
                }
            } else if ev == Events::READABLE {
                Event::Readable(h)
            } else if ev == Events::WRITABLE {
                Event::Writable(h)
            } else if ev == Events::PEER_CLOSED {
                Event::PeerClosed(h)
            } else {
                e.flags |= F_DONE;
                match e.tcb.close_reason() {
                    Some(CloseReason::Reset | CloseReason::Refused) => Event::Reset(h),
                    Some(CloseReason::TimedOut) => Event::TimedOut(h),
                    _ => Event::Closed(h),
                }
            };
            return Some(event);
        }
        None
    }

    // ---- socket calls -----------------------------------------------------------------

    fn entry(&mut self, h: ConnHandle) -> Result<&mut Entry, SocketError> {
        match self.table.get_mut(h.0) {
            Some(e) if e.flags & F_RELEASED == 0 => Ok(e),
            _ => Err(SocketError::Closed),
        }
    }

    /// Active open to `remote:port` from an ephemeral port (filtered by
    /// [`StackConfig::port_filter`]). The SYN goes out on the next `poll_transmit`.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: Ipv4Addr,
        port: u16,
    ) -> Result<ConnHandle, ConnectError> {
        if remote.is_unspecified() || remote.is_broadcast() || remote.is_multicast() || port == 0 {
            return Err(ConnectError::InvalidAddress);
        }
        if self.table.len() >= self.cfg.max_connections {
            return Err(ConnectError::TableFull);
        }
        let (lo, hi) = self.cfg.ephemeral_ports;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let local = self.iface.addr();
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= hi || p < lo { lo } else { p + 1 };
            if p < lo || self.listeners.contains_key(&p) {
                continue;
            }
            let tuple = FourTuple {
                local_addr: local,
                local_port: p,
                remote_addr: remote,
                remote_port: port,
            };
            if self.table.lookup(&tuple).is_some() {
                continue;
            }
            if let Some(f) = self.cfg.port_filter {
                if !f(&tuple) {
                    continue;
                }
            }
            return self.connect_tuple(now, tuple);
        }
        Err(ConnectError::NoFreePort)
    }

    /// Active open from a chosen local port.
    pub fn connect_from(
        &mut self,
        now: Instant,
        local_port: u16,
        remote: Ipv4Addr,
        port: u16,
    ) -> Result<ConnHandle, ConnectError> {
        let tuple = FourTuple {
            local_addr: self.iface.addr(),
            local_port,
            remote_addr: remote,
            remote_port: port,
        };
        self.connect_tuple(now, tuple)
    }

    fn connect_tuple(
        &mut self,
        now: Instant,
        tuple: FourTuple,
    ) -> Result<ConnHandle, ConnectError> {
        self.now = self.now.max(now);
        let iss = self.isn.isn(now, &tuple);
        let tcb = Tcb::connect(&self.cfg.conn, now, iss);
        let entry = Entry {
            tcb,
            timer: None,
            flags: F_ANNOUNCED,
        };
        match self.table.insert(tuple, entry) {
            Ok(id) => {
                self.stats.opened += 1;
                self.sync(id);
                Ok(ConnHandle(id))
            }
            Err(InsertError::TableFull) => Err(ConnectError::TableFull),
            Err(InsertError::Duplicate(_)) => Err(ConnectError::NoFreePort),
        }
    }

    /// Queues data; returns how much fit in the send buffer.
    pub fn send(&mut self, h: ConnHandle, data: &[u8]) -> Result<usize, SocketError> {
        self.end_burst();
        let cfg = &self.cfg.conn;
        let e = match self.table.get_mut(h.0) {
            Some(e) if e.flags & F_RELEASED == 0 => e,
            _ => return Err(SocketError::Closed),
        };
        let n = e.tcb.send(cfg, data)?;
        if n > 0 {
            self.sync(h.0);
        }
        Ok(n)
    }

    /// Write-in-place send: lends exactly `min_len` bytes of contiguous free send-buffer
    /// space to `fill`, or for `min_len` 0 or 1 as much as is contiguous up to 1 KiB
    /// (never more than [`Stack::send_capacity`]: call again for more); `fill` writes from
    /// the start of the slice and
    /// returns how many bytes to queue (capped at the slice; 0 queues nothing). Returns
    /// the bytes queued; `Ok(0)` without calling `fill` when fewer than `min_len` bytes
    /// are free (an [`Event::Writable`] follows once acknowledgments free space).
    ///
    /// This is how an application builds its output in the send buffer directly (e.g. a
    /// WebSocket header and payload), with no intermediate buffer: the payload is then
    /// copied once more, into the TX frame. Rarely (a wrapped buffer that must become
    /// contiguous) the queued bytes are moved once first.
    pub fn send_with(
        &mut self,
        h: ConnHandle,
        min_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, SocketError> {
        self.end_burst();
        let e = self.entry(h)?;
        let n = e.tcb.send_with(min_len, fill)?;
        if n > 0 {
            self.sync(h.0);
        }
        Ok(n)
    }

    /// Queues a shared immutable chunk on the connection without copying it (the queue
    /// keeps a reference; [`Bytes::clone`] is a reference-count increment), so a
    /// fan-out message is encoded once and copied only into each TX frame, by first
    /// transmissions and retransmissions alike. All or nothing: when the send buffer
    /// ([`Stack::send_capacity`], shared by owned bytes and chunks) lacks room for the
    /// whole chunk, or the connection cannot send, the chunk is given back in the error
    /// ([`ChunkRefused`], reason [`SocketError::NoRoom`], [`SocketError::Closed`] or
    /// [`SocketError::InvalidState`]), so a message is never split by refusal. Chunks and
    /// bytes from [`Stack::send`] / [`Stack::send_with`] go out in call order. The
    /// reference is dropped once the peer acknowledged the chunk's last byte (or the
    /// connection closed).
    pub fn send_chunk(&mut self, h: ConnHandle, chunk: Bytes) -> Result<(), ChunkRefused> {
        self.end_burst();
        let e = match self.table.get_mut(h.0) {
            Some(e) if e.flags & F_RELEASED == 0 => e,
            _ => {
                return Err(ChunkRefused {
                    chunk,
                    reason: SocketError::Closed,
                })
            }
        };
        let empty = chunk.is_empty();
        e.tcb
            .send_chunk(chunk)
            .map_err(|(reason, chunk)| ChunkRefused { chunk, reason })?;
        if !empty {
            self.sync(h.0);
        }
        Ok(())
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&mut self, h: ConnHandle) -> Result<usize, SocketError> {
        self.end_burst();
        let cap = self.cfg.conn.snd_buf;
        let e = self.entry(h)?;
        Ok(cap.saturating_sub(e.tcb.send_queue()))
    }

    /// Copies received data into `buf`; `Ok(0)` means nothing buffered (check
    /// [`Stack::at_eof`] for end of stream).
    pub fn recv(&mut self, h: ConnHandle, buf: &mut [u8]) -> Result<usize, SocketError> {
        self.end_burst();
        let cfg = &self.cfg.conn;
        let e = match self.table.get_mut(h.0) {
            Some(e) if e.flags & F_RELEASED == 0 => e,
            _ => return Err(SocketError::Closed),
        };
        let n = e.tcb.recv(cfg, buf);
        if n > 0 {
            self.sync(h.0);
        }
        Ok(n)
    }

    /// Offers buffered data to `f` in place; `f` returns how much it consumed.
    pub fn recv_with(
        &mut self,
        h: ConnHandle,
        f: impl FnMut(&[u8]) -> usize,
    ) -> Result<usize, SocketError> {
        self.end_burst();
        let cfg = &self.cfg.conn;
        let e = match self.table.get_mut(h.0) {
            Some(e) if e.flags & F_RELEASED == 0 => e,
            _ => return Err(SocketError::Closed),
        };
        let n = e.tcb.recv_with(cfg, f);
        if n > 0 {
            self.sync(h.0);
        }
        Ok(n)
    }

    /// The peer closed and everything it sent has been read.
    pub fn at_eof(&mut self, h: ConnHandle) -> Result<bool, SocketError> {
        self.end_burst();
        Ok(self.entry(h)?.tcb.at_eof())
    }

    /// Closes the sending side (FIN after queued data); reading continues.
    pub fn shutdown(&mut self, h: ConnHandle) -> Result<(), SocketError> {
        self.end_burst();
        let now = self.now;
        self.entry(h)?.tcb.shutdown(now);
        self.sync(h.0);
        Ok(())
    }

    /// Closes the connection and releases the handle: queued data is still delivered
    /// and FIN sent; unread received data turns this into an abort (RST). No more
    /// events arrive for this handle.
    pub fn close(&mut self, h: ConnHandle) -> Result<(), SocketError> {
        self.end_burst();
        let now = self.now;
        let e = self.entry(h)?;
        e.tcb.close(now);
        e.flags |= F_RELEASED;
        self.sync(h.0);
        Ok(())
    }

    /// Resets the connection (RST to the peer) and releases the handle.
    pub fn abort(&mut self, h: ConnHandle) -> Result<(), SocketError> {
        self.end_burst();
        let now = self.now;
        let e = self.entry(h)?;
        e.tcb.abort(now);
        e.flags |= F_RELEASED;
        self.sync(h.0);
        Ok(())
    }

    /// Turns Nagle's algorithm off (`true`) or on.
    pub fn set_nodelay(&mut self, h: ConnHandle, nodelay: bool) -> Result<(), SocketError> {
        self.end_burst();
        self.entry(h)?.tcb.set_nodelay(nodelay);
        self.sync(h.0);
        Ok(())
    }

    /// Protocol statistics of one connection (state, windows, cwnd, RTT, bytes). Within
    /// a burst (after `handle_frame*`, before any other `&mut` call or
    /// [`Stack::end_burst`]) the send side's figures (bytes out, cwnd, RTT) may not yet
    /// include the pure ACKs coalesced in it.
    pub fn stats(&self, h: ConnHandle) -> Result<ConnStats, SocketError> {
        self.table
            .get(h.0)
            .map(|e| e.tcb.stats(&self.cfg.conn))
            .ok_or(SocketError::Closed)
    }

    /// The connection's 4-tuple.
    pub fn tuple(&self, h: ConnHandle) -> Option<FourTuple> {
        self.table.tuple(h.0).copied()
    }
}

/// Whether connection `e`'s wheel entry fires no later than its earliest deadline (or
/// it has none): what [`rearm_entry`] establishes, and the stack keeps after every call
/// (header prediction relies on it).
fn entry_early_enough(cfg: &ConnConfig, e: &Entry) -> bool {
    match (e.tcb.poll_timeout(cfg), e.timer) {
        (None, _) => true,
        (Some(want), Some((_, have))) => have <= want,
        (Some(_), None) => false,
    }
}

/// Brings connection `id`'s wheel entry `e` in line with its earliest deadline (see
/// [`Stack::rearm`]).
fn rearm_entry(timers: &mut TimerWheel<ConnId>, cfg: &ConnConfig, id: ConnId, e: &mut Entry) {
    let want = e.tcb.poll_timeout(cfg);
    let have = e.timer.map(|(_, at)| at);
    let early_enough = match (have, want) {
        (Some(h), Some(w)) => h <= w,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if want == have || early_enough {
        return;
    }
    if let Some((tid, _)) = e.timer.take() {
        timers.cancel(tid);
    }
    if let Some(at) = want {
        e.timer = Some((timers.insert(at, id), at));
    }
}
