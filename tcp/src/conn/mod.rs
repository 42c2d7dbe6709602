//! The per-connection transmission control block (TCB) and the RFC 9293 state machine.
//!
//! A [`Tcb`] knows nothing about addresses, frames or other connections: the stack
//! looks it up by 4-tuple, feeds it the parsed wire segments ([`TcpRepr`], payload
//! borrowed from the frame) with [`Tcb::on_segment`], asks it for segments to send with
//! [`Tcb::dispatch`] / [`Tcb::dispatch_header`] ([`OutSegment`]), and drives its timers
//! with [`Tcb::poll_timeout`] / [`Tcb::handle_timeout`]. Send and receive data live in
//! a [`SendQueue`] (owned bytes in a ring plus shared chunks) and a [`RingBuffer`]
//! (out-of-order bytes in the receive ring's free space, tracked by an
//! [`Assembler`]); they are allocated lazily and freed when drained, so an idle
//! connection costs only the TCB itself.
//!
//! With SACK (RFC 2018), the sender keeps the RFC 6675 scoreboard: every range the peer
//! SACKed above SND.UNA (not only the four blocks one option carries), sorted and
//! merged, allocated on the first SACK block and freed when it empties, bounded by one
//! range per SMSS outstanding and at most [`MAX_SACK_RANGES`] (blocks beyond are
//! counted in [`Counters::sack_blocks_ignored`]). Fast recovery's `pipe`, `IsLost()` and
//! `NextSeg()` (RFC 6675 4) are computed from it.

mod input;
mod output;
#[cfg(test)]
mod proptests;
mod scoreboard;
pub mod segment;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use crate::cc::Algorithm;
pub use input::{Arrival, Offer, Sink};
pub use scoreboard::MAX_RANGES as MAX_SACK_RANGES;
pub use segment::{reset_for, OutSegment};

use crate::cc::{Congestion, CongestionControl, Rtt};
use crate::ratelimit::{RateLimit, TokenBucket};
use crate::seq::SeqNumber;
use crate::storage::{Assembler, RingBuffer, SendQueue};
use crate::time::Instant;
use crate::wire::tcp::{SackBlock, TcpFlags, TcpOptions, TcpRepr, TcpTimestamps};
use scoreboard::Scoreboard;

/// The eleven connection states of RFC 9293 3.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a SYN.
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and SYN sent, waiting for the ACK of our SYN.
    SynReceived,
    /// Open; data flows both ways.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; waiting for our application to close.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Waiting 2*MSL so that old duplicates die out.
    TimeWait,
}

