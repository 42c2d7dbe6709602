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
//! side (`Stack::handle_frame`). The frames are made as in `bench/benches/stack.rs`: the
//! peer stack's own segment replayed with patched sequence / acknowledgment numbers
//! (checksum updated per RFC 1624), and every frame is asserted accepted. Divide the
//! inclusive instruction count of `feed_data` (resp. `feed_ack`) by N.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

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

struct Pair {
    a: Stack,
    b: Stack,
    tx: VecTxQueue,
    now: Instant,
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
        }
    }

    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            self.a.poll_transmit(self.now, &mut self.tx);
            while let Some(mut f) = self.tx.frames.pop_front() {
                moved = true;
                self.b
                    .handle_frame_with(self.now, &mut f, &mut |_, d| d.len());
            }
            self.b.poll_transmit(self.now, &mut self.tx);
            while let Some(mut f) = self.tx.frames.pop_front() {
                moved = true;
                self.a
                    .handle_frame_with(self.now, &mut f, &mut |_, d| d.len());
            }
            if !moved {
                return;
            }
        }
    }

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

fn u32_at(frame: &[u8], at: usize) -> u32 {
    let i = TCP_AT + at;
    u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]])
}

fn patch_u32(frame: &mut [u8], at: usize, value: u32) {
    let old = u32_at(frame, at);
    let ck_at = TCP_AT + 16;
    let mut ck = u16::from_be_bytes([frame[ck_at], frame[ck_at + 1]]);
    ck = incremental_update(ck, (old >> 16) as u16, (value >> 16) as u16);
    ck = incremental_update(ck, old as u16, value as u16);
    frame[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    frame[TCP_AT + at..TCP_AT + at + 4].copy_from_slice(&value.to_be_bytes());
}

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

/// The measured part (kept out of line so callgrind can attribute it): data frames.
#[inline(never)]
fn feed_data(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    for f in frames {
        s.handle_frame_with(now, f, &mut |_, d| d.len());
    }
}

/// The measured part: pure ACKs.
#[inline(never)]
fn feed_ack(s: &mut Stack, now: Instant, frames: &mut [Vec<u8>]) {
    for f in frames {
        s.handle_frame(now, f);
    }
}

fn data(n: u64) {
    let mut p = Pair::new();
    let (ha, hb) = p.establish();
    assert_eq!(p.a.send(ha, &[0x5a; 64]).expect("send"), 64);
    p.a.poll_transmit(p.now, &mut p.tx);
    let mut template = p.tx.frames.pop_front().expect("a data segment");
    let mut next_seq = u32_at(&template, 4);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64) as usize;
        left -= k as u64;
        frames.clear();
        for _ in 0..k {
            patch_u32(&mut template, 4, next_seq);
            next_seq = next_seq.wrapping_add(64);
            frames.push(template.clone());
        }
        let before = p.b.stats(hb).expect("conn").bytes_in;
        feed_data(&mut p.b, p.now, &mut frames);
        let after = p.b.stats(hb).expect("conn").bytes_in;
        assert_eq!(after - before, 64 * k as u64, "frames not accepted");
        p.now += Duration::from_micros(50);
        p.b.handle_timeout(p.now);
        p.b.poll_transmit(p.now, &mut p.tx);
        p.tx.frames.clear();
    }
    assert_eq!(p.b.iface_stats().tcp_bad_checksum, 0);
}

fn ack(n: u64) {
    let mut p = Pair::new();
    let (_ha, hb) = p.establish();
    assert_eq!(p.b.send(hb, &[0xa5; 64]).expect("send"), 64);
    p.b.poll_transmit(p.now, &mut p.tx);
    let mut first = p.tx.frames.pop_front().expect("server data");
    p.a.handle_frame_with(p.now, &mut first, &mut |_, d| d.len());
    p.now += Duration::from_millis(500);
    p.a.handle_timeout(p.now);
    p.b.handle_timeout(p.now);
    p.a.poll_transmit(p.now, &mut p.tx);
    let mut template = p.tx.frames.pop_front().expect("client ACK");
    p.b.handle_frame(p.now, &mut template.clone());
    assert_eq!(p.b.stats(hb).expect("conn").bytes_out, 64);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut left = n;
    while left > 0 {
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
                patch_u32(&mut template, 8, u32_at(&f, 4).wrapping_add(len));
                if let (Some(ts), Some(ecr)) = (ts_at(&f), ts_at(&template)) {
                    patch_u32(&mut template, ecr + 4, u32_at(&f, ts));
                }
                frames.push(template.clone());
            }
        }
        assert!(!frames.is_empty(), "server sent nothing");
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

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "data".into());
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("N"));
    match mode.as_str() {
        "data" => data(n),
        "ack" => ack(n),
        other => panic!("mode {other:?}: expected data or ack"),
    }
    println!("{mode}: {n} frames accepted");
}
