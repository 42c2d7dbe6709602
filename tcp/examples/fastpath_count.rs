//! Drives the established fast path of two in-memory [`Stack`]s for instruction counting
//! (the machine is too noisy for wall-clock figures to compare small changes).
//!
//! ```text
//! cargo build --release -p sluice-tcp --example fastpath_count
//! valgrind --tool=callgrind --callgrind-out-file=cg.data \
//!     target/release/examples/fastpath_count data 100000
//! callgrind_annotate --inclusive=yes cg.data | grep feed_
//! ```
//!
//! `data`: N in-order 64 B data segments into an established connection
//! (`Stack::handle_frame_with`, zero-copy). `ack`: N pure ACKs of new data on the sending
//! side (`Stack::handle_frame`). The frames come from `tcp::testing::fastpath`, the same
//! harness as `bench/benches/stack.rs`: the peer stack's own segment replayed with patched
//! sequence / acknowledgment numbers (checksum updated per RFC 1624), and every frame is
//! asserted accepted. `burst`: N in-order 64 B data segments in bursts of 32, one
//! segment on each of 32 connections per burst (so every segment needs its own
//! connection lookup), the frames handed over back to back as a worker does with an RX
//! batch, one `poll_transmit` per burst outside the count. Every measured function ends
//! with `Stack::end_burst` (the work left for the end of a burst: the coalesced pure
//! ACKs), so the count holds all of it. The ACKs come in bursts of up to 64 of one
//! connection, as a sender's RX batch holds them under load. `ackburst`: pure ACKs in
//! bursts of 32, one on each of 32 connections (coalescing's worst case: runs of one). A third argument `general`
//! turns header prediction off (every segment through the general path); `single` turns
//! ACK coalescing off (every pure ACK processed whole on its own). Divide the inclusive
//! instruction count of `feed_data` (resp. `feed_ack`, `feed_burst`) by N.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tcp::stack::Stack;
use tcp::testing::fastpath::{AckFrames, DataFrames, Pair, SEGMENT};
use tcp::time::Instant;

/// Frames per untimed preparation round.
const BATCH: usize = 256;

/// The measured part (kept out of line so callgrind can attribute it): data frames.
#[inline(never)]
fn feed_data(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    for f in frames {
        s.handle_frame_with(now, f, &mut |_, d| d.len());
    }
    s.end_burst();
}

/// The measured part: one burst of data frames on many connections.
#[inline(never)]
fn feed_burst(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    // (`black_box` keeps the linker from folding this copy of `feed_data` into it.)
    for f in std::hint::black_box(frames) {
        s.handle_frame_with(now, f, &mut |_, d| d.len());
    }
    s.end_burst();
}

/// The measured part: pure ACKs.
#[inline(never)]
fn feed_ack(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    for f in frames {
        s.handle_frame(now, f);
    }
    s.end_burst();
}

/// The measured part: one burst of pure ACKs on many connections.
#[inline(never)]
fn feed_ackburst(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    for f in std::hint::black_box(frames) {
        s.handle_frame(now, f);
    }
    s.end_burst();
}

fn data(n: u64, prediction: bool, coalesce: bool) {
    let mut p = Pair::with_options(prediction, coalesce);
    let (ha, hb) = p.establish();
    let mut made = DataFrames::new(&mut p, ha);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64) as usize;
        left -= k as u64;
        made.fill(&mut frames, k);
        let before = p.b.stats(hb).expect("conn").bytes_in;
        feed_data(&mut p.b, p.now, &mut frames);
        let after = p.b.stats(hb).expect("conn").bytes_in;
        assert_eq!(after - before, (SEGMENT * k) as u64, "frames not accepted");
        p.now += Duration::from_micros(50);
        p.b.handle_timeout(p.now);
        p.b.poll_transmit(p.now, &mut p.tx);
        p.tx.frames.clear();
    }
    assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
}

/// Connections (and segments) per burst.
const BURST: usize = 32;

