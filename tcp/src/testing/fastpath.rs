//! The established fast path of two in-memory [`Stack`]s, for the criterion bench
//! (`bench/benches/stack.rs`) and the instruction counter
//! (`tcp/examples/fastpath_count.rs`): one harness, so both measure the same frames.
//!
//! The frames fed to the stack under test are the peer stack's own segments replayed with
//! patched sequence / acknowledgment numbers (and TSecr), each copy's TCP checksum updated
//! per RFC 1624, so every frame is really verified and accepted. Panics (it is a harness)
//! when the stacks do not behave as the measurement assumes.
#![allow(clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::iface::{InterfaceConfig, VecTxQueue};
use crate::stack::{ConnHandle, Event, Stack, StackConfig};
use crate::time::Instant;
use crate::wire::checksum::incremental_update;
use crate::wire::EthernetAddress;

/// The client stack's address.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The server stack's address.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The server's listening port.
pub const PORT: u16 = 8080;
/// Offset of the TCP header: Ethernet (14) + IPv4 without options (20).
pub const TCP_AT: usize = 34;
/// Payload of every fast-path data segment.
pub const SEGMENT: usize = 64;

fn mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, n])
}

fn stack(addr: Ipv4Addr, n: u8, prediction: bool, coalesce_acks: bool) -> Stack {
    let iface = InterfaceConfig::new(mac(n), addr, 24);
    let mut secret = [0u8; 16];
    secret[0] = n;
    secret[15] = 0x77;
    let mut cfg = StackConfig::new(iface, secret);
    cfg.conn.rcv_buf = 4 << 20;
    cfg.conn.snd_buf = 4 << 20;
    cfg.header_prediction = prediction;
    cfg.conn.coalesce_acks = coalesce_acks;
    Stack::new(cfg)
}

/// Two stacks on one virtual wire, with ARP pre-seeded; `b` listens on [`PORT`].
#[derive(Debug)]
pub struct Pair {
    /// The client.
    pub a: Stack,
    /// The server.
    pub b: Stack,
    /// Frames in flight (drained by [`Pair::shuttle`]).
    pub tx: VecTxQueue,
    /// The virtual clock.
    pub now: Instant,
    /// Payload bytes consumed (zero-copy) by either stack during [`Pair::shuttle`].
    pub consumed: u64,
}

impl Default for Pair {
    fn default() -> Pair {
        Pair::new()
    }
}

impl Pair {
    /// Two fresh stacks.
    pub fn new() -> Pair {
        Pair::with_prediction(true)
    }

    /// As [`Pair::new`], with header prediction on or off in both stacks (off: every
    /// segment through the general receive path, for comparison).
    pub fn with_prediction(prediction: bool) -> Pair {
        Pair::with_options(prediction, true)
    }

