//! The TCP applications (tcp-echo, tcp-discard, tcp-source) as one sans-IO [`App`],
//! [`TcpApp`], served by both drivers.
//!
//! Each connection's output is bounded: while more than `--max-output-queue` bytes wait to
//! be written the connection is not read, so a slow reader slows its sender down through
//! TCP flow control instead of growing memory.

use std::net::SocketAddr;
use tcp::Instant;

use super::{App, ConnId, Refusal, Tx};

/// Byte `offset` of the stream `tcp-source` sends: `offset mod 251` (251 is prime, so the
/// pattern does not line up with any power-of-two buffer or segment size).
pub fn source_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Which TCP application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Echo every byte back; after the peer's FIN, finish echoing and send ours.
    Echo,
    /// Read and drop everything; close once the peer has closed.
    Discard,
    /// Send [`source_byte`] for offsets 0, 1, 2, ... until the peer closes; drop what it
    /// sends.
    Source,
}

impl Kind {
    /// The application's name (`--app`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "tcp-echo",
            Kind::Discard => "tcp-discard",
            Kind::Source => "tcp-source",
        }
    }
}

/// One connection: the echo output the transport did not take yet and, for tcp-source,
/// the pattern offset.
#[derive(Debug, Default)]
struct TcpConn {
    out: Vec<u8>,
    /// Bytes of `out` already written.
    head: usize,
    /// tcp-source: pattern bytes sent so far.
    offset: u64,
    /// The peer closed its side.
    eof: bool,
    /// When bytes last moved either way (for the idle timeout).
    last: Option<Instant>,
}

impl TcpConn {
    fn pending(&self) -> usize {
        self.out.len() - self.head
    }

    /// Writes the queued echo output into `tx` as far as it goes.
    fn flush_queue<T: Tx>(&mut self, tx: &mut T) {
        let n = tx.write(self.out.get(self.head..).unwrap_or_default());
        self.head += n;
        if self.head == self.out.len() {
            self.out.clear();
            self.head = 0;
        }
    }

    /// tcp-source: generates the pattern straight into `tx` until it is full.
    fn source<T: Tx>(&mut self, tx: &mut T) {
        loop {
            let offset = self.offset;
            let n = tx.write_with(1, |buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = source_byte(offset + i as u64);
                }
                buf.len()
            });
            if n == 0 {
                return;
            }
            self.offset += n as u64;
        }
    }
}

/// tcp-echo, tcp-discard or tcp-source as a sans-IO [`App`].
#[derive(Debug)]
pub struct TcpApp {
    kind: Kind,
    conns: Vec<Option<TcpConn>>,
    live: usize,
    max_connections: usize,
    max_output: usize,
    closing: bool,
    dirty: Vec<ConnId>,
    /// Connections with no bytes either way for this long are aborted (`None`: never).
    idle: Option<std::time::Duration>,
    /// When the next idle check is due (`None`: nothing to check).
    next_check: Option<Instant>,
}

impl TcpApp {
    /// `kind` with at most `max_connections` connections, each reading only while at most
    /// `max_output` bytes wait to be sent.
    pub fn new(kind: Kind, max_connections: usize, max_output: usize) -> TcpApp {
        TcpApp {
            kind,
            conns: Vec::new(),
            live: 0,
            max_connections,
            max_output: max_output.max(1),
            closing: false,
            dirty: Vec::new(),
            idle: None,
            next_check: None,
        }
    }

    /// Aborts (RST) connections that move no byte either way for `idle`
    /// (`sluice run --tcp-idle-timeout`, default 300 s): an abandoned peer never pins a
    /// connection for good. `None` or zero: never.
    pub fn with_idle_timeout(mut self, idle: Option<std::time::Duration>) -> TcpApp {
        self.idle = idle.filter(|d| !d.is_zero());
        self
    }

    fn touch(&mut self, id: ConnId, now: Instant) {
        if let (Some(idle), Some(c)) = (self.idle, self.conns.get_mut(id).and_then(Option::as_mut))
        {
            c.last = Some(now);
            if self.next_check.is_none() {
                self.next_check = Some(now + idle);
            }
        }
    }

    fn conn(&self, id: ConnId) -> Option<&TcpConn> {
        self.conns.get(id).and_then(Option::as_ref)
    }
}

impl App for TcpApp {
    type Message = ();

    fn accept(&mut self, id: ConnId, _peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        if self.closing || self.live >= self.max_connections {
            return Err(Refusal::MaxConnections);
        }
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        self.conns[id] = Some(TcpConn::default());
        self.live += 1;
        self.touch(id, now);
        if self.kind == Kind::Source {
            // The pattern starts without input: flush it once accepted.
            self.dirty.push(id);
        }
        Ok(())
    }