impl State {
    /// RFC 9293 3.3.2: states after the SYNs have been exchanged.
    pub fn is_synchronized(self) -> bool {
        !matches!(
            self,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Orderly close, both FINs exchanged (or the TCB was never opened).
    Normal,
    /// The peer reset the connection.
    Reset,
    /// The peer refused the connection (RST in answer to our SYN).
    Refused,
    /// Retransmissions or keepalive probes went unanswered.
    TimedOut,
    /// The application aborted it.
    Aborted,
}

/// Per-connection tunables, shared by every TCB of a stack (passed by reference so
/// that each TCB stays small).
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// MSS we announce and the cap on what we send (RFC 9293 3.7.1; 1460 for a 1500 MTU).
    pub mss: u16,
    /// Receive buffer bytes per connection (allocated on first use).
    pub rcv_buf: usize,
    /// Send buffer bytes per connection (allocated on first use).
    pub snd_buf: usize,
    /// Offer window scaling (RFC 7323 2).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323 3-5).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Congestion control algorithm.
    pub congestion: Algorithm,
    /// Maximum segment lifetime; TIME_WAIT lasts twice this.
    pub msl: Duration,
    /// How long FIN_WAIT_2 waits for the peer's FIN after the application closed.
    pub fin_wait_2_timeout: Duration,
    /// RTO before any RTT sample (RFC 6298 2.1: 1 s).
    pub rto_initial: Duration,
    /// Lower bound of the RTO.
    pub rto_min: Duration,
    /// Upper bound of the RTO (RFC 6298 2.5: at least 60 s).
    pub rto_max: Duration,
    /// Retransmissions of data or FIN before giving up.
    pub max_retries: u8,
    /// Retransmissions of SYN / SYN-ACK before giving up.
    pub syn_retries: u8,
    /// Delay acknowledgments (RFC 9293 3.8.6.3, RFC 1122 4.2.3.2).
    pub delayed_ack: bool,
    /// Upper bound of the ACK delay (RFC 9293: less than 0.5 s; 40 ms default).
    pub delayed_ack_timeout: Duration,
    /// Coalesce a burst's pure ACKs of one connection: the ACKs that only acknowledge
    /// new data (in sequence, window unchanged, no SACK block, outside recovery), after
    /// the connection's first segment of the burst (the frames handed over with one
    /// `now`), are taken as they come, and the rest of their processing (send buffer,
    /// RTT, RTO, congestion control) is done once, at the end of the burst (the next
    /// call of any `Stack` method but `handle_frame*`), as for the last of them alone,
    /// with slow start counting every ACK. One RTT sample per burst after the first
    /// ACK's instead of one per ACK.
    pub coalesce_acks: bool,
    /// Nagle's algorithm on new connections (RFC 9293 3.7.4).
    pub nagle: bool,
    /// Keepalive: idle time before the first probe, `None` = off (RFC 9293 3.8.4).
    pub keepalive_idle: Option<Duration>,
    /// Keepalive: time between unanswered probes.
    pub keepalive_interval: Duration,
    /// Keepalive: unanswered probes before the connection times out.
    pub keepalive_count: u8,
}

impl Default for ConnConfig {
    fn default() -> ConnConfig {
        ConnConfig {
            mss: 1460,
            rcv_buf: 256 * 1024,
            snd_buf: 256 * 1024,
            window_scaling: true,
            timestamps: true,
            sack: true,
            congestion: Algorithm::Cubic,
            msl: Duration::from_secs(30),
            fin_wait_2_timeout: Duration::from_secs(60),
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(60),
            max_retries: 15,
            syn_retries: 6,
            delayed_ack: true,
            delayed_ack_timeout: Duration::from_millis(40),
            coalesce_acks: true,
            nagle: true,
            keepalive_idle: None,
            keepalive_interval: Duration::from_secs(75),
            keepalive_count: 9,
        }
    }
}

/// Counters a TCB bumps as it works; the stack sums them stack-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Segments retransmitted (RTO, fast retransmit, SACK recovery).
    pub retransmits: u64,
    /// RSTs accepted from peers.
    pub resets_received: u64,
    /// RSTs generated.
    pub resets_sent: u64,
    /// RFC 5961 challenge ACKs sent.
    pub challenge_acks: u64,
    /// Challenge ACKs suppressed by the rate limit.
    pub challenge_acks_suppressed: u64,
    /// Segments failing the acceptability test or PAWS.
    pub unacceptable: u64,
    /// Out-of-order segments dropped because the reassembly had too many holes.
    pub ooo_dropped: u64,
    /// Connections timed out (RTO or keepalive).
    pub timeouts: u64,
    /// Fast retransmits: entries into fast recovery on duplicate ACKs or SACK
    /// (RFC 5681 3.2, RFC 6675 5), with or without SACK.
    pub fast_retransmits: u64,
    /// Of those, recoveries driven by the SACK scoreboard (RFC 6675).
    pub sack_recoveries: u64,
    /// SACK blocks ignored because they would have opened a scoreboard range beyond
    /// the connection's limit (one per SMSS outstanding, at most
    /// [`MAX_SACK_RANGES`]).
    pub sack_blocks_ignored: u64,
    /// RFC 7323 5.5: TS.Recent invalidated after more than 24 days idle.
    pub ts_recent_expired: u64,
}

/// Set of pending application events on one connection (coalesced).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Events(pub u8);

impl Events {
    /// The handshake completed.
    pub const ESTABLISHED: Events = Events(1);
    /// Data (or the peer's FIN) can be read.
    pub const READABLE: Events = Events(2);
    /// Send buffer space became available after a write found the buffer full (or took
    /// only part of what it was given); acknowledgments raise nothing otherwise.
    pub const WRITABLE: Events = Events(4);
    /// The peer sent FIN: no more data will arrive.
    pub const PEER_CLOSED: Events = Events(8);
    /// The connection is fully closed (see [`Tcb::close_reason`]).
    pub const CLOSED: Events = Events(16);

    /// Every bit of `other` is set.
    pub fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }
    /// No event.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::fmt::Debug for Events {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Events({:#07b})", self.0)
    }
}

/// What a SYN cookie preserved of the peer's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieTcb {
    /// Our ISN (the cookie itself).
    pub iss: SeqNumber,
    /// The peer's ISN.
    pub irs: SeqNumber,
    /// Peer MSS (as encoded in the cookie).
    pub mss: u16,
    /// Peer window-scale shift, if it offered one.
    pub snd_wscale: Option<u8>,
    /// Peer offered SACK.
    pub sack: bool,
}

