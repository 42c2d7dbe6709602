//! A sending [`Tcb`] against a model receiver that keeps every out-of-order range (as
//! Linux's receiver does; this stack's own reassembly holds at most eight), over
//! simulated links that drop chosen first transmissions: the harness for SACK loss
//! recovery with many holes in one window (RFC 6675).
//!
//! The model receiver acknowledges every data segment at once (RFC 5681 4.2: an
//! out-of-order segment SHOULD be acknowledged immediately) with up to three SACK
//! blocks beside the timestamps: the block holding the segment that triggered the ACK
//! first, then the most recently changed others (RFC 2018 4). It echoes TS.Recent
//! (RFC 7323 4.3), offers a fixed 8 MiB window, checks the data byte-exact, and counts
//! every arriving payload byte it already had (a retransmission of data the sender
//! could have known was received).

use super::conn_sim::SimSegment;
use super::link::{Link, LinkConfig, LinkStats};
use super::{Rng, Stream};
use crate::conn::{ConnConfig, ConnStats, Counters, OutSegment, State, Tcb};
use crate::ratelimit::{RateLimit, TokenBucket};
use crate::seq::SeqNumber;
use crate::time::Instant;
use crate::wire::tcp::{SackBlock, TcpFlags, TcpOptions, TcpRepr, TcpTimestamps};
use core::time::Duration;

/// One run's setup.
#[derive(Debug, Clone)]
pub struct SackSimConfig {
    /// The sender's TCP settings.
    pub conn: ConnConfig,
    /// Impairments of each direction (random loss included, if wanted).
    pub link: LinkConfig,
    /// Bytes to move.
    pub bytes: u64,
    /// Seed for the links and the data.
    pub seed: u64,
    /// Indices (0-based, in order of first transmission) of the sender's data segments
    /// whose first transmission is dropped.
    pub drop_first_tx: Vec<u64>,
    /// Virtual time after which the run fails.
    pub time_limit: Duration,
}

impl Default for SackSimConfig {
    fn default() -> SackSimConfig {
        SackSimConfig {
            conn: ConnConfig::default(),
            link: LinkConfig::default(),
            bytes: 2 << 20,
            seed: 1,
            drop_first_tx: Vec::new(),
            time_limit: Duration::from_secs(600),
        }
    }
}

/// The outcome of a run that delivered every byte.
#[derive(Debug, Clone)]
pub struct SackSimReport {
    /// Virtual time from SYN to the last byte acknowledged.
    pub elapsed: Duration,
    /// The sender's stats at the end.
    pub sender: ConnStats,
    /// The sender's counters.
    pub counters: Counters,
    /// Payload bytes that reached the receiver when it already had them.
    pub dup_bytes: u64,
    /// Payload bytes the sender retransmitted.
    pub rtx_bytes: u64,
    /// Most ranges the sender's SACK scoreboard held at once.
    pub peak_sack_ranges: usize,
    /// Most out-of-order ranges the receiver held at once.
    pub peak_rcv_ranges: usize,
    /// First transmissions dropped by `drop_first_tx`.
    pub dropped: u64,
    /// Sender-to-receiver link.
    pub link_ab: LinkStats,
    /// Receiver-to-sender link.
    pub link_ba: LinkStats,
}

/// An out-of-order range held by the model receiver, with when it last changed.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
    stamp: u64,
}

struct Receiver {
    /// Our (the receiver's) ISS.
    iss: SeqNumber,
    /// The sender's first data byte (IRS + 1), once the SYN arrived.
    base: Option<SeqNumber>,
    rcv_nxt: u64,
    have: Vec<bool>,
    data: Vec<u8>,
    ranges: Vec<Range>,
    stamp: u64,
    ts_recent: u32,
    check: Stream,
    err: Option<u64>,
    dup_bytes: u64,
    peak_ranges: usize,
}

/// Window scale the receiver offers: 65,535 << 7, about 8 MiB.
const RCV_WSCALE: u8 = 7;

impl Receiver {
    fn ts(&self, now: Instant) -> u32 {
        now.total_millis() as u32
    }

    fn options(&self, now: Instant) -> TcpOptions {
        TcpOptions {
            timestamps: Some(TcpTimestamps {
                tsval: self.ts(now),
                tsecr: self.ts_recent,
            }),
            ..TcpOptions::default()
        }
    }

