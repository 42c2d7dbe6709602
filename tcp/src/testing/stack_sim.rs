//! Two full [`Stack`]s (Ethernet/ARP/IPv4/TCP) over a pair of simulated links that
//! carry real frames, so corruption is caught by checksums and the MTU applies.

use super::link::{Link, LinkConfig, LinkStats};
use super::{Rng, Stream};
use crate::conn::ConnConfig;
use crate::iface::{InterfaceConfig, VecTxQueue};
use crate::stack::{ConnHandle, Event, Stack, StackConfig, StackStats};
use crate::time::Instant;
use crate::wire::EthernetAddress;
use core::net::Ipv4Addr;
use core::time::Duration;

/// Client address in the simulation.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Server address in the simulation.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Server port.
pub const PORT: u16 = 8080;

/// One run's setup.
#[derive(Debug, Clone)]
pub struct StackSimConfig {
    /// TCP settings for both stacks.
    pub conn: ConnConfig,
    /// IP MTU of both interfaces.
    pub mtu: usize,
    /// Impairments of each direction (its `mtu` is the frame size limit).
    pub link: LinkConfig,
    /// Bytes the client sends per connection.
    pub bytes_a_to_b: u64,
    /// Bytes the server sends per connection.
    pub bytes_b_to_a: u64,
    /// Parallel connections.
    pub connections: usize,
    /// Seed for links, data and secrets.
    pub seed: u64,
    /// Virtual time after which the run fails.
    pub time_limit: Duration,
    /// Use `handle_frame_with` and consume payload straight from frames.
    pub zero_copy: bool,
    /// How the applications queue their data.
    pub send_mode: SendMode,
}

/// How the simulated applications queue data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMode {
    /// `Stack::send` (copied into the send ring).
    #[default]
    Copy,
    /// Rotating between `send`, `send_with` (written in place) and `send_chunk` (shared
    /// chunks of varying size, retried whole when refused), so ring bytes and chunks
    /// interleave in the send queue.
    Mixed,
}

impl Default for StackSimConfig {
    fn default() -> StackSimConfig {
        StackSimConfig {
            conn: ConnConfig::default(),
            mtu: 1500,
            link: LinkConfig::default(),
            bytes_a_to_b: 1 << 20,
            bytes_b_to_a: 1 << 20,
            connections: 1,
            seed: 1,
            time_limit: Duration::from_secs(3600),
            zero_copy: true,
            send_mode: SendMode::Copy,
        }
    }
}

/// The outcome of a successful run.
#[derive(Debug, Clone)]
pub struct StackSimReport {
    /// Virtual time until every connection closed.
    pub elapsed: Duration,
    /// Client stack counters.
    pub a: StackStats,
    /// Server stack counters.
    pub b: StackStats,
    /// Client-to-server link.
    pub link_ab: LinkStats,
    /// Server-to-client link.
    pub link_ba: LinkStats,
    /// Combined FNV-1a of everything received, per direction.
    pub hash_ab: u64,
    /// See `hash_ab`.
    pub hash_ba: u64,
    /// Frames the interfaces dropped for bad checksums (both stacks).
    pub bad_checksums: u64,
}

#[derive(Debug)]
struct AppConn {
    h: ConnHandle,
    out: Stream,
    inp: Stream,
    pending: Vec<u8>,
    off: usize,
    /// A shared chunk `send_chunk` gave back, retried before anything else.
    chunk: Option<bytes::Bytes>,
    /// Calls so far (picks the next way to send in [`SendMode::Mixed`]).
    turn: u32,
    shut: bool,
    closed: bool,
    err: Option<u64>,
}

impl AppConn {
    fn new(h: ConnHandle, out: Stream, inp: Stream) -> AppConn {
        AppConn {
            h,
            out,
            inp,
            pending: Vec::new(),
            off: 0,
            chunk: None,
            turn: 0,
            shut: false,
            closed: false,
            err: None,
        }
    }