/// Errors from the socket calls on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// The send side is shut down (or the state does not allow sending).
    InvalidState,
    /// The connection is closed.
    Closed,
    /// The send buffer lacks room for the whole chunk (`send_chunk`); retry after an
    /// `Event::Writable`.
    NoRoom,
}

impl core::fmt::Display for SocketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SocketError::InvalidState => "connection state does not allow this call",
            SocketError::Closed => "connection closed",
            SocketError::NoRoom => "send buffer lacks room for the whole chunk",
        })
    }
}

impl std::error::Error for SocketError {}

/// A snapshot of a connection's protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Current state.
    pub state: State,
    /// Peer's advertised window (bytes, scaled).
    pub snd_wnd: u32,
    /// Our advertised window (bytes).
    pub rcv_wnd: u32,
    /// Congestion window (bytes).
    pub cwnd: u32,
    /// Slow-start threshold (bytes).
    pub ssthresh: u32,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Segments retransmitted.
    pub retransmits: u32,
    /// Fast retransmits (entries into fast recovery).
    pub fast_retransmits: u32,
    /// Of those, SACK-based recoveries (RFC 6675).
    pub sack_recoveries: u32,
    /// Payload bytes received in order.
    pub bytes_in: u64,
    /// Payload bytes acknowledged by the peer.
    pub bytes_out: u64,
    /// Effective send MSS.
    pub mss: u16,
}

/// Pending-output flags (bits of `Tcb::pending`).
/// How long a send buffer the peer's ACK drained is kept for the connection's next write
/// before it goes back to the pool: a busy connection keeps its buffer (no give-back,
/// zeroing and take per round trip), an idle one holds none soon after its last ACK.
pub const SEND_BUFFER_KEEP: core::time::Duration = core::time::Duration::from_millis(200);

const P_ACK: u8 = 1; // send an ACK now
const P_RST: u8 = 2; // send <SEQ=SND.NXT><CTL=RST> (abort / data after close)
const P_PROBE: u8 = 4; // zero-window or keepalive probe <SEQ=SND.UNA-1>
const P_RTX: u8 = 8; // retransmit from SND.UNA (fast retransmit / partial ack)
const P_SYN: u8 = 16; // (re)send SYN or SYN-ACK

/// The transmission control block of one connection (RFC 9293 3.3.1).
#[derive(Debug)]
pub struct Tcb {
    state: State,
    /// Opened by a passive OPEN (for the SYN-RECEIVED RST/SYN rules).
    passive: bool,
    nodelay: bool,
    /// Why in-order text may not take header prediction: [`RD_CLOSED`] (the
    /// application will not read any more: close, not shutdown) and
    /// [`RD_ACKS_COALESCED`] (pure ACKs wait for [`Tcb::settle_acks`]); one byte, so the
    /// predicted path tests both at once.
    rd_block: u8,
    /// The application shut down its sending side: a FIN follows the queued data.
    fin_queued: bool,
    pending: u8,
    events: Events,
    reason: Option<CloseReason>,

    // --- send sequence space (RFC 9293 3.3.1)
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// Highest sequence number sent plus one (SND.NXT before any go-back-N rewind).
    snd_max: SeqNumber,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    snd_wscale: u8,
    /// Both sides sent the window-scale option.
    ws_ok: bool,
    /// Sequence number of `snd_buf[0]`.
    snd_buf_seq: SeqNumber,
    /// Unacknowledged and unsent data: owned bytes in a ring plus shared chunks.
    snd_buf: SendQueue,
    /// Effective send MSS (peer's MSS option, capped by ours).
    mss: u16,

    // --- receive sequence space
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    /// Right edge of the window we advertised (never moves left).
    rcv_adv: SeqNumber,
    rcv_wscale: u8,
    /// In-order bytes not yet read; out-of-order bytes sit in its free space, at
    /// their offset from RCV.NXT, tracked by `ooo`.
    rcv_buf: RingBuffer,
    ooo: Assembler,
    /// Sequence number of an out-of-order FIN.
    ooo_fin: Option<SeqNumber>,
    fin_received: bool,
    /// Largest segment seen from the peer (delayed-ACK "full segment").
    rcv_mss: u16,
    /// Unacknowledged bytes that call for an ACK at once: two full segments, 0 without
    /// delayed ACKs ([`ack_after`]).
    ack_after: u32,
    rcv_unacked: u32,

