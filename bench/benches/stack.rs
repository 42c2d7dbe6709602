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
//!   (new data acknowledged every time: RTT sample, retransmit queue, cwnd).
//! - `conn/setup_teardown`: full 3-way handshake + FIN exchange between two stacks.
//! - `bulk/1MiB`: one connection moving 1 MiB client -> server, both stacks running every
//!   frame (data one way, ACKs the other), payload consumed zero-copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tcp::iface::{InterfaceConfig, VecTxQueue};
use tcp::stack::{ConnHandle, Event, Stack, StackConfig};
use tcp::time::Instant;
use tcp::wire::checksum::incremental_update;
use tcp::wire::EthernetAddress;

const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 8080;
/// Ethernet (14) + IPv4 without options (20).
const TCP_AT: usize = 34;
/// Frames per untimed preparation round.
const BATCH: usize = 256;

fn mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, n])
}

fn stack(addr: Ipv4Addr, n: u8) -> Stack {
    let iface = InterfaceConfig::new(mac(n), addr, 24);
    let mut secret = [0u8; 16];
    secret[0] = n;
    secret[15] = 0x77;
    let mut cfg = StackConfig::new(iface, secret);
    cfg.conn.rcv_buf = 4 << 20;
    cfg.conn.snd_buf = 4 << 20;
    Stack::new(cfg)
}

/// Two stacks on one virtual wire, with ARP pre-seeded.
struct Pair {
    a: Stack,
    b: Stack,
    tx: VecTxQueue,
    now: Instant,
    consumed: u64,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::from_millis(1000);
        let mut a = stack(ADDR_A, 1);
        let mut b = stack(ADDR_B, 2);
        a.iface_mut().insert_neighbor(now, ADDR_B, mac(2));
        b.iface_mut().insert_neighbor(now, ADDR_A, mac(1));
        b.listen(PORT, 0).expect("listen");
        Pair {
            a,
            b,
            tx: VecTxQueue::new(),
            now,
            consumed: 0,
        }
    }

    /// Moves frames both ways until both stacks are quiet; payload is consumed in place.
    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            self.a.poll_transmit(self.now, &mut self.tx);
            while let Some(mut f) = self.tx.frames.pop_front() {
                moved = true;
                let consumed = &mut self.consumed;
                self.b.handle_frame_with(self.now, &mut f, &mut |_, d| {
                    *consumed += d.len() as u64;
                    d.len()
                });
            }
            self.b.poll_transmit(self.now, &mut self.tx);
            while let Some(mut f) = self.tx.frames.pop_front() {
                moved = true;
                let consumed = &mut self.consumed;
                self.a.handle_frame_with(self.now, &mut f, &mut |_, d| {
                    *consumed += d.len() as u64;
                    d.len()
                });
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs timers due after advancing the clock by `by`.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }

    /// One established connection: (client handle, server handle).
    fn establish(&mut self) -> (ConnHandle, ConnHandle) {
        let ha = self.a.connect(self.now, ADDR_B, PORT).expect("connect");
        self.shuttle();
        let mut hb = None;
        while let Some(ev) = self.b.poll_event() {
            if let Event::Accepted { conn, .. } = ev {
                hb = Some(conn);
            }
        }
        let mut established = false;
        while let Some(ev) = self.a.poll_event() {
            established |= ev == Event::Established(ha);
        }
        assert!(established, "client did not reach ESTABLISHED");
        let hb = hb.expect("server did not accept");
        self.a.set_nodelay(ha, true).expect("nodelay");
        self.b.set_nodelay(hb, true).expect("nodelay");
        (ha, hb)
    }
}

fn seq_at(frame: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        frame[TCP_AT + at],
        frame[TCP_AT + at + 1],
        frame[TCP_AT + at + 2],
        frame[TCP_AT + at + 3],
    ])
}