    /// Takes one segment from the sender; returns the answer, if any.
    fn on_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Option<OutSegment> {
        if seg.flags.syn() {
            self.base = Some(seg.seq + 1u32);
            self.ts_recent = seg.options.timestamps.map_or(0, |t| t.tsval);
            let mut options = self.options(now);
            options.mss = Some(1460);
            options.window_scale = Some(RCV_WSCALE);
            options.sack_permitted = true;
            return Some(OutSegment {
                repr: TcpRepr {
                    seq: self.iss,
                    ack: seg.seq + 1u32,
                    flags: TcpFlags::SYN | TcpFlags::ACK,
                    window: u16::MAX,
                    options,
                    ..TcpRepr::default()
                },
                payload_len: 0,
            });
        }
        let base = self.base?;
        if seg.payload.is_empty() {
            return None;
        }
        let Ok(start) = u64::try_from(seg.seq.distance(base)) else {
            return None;
        };
        if start >= self.have.len() as u64 {
            return None;
        }
        let end = (start + seg.payload.len() as u64).min(self.have.len() as u64);
        // RFC 7323 4.3: TS.Recent from a segment that does not start above RCV.NXT.
        if start <= self.rcv_nxt {
            if let Some(t) = seg.options.timestamps {
                self.ts_recent = t.tsval;
            }
        }
        for (o, &b) in (start..end).zip(seg.payload) {
            let i = o as usize;
            if o < self.rcv_nxt || self.have[i] {
                self.dup_bytes += 1;
            } else {
                self.have[i] = true;
                self.data[i] = b;
            }
        }
        let mut sack_first = None;
        if start > self.rcv_nxt {
            self.add_range(start, end);
            sack_first = self
                .ranges
                .iter()
                .position(|r| r.start <= start && end <= r.end);
        } else if end > self.rcv_nxt {
            let from = self.rcv_nxt;
            self.rcv_nxt = end;
            // Absorb the out-of-order ranges the advance reached.
            while let Some(r) = self.ranges.first().copied() {
                if r.start > self.rcv_nxt {
                    break;
                }
                self.rcv_nxt = self.rcv_nxt.max(r.end);
                self.ranges.remove(0);
            }
            let got = &self.data[from as usize..self.rcv_nxt as usize];
            if let Err(at) = self.check.verify(got) {
                self.err.get_or_insert(at);
            }
        }
        self.peak_ranges = self.peak_ranges.max(self.ranges.len());
        // RFC 2018 4: the first block holds the segment that triggered this ACK; the
        // others are the most recently changed ranges.
        let mut order: Vec<usize> = (0..self.ranges.len()).collect();
        order.sort_by_key(|&i| core::cmp::Reverse(self.ranges[i].stamp));
        if let Some(f) = sack_first {
            order.retain(|&i| i != f);
            order.insert(0, f);
        }
        let mut options = self.options(now);
        for &i in order.iter().take(3) {
            let r = self.ranges[i];
            options.sack_blocks.push(SackBlock {
                left: base + r.start as u32,
                right: base + r.end as u32,
            });
        }
        Some(OutSegment {
            repr: TcpRepr {
                seq: self.iss + 1u32,
                ack: base + self.rcv_nxt as u32,
                flags: TcpFlags::ACK,
                window: u16::MAX,
                options,
                ..TcpRepr::default()
            },
            payload_len: 0,
        })
    }

    fn add_range(&mut self, start: u64, end: u64) {
        self.stamp += 1;
        let mut new = Range {
            start,
            end,
            stamp: self.stamp,
        };
        self.ranges.retain(|r| {
            let touches = r.start <= new.end && new.start <= r.end;
            if touches {
                new.start = new.start.min(r.start);
                new.end = new.end.max(r.end);
            }
            !touches
        });
        let at = self.ranges.partition_point(|r| r.start < new.start);
        self.ranges.insert(at, new);
    }
}

fn offset(seq: SeqNumber, base: SeqNumber) -> u64 {
    u64::try_from(seq.distance(base)).unwrap_or(0)
}