    // --- options
    ts_on: bool,
    ts_recent: u32,
    /// Added to our millisecond clock for TSval (RFC 7323 5.4 / RFC 6528-style offset).
    ts_offset: u32,
    sack_on: bool,
    /// Every range the peer SACKed above SND.UNA (RFC 6675 scoreboard): allocated on
    /// the first SACK block, freed when it empties.
    sacked: Scoreboard,
    /// Highest sequence number retransmitted during this recovery (RFC 6675 HighRxt).
    high_rxt: SeqNumber,

    // --- RTT / retransmission
    rtt: Rtt,
    /// Sequence number and send time of the segment being timed (no timestamps).
    rtt_probe: Option<(SeqNumber, Instant)>,
    backoff: u8,
    retries: u8,
    persist_backoff: u8,
    keepalive_probes: u8,

    // --- pure ACKs coalesced within a burst ([`Tcb::coalesce_ack`], [`Tcb::settle_acks`])
    /// How many are waiting (0: none). SND.UNA already holds the last one's
    /// acknowledgment; the rest of their processing waits for the settle.
    acks_coalesced: u32,
    /// SND.UNA before the first of them (0 outside a run).
    coalesced_una: SeqNumber,
    /// The last one's TSecr (0: none, no RTT sample; 0 outside a run).
    coalesced_tsecr: u32,

    // --- congestion
    cc: Congestion,
    dupacks: u8,
    in_recovery: bool,
    recover: SeqNumber,

    // --- timers
    rto_at: Option<Instant>,
    delack_at: Option<Instant>,
    persist_at: Option<Instant>,
    /// TIME_WAIT expiry or FIN_WAIT_2 timeout.
    close_at: Option<Instant>,
    /// When a drained send buffer is given back to the pool ([`SEND_BUFFER_KEEP`] after
    /// the ACK that drained it), unless a write uses it again first.
    snd_release_at: Option<Instant>,
    /// A write found the send buffer full (or took only part): the next ACK that frees
    /// space raises WRITABLE. Without one, acknowledgments raise no event.
    write_blocked: bool,
    last_recv: Instant,
    last_send: Instant,

    // --- stats
    retransmits: u32,
    fast_retransmits: u32,
    sack_recoveries: u32,
    bytes_in: u64,
    bytes_out: u64,
}

/// RFC 9293 3.8.6.3 / RFC 1122 4.2.3.2: ACK at least every second full-sized segment
/// (`rcv_mss`), or every segment without delayed ACKs: the unacknowledged bytes that call
/// for an ACK at once.
fn ack_after(cfg: &ConnConfig, rcv_mss: u16) -> u32 {
    if cfg.delayed_ack {
        2 * u32::from(rcv_mss)
    } else {
        0
    }
}

/// [`Tcb::rd_block`]: the application closed its reading side.
const RD_CLOSED: u8 = 1;
/// [`Tcb::rd_block`]: coalesced pure ACKs wait to be settled.
const RD_ACKS_COALESCED: u8 = 2;

impl Tcb {
    /// The application will not read any more (close, not shutdown).
    fn rd_closed(&self) -> bool {
        self.rd_block & RD_CLOSED != 0
    }

