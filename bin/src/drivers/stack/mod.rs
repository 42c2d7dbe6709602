//! The stack driver: one worker's [`tcp::stack::Stack`] over any `dataplane::Device`
//! (AF_XDP in production, [`dataplane::MemDevice`] in tests), serving any [`App`].
//!
//! [`StackDriver`] implements [`dataplane::Handler`], so the dataplane's poll loop drives
//! it: each received frame goes to [`Stack::handle_frame_with_tx`], whose in-order payload
//! is handed to the application straight from the RX frame, with the connection's send
//! side ([`FrameTx`]) so it answers in place ([`Conns::sink`]); after each batch
//! [`StackDriver::poll`] runs due timers, hands stack events to the connections, takes the
//! application's messages (bounded per batch), flushes what the application queued, and
//! builds every segment due into the device's TX buffers. One clock: the `now` the
//! dataplane read once for the batch is the only time the stack and the application see.
//!
//! Per connection, [`Conns::drive`] lets the application write what it queued
//! ([`App::flush`] into a [`StackTx`]: `send_with` writes in place, `send_chunk` queues a
//! shared chunk by reference), reads buffered input while [`App::wants_read`], and
//! closes what [`App::is_finished`] names: our FIN
//! ([`Stack::shutdown`]), then the peer is drained until its FIN (or [`LINGER`]), so unread
//! data never turns our last segments into a reset.

use rustc_hash::FxHashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use dataplane::Handler;
use mio::{Events, Poll, Token};
use tcp::iface::TxQueue as StackTxQueue;
use tcp::stack::{ConnHandle, ConnTx, Event, Stack};
use tcp::Instant;
use tcp::SocketError;
use tracing::{debug, warn};

use super::upstream::Upstreams;
use crate::app::{App, ConnId, TcpInfo, Tx};
use crate::metrics::worker::TCP_STATES;
use crate::metrics::{Metrics, WorkerStats};

/// Most messages from other threads (publications, control) handled per batch.
pub const MSG_BUDGET: usize = 256;
/// Period of the driver's bookkeeping (metrics, lingering deadlines).
pub const TICK: Duration = Duration::from_millis(100);
/// How long a connection we closed may drain the peer's data before it is reset.
pub const LINGER: Duration = Duration::from_secs(2);
/// Scratch buffer for payload read from the stack's receive buffer.
const SCRATCH: usize = 64 * 1024;

/// Adapts the device's transmit half to the engine's [`StackTxQueue`], counting frames.
#[derive(Debug)]
pub struct DeviceTx<'a, T> {
    inner: &'a mut T,
    /// Frames handed to the device so far.
    pub frames: usize,
}

impl<'a, T: dataplane::TxQueue> DeviceTx<'a, T> {
    /// Wraps `inner`.
    pub fn new(inner: &'a mut T) -> DeviceTx<'a, T> {
        DeviceTx { inner, frames: 0 }
    }
}

impl<T: dataplane::TxQueue> StackTxQueue for DeviceTx<'_, T> {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        let sent = self.inner.transmit(len, fill);
        if sent {
            self.frames += 1;
        }
        sent
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

/// The application's [`Tx`] on a connection of the stack: writes in place into its send
/// buffer ([`Stack::send_with`]) and queues shared chunks by reference
/// ([`Stack::send_chunk`]). `failed` records that the connection can no longer send (the
/// driver then resets it); a full buffer is not a failure.
#[derive(Debug)]
pub struct StackTx<'a> {
    stack: &'a mut Stack,
    conn: ConnHandle,
    /// A write found the connection unable to send.
    pub failed: bool,
}

impl<'a> StackTx<'a> {
    /// The send side of `conn`.
    pub fn new(stack: &'a mut Stack, conn: ConnHandle) -> StackTx<'a> {
        StackTx {
            stack,
            conn,
            failed: false,
        }
    }
}

impl Tx for StackTx<'_> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        self.stack
            .send_with(self.conn, min_len, fill)
            .unwrap_or_else(|e| {
                self.failed |= e != SocketError::NoRoom;
                0
            })
    }

    fn write_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), bytes::Bytes> {
        self.stack.send_chunk(self.conn, chunk).map_err(|e| {
            self.failed |= e.reason != SocketError::NoRoom;
            e.chunk
        })
    }
}

