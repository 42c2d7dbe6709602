//! One client connection of the gateway: handshake bytes, then a WebSocket engine, and a
//! queue of output chunks where shared publication frames ([`bytes::Bytes`]) and the
//! engine's own frames (replies, pongs, Close) keep their order.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use tcp::Instant;

use bytes::Bytes;
use ws::frame::{encode_frame, header_len, write_header};
use ws::{CloseCode, Connection, FrameHeader, MessageKind};

use crate::app::Tx;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Collecting the upgrade request.
    Handshake(Vec<u8>),
    /// An open WebSocket.
    Open(Box<Connection>),
    /// A refusal response is queued; close once it is written.
    Refused,
    /// The engine is lent to its own read call (inside `Worker::feed`, which puts it
    /// back before it returns); an open WebSocket meanwhile.
    Lent,
}

/// Output waiting for the transport: a queue of chunks written front to back.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// Unwritten bytes in total.
    len: usize,
}

impl OutQueue {
    /// Appends a chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// The next bytes to write (part of one chunk; empty when nothing is queued).
    pub fn front(&self) -> &[u8] {
        self.chunks
            .front()
            .and_then(|c| c.get(self.head..))
            .unwrap_or_default()
    }

    /// Marks `n` bytes of [`OutQueue::front`] as written.
    pub fn consume(&mut self, n: usize) {
        let Some(front) = self.chunks.front() else {
            return;
        };
        let n = n.min(front.len() - self.head);
        self.head += n;
        self.len -= n;
        if self.head == front.len() {
            self.chunks.pop_front();
            self.head = 0;
        }
    }

    /// Writes the queue into `tx` as far as it takes it: a whole chunk by reference
    /// ([`Tx::write_chunk`]: a shared publication frame is not copied here), else as many
    /// bytes as fit (copied).
    pub fn write_to<T: Tx>(&mut self, tx: &mut T) {
        while let Some(front) = self.chunks.front() {
            if self.head == 0 && tx.write_chunk(front.clone()).is_ok() {
                self.len -= front.len();
                self.chunks.pop_front();
                continue;
            }
            let n = tx.write(front.get(self.head..).unwrap_or_default());
            if n == 0 {
                return;
            }
            self.consume(n);
        }
    }

    /// Unwritten bytes in total.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every chunk except a partly written front one (a frame must not be cut).
    pub fn truncate_unstarted(&mut self) -> usize {
        let keep = if self.head > 0 { 1 } else { 0 };
        let mut dropped = 0;
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                dropped += 1;
                self.len -= c.len();
            }
        }
        dropped
    }
}

/// Per-connection state and counters.
#[derive(Debug)]
pub struct Session {
    /// The client's address.
    pub peer: SocketAddr,
    /// Handshake, open or refused.
    pub phase: Phase,
    /// Output for the transport.
    pub out: OutQueue,
    /// The route index once upgraded.
    pub route: Option<usize>,
    /// `server_max_window_bits` when permessage-deflate is on.
    pub deflate_bits: Option<u8>,
    /// Subscribed topics.
    pub topics: HashSet<Arc<str>>,
    /// When the transport accepted it.
    pub accepted: Instant,
    /// Last time bytes arrived.
    pub last_rx: Instant,
    /// A server Ping is outstanding since the last received bytes.
    pub ping_sent: bool,
    /// We started closing: drop the connection at this instant if it has not finished.
    pub close_deadline: Option<Instant>,
    /// The peer closed TCP (EOF).
    pub read_eof: bool,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages queued out.
    pub msgs_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Messages dropped by the slow-consumer policy.
    pub drops: u64,
    /// Listed in the worker's dirty list (has new output to flush).
    pub dirty: bool,
    /// The upstream connection on a `proxy` route.
    pub upstream: Option<Box<super::proxy::Upstream>>,
    /// Its deadline timer on the worker's timer wheel, while armed.
    pub timer: Option<tcp::timer::TimerId>,
    /// From a trusted proxy with `listen.proxy_protocol`: a PROXY v2 header comes first.
    pub proxy_header: bool,
    /// On an `auth = "jwt"` route: what the client's token allows.
    pub grant: Option<Box<super::auth::Grant>>,
    /// When the client's token expires (the connection is closed with 1008 then).
    pub auth_deadline: Option<Instant>,
    /// `limits.max_messages_per_s`: the client's message budget (from its first message).
    pub(super) msg_budget: Option<super::limits::Bucket>,
}

impl Session {
    /// A fresh connection in the handshake phase.
    pub fn new(peer: SocketAddr, now: Instant) -> Session {
        Session {
            peer,
            phase: Phase::Handshake(Vec::new()),
            out: OutQueue::default(),
            route: None,
            deflate_bits: None,
            topics: HashSet::new(),
            accepted: now,
            last_rx: now,
            ping_sent: false,
            close_deadline: None,
            read_eof: false,
            msgs_in: 0,
            msgs_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            drops: 0,
            dirty: false,
            upstream: None,
            timer: None,
            proxy_header: false,
            grant: None,
            auth_deadline: None,
            msg_budget: None,
        }
    }