/// Rewrites the 32-bit field at `at` in the TCP header and updates the checksum (RFC 1624).
fn patch_u32(frame: &mut [u8], at: usize, value: u32) {
    let old = seq_at(frame, at);
    let ck_at = TCP_AT + 16;
    let mut ck = u16::from_be_bytes([frame[ck_at], frame[ck_at + 1]]);
    ck = incremental_update(ck, (old >> 16) as u16, (value >> 16) as u16);
    ck = incremental_update(ck, old as u16, value as u16);
    frame[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    frame[TCP_AT + at..TCP_AT + at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Offset (from the TCP header) of the TSval in a frame's timestamps option.
fn ts_at(frame: &[u8]) -> Option<usize> {
    let hdr = usize::from(frame[TCP_AT + 12] >> 4) * 4;
    let mut i = 20;
    while i < hdr {
        match frame[TCP_AT + i] {
            0 => return None,
            1 => i += 1,
            8 => return Some(i + 2),
            _ => i += usize::from(frame[TCP_AT + i + 1]).max(2),
        }
    }
    None
}

fn assert_plain_ipv4(frame: &[u8]) {
    assert_eq!(frame[12..14], [0x08, 0x00], "not IPv4");
    assert_eq!(frame[14], 0x45, "IPv4 header with options");
}

fn fast_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_path");
    group.throughput(Throughput::Elements(1));

    // ---- 64 B data segments into an established connection ----
    {
        let mut p = Pair::new();
        let (ha, hb) = p.establish();
        // The template: the client's own 64 B segment, delivered once for real.
        assert_eq!(p.a.send(ha, &[0x5a; 64]).expect("send"), 64);
        p.a.poll_transmit(p.now, &mut p.tx);
        let mut template = p.tx.frames.pop_front().expect("a data segment");
        assert!(p.tx.frames.is_empty());
        assert_plain_ipv4(&template);
        let hdr = usize::from(template[TCP_AT + 12] >> 4) * 4;
        assert_eq!(template.len(), TCP_AT + hdr + 64, "one 64 B segment");
        let mut next_seq = seq_at(&template, 4);
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
                    frames.clear();
                    for _ in 0..n {
                        patch_u32(&mut template, 4, next_seq);
                        next_seq = next_seq.wrapping_add(64);
                        frames.push(template.clone());
                    }
                    let before = p.b.stats(hb).expect("conn").bytes_in;
                    let t = std::time::Instant::now();
                    for f in &mut frames {
                        p.b.handle_frame_with(p.now, f, &mut |_, d| {
                            sink_bytes += d.len() as u64;
                            d.len()
                        });
                    }
                    spent += t.elapsed();
                    // Outside the timed loop: every frame must have been taken in order.
                    let after = p.b.stats(hb).expect("conn").bytes_in;
                    assert_eq!(after - before, 64 * n as u64, "frames not accepted");
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
        assert!(accepted == 0 || sink_bytes >= 64 * accepted);
        assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
    }

    // ---- pure ACKs of new data, on the sending side ----
    {
        let mut p = Pair::new();
        let (ha, hb) = p.establish();
        // The template: the client's pure ACK of one 64 B segment from the server.
        assert_eq!(p.b.send(hb, &[0xa5; 64]).expect("send"), 64);
        p.b.poll_transmit(p.now, &mut p.tx);
        let mut data = p.tx.frames.pop_front().expect("server data");
        p.a.handle_frame_with(p.now, &mut data, &mut |_, d| d.len());
        p.advance(Duration::from_millis(500)); // delayed ACK fires
        p.a.poll_transmit(p.now, &mut p.tx);
        let mut template = p.tx.frames.pop_front().expect("client ACK");
        assert!(p.tx.frames.is_empty());
        assert_plain_ipv4(&template);
        let hdr = usize::from(template[TCP_AT + 12] >> 4) * 4;
        assert_eq!(template.len(), TCP_AT + hdr, "a pure ACK");
        p.b.handle_frame(p.now, &mut template.clone());
        assert_eq!(
            p.b.stats(hb).expect("conn").bytes_out,
            64,
            "template ACK not accepted"
        );
        let _ = ha;
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        group.bench_function("pure_ack", |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Untimed: the server sends 64 B segments (as many as its windows
                    // allow, at most 64), and the client's ACK of each is built from the
                    // template (ack = end of that segment, TSecr = its TSval).
                    frames.clear();
                    let mut acked = 0u64;
                    while frames.len() < left.min(64) as usize {
                        if p.tx.frames.is_empty() {
                            assert_eq!(p.b.send(hb, &[0xa5; 64]).expect("send"), 64);
                            p.b.poll_transmit(p.now, &mut p.tx);
                        }
                        if p.tx.frames.is_empty() {
                            break;
                        }
                        for f in p.tx.frames.drain(..) {
                            let hdr = usize::from(f[TCP_AT + 12] >> 4) * 4;
                            let len = (f.len() - TCP_AT - hdr) as u32;
                            acked += u64::from(len);
                            patch_u32(&mut template, 8, seq_at(&f, 4).wrapping_add(len));
                            if let (Some(ts), Some(ecr)) = (ts_at(&f), ts_at(&template)) {
                                patch_u32(&mut template, ecr + 4, seq_at(&f, ts));
                            }
                            frames.push(template.clone());
                        }
                    }
                    assert!(
                        !frames.is_empty(),
                        "server sent nothing: {:?}",
                        p.b.stats(hb)
                    );
                    left = left.saturating_sub(frames.len() as u64);
                    let before = p.b.stats(hb).expect("conn").bytes_out;
                    p.now += Duration::from_micros(20);
                    let t = std::time::Instant::now();
                    for f in &mut frames {
                        p.b.handle_frame(p.now, f);
                    }
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