/// The application's [`Tx`] inside the receive sink: the connection's send side the
/// stack lends with the frame's payload ([`ConnTx`]), so an answer is written while the
/// request is still in the RX frame.
#[derive(Debug)]
pub struct FrameTx<'a, 'b> {
    tx: &'a mut ConnTx<'b>,
    /// A write found the connection unable to send.
    pub failed: bool,
}

impl<'a, 'b> FrameTx<'a, 'b> {
    /// Wraps the lent send side.
    pub fn new(tx: &'a mut ConnTx<'b>) -> FrameTx<'a, 'b> {
        FrameTx { tx, failed: false }
    }
}

impl Tx for FrameTx<'_, '_> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        self.tx.send_with(min_len, fill).unwrap_or_else(|e| {
            self.failed |= e != SocketError::NoRoom;
            0
        })
    }

    fn write_chunk(&mut self, chunk: bytes::Bytes) -> Result<(), bytes::Bytes> {
        self.tx.send_chunk(chunk).map_err(|e| {
            self.failed |= e.reason != SocketError::NoRoom;
            e.chunk
        })
    }
}

/// A TCP connection of the stack and what the driver knows about it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    conn: ConnHandle,
    /// The peer's FIN has been read.
    eof: bool,
    /// Listed in [`Conns::touched`].
    touched: bool,
    /// An answer written from the receive sink found the connection unable to send:
    /// reset it on the next drive.
    failed: bool,
}

/// The application's connection id by stack handle: a side table indexed by the handle's
/// slot ([`ConnHandle::slot`], dense and bounded by the stack's connection limit), so the
/// per-frame lookup is an index and a compare, not a hash.
#[derive(Debug, Default)]
struct ByHandle {
    slots: Vec<Option<(ConnHandle, ConnId)>>,
    len: usize,
}

impl ByHandle {
    fn get(&self, conn: ConnHandle) -> Option<ConnId> {
        match self.slots.get(conn.slot()) {
            Some(&Some((c, id))) if c == conn => Some(id),
            _ => None,
        }
    }

    fn insert(&mut self, conn: ConnHandle, id: ConnId) {
        let slot = conn.slot();
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        if let Some(entry) = self.slots.get_mut(slot) {
            if entry.is_none() {
                self.len += 1;
            }
            *entry = Some((conn, id));
        }
    }