    /// Queues data by all three ways, in turn; false when nothing more can go now.
    fn pump_mixed_once(&mut self, s: &mut Stack) -> bool {
        if let Some(c) = self.chunk.take() {
            return match s.send_chunk(self.h, c) {
                Ok(()) => true,
                Err(r) => {
                    self.chunk = Some(r.chunk);
                    false
                }
            };
        }
        if self.off < self.pending.len() {
            return match s.send(self.h, &self.pending[self.off..]) {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.off += n;
                    true
                }
            };
        }
        if self.out.done() {
            return false;
        }
        self.turn = self.turn.wrapping_add(1);
        // Sizes that cross segment boundaries and wrap the ring at odd places.
        let size = 1 + (self.turn as usize * 2_654_435_761) % 5000;
        match self.turn % 3 {
            0 => {
                self.pending.resize(size, 0);
                let n = self.out.produce(&mut self.pending);
                self.pending.truncate(n);
                self.off = 0;
                true
            }
            1 => {
                let out = &mut self.out;
                matches!(
                    s.send_with(self.h, size.min(1000), |b| {
                        let k = b.len().min(size);
                        out.produce(&mut b[..k])
                    }),
                    Ok(n) if n > 0
                )
            }
            _ => {
                let mut v = vec![0u8; size];
                let n = self.out.produce(&mut v);
                v.truncate(n);
                self.chunk = Some(bytes::Bytes::from(v));
                true
            }
        }
    }

    fn pump(&mut self, s: &mut Stack, mode: SendMode) {
        if mode == SendMode::Mixed && !self.shut && !self.closed {
            while self.pump_mixed_once(s) {}
            let drained = self.chunk.is_none() && self.off >= self.pending.len();
            if self.out.done() && drained && s.shutdown(self.h).is_ok() {
                self.shut = true;
            }
        }
        if mode == SendMode::Copy && !self.shut && !self.closed {
            loop {
                if self.off >= self.pending.len() {
                    if self.out.done() {
                        break;
                    }
                    self.pending.resize(16 * 1024, 0);
                    let n = self.out.produce(&mut self.pending);
                    self.pending.truncate(n);
                    self.off = 0;
                }
                match s.send(self.h, &self.pending[self.off..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.off += n,
                }
            }
            if self.out.done() && self.off >= self.pending.len() && s.shutdown(self.h).is_ok() {
                self.shut = true;
            }
        }
        let inp = &mut self.inp;
        let err = &mut self.err;
        let _ = s.recv_with(self.h, |d| {
            if let Err(at) = inp.verify(d) {
                err.get_or_insert(at);
            }
            d.len()
        });
    }
}

struct Side {
    stack: Stack,
    conns: Vec<AppConn>,
    tx: VecTxQueue,
    failure: Option<String>,
}

fn mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, n])
}

fn stack(cfg: &StackSimConfig, addr: Ipv4Addr, n: u8) -> Stack {
    let mut iface = InterfaceConfig::new(mac(n), addr, 24);
    iface.mtu = cfg.mtu;
    let mut secret = [0u8; 16];
    Rng::new(cfg.seed ^ u64::from(n)).fill(&mut secret);
    let mut sc = StackConfig::new(iface, secret);
    sc.conn = cfg.conn.clone();
    sc.conn.mss = sc
        .conn
        .mss
        .min(u16::try_from(cfg.mtu.saturating_sub(40)).unwrap_or(1460));
    Stack::new(sc)
}

fn find(conns: &mut [AppConn], h: ConnHandle) -> Option<&mut AppConn> {
    conns.iter_mut().find(|c| c.h == h)
}

impl Side {
    fn events(&mut self, cfg: &StackSimConfig, bytes_out: u64, bytes_in: u64, server: bool) {
        let seed = cfg.seed;
        while let Some(ev) = self.stack.poll_event() {
            match ev {
                Event::Accepted { conn, .. } if server => {
                    // Streams are keyed by the client's port, so order does not matter.
                    let i = self
                        .stack
                        .tuple(conn)
                        .map_or(0, |t| u64::from(t.remote_port));
                    self.conns.push(AppConn::new(
                        conn,
                        Stream::new(seed ^ 0x2222 ^ (i << 32), bytes_out),
                        Stream::new(seed ^ 0x1111 ^ (i << 32), bytes_in),
                    ));
                }
                Event::Closed(h) => {
                    if let Some(c) = find(&mut self.conns, h) {
                        c.closed = true;
                    }
                }
                Event::Reset(h) | Event::TimedOut(h) => {
                    let st = self.stack.stats(h);
                    self.failure = Some(format!("{ev:?} server {server}: {st:?}"));
                }
                _ => {}
            }
        }
        for c in &mut self.conns {
            c.pump(&mut self.stack, cfg.send_mode);
        }
    }
}