fn burst(n: u64, prediction: bool, coalesce: bool) {
    let mut p = Pair::with_options(prediction, coalesce);
    let conns: Vec<_> = (0..BURST).map(|_| p.establish()).collect();
    let mut made: Vec<DataFrames> = conns
        .iter()
        .map(|&(ha, _)| DataFrames::new(&mut p, ha))
        .collect();
    let bytes_in = |p: &Pair| -> u64 {
        conns
            .iter()
            .map(|&(_, hb)| p.b.stats(hb).expect("conn").bytes_in)
            .sum()
    };
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BURST);
    let mut one: Vec<Vec<u8>> = Vec::with_capacity(1);
    for _ in 0..n / BURST as u64 {
        frames.clear();
        for m in &mut made {
            m.fill(&mut one, 1);
            frames.append(&mut one);
        }
        let before = bytes_in(&p);
        feed_burst(&mut p.b, p.now, &mut frames);
        assert_eq!(
            bytes_in(&p) - before,
            (SEGMENT * BURST) as u64,
            "frames not accepted"
        );
        p.now += Duration::from_micros(50);
        p.b.handle_timeout(p.now);
        p.b.poll_transmit(p.now, &mut p.tx);
        p.tx.frames.clear();
    }
    assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
}

fn ack(n: u64, prediction: bool, coalesce: bool) {
    let mut p = Pair::with_options(prediction, coalesce);
    let (_ha, hb) = p.establish();
    let mut made = AckFrames::new(&mut p, hb);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut left = n;
    while left > 0 {
        let acked = made.fill(&mut p, hb, &mut frames, left.min(64) as usize);
        left = left.saturating_sub(frames.len() as u64);
        let before = p.b.stats(hb).expect("conn").bytes_out;
        p.now += Duration::from_micros(20);
        feed_ack(&mut p.b, p.now, &mut frames);
        let after = p.b.stats(hb).expect("conn").bytes_out;
        assert_eq!(after - before, acked, "ACKs not accepted");
        p.b.poll_transmit(p.now, &mut p.tx);
    }
    assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
}

/// Pure ACKs in bursts of 32, one on each of 32 connections: every ACK is a run of one
/// for coalescing (its worst case).
fn ackburst(n: u64, prediction: bool, coalesce: bool) {
    let mut p = Pair::with_options(prediction, coalesce);
    let conns: Vec<_> = (0..BURST).map(|_| p.establish()).collect();
    let mut made: Vec<AckFrames> = conns
        .iter()
        .map(|&(_, hb)| AckFrames::new(&mut p, hb))
        .collect();
    let bytes_out = |p: &Pair| -> u64 {
        conns
            .iter()
            .map(|&(_, hb)| p.b.stats(hb).expect("conn").bytes_out)
            .sum()
    };
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BURST);
    let mut one: Vec<Vec<u8>> = Vec::with_capacity(1);
    for _ in 0..n / BURST as u64 {
        frames.clear();
        let mut acked = 0;
        for (m, &(_, hb)) in made.iter_mut().zip(&conns) {
            acked += m.fill(&mut p, hb, &mut one, 1);
            frames.append(&mut one);
        }
        assert_eq!(frames.len(), BURST);
        let before = bytes_out(&p);
        p.now += Duration::from_micros(20);
        feed_ackburst(&mut p.b, p.now, &mut frames);
        assert_eq!(bytes_out(&p) - before, acked, "ACKs not accepted");
        p.b.poll_transmit(p.now, &mut p.tx);
        p.tx.frames.clear();
    }
    assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "data".into());
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("N"));
    let variant = args.next();
    let prediction = variant.as_deref() != Some("general");
    let coalesce = variant.as_deref() != Some("single");
    match mode.as_str() {
        "data" => data(n, prediction, coalesce),
        "ack" => ack(n, prediction, coalesce),
        "burst" => burst(n, prediction, coalesce),
        "ackburst" => ackburst(n, prediction, coalesce),
        other => panic!("mode {other:?}: expected data, ack, burst or ackburst"),
    }
    println!("{mode}: {n} frames accepted");
}