    fn remove(&mut self, conn: ConnHandle) -> Option<ConnId> {
        let entry = self.slots.get_mut(conn.slot())?;
        match *entry {
            Some((c, id)) if c == conn => {
                *entry = None;
                self.len -= 1;
                Some(id)
            }
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn handles(&self) -> impl Iterator<Item = ConnHandle> + '_ {
        self.slots.iter().flatten().map(|&(c, _)| c)
    }
}

/// The application and the driver's per-connection state: everything of a worker except
/// its stack (so the stack can hand frame payload to it while it runs).
#[derive(Debug)]
pub struct Conns<A: App> {
    app: A,
    rx: Option<Receiver<A::Message>>,
    slots: Vec<Option<Slot>>,
    free: Vec<ConnId>,
    /// By stack handle (indexed by its slot on the packet path, no hashing).
    by_conn: ByHandle,
    /// Closed by us (FIN queued), draining the peer until its FIN or the deadline.
    lingering: FxHashMap<ConnHandle, Instant>,
    /// Connections that took input from a frame in this batch (flushed in `poll`).
    touched: Vec<ConnId>,
    /// Spare list swapped with `touched` and `dirty` (no allocation per batch).
    spare: Vec<ConnId>,
    scratch: Vec<u8>,
    /// The batch's clock, as the dataplane read it.
    now: Instant,
    last_tick: Instant,
    upstreams: Upstreams,
    poll: Option<Poll>,
    events: Events,
    stopping: bool,
    ports: Vec<u16>,
    shutdown_timeout: Duration,
    /// This worker's metrics block (the driver's part: busy ratio, TCP states, batch
    /// processing time).
    stats: Arc<WorkerStats>,
    /// The worker's clock, read once more at the end of a batch that received frames
    /// (its processing time); `None`: not measured.
    clock: Option<dataplane::Clock>,
    /// Loop iterations and busy ones (a frame received or work done) since the last tick.
    iterations: u64,
    busy: u64,
    frame_seen: bool,
}

/// The TCP view of connection `id` (for the application's per-connection table).
fn tcp_info(stack: &Stack, slots: &[Option<Slot>], id: ConnId) -> Option<TcpInfo> {
    let slot = slots.get(id).and_then(|s| *s)?;
    let s = stack.stats(slot.conn).ok()?;
    Some(TcpInfo {
        state: format!("{:?}", s.state),
        cwnd: s.cwnd,
        srtt_us: s
            .srtt
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        rto_ms: u64::try_from(s.rto.as_millis()).unwrap_or(u64::MAX),
        retransmits: s.retransmits,
    })
}

/// One worker's stack and application.
#[derive(Debug)]
pub struct StackDriver<A: App> {
    stack: Stack,
    conns: Conns<A>,
    /// Active opens still to make on the next poll: the remote end and the local port,
    /// chosen so the answers reach this worker's queue (`None`: the stack's next
    /// ephemeral port).
    connects: Vec<(SocketAddrV4, Option<u16>)>,
}

impl<A: App> StackDriver<A> {
    /// Serves `app` on `ports` of `stack` (`listen` is called here). `rx` carries the
    /// application's messages from other threads.
    pub fn new(
        mut stack: Stack,
        app: A,
        rx: Option<Receiver<A::Message>>,
        ports: &[u16],
    ) -> Result<StackDriver<A>, String> {
        for &port in ports {
            stack
                .listen(port, 0)
                .map_err(|e| format!("cannot listen on port {port}: {e:?}"))?;
        }
        Ok(StackDriver {
            stack,
            conns: Conns {
                app,
                rx,
                slots: Vec::new(),
                free: Vec::new(),
                by_conn: ByHandle::default(),
                lingering: FxHashMap::default(),
                touched: Vec::new(),
                spare: Vec::new(),
                scratch: vec![0; SCRATCH],
                now: Instant::ZERO,
                last_tick: Instant::ZERO,
                upstreams: Upstreams::new(),
                poll: None,
                events: Events::with_capacity(256),
                stopping: false,
                ports: ports.to_vec(),
                shutdown_timeout: Duration::from_secs(2),
                stats: Arc::new(WorkerStats::new(0, &[])),
                clock: None,
                iterations: 0,
                busy: 0,
                frame_seen: false,
            },
            connects: Vec::new(),
        })
    }

    /// Records this worker's metrics (busy ratio, TCP states, retransmits) as worker
    /// `index` in `metrics`.
    pub fn with_metrics(mut self, index: usize, metrics: Arc<Metrics>) -> StackDriver<A> {
        self.conns.stats = metrics.worker(index, &[]);
        self
    }

    /// Measures each batch's processing time with `clock` (the dataplane worker's).
    pub fn with_clock(mut self, clock: dataplane::Clock) -> StackDriver<A> {
        self.conns.clock = Some(clock);
        self
    }

    /// How long a stop lets the application finish its connections (default 2 s).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> StackDriver<A> {
        self.conns.shutdown_timeout = timeout;
        self
    }

    /// Opens a connection to `remote` on the next poll, from `local_port` (see
    /// `dataplane::PortChooser`; `None`: the stack's next ephemeral port), and serves the
    /// application on it like an accepted one ([`App::accept_on`] once it is
    /// established). Each call adds one active open; a failed open is logged and dropped.
    pub fn connect_to(&mut self, remote: SocketAddrV4, local_port: Option<u16>) {
        self.connects.push((remote, local_port));
    }

    /// The stack, e.g. for its counters.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.conns.app
    }

    /// The application, mutably (tests and benchmarks inspect it between steps).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.conns.app
    }

    /// Connections the driver holds (open or lingering).
    pub fn connections(&self) -> usize {
        self.conns.by_conn.len() + self.conns.lingering.len()
    }
}