/// Runs one transfer; `Err` says what went wrong (stuck, corrupted, reset, too slow).
pub fn run(cfg: &SackSimConfig) -> Result<SackSimReport, String> {
    let c = &cfg.conn;
    let start = Instant::from_millis(1000);
    let mut now = start;
    let iss = SeqNumber(Rng::new(cfg.seed ^ 0xa).next_u64() as u32);
    let base = iss + 1u32;
    let mut tcb = Tcb::connect(c, now, iss);
    let mut challenge = TokenBucket::new(RateLimit::CHALLENGE_ACK_DEFAULT, 1);
    let mut ctr = Counters::default();
    let total = usize::try_from(cfg.bytes).map_err(|e| e.to_string())?;
    let mut rcv = Receiver {
        iss: SeqNumber(Rng::new(cfg.seed ^ 0xb).next_u64() as u32),
        base: None,
        rcv_nxt: 0,
        have: vec![false; total],
        data: vec![0; total],
        ranges: Vec::new(),
        stamp: 0,
        ts_recent: 0,
        check: Stream::new(cfg.seed ^ 0x1111, cfg.bytes),
        err: None,
        dup_bytes: 0,
        peak_ranges: 0,
    };
    let mut out = Stream::new(cfg.seed ^ 0x1111, cfg.bytes);
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_off = 0usize;
    let mut ab: Link<SimSegment> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(3));
    let mut ba: Link<SimSegment> = Link::new(cfg.link.clone(), cfg.seed.wrapping_mul(5) + 1);
    let mut buf = vec![0u8; usize::from(c.mss)];
    // Data segments first transmitted so far, and where the highest one ended.
    let (mut first_tx, mut high) = (0u64, 0u64);
    let (mut dropped, mut rtx_bytes, mut peak_sack_ranges) = (0u64, 0u64, 0usize);
    loop {
        // The application keeps the send buffer full.
        if tcb.state() == State::Established {
            loop {
                if pending_off >= pending.len() {
                    if out.done() {
                        break;
                    }
                    pending.resize(16 * 1024, 0);
                    let n = out.produce(&mut pending);
                    pending.truncate(n);
                    pending_off = 0;
                }
                match tcb.send(c, &pending[pending_off..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => pending_off += n,
                }
            }
        }
        while let Some(h) = tcb.dispatch(c, now, &mut buf, &mut ctr) {
            let payload = buf[..h.payload_len].to_vec();
            if !payload.is_empty() {
                let off = offset(h.seq, base);
                let end = off + payload.len() as u64;
                if off >= high {
                    let k = first_tx;
                    first_tx += 1;
                    high = end;
                    if cfg.drop_first_tx.contains(&k) {
                        dropped += 1;
                        continue;
                    }
                } else {
                    rtx_bytes += payload.len() as u64;
                }
            }
            ab.send(now, SimSegment { h, payload });
        }
        peak_sack_ranges = peak_sack_ranges.max(tcb.sack_ranges());
        if let Some(at) = rcv.err {
            return Err(format!("data mismatch at byte {at}"));
        }
        if tcb.state() == State::Closed {
            return Err(format!("sender closed: {:?}", tcb.close_reason()));
        }
        if rcv.rcv_nxt == cfg.bytes && out.done() && tcb.send_queue() == 0 {
            break;
        }
        let next = [ab.next_delivery(), ba.next_delivery(), tcb.poll_timeout(c)]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return Err(format!(
                "stuck: sender {:?} queued {}, receiver at {}",
                tcb.state(),
                tcb.send_queue(),
                rcv.rcv_nxt
            ));
        };
        now = now.max(next);
        if now.saturating_since(start) > cfg.time_limit {
            return Err(format!(
                "time limit: receiver at {} of {}",
                rcv.rcv_nxt, cfg.bytes
            ));
        }
        while let Some(p) = ab.poll(now) {
            let seg = TcpRepr {
                payload: &p.payload,
                ..p.h.repr
            };
            if let Some(h) = rcv.on_segment(now, &seg) {
                ba.send(
                    now,
                    SimSegment {
                        h,
                        payload: Vec::new(),
                    },
                );
            }
        }
        while let Some(p) = ba.poll(now) {
            let seg = p.h.repr;
            if let Some(h) = tcb.on_segment(c, now, &seg, None, &mut challenge, &mut ctr) {
                ab.send(
                    now,
                    SimSegment {
                        h,
                        payload: Vec::new(),
                    },
                );
            }
            peak_sack_ranges = peak_sack_ranges.max(tcb.sack_ranges());
        }
        if tcb.poll_timeout(c).is_some_and(|t| t <= now) {
            tcb.handle_timeout(c, now, &mut ctr);
        }
    }
    Ok(SackSimReport {
        elapsed: now.saturating_since(start),
        sender: tcb.stats(c),
        counters: ctr,
        dup_bytes: rcv.dup_bytes,
        rtx_bytes,
        peak_sack_ranges,
        peak_rcv_ranges: rcv.peak_ranges,
        dropped,
        link_ab: ab.stats,
        link_ba: ba.stats,
    })
}
