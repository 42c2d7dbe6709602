//! The TCP applications (tcp-echo, tcp-discard, tcp-source) as one sans-IO [`App`],
//! [`TcpApp`], served by both drivers.
//!
//! Each connection's output is bounded: while more than `--max-output-queue` bytes wait to
//! be written the connection is not read, so a slow reader slows its sender down through
//! TCP flow control instead of growing memory.

use std::net::SocketAddr;
use tcp::Instant;

use super::{App, ConnId, Refusal};

/// Bytes of the tcp-source pattern generated at a time.
const SOURCE_CHUNK: u64 = 16 * 1024;

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

/// One connection: its pending output and, for tcp-source, the pattern offset.
#[derive(Debug, Default)]
struct TcpConn {
    out: Vec<u8>,
    /// Bytes of `out` already written.
    head: usize,
    /// tcp-source: pattern bytes generated so far.
    offset: u64,
    /// The peer closed its side.
    eof: bool,
}

impl TcpConn {
    fn pending(&self) -> usize {
        self.out.len() - self.head
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
        }
    }

    fn conn(&self, id: ConnId) -> Option<&TcpConn> {
        self.conns.get(id).and_then(Option::as_ref)
    }

    /// tcp-source: the next chunk of the pattern once the last one is written.
    fn refill(kind: Kind, c: &mut TcpConn, closing: bool) {
        if kind == Kind::Source && c.pending() == 0 && !c.eof && !closing {
            c.out.clear();
            c.head = 0;
            c.out
                .extend((0..SOURCE_CHUNK).map(|i| source_byte(c.offset + i)));
            c.offset += SOURCE_CHUNK;
        }
    }
}

impl App for TcpApp {
    type Message = ();

    fn accept(&mut self, id: ConnId, _peer: SocketAddr, _now: Instant) -> Result<(), Refusal> {
        if self.closing || self.live >= self.max_connections {
            return Err(Refusal::MaxConnections);
        }
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        let mut c = TcpConn::default();
        Self::refill(self.kind, &mut c, false);
        self.conns[id] = Some(c);
        self.live += 1;
        Ok(())
    }

    fn remove(&mut self, id: ConnId) {
        if self.conns.get_mut(id).and_then(Option::take).is_some() {
            self.live -= 1;
        }
    }

    fn receive(&mut self, id: ConnId, data: &mut [u8], _now: Instant) {
        if self.kind != Kind::Echo {
            return;
        }
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            if c.head > 0 && c.head == c.out.len() {
                c.out.clear();
                c.head = 0;
            }
            c.out.extend_from_slice(data);
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

    fn output(&self, id: ConnId) -> &[u8] {
        self.conn(id)
            .and_then(|c| c.out.get(c.head..))
            .unwrap_or_default()
    }

    fn consume(&mut self, id: ConnId, n: usize) {
        let (kind, closing) = (self.kind, self.closing);
        if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
            c.head = (c.head + n).min(c.out.len());
            Self::refill(kind, c, closing);
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

    fn handle_timeout(&mut self, _now: Instant, _expired: &mut Vec<ConnId>) {}

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

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn echo_backpressure_stops_reading_above_bound() {
        let mut s = TcpApp::new(Kind::Echo, 10, 4);
        let now = Instant::from_millis(1_000);
        s.accept(0, peer(), now).unwrap();
        s.receive(0, &mut [1, 2, 3, 4, 5], now);
        assert!(!s.wants_read(0));
        assert_eq!(s.output(0), &[1, 2, 3, 4, 5]);
        s.consume(0, 3);
        assert!(s.wants_read(0));
        s.peer_closed(0);
        assert!(!s.is_finished(0), "echo finishes its output first");
        s.consume(0, 2);
        assert!(s.is_finished(0));
    }

    #[test]
    fn source_pattern_continues_across_chunks() {
        let mut s = TcpApp::new(Kind::Source, 10, 1 << 20);
        s.accept(0, peer(), Instant::from_millis(1_000)).unwrap();
        let mut got = Vec::new();
        while got.len() < 40_000 {
            let out = s.output(0).to_vec();
            let n = out.len().min(7_000);
            got.extend_from_slice(&out[..n]);
            s.consume(0, n);
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
}