impl<A: App> Conns<A> {
    /// In-order payload offered straight from an RX frame, mutable in place, with the
    /// connection's send side: when the application wants to read, it takes all of it
    /// (unmasks it there and answers into `tx`); else nothing (the stack buffers it). This
    /// is the one place received frame payload enters the application.
    fn sink(&mut self, conn: ConnHandle, data: &mut [u8], tx: &mut ConnTx<'_>) -> usize {
        let Some(id) = self.by_conn.get(conn) else {
            return 0;
        };
        if self.slots.get(id).and_then(|s| *s).is_none_or(|s| s.eof) {
            return 0;
        }
        if data.is_empty() || !self.app.wants_read(id) {
            return 0;
        }
        let mut tx = FrameTx::new(tx);
        self.app.receive(id, data, &mut tx, self.now);
        if tx.failed {
            if let Some(Some(slot)) = self.slots.get_mut(id) {
                slot.failed = true;
            }
        } else if self.app.settled(id) {
            // Everything answered in place, nothing queued: no flush to do.
            return data.len();
        }
        self.touch(id);
        data.len()
    }

    /// Lists `id` for a flush after the batch.
    fn touch(&mut self, id: ConnId) {
        if let Some(Some(slot)) = self.slots.get_mut(id) {
            if !slot.touched {
                slot.touched = true;
                self.touched.push(id);
            }
        }
    }