    fn blank(cfg: &ConnConfig, now: Instant, iss: SeqNumber, state: State) -> Tcb {
        Tcb {
            state,
            passive: false,
            nodelay: !cfg.nagle,
            rd_block: 0,
            fin_queued: false,
            pending: 0,
            events: Events::default(),
            reason: None,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            snd_wscale: 0,
            ws_ok: false,
            snd_buf_seq: iss + 1u32,
            snd_buf: SendQueue::new(cfg.snd_buf),
            mss: 536,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_wscale: 0,
            rcv_buf: RingBuffer::new(cfg.rcv_buf),
            ooo: Assembler::new(),
            ooo_fin: None,
            fin_received: false,
            rcv_mss: 536,
            ack_after: ack_after(cfg, 536),
            rcv_unacked: 0,
            ts_on: false,
            ts_recent: 0,
            ts_offset: iss.0,
            sack_on: false,
            sacked: Scoreboard::new(),
            high_rxt: iss,
            rtt: Rtt::new(cfg.rto_initial),
            rtt_probe: None,
            backoff: 0,
            retries: 0,
            persist_backoff: 0,
            keepalive_probes: 0,
            acks_coalesced: 0,
            coalesced_una: SeqNumber(0),
            coalesced_tsecr: 0,
            cc: Congestion::new(cfg.congestion, 536),
            dupacks: 0,
            in_recovery: false,
            recover: iss,
            rto_at: None,
            delack_at: None,
            persist_at: None,
            snd_release_at: None,
            write_blocked: false,
            close_at: None,
            last_recv: now,
            last_send: now,
            retransmits: 0,
            fast_retransmits: 0,
            sack_recoveries: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// A TCB in LISTEN (passive OPEN) that will use `iss` when a SYN arrives.
    pub fn listen(cfg: &ConnConfig, now: Instant, iss: SeqNumber) -> Tcb {
        let mut t = Tcb::blank(cfg, now, iss, State::Listen);
        t.passive = true;
        t
    }

    /// Active OPEN: a TCB in SYN-SENT; the SYN goes out on the next [`Tcb::dispatch`].
    pub fn connect(cfg: &ConnConfig, now: Instant, iss: SeqNumber) -> Tcb {
        let mut t = Tcb::blank(cfg, now, iss, State::SynSent);
        t.pending |= P_SYN;
        t
    }

    /// Passive open straight from a SYN that a listener accepted: a TCB in
    /// SYN-RECEIVED (the stack does LISTEN bookkeeping itself). Same as
    /// [`Tcb::listen`] followed by [`Tcb::on_segment`] with the SYN.
    pub fn accept(cfg: &ConnConfig, now: Instant, iss: SeqNumber, syn: &TcpRepr<'_>) -> Tcb {
        let mut t = Tcb::listen(cfg, now, iss);
        let mut c = Counters::default();
        // A SYN in LISTEN never draws a challenge ACK.
        let mut unlimited = TokenBucket::new(RateLimit::UNLIMITED, 0);
        let _ = t.on_segment(cfg, now, syn, None, &mut unlimited, &mut c);
        t
    }

    /// An already-established TCB rebuilt from a validated SYN cookie; `ack` is the
    /// segment that carried the cookie back (RFC 4987 3.6).
    pub fn from_cookie(
        cfg: &ConnConfig,
        now: Instant,
        cookie: &CookieTcb,
        ack: &TcpRepr<'_>,
    ) -> Tcb {
        let CookieTcb {
            iss,
            irs,
            mss,
            snd_wscale,
            sack,
        } = *cookie;
        let mut t = Tcb::blank(cfg, now, iss, State::Established);
        // The cookie SYN-ACK's TSval came from the bare clock: keep using it.
        t.ts_offset = 0;
        t.passive = true;
        t.irs = irs;
        t.rcv_nxt = irs + 1u32;
        t.snd_una = iss + 1u32;
        t.snd_nxt = t.snd_una;
        t.snd_max = t.snd_una;
        t.mss = mss.min(cfg.mss).max(64);
        t.cc = Congestion::new(cfg.congestion, u32::from(t.mss));
        if let (Some(ws), true) = (snd_wscale, cfg.window_scaling) {
            t.snd_wscale = ws.min(14);
            t.ws_ok = true;
            t.rcv_wscale = our_wscale(cfg);
        }
        t.sack_on = sack && cfg.sack;
        if let (Some(ts), true) = (ack.options.timestamps, cfg.timestamps) {
            t.ts_on = true;
            t.ts_recent = ts.tsval;
        }
        t.snd_wnd = u32::from(ack.window) << t.snd_wscale;
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = ack.seq;
        t.snd_wl2 = ack.ack;
        t.rcv_adv = t.rcv_nxt + t.window_space(cfg);
        t.events = Events::ESTABLISHED.union(Events::WRITABLE);
        t
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason
    }

    /// Takes the pending events (coalesced since the last call).
    pub fn take_events(&mut self) -> Events {
        core::mem::take(&mut self.events)
    }

    /// Takes one pending event, in the order ESTABLISHED, READABLE, WRITABLE,
    /// PEER_CLOSED, CLOSED.
    pub fn take_event(&mut self) -> Option<Events> {
        for e in [
            Events::ESTABLISHED,
            Events::READABLE,
            Events::WRITABLE,
            Events::PEER_CLOSED,
            Events::CLOSED,
        ] {
            if self.events.contains(e) {
                self.events = Events(self.events.0 & !e.0);
                return Some(e);
            }
        }
        None
    }

    /// Events pending without taking them.
    pub fn peek_events(&self) -> Events {
        self.events
    }

    /// Our initial sequence number.
    pub fn iss(&self) -> SeqNumber {
        self.iss
    }

    /// The peer's initial sequence number.
    pub fn irs(&self) -> SeqNumber {
        self.irs
    }

    /// RCV.NXT.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    /// SND.NXT.
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd_nxt
    }

    /// Most recent timestamp seen from the peer (for TIME_WAIT reuse, RFC 6191).
    pub fn ts_recent(&self) -> Option<u32> {
        self.ts_on.then_some(self.ts_recent)
    }

    /// Disables (`true`) or enables Nagle's algorithm.
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.nodelay = nodelay;
    }