    /// The WebSocket engine, when open.
    pub fn ws(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Open(ws) => Some(ws),
            _ => None,
        }
    }

    /// Moves the engine's pending frames to the end of the output queue.
    pub fn pull_engine_output(&mut self) {
        if let Phase::Open(ws) = &mut self.phase {
            let pending = ws.pending_output();
            if !pending.is_empty() {
                let n = pending.len();
                self.out.push(Bytes::copy_from_slice(pending));
                ws.consume_output(n);
            }
        }
    }

    /// Sends one whole data message: header and payload straight into `tx` when nothing
    /// is queued before it and it fits (the payload's one copy here), else framed into
    /// the output queue (behind what is queued, for the next flush). Returns false, with
    /// nothing sent, once our Close was sent (RFC 6455 5.5.1) or when not open. Not for
    /// permessage-deflate connections (they send through the engine).
    pub fn send_message<T: Tx>(&mut self, tx: &mut T, kind: MessageKind, payload: &[u8]) -> bool {
        match &mut self.phase {
            Phase::Open(ws) if ws.close_sent() => return false,
            Phase::Open(_) => self.pull_engine_output(),
            // Inside the engine's own read: a Close it sent stops that read first, and
            // it has no output pending then.
            Phase::Lent => {}
            Phase::Handshake(_) | Phase::Refused => return false,
        }
        let opcode = kind.opcode();
        if self.out.is_empty() {
            let total = header_len(payload.len(), false) + payload.len();
            let n = tx.write_with(total, |buf| {
                let Ok(h) = write_header(buf, opcode, payload.len(), None) else {
                    return 0;
                };
                match buf.get_mut(h..h + payload.len()) {
                    Some(body) => {
                        body.copy_from_slice(payload);
                        h + payload.len()
                    }
                    None => 0,
                }
            });
            if n == total {
                return true;
            }
        }
        let mut frame = Vec::with_capacity(FrameHeader::MAX_LEN + payload.len());
        encode_frame(&mut frame, FrameHeader::new(opcode, 0), payload);
        self.out.push(Bytes::from(frame));
        true
    }

    /// Writes the engine's pending frames and the output queue into `tx`, as far as it
    /// takes them.
    pub fn flush<T: Tx>(&mut self, tx: &mut T) {
        self.pull_engine_output();
        self.out.write_to(tx);
    }

    /// Starts the closing handshake (queued behind everything already queued).
    pub fn close(&mut self, code: CloseCode, reason: &str, deadline: Instant) {
        let closed = match &mut self.phase {
            Phase::Open(ws) => {
                // Fails only if a Close was already sent, which is fine.
                let _ = ws.close(code, reason);
                true
            }
            // Only `Worker::feed` lends the engine, and nothing closes inside its read:
            // leave the phase to it.
            Phase::Lent => true,
            Phase::Handshake(_) | Phase::Refused => false,
        };
        if !closed {
            self.phase = Phase::Refused;
        }
        self.pull_engine_output();
        if self.close_deadline.is_none() {
            self.close_deadline = Some(deadline);
        }
    }

    /// What the connection's deadlines depend on besides `last_rx` (which only moves them
    /// later): phase, our Close, the close deadline, an outstanding ping.
    pub fn deadline_state(&self) -> (u8, bool, Option<Instant>, bool) {
        let (phase, close_sent) = match &self.phase {
            Phase::Handshake(_) => (0, false),
            Phase::Open(ws) => (1, ws.close_sent()),
            Phase::Refused => (2, false),
            Phase::Lent => (3, false),
        };
        (phase, close_sent, self.close_deadline, self.ping_sent)
    }

    /// Whether no more input is wanted: refused, closing or closed.
    pub fn is_closing(&self) -> bool {
        match &self.phase {
            Phase::Open(ws) => ws.close_sent() || !ws.is_reading(),
            Phase::Refused => true,
            Phase::Handshake(_) | Phase::Lent => false,
        }
    }

    /// Whether the transport should close now: the output is written and the WebSocket
    /// is finished (closing handshake done, failed, refused) or the peer is gone.
    pub fn is_finished(&self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        match &self.phase {
            Phase::Open(ws) => ws.is_closed() || (self.read_eof && ws.close_sent()),
            Phase::Refused => true,
            Phase::Handshake(_) => self.read_eof,
            Phase::Lent => false,
        }
    }

    /// Open, with nothing queued (in the output queue or the engine) and not finished,
    /// and no upstream (a proxy's client messages wait in the upstream's queue for the
    /// driver's flush to write them): the driver has nothing to flush.
    pub fn settled(&self) -> bool {
        match &self.phase {
            Phase::Open(ws) => {
                self.upstream.is_none()
                    && self.out.is_empty()
                    && ws.pending_output().is_empty()
                    && !ws.is_closed()
                    && !(self.read_eof && ws.close_sent())
            }
            _ => false,
        }
    }

    /// A short name of the phase for `sluice stat`.
    pub fn state_name(&self) -> &'static str {
        match &self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Open(ws) if ws.close_sent() => "closing",
            Phase::Open(_) | Phase::Lent => "open",
            Phase::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn out_queue_partial_consume_keeps_order() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        assert_eq!(q.len(), 5);
        q.consume(2);
        assert_eq!(q.front(), b"c");
        q.consume(1);
        assert_eq!(q.front(), b"de");
        q.consume(5);
        assert!(q.is_empty());
        assert_eq!(q.front(), b"");
    }

    #[test]
    fn out_queue_truncate_keeps_started_front() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.consume(1);
        assert_eq!(q.truncate_unstarted(), 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.front(), b"bc");
        q.consume(2);
        q.push(Bytes::from_static(b"x"));
        assert_eq!(q.truncate_unstarted(), 1);
        assert!(q.is_empty());
    }
}