    /// One stack event.
    fn on_event(&mut self, stack: &mut Stack, event: Event) {
        match event {
            Event::Accepted { conn, .. } | Event::Established(conn) => self.accept(stack, conn),
            Event::Readable(conn) | Event::Writable(conn) | Event::PeerClosed(conn) => {
                if self.lingering.contains_key(&conn) {
                    self.drain_lingering(stack, conn);
                } else if let Some(id) = self.by_conn.get(conn) {
                    self.drive(stack, id);
                }
            }
            Event::Closed(conn) => {
                if self.lingering.remove(&conn).is_some() {
                    let _ = stack.close(conn);
                } else if let Some(id) = self.by_conn.get(conn) {
                    // Read what is still buffered, then the connection is gone.
                    self.drive(stack, id);
                    if self.by_conn.get(conn).is_some() {
                        self.forget(id);
                        let _ = stack.close(conn);
                    }
                }
            }
            Event::Reset(conn) | Event::TimedOut(conn) => {
                self.lingering.remove(&conn);
                if let Some(id) = self.by_conn.get(conn) {
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
        if let Err(why) = self.app.accept_on(id, tuple.local_port, peer, self.now) {
            debug!(%peer, ?why, "connection refused");
            self.free.push(id);
            let _ = stack.close(conn);
            return;
        }
        let _ = stack.set_nodelay(conn, true);
        if let Some(slot) = self.slots.get_mut(id) {
            *slot = Some(Slot {
                conn,
                eof: false,
                touched: false,
                failed: false,
            });
        }
        self.by_conn.insert(conn, id);
        // Data may have arrived with the handshake's last ACK.
        self.drive(stack, id);
    }

    /// Forgets connection `id` (its handle is stale or released by the caller).
    fn forget(&mut self, id: ConnId) {
        self.app.remove(id);
        if let Some(poll) = &self.poll {
            self.upstreams.remove(poll.registry(), id);
        }
        if let Some(slot) = self.slots.get_mut(id).and_then(Option::take) {
            self.by_conn.remove(slot.conn);
            self.free.push(id);
        }
    }

    /// Lets the application write what `id` has queued into the send buffer of `conn`
    /// ([`App::flush`]); false when the connection can no longer send.
    fn push_output(&mut self, stack: &mut Stack, conn: ConnHandle, id: ConnId) -> bool {
        let mut tx = StackTx::new(stack, conn);
        self.app.flush(id, &mut tx);
        !tx.failed
    }

    /// Flushes output, reads and closes connection `id` as far as it can go now.
    fn drive(&mut self, stack: &mut Stack, id: ConnId) {
        let now = self.now;
        if let Some(poll) = &self.poll {
            if self.upstreams.contains(id) {
                self.upstreams
                    .drive(poll.registry(), &mut self.app, id, now);
            }
        }
        loop {
            let Some(slot) = self.slots.get(id).and_then(|s| *s) else {
                return;
            };
            if slot.failed || !self.push_output(stack, slot.conn, id) {
                return self.abort(stack, id);
            }
            if self.app.is_finished(id) {
                return self.close(stack, id);
            }
            if slot.eof || !self.app.wants_read(id) {
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
                    self.app.peer_closed(id);
                    continue;
                }
                return;
            }
            if let Some(data) = self.scratch.get_mut(..n) {
                let mut tx = StackTx::new(stack, slot.conn);
                self.app.receive(id, data, &mut tx, now);
                if tx.failed {
                    return self.abort(stack, id);
                }
            }
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
        self.lingering.insert(slot.conn, self.now + LINGER);
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

    /// Drives every connection in `touched` and then every one the application names
    /// dirty; returns whether there was any.
    fn flush(&mut self, stack: &mut Stack) -> bool {
        // The touched ones first, then the application's (in that order).
        self.app.take_dirty(&mut self.touched);
        if self.touched.is_empty() {
            return false;
        }
        let mut ids = std::mem::take(&mut self.spare);
        std::mem::swap(&mut ids, &mut self.touched);
        for &id in &ids {
            if let Some(Some(slot)) = self.slots.get_mut(id) {
                slot.touched = false;
            }
        }
        for &id in &ids {
            self.drive(stack, id);
        }
        ids.clear();
        self.spare = ids;
        true
    }

    /// Handles one message from another thread, with the stack's view of connections.
    fn handle_message(&mut self, stack: &Stack, msg: A::Message) {
        let slots = &self.slots;
        let view = |id: ConnId| tcp_info(stack, slots, id);
        self.app.handle_message(msg, self.now, &view);
    }

    /// Per-batch work after the stack's events: messages (bounded), upstream sockets,
    /// output queued by them, deadlines. Returns whether it did anything.
    fn poll(&mut self, stack: &mut Stack) -> bool {
        let now = self.now;
        let mut worked = false;
        for _ in 0..MSG_BUDGET {
            let Some(rx) = &self.rx else {
                break;
            };
            match rx.try_recv() {
                Ok(msg) => {
                    self.handle_message(stack, msg);
                    worked = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.rx = None;
                    break;
                }
            }
        }
        let requests = self.app.take_upstream_requests();
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
                    &mut self.app,
                    id,
                    &authority,
                    now,
                ),
                None => self.app.upstream_lost(id, now),
            }
            worked = true;
        }
        if !self.upstreams.is_empty() {
            worked |= self.poll_upstreams(stack);
        }
        worked |= self.flush(stack);
        if self.app.poll_timeout().is_some_and(|at| at <= now) {
            let mut expired = std::mem::take(&mut self.spare);
            self.app.handle_timeout(now, &mut expired);
            for &id in &expired {
                debug!(id, "deadline expired");
                self.abort(stack, id);
            }
            expired.clear();
            self.spare = expired;
            self.flush(stack);
            worked = true;
        }
        self.iterations += 1;
        let frames = std::mem::take(&mut self.frame_seen);
        if worked || frames {
            self.busy += 1;
        }
        if let (Some(clock), true) = (self.clock, frames) {
            self.stats.processing(clock.now() - now);
        }
        if now - self.last_tick >= TICK {
            self.last_tick = now;
            self.record(stack);
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
    fn poll_upstreams(&mut self, stack: &mut Stack) -> bool {
        let Some(poll) = self.poll.as_mut() else {
            return false;
        };
        if poll.poll(&mut self.events, Some(Duration::ZERO)).is_err() {
            return false;
        }
        let ids: Vec<ConnId> = self.events.iter().map(|e| e.token().0).collect();
        for &id in &ids {
            self.drive(stack, id);
        }
        !ids.is_empty()
    }

    /// Every tick: busy ratio, TCP connections by state, retransmits (into this
    /// worker's own metrics block: no allocation, no shared write).
    fn record(&mut self, stack: &Stack) {
        let ratio = if self.iterations == 0 {
            0.0
        } else {
            self.busy as f64 / self.iterations as f64
        };
        self.stats.set_busy(ratio);
        self.iterations = 0;
        self.busy = 0;
        let mut counts = [0u64; TCP_STATES];
        let mut states: [Option<tcp::conn::State>; TCP_STATES] = [None; TCP_STATES];
        for conn in self.by_conn.handles().chain(self.lingering.keys().copied()) {
            if let Ok(s) = stack.stats(conn) {
                let i = (s.state as usize).min(TCP_STATES - 1);
                counts[i] += 1;
                states[i] = Some(s.state);
            }
        }
        let c = stack.counters();
        let totals = crate::metrics::TcpTotals {
            retransmits: c.conn.retransmits,
            syn_cookies_sent: c.syn_cookies_sent,
            syn_cookies_validated: c.syn_cookies_validated,
            challenge_acks: c.conn.challenge_acks,
            table_full_drops: c.table_full_drops,
            segments_in: c.segments_in,
            header_predicted: c.header_predicted,
            acks_coalesced: c.acks_coalesced,
        };
        self.stats.set_tcp(
            &counts,
            |i| states[i].map_or_else(String::new, |s| format!("{s:?}")),
            totals,
        );
    }

    /// Graceful stop: stop listening, handle every message already received, then let the
    /// application finish its connections by the shutdown deadline.
    fn stop(&mut self, stack: &mut Stack) {
        self.stopping = true;
        let now = self.now;
        let deadline = now + self.shutdown_timeout;
        for &port in &self.ports {
            stack.unlisten(port);
        }
        if let Some(rx) = self.rx.take() {
            while let Ok(msg) = rx.try_recv() {
                self.handle_message(stack, msg);
            }
            self.rx = Some(rx);
        }
        tracing::info!(
            connections = self.app.live(),
            "stopping: closing connections"
        );
        self.app.shutdown(now, deadline);
        self.flush(stack);
    }
}

impl<A: App> Handler for StackDriver<A> {
    type Message = ();

    fn on_frame<T: dataplane::TxQueue>(&mut self, now: Instant, frame: &mut [u8], tx: &mut T) {
        let _ = tx;
        let conns = &mut self.conns;
        conns.now = now;
        conns.frame_seen = true;
        self.stack
            .handle_frame_with_tx(now, frame, &mut |conn, data, tx| conns.sink(conn, data, tx));
    }

    fn poll<T: dataplane::TxQueue>(&mut self, now: Instant, tx: &mut T) -> bool {
        let mut worked = false;
        self.conns.now = now;
        if self.conns.last_tick == Instant::ZERO {
            self.conns.last_tick = now;
        }
        for (remote, local_port) in std::mem::take(&mut self.connects) {
            let opened = match local_port {
                Some(port) => self
                    .stack
                    .connect_from(now, port, *remote.ip(), remote.port()),
                None => self.stack.connect(now, *remote.ip(), remote.port()),
            };
            match opened {
                Ok(conn) => tracing::info!(%remote, ?local_port, ?conn, "connecting"),
                Err(e) => warn!(%remote, error = ?e, "cannot connect"),
            }
            worked = true;
        }
        if self.stack.poll_timeout().is_some_and(|at| at <= now) {
            self.stack.handle_timeout(now);
        }
        while let Some(event) = self.stack.poll_event() {
            self.conns.on_event(&mut self.stack, event);
            worked = true;
        }
        worked |= self.conns.poll(&mut self.stack);
        let mut tx = DeviceTx::new(tx);
        self.stack.poll_transmit(now, &mut tx);
        worked || tx.frames > 0
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.conns.rx.as_ref().is_some_and(|rx| !rx.is_empty()) {
            // Messages are waiting: do not sleep.
            return Some(Instant::ZERO);
        }
        let tick = self.conns.last_tick + TICK;
        [
            self.stack.poll_timeout(),
            self.conns.app.poll_timeout(),
            (!self.conns.lingering.is_empty()).then_some(tick),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_stop(&mut self, now: Instant) {
        // Stop accepting, then let the application close every connection in order
        // (queued data is still delivered).
        self.conns.now = now;
        self.conns.stop(&mut self.stack);
    }

    fn drained(&self) -> bool {
        let time_wait = usize::try_from(self.stack.counters().time_wait).unwrap_or(usize::MAX);
        self.conns.app.live() == 0
            && self.conns.lingering.is_empty()
            && self.stack.connection_count() <= time_wait
    }
}

#[cfg(test)]
mod tests;
