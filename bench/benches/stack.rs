//! The TCP engine in memory, through the public `tcp::stack` API only: two [`Stack`]s wired
//! back to back (Ethernet frames with real checksums, no NIC, no clock of their own).
//!
//! - `fast_path/data_64B`: established connection, in-order 64 B data segments handed to
//!   `Stack::handle_frame_with` (payload consumed straight from the frame, the zero-copy
//!   path). The frames are the peer stack's own 64 B segment replayed with advancing
//!   sequence numbers; each copy's TCP checksum is updated (RFC 1624) outside the timed
//!   loop, so every timed frame is verified and accepted. Counters are checked after each
//!   batch, outside the timed loop.
//! - `fast_path/pure_ack`: the sender's side: the stack under test has sent 64 B segments
//!   (untimed) and the timed loop feeds it the pure ACKs that acknowledge them one by one
//!   (new data acknowledged every time: RTT sample, retransmit queue, cwnd), up to 64 in a
//!   burst, coalesced (`ConnConfig::coalesce_acks`). Every timed loop ends with
//!   `Stack::end_burst`, so the work left for the end of a burst is timed too.
//! - `fast_path/burst_32x64B`: as `data_64B`, in bursts of 32 segments, one on each of 32
//!   connections (a lookup per segment), as a worker hands over an RX batch; per segment.
//! - `conn/setup_teardown`: full 3-way handshake + FIN exchange between two stacks.
//! - `bulk/1MiB`: one connection moving 1 MiB client -> server, both stacks running every
//!   frame (data one way, ACKs the other), payload consumed zero-copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tcp::stack::Event;
use tcp::testing::fastpath::{AckFrames, DataFrames, Pair, SEGMENT};

/// Frames per untimed preparation round.
const BATCH: usize = 256;