    fn remove(&mut self, id: ConnId) {
        if self.conns.get_mut(id).and_then(Option::take).is_some() {
            self.live -= 1;
        }
    }

    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        if self.idle.is_some() {
            self.touch(id, now);
        }
        if self.kind != Kind::Echo {
            return;
        }
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            // Straight into the transport; only what it does not take now is queued
            // (behind what already was, to keep the order).
            let direct = if c.pending() == 0 { tx.write(data) } else { 0 };
            c.out
                .extend_from_slice(data.get(direct..).unwrap_or_default());
        }
    }

    fn peer_closed(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            c.eof = true;
            if self.kind == Kind::Source {
                // Nobody reads the pattern any more.
                c.out.clear();
                c.head = 0;
            }
        }
    }

    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        let (kind, closing) = (self.kind, self.closing);
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            let before = (c.pending(), c.offset);
            match kind {
                Kind::Echo => c.flush_queue(tx),
                Kind::Source if !c.eof && !closing => c.source(tx),
                Kind::Source | Kind::Discard => {}
            }
            if (c.pending(), c.offset) != before {
                // Bytes went out: alive (the driver's clock is not passed here, so the
                // next idle check starts this connection's count again).
                c.last = None;
            }
        }
    }

    fn wants_read(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| {
            !self.closing && (self.kind != Kind::Echo || c.pending() <= self.max_output)
        })
    }

    fn is_finished(&self, id: ConnId) -> bool {
        self.conn(id).is_none_or(|c| match self.kind {
            // After the peer's FIN (or a stop), finish echoing, then close.
            Kind::Echo => (c.eof || self.closing) && c.pending() == 0,
            Kind::Discard => c.eof || self.closing,
            // The pattern never ends: stop at the peer's FIN or a stop.
            Kind::Source => c.eof || self.closing,
        })
    }

    fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        out.append(&mut self.dirty);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        let Some(idle) = self.idle else {
            return;
        };
        if self.next_check.is_none_or(|at| at > now) {
            return;
        }
        // Output that moved counts as activity: a source or echo connection whose peer
        // reads is alive even if it sends nothing.
        let mut next: Option<Instant> = None;
        for (id, slot) in self.conns.iter_mut().enumerate() {
            let Some(c) = slot.as_mut() else {
                continue;
            };
            let last = *c.last.get_or_insert(now);
            if now.saturating_since(last) >= idle {
                expired.push(id);
            } else {
                let at = last + idle;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.next_check = next;
    }

    fn shutdown(&mut self, _now: Instant, _deadline: Instant) {
        self.closing = true;
        self.dirty = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(id, c)| c.as_ref().map(|_| id))
            .collect();
    }

    fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::app::BufTx;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn echo_writes_through_and_queues_what_does_not_fit() {
        let mut s = TcpApp::new(Kind::Echo, 10, 4);
        let now = Instant::from_millis(1_000);
        s.accept(0, peer(), now).unwrap();
        let mut out = Vec::new();
        // Room for 2 bytes: 3 stay queued, within the bound of 4: still reading.
        s.receive(0, &mut [1, 2, 3, 4, 5], &mut BufTx::new(&mut out, 2), now);
        assert_eq!(out, [1, 2]);
        assert!(s.wants_read(0));
        // Nothing fits: 3 + 3 queued, above the bound: stop reading.
        s.receive(0, &mut [6, 7, 8], &mut BufTx::new(&mut out, 2), now);
        assert!(!s.wants_read(0));
        s.peer_closed(0);
        assert!(!s.is_finished(0), "echo finishes its output first");
        s.flush(0, &mut BufTx::new(&mut out, 5));
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert!(s.wants_read(0));
        assert!(!s.is_finished(0));
        s.flush(0, &mut BufTx::new(&mut out, usize::MAX));
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(s.is_finished(0));
    }

    #[test]
    fn source_pattern_continues_across_writes() {
        let mut s = TcpApp::new(Kind::Source, 10, 1 << 20);
        s.accept(0, peer(), Instant::from_millis(1_000)).unwrap();
        let mut dirty = Vec::new();
        s.take_dirty(&mut dirty);
        assert_eq!(dirty, [0], "the pattern starts without input");
        let mut got = Vec::new();
        while got.len() < 40_000 {
            let mut out = Vec::new();
            s.flush(0, &mut BufTx::new(&mut out, 7_000));
            assert_eq!(out.len(), 7_000);
            got.extend_from_slice(&out);
        }
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, source_byte(i as u64), "offset {i}");
        }
    }

    #[test]
    fn accept_over_max_connections_refused() {
        let mut s = TcpApp::new(Kind::Discard, 1, 1);
        let now = Instant::from_millis(1_000);
        s.accept(0, peer(), now).unwrap();
        assert_eq!(s.accept(1, peer(), now), Err(Refusal::MaxConnections));
        s.remove(0);
        s.accept(1, peer(), now).unwrap();
    }

    #[test]
    fn idle_connections_aborted_after_the_timeout_active_ones_kept() {
        let t0 = Instant::from_millis(1_000);
        let idle = std::time::Duration::from_secs(10);
        let mut s = TcpApp::new(Kind::Echo, 10, 1 << 20).with_idle_timeout(Some(idle));
        s.accept(0, peer(), t0).unwrap();
        s.accept(1, peer(), t0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + idle));
        // Connection 1 talks at t0 + 6 s; 0 stays silent.
        let mut out = Vec::new();
        s.receive(
            1,
            &mut b"hi".to_vec(),
            &mut BufTx::new(&mut out, 1 << 20),
            t0 + std::time::Duration::from_secs(6),
        );
        let mut expired = Vec::new();
        s.handle_timeout(t0 + idle, &mut expired);
        assert_eq!(expired, vec![0]);
        s.remove(0);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + std::time::Duration::from_secs(16))
        );
        expired.clear();
        s.handle_timeout(t0 + std::time::Duration::from_secs(16), &mut expired);
        assert_eq!(expired, vec![1]);
        // Off: nothing is ever due.
        let mut off = TcpApp::new(Kind::Discard, 10, 1).with_idle_timeout(None);
        off.accept(0, peer(), t0).unwrap();
        assert_eq!(off.poll_timeout(), None);
    }
}
