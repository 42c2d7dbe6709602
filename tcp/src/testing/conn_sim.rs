//! Two [`Tcb`]s over a pair of simulated links: the state machine alone, without
//! framing, under loss, reordering, duplication and bandwidth/delay limits.

use super::link::{Link, LinkConfig, LinkStats, Packet};
use super::{Rng, Stream};
use crate::conn::{CloseReason, ConnConfig, ConnStats, Counters, OutSegment, State, Tcb};
use crate::ratelimit::{RateLimit, TokenBucket};
use crate::seq::SeqNumber;
use crate::time::Instant;
use crate::wire::tcp::TcpRepr;
use core::time::Duration;

/// A segment in flight between the two TCBs.
#[derive(Debug, Clone)]
pub struct SimSegment {
    /// Header.
    pub h: OutSegment,
    /// Payload.
    pub payload: Vec<u8>,
}

impl SimSegment {
    fn as_segment(&self) -> TcpRepr<'_> {
        TcpRepr {
            payload: &self.payload,
            ..self.h.repr
        }
    }
}

impl Packet for SimSegment {
    fn wire_len(&self) -> usize {
        14 + 20 + 20 + self.h.options.emitted_len() + self.payload.len()
    }
    fn corrupt(&mut self, _rng: &mut Rng) -> bool {
        // No checksum at this level: corruption is simulated on frames only.
        false
    }
}

/// One run's setup.
#[derive(Debug, Clone)]
pub struct ConnSimConfig {
    /// TCP settings for both ends.
    pub conn: ConnConfig,
    /// Impairments of each direction.
    pub link: LinkConfig,
    /// Bytes the client sends.
    pub bytes_a_to_b: u64,
    /// Bytes the server sends.
    pub bytes_b_to_a: u64,
    /// Seed for the links and the data.
    pub seed: u64,
    /// Virtual time after which the run fails.
    pub time_limit: Duration,
    /// Offer in-order payload to the application straight from the segment.
    pub zero_copy: bool,
    /// Print every delivered segment to stderr (debugging).
    pub trace: bool,
    /// Indices (0-based, in order of first transmission) of the client's data segments
    /// whose first transmission is dropped, on top of the link's own impairments. When
    /// set, the run also counts [`ConnSimReport::had_bytes_ab`].
    pub drop_a_to_b: Vec<u64>,
}

impl Default for ConnSimConfig {
    fn default() -> ConnSimConfig {
        ConnSimConfig {
            conn: ConnConfig::default(),
            link: LinkConfig::default(),
            bytes_a_to_b: 1 << 20,
            bytes_b_to_a: 1 << 20,
            seed: 1,
            time_limit: Duration::from_secs(3600),
            zero_copy: true,
            trace: false,
            drop_a_to_b: Vec::new(),
        }
    }
}

/// The outcome of a successful run.
#[derive(Debug, Clone)]
pub struct ConnSimReport {
    /// Virtual time from SYN to both ends closed.
    pub elapsed: Duration,
    /// Client stats at the end.
    pub a: ConnStats,
    /// Server stats at the end.
    pub b: ConnStats,
    /// Client counters.
    pub counters_a: Counters,
    /// Server counters.
    pub counters_b: Counters,
    /// Client-to-server link.
    pub link_ab: LinkStats,
    /// Server-to-client link.
    pub link_ba: LinkStats,
    /// FNV-1a of the bytes the server received.
    pub hash_ab: u64,
    /// FNV-1a of the bytes the client received.
    pub hash_ba: u64,
    /// Client segments dropped by [`ConnSimConfig::drop_a_to_b`].
    pub dropped_ab: u64,
    /// Payload bytes that reached the server when it had already acknowledged or
    /// SACKed them (counted only with [`ConnSimConfig::drop_a_to_b`]).
    pub had_bytes_ab: u64,
}

/// What the server has told the client it holds, in client stream offsets: everything
/// below its RCV.NXT and every range it SACKed (this stack's receiver never reneges).
#[derive(Default)]
struct Held {
    ranges: Vec<(u64, u64)>,
}

impl Held {
    fn add(&mut self, start: u64, end: u64) {
        let (mut s, mut e) = (start, end);
        self.ranges.retain(|&(l, r)| {
            let touches = l <= e && s <= r;
            if touches {
                s = s.min(l);
                e = e.max(r);
            }
            !touches
        });
        let at = self.ranges.partition_point(|r| r.0 < s);
        self.ranges.insert(at, (s, e));
    }