fn fast_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_path");
    group.throughput(Throughput::Elements(1));

    // ---- 64 B data segments into an established connection ----
    {
        let mut p = Pair::new();
        let (ha, hb) = p.establish();
        // The client's own 64 B segment, replayed with advancing sequence numbers.
        let mut made = DataFrames::new(&mut p, ha);
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut sink_bytes = 0u64;
        let mut accepted = 0u64;
        group.bench_function("data_64B", |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH as u64) as usize;
                    left -= n as u64;
                    made.fill(&mut frames, n);
                    let before = p.b.stats(hb).expect("conn").bytes_in;
                    let t = std::time::Instant::now();
                    for f in &mut frames {
                        p.b.handle_frame_with(p.now, f, &mut |_, d| {
                            sink_bytes += d.len() as u64;
                            d.len()
                        });
                    }
                    p.b.end_burst();
                    spent += t.elapsed();
                    // Outside the timed loop: every frame must have been taken in order.
                    let after = p.b.stats(hb).expect("conn").bytes_in;
                    assert_eq!(after - before, (SEGMENT * n) as u64, "frames not accepted");
                    accepted += n as u64;
                    // The server's ACKs go nowhere (the client is only the template source).
                    p.now += Duration::from_micros(50);
                    p.b.handle_timeout(p.now);
                    p.b.poll_transmit(p.now, &mut p.tx);
                    p.tx.frames.clear();
                }
                spent
            });
        });
        assert!(accepted == 0 || sink_bytes >= SEGMENT as u64 * accepted);
        assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
    }

    // ---- bursts of 32 segments on 32 connections ----
    {
        const CONNS: usize = 32;
        let mut p = Pair::new();
        let conns: Vec<_> = (0..CONNS).map(|_| p.establish()).collect();
        let mut made: Vec<DataFrames> = conns
            .iter()
            .map(|&(ha, _)| DataFrames::new(&mut p, ha))
            .collect();
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(CONNS);
        let mut one: Vec<Vec<u8>> = Vec::with_capacity(1);
        group.bench_function("burst_32x64B", |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let rounds = iters.div_ceil(CONNS as u64);
                for _ in 0..rounds {
                    frames.clear();
                    for m in &mut made {
                        m.fill(&mut one, 1);
                        frames.append(&mut one);
                    }
                    let bytes_in = |p: &Pair| -> u64 {
                        conns
                            .iter()
                            .map(|&(_, hb)| p.b.stats(hb).expect("conn").bytes_in)
                            .sum()
                    };
                    let before = bytes_in(&p);
                    let t = std::time::Instant::now();
                    for f in &mut frames {
                        p.b.handle_frame_with(p.now, f, &mut |_, d| d.len());
                    }
                    p.b.end_burst();
                    spent += t.elapsed();
                    assert_eq!(
                        bytes_in(&p) - before,
                        (SEGMENT * CONNS) as u64,
                        "frames not accepted"
                    );
                    p.now += Duration::from_micros(50);
                    p.b.handle_timeout(p.now);
                    p.b.poll_transmit(p.now, &mut p.tx);
                    p.tx.frames.clear();
                }
                // Per segment: scaled from the whole bursts run to the iterations asked.
                spent.mul_f64(iters as f64 / (rounds * CONNS as u64) as f64)
            });
        });
        assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
    }

    // ---- pure ACKs of new data, on the sending side ----
    {
        let mut p = Pair::new();
        let (_ha, hb) = p.establish();
        // The client's own pure ACK, replayed acknowledging each segment the server sends.
        let mut made = AckFrames::new(&mut p, hb);
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        group.bench_function("pure_ack", |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Untimed: the server sends 64 B segments (as many as its windows
                    // allow, at most 64), and the client's ACK of each is built from the
                    // template (ack = end of that segment, TSecr = its TSval).
                    let acked = made.fill(&mut p, hb, &mut frames, left.min(64) as usize);
                    left = left.saturating_sub(frames.len() as u64);
                    let before = p.b.stats(hb).expect("conn").bytes_out;
                    p.now += Duration::from_micros(20);
                    let t = std::time::Instant::now();
                    for f in &mut frames {
                        p.b.handle_frame(p.now, f);
                    }
                    // The burst's coalesced ACKs settled: timed too.
                    p.b.end_burst();
                    spent += t.elapsed();
                    let after = p.b.stats(hb).expect("conn").bytes_out;
                    assert_eq!(after - before, acked, "ACKs not accepted");
                    p.b.poll_transmit(p.now, &mut p.tx);
                    // Kept for the next round: segments sent now are ACKed there.
                }
                spent
            });
        });
        assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
    }
    group.finish();
}

fn setup_teardown(c: &mut Criterion) {
    let mut group = c.benchmark_group("conn");
    group.throughput(Throughput::Elements(1));
    let mut p = Pair::new();
    group.bench_function("setup_teardown", |bench| {
        bench.iter(|| {
            let (ha, hb) = p.establish();
            p.a.close(ha).expect("close");
            p.shuttle();
            let mut peer_closed = false;
            while let Some(ev) = p.b.poll_event() {
                peer_closed |= ev == Event::PeerClosed(hb);
            }
            assert!(peer_closed, "FIN not seen");
            p.b.close(hb).expect("close");
            p.shuttle();
            // Client in TIME_WAIT (capped), server gone.
            p.advance(Duration::from_micros(100));
            black_box(p.b.connection_count())
        });
    });
    group.finish();
}

fn bulk(c: &mut Criterion) {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: u64 = 1 << 20;
    let mut group = c.benchmark_group("bulk");
    group.throughput(Throughput::Bytes(TOTAL));
    let mut p = Pair::new();
    let (ha, _hb) = p.establish();
    let chunk = vec![0x42u8; CHUNK];
    group.bench_function("1MiB", |bench| {
        bench.iter(|| {
            let start = p.consumed;
            let mut sent = 0u64;
            while p.consumed - start < TOTAL {
                while sent < TOTAL {
                    let want = (TOTAL - sent).min(CHUNK as u64) as usize;
                    match p.a.send(ha, &chunk[..want]) {
                        Ok(0) => break,
                        Ok(n) => sent += n as u64,
                        Err(e) => panic!("send: {e:?}"),
                    }
                }
                p.now += Duration::from_micros(10);
                p.shuttle();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, fast_path, setup_teardown, bulk);
criterion_main!(benches);