    /// Disjoint ranges in the SACK scoreboard now (RFC 6675; 0 without SACK
    /// information).
    pub fn sack_ranges(&self) -> usize {
        self.sacked.len()
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self, _cfg: &ConnConfig) -> usize {
        self.snd_buf.window()
    }

    /// Bytes waiting in the receive buffer.
    pub fn recv_queue(&self) -> usize {
        self.rcv_buf.len()
    }

    /// Bytes queued but not yet acknowledged.
    pub fn send_queue(&self) -> usize {
        self.snd_buf.len()
    }

    /// Whether the application may queue data (RFC 9293 3.10.2 SEND).
    fn may_send(&self) -> Result<(), SocketError> {
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {}
            State::Closed => return Err(SocketError::Closed),
            _ => return Err(SocketError::InvalidState),
        }
        if self.fin_queued {
            return Err(SocketError::InvalidState);
        }
        Ok(())
    }

    /// Queues application data; returns how much fit (RFC 9293 3.10.2 SEND).
    pub fn send(&mut self, _cfg: &ConnConfig, data: &[u8]) -> Result<usize, SocketError> {
        self.may_send()?;
        let n = self.snd_buf.enqueue_slice(data);
        crate::copy_count::record(crate::copy_count::Site::SendBuffer, n);
        self.write_blocked |= n < data.len();
        Ok(n)
    }

    /// Write-in-place send: lends at least `min_len` bytes of contiguous free send
    /// buffer to `fill`, which writes from the start and returns how many bytes to
    /// queue. `Ok(0)` without calling `fill` when fewer than `min_len` bytes are free.
    pub fn send_with(
        &mut self,
        min_len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, SocketError> {
        self.may_send()?;
        let Some(n) = self.snd_buf.lend(min_len, fill) else {
            self.write_blocked = true;
            return Ok(0);
        };
        // Whatever the application wrote in place was a copy into the send buffer.
        crate::copy_count::record(crate::copy_count::Site::SendBuffer, n);
        Ok(n)
    }

    /// Queues a shared immutable chunk whole without copying it; transmissions and
    /// retransmissions copy from it into each frame. Refused whole, and given back,
    /// when the send buffer lacks room for all of it.
    pub fn send_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), (SocketError, bytes::Bytes)> {
        if let Err(e) = self.may_send() {
            return Err((e, chunk));
        }
        self.snd_buf.enqueue_chunk(chunk).map_err(|c| {
            self.write_blocked = true;
            (SocketError::NoRoom, c)
        })
    }

    /// Copies received in-order data into `buf` (RFC 9293 3.10.3 RECEIVE). Returns 0
    /// at end of stream or when nothing is buffered.
    pub fn recv(&mut self, cfg: &ConnConfig, buf: &mut [u8]) -> usize {
        let n = self.rcv_buf.dequeue_slice(buf);
        crate::copy_count::record(crate::copy_count::Site::RecvRead, n);
        self.after_read(cfg, n);
        n
    }

    /// Offers buffered in-order data to `f` (contiguous runs, in order) and drops what
    /// it reports consumed. Returns the total consumed.
    pub fn recv_with(&mut self, cfg: &ConnConfig, mut f: impl FnMut(&[u8]) -> usize) -> usize {
        let mut total = 0;
        loop {
            let a = self.rcv_buf.peek_contiguous();
            if a.is_empty() {
                break;
            }
            let len = a.len();
            let k = f(a).min(len);
            self.rcv_buf.dequeue_allocated(k);
            total += k;
            if k < len || k == 0 {
                break;
            }
        }
        self.after_read(cfg, total);
        total
    }

    /// The peer has closed and every byte it sent has been read.
    pub fn at_eof(&self) -> bool {
        self.fin_received && self.rcv_buf.is_empty()
    }

    fn after_read(&mut self, cfg: &ConnConfig, n: usize) {
        if n == 0 {
            return;
        }
        if self.ooo.is_empty() {
            // Idle connections hold no buffer memory.
            self.rcv_buf.release_if_empty();
        }
        // RFC 9293 3.8.6.2.2: tell the peer about the opened window, but only once it
        // opened by a useful amount (receiver-side SWS avoidance).
        if self.state.is_synchronized() || self.state == State::SynReceived {
            let open = self.rcv_adv.distance(self.rcv_nxt).max(0) as u32;
            let space = self.window_space(cfg);
            let threshold = (cfg.rcv_buf as u32 / 2).min(u32::from(self.mss)).max(1);
            if space >= open + threshold && open < (cfg.rcv_buf as u32) / 2 {
                self.pending |= P_ACK;
            }
        }
    }

    /// Shuts down the sending side: a FIN follows the queued data (RFC 9293 3.10.4).
    pub fn shutdown(&mut self, now: Instant) {
        match self.state {
            State::Listen => self.enter_closed(now, CloseReason::Normal),
            // RFC 9293 3.10.4: in SYN-SENT with nothing queued, delete the TCB;
            // otherwise (and in SYN-RECEIVED) queue the FIN for after ESTABLISHED.
            State::SynSent if self.snd_buf.is_empty() => {
                self.enter_closed(now, CloseReason::Normal)
            }
            State::SynSent | State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Closes both directions. Unread received data makes this an abort (RST), as
    /// RFC 2525 2.17 recommends; otherwise it is a [`Tcb::shutdown`] plus a promise
    /// not to read (data arriving afterwards is answered with RST).
    pub fn close(&mut self, now: Instant) {
        self.rd_block |= RD_CLOSED;
        if !self.rcv_buf.is_empty() && self.state.is_synchronized() {
            self.abort(now);
            return;
        }
        self.shutdown(now);
    }

    /// Aborts: RST to the peer if synchronized, then CLOSED (RFC 9293 3.10.5 ABORT).
    pub fn abort(&mut self, now: Instant) {
        match self.state {
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait => {
                self.pending = P_RST;
                self.enter_closed(now, CloseReason::Aborted);
            }
            State::Closed => {}
            _ => self.enter_closed(now, CloseReason::Aborted),
        }
    }

    /// An ICMP "fragmentation needed" (RFC 1191) quoted our segment `seq` with a
    /// next-hop MTU of `mtu`: lower the MSS and resend what is in flight. The quoted
    /// sequence number must be in flight (RFC 5927 4.1), else the message is ignored.
    /// Returns whether it was acted on.
    pub fn on_path_mtu(&mut self, mtu: u16, seq: SeqNumber) -> bool {
        if !(self.snd_una <= seq && seq < self.snd_max && self.state.is_synchronized()) {
            return false;
        }
        // RFC 1191 / Linux: never below the IPv4 minimum MSS of 536 (RFC 9293 3.7.1).
        let mss = mtu.saturating_sub(40).max(536);
        if mss >= self.mss {
            return false;
        }
        self.mss = mss;
        self.cc.set_mss(u32::from(mss));
        // RFC 1191 6.5: retransmit at once, without a congestion response.
        self.snd_nxt = self.snd_una;
        self.rtt_probe = None;
        true
    }

    /// A snapshot for monitoring.
    pub fn stats(&self, cfg: &ConnConfig) -> ConnStats {
        ConnStats {
            state: self.state,
            snd_wnd: self.snd_wnd,
            rcv_wnd: self.rcv_adv.distance(self.rcv_nxt).max(0) as u32,
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(self.backoff, cfg.rto_max),
            retransmits: self.retransmits,
            fast_retransmits: self.fast_retransmits,
            sack_recoveries: self.sack_recoveries,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            mss: self.mss,
        }
    }

    /// The earliest instant at which [`Tcb::handle_timeout`] has work to do.
    #[inline]
    pub fn poll_timeout(&self, cfg: &ConnConfig) -> Option<Instant> {
        // Called after every segment: branch-free minimum over the raw clock values
        // (absent deadlines count as the largest value; `any` keeps `None` exact).
        let all = [
            self.rto_at,
            self.delack_at,
            self.persist_at,
            self.close_at,
            self.snd_release_at,
            self.keepalive_deadline(cfg),
        ];
        let mut any = false;
        let mut min = u64::MAX;
        for t in all {
            any |= t.is_some();
            min = min.min(t.map_or(u64::MAX, Instant::total_micros));
        }
        any.then_some(Instant::from_micros(min))
    }

    fn keepalive_deadline(&self, cfg: &ConnConfig) -> Option<Instant> {
        let idle = cfg.keepalive_idle?;
        if !matches!(self.state, State::Established | State::CloseWait) {
            return None;
        }
        let interval = cfg.keepalive_interval * u32::from(self.keepalive_probes);
        Some(self.last_recv + idle + interval)
    }

    fn enter_closed(&mut self, _now: Instant, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        let was_time_wait = self.state == State::TimeWait;
        self.state = State::Closed;
        if !was_time_wait {
            // (Leaving TIME_WAIT already reported CLOSED on entering it.)
            self.reason = Some(reason);
            self.events = Events(self.events.0 | Events::CLOSED.0);
        }
        self.rto_at = None;
        self.delack_at = None;
        self.persist_at = None;
        self.close_at = None;
        self.snd_release_at = None;
        self.snd_buf.clear();
        self.snd_buf.release_if_empty();
        self.sacked.clear();
        self.ooo.clear();
        self.ooo_fin = None;
        self.pending &= P_RST;
    }

    fn enter_time_wait(&mut self, cfg: &ConnConfig, now: Instant) {
        self.state = State::TimeWait;
        // For the application the connection is over; TIME_WAIT is the stack's business.
        self.reason = Some(CloseReason::Normal);
        self.add_event(Events::CLOSED);
        self.rto_at = None;
        self.persist_at = None;
        self.delack_at = None;
        // RFC 9293 3.10.7.4: start the time-wait timer (2 MSL).
        self.close_at = Some(now + cfg.msl * 2);
        self.snd_release_at = None;
        self.snd_buf.clear();
        self.snd_buf.release_if_empty();
        self.sacked.clear();
    }

    fn add_event(&mut self, e: Events) {
        self.events = Events(self.events.0 | e.0);
    }

    /// Free receive space as a window, rounded down to the scale unit.
    fn window_space(&self, cfg: &ConnConfig) -> u32 {
        let free = cfg.rcv_buf.saturating_sub(self.rcv_buf.len());
        let max = 65_535u32 << self.rcv_wscale;
        let free = u32::try_from(free).unwrap_or(u32::MAX).min(max);
        (free >> self.rcv_wscale) << self.rcv_wscale
    }

    /// Our timestamp clock: milliseconds (RFC 7323 5.4: 1 ms to 1 s per tick), offset
    /// by the ISS so that it does not reveal the host clock.
    fn ts_now(&self, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// Bytes in flight for congestion control: during SACK recovery the RFC 6675
    /// `pipe`, otherwise FlightSize less what the peer SACKed.
    fn flight(&self) -> u32 {
        if self.in_recovery && self.sack_on {
            return self.pipe();
        }
        let out = self.snd_max.distance(self.snd_una).max(0) as u32;
        out.saturating_sub(self.sacked_bytes())
    }

    fn sacked_bytes(&self) -> u32 {
        self.sacked.sacked_bytes()
    }

    /// RFC 6675 4 SetPipe() over the whole scoreboard: for every octet between SND.UNA
    /// and SND.MAX that is not SACKed, one if it is not deemed lost, plus one if it was
    /// retransmitted in this recovery (below HighRxt).
    fn pipe(&self) -> u32 {
        let high_rxt = self.in_recovery.then_some(self.high_rxt);
        self.sacked
            .pipe(self.snd_una, self.snd_max, self.mss, high_rxt)
    }

    fn current_rto(&self, cfg: &ConnConfig) -> Duration {
        self.rtt.rto(self.backoff, cfg.rto_max)
    }
}

/// A [`ConnConfig`]'s RTO bounds in microseconds, the per-ACK unit: computed once per
/// stack rather than converted from `Duration` on every ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtoBounds {
    /// `rto_min`.
    pub min: u32,
    /// `rto_max`.
    pub max: u32,
}

impl RtoBounds {
    /// The bounds of `cfg`.
    pub(crate) fn of(cfg: &ConnConfig) -> RtoBounds {
        RtoBounds {
            min: crate::time::duration_micros_u32(cfg.rto_min),
            max: crate::time::duration_micros_u32(cfg.rto_max),
        }
    }
}

/// Window-scale shift we offer: enough for the receive buffer (RFC 7323 2.3, max 14).
pub(crate) fn our_wscale(cfg: &ConnConfig) -> u8 {
    if !cfg.window_scaling {
        return 0;
    }
    let mut s = 0u8;
    while s < 14 && (65_535usize << s) < cfg.rcv_buf {
        s += 1;
    }
    s
}