    /// As [`Pair::with_prediction`], with ACK coalescing
    /// ([`crate::conn::ConnConfig::coalesce_acks`]) on or off in both stacks.
    pub fn with_options(prediction: bool, coalesce_acks: bool) -> Pair {
        let now = Instant::from_millis(1000);
        let mut a = stack(ADDR_A, 1, prediction, coalesce_acks);
        let mut b = stack(ADDR_B, 2, prediction, coalesce_acks);
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
    pub fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            for a_to_b in [true, false] {
                let (from, to) = if a_to_b {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                from.poll_transmit(self.now, &mut self.tx);
                while let Some(mut f) = self.tx.frames.pop_front() {
                    moved = true;
                    let consumed = &mut self.consumed;
                    to.handle_frame_with(self.now, &mut f, &mut |_, d| {
                        *consumed += d.len() as u64;
                        d.len()
                    });
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs timers due after advancing the clock by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }

    /// One established connection with Nagle off: (client handle, server handle).
    pub fn establish(&mut self) -> (ConnHandle, ConnHandle) {
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

/// The 32-bit field at `at` of the TCP header.
fn u32_at(frame: &[u8], at: usize) -> u32 {
    let i = TCP_AT + at;
    u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]])
}

/// Rewrites the 32-bit field at `at` in the TCP header and updates the checksum (RFC 1624).
fn patch_u32(frame: &mut [u8], at: usize, value: u32) {
    let old = u32_at(frame, at);
    let ck_at = TCP_AT + 16;
    let mut ck = u16::from_be_bytes([frame[ck_at], frame[ck_at + 1]]);
    ck = incremental_update(ck, (old >> 16) as u16, (value >> 16) as u16);
    ck = incremental_update(ck, old as u16, value as u16);
    frame[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    frame[TCP_AT + at..TCP_AT + at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Offset (from the TCP header) of the TSval in a frame's timestamps option.
fn ts_at(frame: &[u8]) -> Option<usize> {
    let hdr = tcp_header_len(frame);
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

fn tcp_header_len(frame: &[u8]) -> usize {
    usize::from(frame[TCP_AT + 12] >> 4) * 4
}

fn assert_plain_ipv4(frame: &[u8]) {
    assert_eq!(frame[12..14], [0x08, 0x00], "not IPv4");
    assert_eq!(frame[14], 0x45, "IPv4 header with options");
}

/// In-order [`SEGMENT`]-byte data segments for the server `b` of an established pair,
/// made from the client's own segment.
#[derive(Debug)]
pub struct DataFrames {
    template: Vec<u8>,
    next_seq: u32,
}

impl DataFrames {
    /// Takes the client's segment of `ha` (sent, not delivered) as the template.
    pub fn new(p: &mut Pair, ha: ConnHandle) -> DataFrames {
        assert_eq!(p.a.send(ha, &[0x5a; SEGMENT]).expect("send"), SEGMENT);
        p.a.poll_transmit(p.now, &mut p.tx);
        let template = p.tx.frames.pop_front().expect("a data segment");
        assert!(p.tx.frames.is_empty());
        assert_plain_ipv4(&template);
        assert_eq!(
            template.len(),
            TCP_AT + tcp_header_len(&template) + SEGMENT,
            "one {SEGMENT} B segment"
        );
        let next_seq = u32_at(&template, 4);
        DataFrames { template, next_seq }
    }

    /// Replaces `frames` with the next `n` segments, in sequence order.
    pub fn fill(&mut self, frames: &mut Vec<Vec<u8>>, n: usize) {
        frames.clear();
        for _ in 0..n {
            patch_u32(&mut self.template, 4, self.next_seq);
            self.next_seq = self.next_seq.wrapping_add(SEGMENT as u32);
            frames.push(self.template.clone());
        }
    }
}

/// Pure ACKs of new data for the server `b` of an established pair (the sending side),
/// made from the client's own ACK.
#[derive(Debug)]
pub struct AckFrames {
    template: Vec<u8>,
}

impl AckFrames {
    /// Has `b` send one segment on `hb`, the client ACK it (delayed ACK), delivers that ACK
    /// once for real and keeps it as the template.
    pub fn new(p: &mut Pair, hb: ConnHandle) -> AckFrames {
        assert_eq!(p.b.send(hb, &[0xa5; SEGMENT]).expect("send"), SEGMENT);
        p.b.poll_transmit(p.now, &mut p.tx);
        let mut data = p.tx.frames.pop_front().expect("server data");
        p.a.handle_frame_with(p.now, &mut data, &mut |_, d| d.len());
        p.advance(Duration::from_millis(500)); // delayed ACK fires
        p.a.poll_transmit(p.now, &mut p.tx);
        let template = p.tx.frames.pop_front().expect("client ACK");
        assert!(p.tx.frames.is_empty());
        assert_plain_ipv4(&template);
        assert_eq!(
            template.len(),
            TCP_AT + tcp_header_len(&template),
            "a pure ACK"
        );
        p.b.handle_frame(p.now, &mut template.clone());
        assert_eq!(
            p.b.stats(hb).expect("conn").bytes_out,
            SEGMENT as u64,
            "template ACK not accepted"
        );
        AckFrames { template }
    }

    /// Replaces `frames` with up to `max` ACKs: `b` sends [`SEGMENT`]-byte segments on
    /// `hb` (as many as its windows allow; segments it sent earlier and left in `p.tx`
    /// come first) and each gets the ACK of its end (TSecr = its TSval). Returns the bytes
    /// the ACKs acknowledge.
    pub fn fill(
        &mut self,
        p: &mut Pair,
        hb: ConnHandle,
        frames: &mut Vec<Vec<u8>>,
        max: usize,
    ) -> u64 {
        frames.clear();
        let mut acked = 0u64;
        while frames.len() < max {
            if p.tx.frames.is_empty() {
                assert_eq!(p.b.send(hb, &[0xa5; SEGMENT]).expect("send"), SEGMENT);
                p.b.poll_transmit(p.now, &mut p.tx);
            }
            if p.tx.frames.is_empty() {
                break;
            }
            for f in p.tx.frames.drain(..) {
                let len = (f.len() - TCP_AT - tcp_header_len(&f)) as u32;
                acked += u64::from(len);
                patch_u32(&mut self.template, 8, u32_at(&f, 4).wrapping_add(len));
                if let (Some(ts), Some(ecr)) = (ts_at(&f), ts_at(&self.template)) {
                    patch_u32(&mut self.template, ecr + 4, u32_at(&f, ts));
                }
                frames.push(self.template.clone());
            }
        }
        assert!(
            !frames.is_empty(),
            "server sent nothing: {:?}",
            p.b.stats(hb)
        );
        acked
    }
}