    fn overlap(&self, start: u64, end: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(l, r)| r.min(end).saturating_sub(l.max(start)))
            .sum()
    }
}

fn offset(seq: SeqNumber, base: SeqNumber) -> u64 {
    u64::try_from(seq.distance(base)).unwrap_or(0)
}

struct End {
    tcb: Tcb,
    /// The stack-wide RFC 5961 challenge-ACK limiter, at its default.
    challenge: TokenBucket,
    ctr: Counters,
    out: Stream,
    inp: Stream,
    pending: Vec<u8>,
    pending_off: usize,
    shut: bool,
    err: Option<u64>,
}

impl End {
    fn new(tcb: Tcb, out: Stream, inp: Stream) -> End {
        End {
            tcb,
            challenge: TokenBucket::new(RateLimit::CHALLENGE_ACK_DEFAULT, 1),
            ctr: Counters::default(),
            out,
            inp,
            pending: Vec::new(),
            pending_off: 0,
            shut: false,
            err: None,
        }
    }

    fn app(&mut self, cfg: &ConnConfig, now: Instant) {
        let st = self.tcb.state();
        if matches!(st, State::Established | State::CloseWait) && !self.shut {
            loop {
                if self.pending_off >= self.pending.len() {
                    if self.out.done() {
                        break;
                    }
                    self.pending.resize(16 * 1024, 0);
                    let n = self.out.produce(&mut self.pending);
                    self.pending.truncate(n);
                    self.pending_off = 0;
                }
                match self.tcb.send(cfg, &self.pending[self.pending_off..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.pending_off += n,
                }
            }
            if self.out.done() && self.pending_off >= self.pending.len() {
                self.tcb.shutdown(now);
                self.shut = true;
            }
        }
        let inp = &mut self.inp;
        let err = &mut self.err;
        self.tcb.recv_with(cfg, |d| {
            if let Err(at) = inp.verify(d) {
                err.get_or_insert(at);
            }
            d.len()
        });
    }
}

fn done(e: &End) -> bool {
    matches!(e.tcb.state(), State::TimeWait | State::Closed) && e.inp.done()
}

/// Runs one transfer; `Err` says what went wrong (stuck, corrupted, reset, too slow).
pub fn run(cfg: &ConnSimConfig) -> Result<ConnSimReport, String> {
    let c = &cfg.conn;
    let start = Instant::from_millis(1000);
    let mut now = start;
    let iss_a = SeqNumber(Rng::new(cfg.seed ^ 0xa).next_u64() as u32);
    let iss_b = SeqNumber(Rng::new(cfg.seed ^ 0xb).next_u64() as u32);
    let mut a = End::new(
        Tcb::connect(c, now, iss_a),
        Stream::new(cfg.seed ^ 0x1111, cfg.bytes_a_to_b),
        Stream::new(cfg.seed ^ 0x2222, cfg.bytes_b_to_a),
    );
    let mut b = End::new(
        Tcb::listen(c, now, iss_b),
        Stream::new(cfg.seed ^ 0x2222, cfg.bytes_b_to_a),
        Stream::new(cfg.seed ^ 0x1111, cfg.bytes_a_to_b),
    );
    let mut ab: Link<SimSegment> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(3));
    let mut ba: Link<SimSegment> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(5) + 1);
    let mut buf = vec![0u8; usize::from(c.mss)];
    let mut steps: u64 = 0;
    // Deterministic drops: client data segments first transmitted so far, where the
    // highest ended, and what the server holds (client stream offsets).
    let base_ab = iss_a + 1u32;
    let track = !cfg.drop_a_to_b.is_empty();
    let (mut first_tx, mut high, mut dropped_ab, mut had_bytes_ab) = (0u64, 0u64, 0u64, 0u64);
    let mut held = Held::default();
    loop {
        steps += 1;
        a.app(c, now);
        b.app(c, now);
        for (end, link, from_a) in [(&mut a, &mut ab, true), (&mut b, &mut ba, false)] {
            while let Some(h) = end.tcb.dispatch(c, now, &mut buf, &mut end.ctr) {
                if track && from_a && h.payload_len > 0 {
                    let off = offset(h.seq, base_ab);
                    if off >= high {
                        first_tx += 1;
                        high = off + h.payload_len as u64;
                        if cfg.drop_a_to_b.contains(&(first_tx - 1)) {
                            dropped_ab += 1;
                            continue;
                        }
                    }
                }
                if track && !from_a {
                    for blk in h.options.sack_blocks.iter() {
                        held.add(offset(blk.left, base_ab), offset(blk.right, base_ab));
                    }
                }
                link.send(
                    now,
                    SimSegment {
                        h,
                        payload: buf[..h.payload_len].to_vec(),
                    },
                );
            }
        }
        for e in [&a, &b] {
            if let Some(at) = e.err {
                return Err(format!("data mismatch at byte {at}"));
            }
            if e.tcb.state() == State::Closed && e.tcb.close_reason() != Some(CloseReason::Normal) {
                return Err(format!(
                    "connection ended with {:?} (a {:?}/{}, b {:?}/{})",
                    e.tcb.close_reason(),
                    a.tcb.state(),
                    a.inp.pos,
                    b.tcb.state(),
                    b.inp.pos
                ));
            }
        }
        if done(&a) && done(&b) && ab.in_flight() == 0 && ba.in_flight() == 0 {
            break;
        }
        let next = [
            ab.next_delivery(),
            ba.next_delivery(),
            a.tcb.poll_timeout(c),
            b.tcb.poll_timeout(c),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return Err(format!(
                "stuck: a {:?} sent {} got {}, b {:?} sent {} got {}",
                a.tcb.state(),
                a.out.pos,
                a.inp.pos,
                b.tcb.state(),
                b.out.pos,
                b.inp.pos
            ));
        };
        if done(&a) && done(&b) && ab.in_flight() == 0 && ba.in_flight() == 0 {
            break;
        }
        now = now.max(next);
        if now.saturating_since(start) > cfg.time_limit || steps > 50_000_000 {
            return Err(format!(
                "time limit: a {:?} got {}/{}, b {:?} got {}/{}",
                a.tcb.state(),
                a.inp.pos,
                a.inp.total,
                b.tcb.state(),
                b.inp.pos,
                b.inp.total
            ));
        }
        let mut replies = Vec::new();
        for (end, link, name) in [(&mut b, &mut ab, "a>b"), (&mut a, &mut ba, "b>a")] {
            while let Some(p) = link.poll(now) {
                let seg = p.as_segment();
                if track && name == "a>b" && !seg.payload.is_empty() && !seg.flags.syn() {
                    let off = offset(seg.seq, base_ab);
                    let len = seg.payload.len() as u64;
                    if end.tcb.state().is_synchronized() {
                        held.add(0, offset(end.tcb.rcv_nxt(), base_ab));
                    }
                    had_bytes_ab += held.overlap(off, off + len);
                }
                if cfg.trace {
                    eprintln!(
                        "{:>10} {name} seq {} ack {} {:?} win {} len {} sack {:?} | {:?}",
                        now.total_micros(),
                        seg.seq,
                        seg.ack,
                        seg.flags,
                        seg.window,
                        seg.payload.len(),
                        seg.options.sack_blocks.as_slice(),
                        end.tcb.stats(c)
                    );
                }
                let reply = if cfg.zero_copy {
                    let inp = &mut end.inp;
                    let err = &mut end.err;
                    let mut sink = |d: &[u8]| {
                        if let Err(at) = inp.verify(d) {
                            err.get_or_insert(at);
                        }
                        d.len()
                    };
                    end.tcb.on_segment(
                        c,
                        now,
                        &seg,
                        Some(&mut sink),
                        &mut end.challenge,
                        &mut end.ctr,
                    )
                } else {
                    end.tcb
                        .on_segment(c, now, &seg, None, &mut end.challenge, &mut end.ctr)
                };
                if let Some(h) = reply {
                    // RSTs in reply go back on the other link.
                    replies.push((name, h));
                }
            }
        }
        for (name, h) in replies {
            let p = SimSegment {
                h,
                payload: Vec::new(),
            };
            if name == "a>b" {
                ba.send(now, p);
            } else {
                ab.send(now, p);
            }
        }
        for e in [&mut a, &mut b] {
            if e.tcb.poll_timeout(c).is_some_and(|t| t <= now) {
                e.tcb.handle_timeout(c, now, &mut e.ctr);
            }
        }
    }
    Ok(ConnSimReport {
        elapsed: now.saturating_since(start),
        a: a.tcb.stats(c),
        b: b.tcb.stats(c),
        counters_a: a.ctr,
        counters_b: b.ctr,
        link_ab: ab.stats,
        link_ba: ba.stats,
        hash_ab: b.inp.hash,
        hash_ba: a.inp.hash,
        dropped_ab,
        had_bytes_ab,
    })
}