/// Runs the transfer(s); `Err` says what went wrong.
pub fn run(cfg: &StackSimConfig) -> Result<StackSimReport, String> {
    let start = Instant::from_millis(1000);
    let mut now = start;
    let mut a = Side {
        stack: stack(cfg, ADDR_A, 1),
        conns: Vec::new(),
        tx: VecTxQueue::new(),
        failure: None,
    };
    let mut b = Side {
        stack: stack(cfg, ADDR_B, 2),
        conns: Vec::new(),
        tx: VecTxQueue::new(),
        failure: None,
    };
    b.stack
        .listen(PORT, 0)
        .map_err(|e| format!("listen: {e:?}"))?;
    for _ in 0..cfg.connections {
        let h = a
            .stack
            .connect(now, ADDR_B, PORT)
            .map_err(|e| format!("connect: {e:?}"))?;
        let i = a.stack.tuple(h).map_or(0, |t| u64::from(t.local_port));
        a.conns.push(AppConn::new(
            h,
            Stream::new(cfg.seed ^ 0x1111 ^ (i << 32), cfg.bytes_a_to_b),
            Stream::new(cfg.seed ^ 0x2222 ^ (i << 32), cfg.bytes_b_to_a),
        ));
    }
    let mut ab: Link<Vec<u8>> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(3));
    let mut ba: Link<Vec<u8>> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(5) + 1);
    loop {
        a.events(cfg, cfg.bytes_a_to_b, cfg.bytes_b_to_a, false);
        b.events(cfg, cfg.bytes_b_to_a, cfg.bytes_a_to_b, true);
        for s in [&a, &b] {
            if let Some(f) = &s.failure {
                return Err(f.clone());
            }
            for c in &s.conns {
                if let Some(at) = c.err {
                    return Err(format!("data mismatch at byte {at}"));
                }
            }
        }
        for (side, link) in [(&mut a, &mut ab), (&mut b, &mut ba)] {
            side.stack.poll_transmit(now, &mut side.tx);
            while let Some(f) = side.tx.frames.pop_front() {
                if std::env::var_os("SLUICE_SIM_TRACE").is_some() {
                    eprintln!("{} tx {} bytes", now.total_micros(), f.len());
                }
                link.send(now, f);
            }
        }
        let all_closed = |s: &Side| s.conns.iter().all(|c| c.closed && c.inp.done());
        if a.conns.len() == cfg.connections
            && b.conns.len() == cfg.connections
            && all_closed(&a)
            && all_closed(&b)
        {
            break;
        }
        let next = [
            ab.next_delivery(),
            ba.next_delivery(),
            a.stack.poll_timeout(),
            b.stack.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return Err(format!(
                "stuck: a got {:?}, b got {:?}",
                a.conns.iter().map(|c| c.inp.pos).collect::<Vec<_>>(),
                b.conns.iter().map(|c| c.inp.pos).collect::<Vec<_>>()
            ));
        };
        now = now.max(next);
        if now.saturating_since(start) > cfg.time_limit {
            return Err(format!(
                "time limit: a got {:?}, b got {:?}",
                a.conns.iter().map(|c| c.inp.pos).collect::<Vec<_>>(),
                b.conns.iter().map(|c| c.inp.pos).collect::<Vec<_>>()
            ));
        }
        for (side, link) in [(&mut b, &mut ab), (&mut a, &mut ba)] {
            while let Some(mut frame) = link.poll(now) {
                if cfg.zero_copy {
                    let conns = &mut side.conns;
                    side.stack.handle_frame_with(
                        now,
                        &mut frame,
                        &mut |h, d| match find(conns, h) {
                            Some(c) => {
                                if let Err(at) = c.inp.verify(d) {
                                    c.err.get_or_insert(at);
                                }
                                d.len()
                            }
                            None => 0,
                        },
                    );
                } else {
                    side.stack.handle_frame(now, &mut frame);
                }
            }
            if side.stack.poll_timeout().is_some_and(|t| t <= now) {
                side.stack.handle_timeout(now);
            }
        }
    }
    let hash = |s: &Side| {
        s.conns
            .iter()
            .fold(0u64, |h, c| h.rotate_left(7) ^ c.inp.hash)
    };
    Ok(StackSimReport {
        elapsed: now.saturating_since(start),
        a: a.stack.counters().clone(),
        b: b.stack.counters().clone(),
        link_ab: ab.stats,
        link_ba: ba.stats,
        hash_ab: hash(&b),
        hash_ba: hash(&a),
        bad_checksums: a.stack.iface_stats().tcp_bad_checksum
            + b.stack.iface_stats().tcp_bad_checksum
            + a.stack.iface_stats().ip_bad_checksum
            + b.stack.iface_stats().ip_bad_checksum,
    })
}
