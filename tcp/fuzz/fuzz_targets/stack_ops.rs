//! Two `Stack`s on an in-memory wire driven by an arbitrary sequence of operations: socket
//! calls (listen, unlisten, connect, send, recv, shutdown, close, abort, nodelay), time
//! advancing with `handle_timeout`, and the wire itself (deliver, drop, duplicate,
//! reorder, flip a byte of a frame in flight, inject an arbitrary frame). Checksum
//! verification is switched off by the first input byte in half of the runs, so flipped
//! bytes reach the TCP state machine instead of stopping at the checksum.
//!
//! Checks: no panic, no unbounded queue (TX queues and the wire are capped, the event
//! queue drains), handles of the application stay usable or fail with an error.
//!
//! Input: `flags`, then operations; each operation is an opcode byte followed by the
//! bytes it reads (a missing byte reads as 0).
#![no_main]

use core::time::Duration;
use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use tcp::iface::{InterfaceConfig, VecTxQueue};
use tcp::stack::{ConnHandle, Event, Stack, StackConfig};
use tcp::wire::{EthernetAddress, Ipv4Addr};
use tcp::{Bytes, Instant};

const ADDR: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];
const PORTS: [u16; 3] = [80, 443, 8080];
const WIRE_CAP: usize = 256;
const HANDLES_CAP: usize = 32;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, n])
}

fn stack(i: usize, flags: u8) -> Stack {
    let mut iface = InterfaceConfig::new(mac(i as u8 + 1), ADDR[i], 24);
    iface.verify_checksums = flags & 1 == 0;
    iface.mtu = if flags & 2 == 0 { 1500 } else { 576 };
    let mut secret = [0x11u8; 16];
    secret[0] = i as u8;
    let mut cfg = StackConfig::new(iface, secret);
    cfg.max_connections = 64;
    cfg.backlog = 4;
    cfg.syn_backlog = 4;
    cfg.time_wait_cap = 8;
    cfg.reply_queue_limit = 16;
    cfg.conn.rcv_buf = 8 * 1024;
    cfg.conn.snd_buf = 8 * 1024;
    cfg.conn.sack = flags & 4 == 0;
    cfg.conn.timestamps = flags & 8 == 0;
    cfg.conn.window_scaling = flags & 16 == 0;
    cfg.conn.delayed_ack = flags & 32 == 0;
    cfg.conn.nagle = flags & 64 == 0;
    Stack::new(cfg)
}

struct Side {
    stack: Stack,
    tx: VecTxQueue,
    handles: Vec<ConnHandle>,
}

impl Side {
    fn events(&mut self) {
        // Coalesced per connection: bounded by the table size.
        let mut n = 0;
        while let Some(ev) = self.stack.poll_event() {
            n += 1;
            assert!(n <= 4 * 64 + 16, "event queue does not drain");
            match ev {
                Event::Accepted { conn, .. } | Event::Established(conn) => {
                    if self.handles.len() < HANDLES_CAP {
                        self.handles.push(conn);
                    }
                }
                Event::Reset(h) | Event::TimedOut(h) => self.handles.retain(|&x| x != h),
                _ => {}
            }
        }
    }

    fn handle(&self, pick: u8) -> Option<ConnHandle> {
        if self.handles.is_empty() {
            None
        } else {
            Some(self.handles[usize::from(pick) % self.handles.len()])
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    let mut sides = [
        Side {
            stack: stack(0, flags),
            tx: VecTxQueue::with_limit(64),
            handles: Vec::new(),
        },
        Side {
            stack: stack(1, flags),
            tx: VecTxQueue::with_limit(64),
            handles: Vec::new(),
        },
    ];
    // wire[i]: frames travelling towards side i.
    let mut wire: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut now = Instant::from_millis(1000);
    let mut buf = [0u8; 4096];

    while !input.0.is_empty() {
        let op = input.u8();
        let who = usize::from(op >> 7);
        let side = &mut sides[who];
        match op & 0x1f {
            0..=5 => {
                // Deliver the next frame (the most common operation).
                if let Some(mut f) = wire[who].pop_front() {
                    if op & 0x40 == 0 {
                        side.stack.handle_frame(now, &mut f);
                    } else {
                        let take = usize::from(input.u8());
                        let echo = usize::from(input.u8() % 4);
                        // Consume part in the frame, edit it, and answer from the sink
                        // through the connection's send side.
                        side.stack
                            .handle_frame_with_tx(now, &mut f, &mut |_, d, tx| {
                                let k = take.min(d.len());
                                d[..k].reverse();
                                match echo {
                                    1 => {
                                        let _ = tx.send(&d[..k]);
                                    }
                                    2 => {
                                        let _ = tx.send_with(k, |b| {
                                            b[..k].copy_from_slice(&d[..k]);
                                            k
                                        });
                                    }
                                    3 => {
                                        let _ = tx.send_chunk(Bytes::copy_from_slice(&d[..k]));
                                    }
                                    _ => {}
                                }
                                k
                            });
                    }
                }
            }
            6 => {
                let _ = wire[who].pop_front();
            }
            7 => {
                if let Some(f) = wire[who].front().cloned() {
                    wire[who].push_back(f);
                }
            }
            8 => {
                // Reorder: the next frame goes to the back.
                if let Some(f) = wire[who].pop_front() {
                    wire[who].push_back(f);
                }
            }
            9 => {
                let at = usize::from(input.u16());
                let x = input.u8();
                if let Some(f) = wire[who].front_mut() {
                    if !f.is_empty() {
                        let i = at % f.len();
                        f[i] ^= x;
                    }
                }
            }
            10 => {
                let len = usize::from(input.u16()) % 1600;
                let mut f = input.bytes(len).to_vec();
                side.stack.handle_frame(now, &mut f);
            }
            11 => {
                let port = PORTS[usize::from(input.u8()) % PORTS.len()];
                let _ = side.stack.listen(port, usize::from(input.u8() % 8));
            }
            12 => {
                let port = PORTS[usize::from(input.u8()) % PORTS.len()];
                let _ = side.stack.unlisten(port);
            }
            13 => {
                let port = PORTS[usize::from(input.u8()) % PORTS.len()];
                let peer = ADDR[1 - who];
                let _ = if op & 0x40 == 0 {
                    side.stack.connect(now, peer, port).map(|_| ())
                } else {
                    let local = input.u16();
                    side.stack.connect_from(now, local, peer, port).map(|_| ())
                };
            }
            14 => {
                let pick = input.u8();
                let len = usize::from(input.u16()) % 20_000;
                if let Some(h) = side.handle(pick) {
                    let data = vec![0x61; len];
                    let _ = side.stack.send(h, &data);
                    let _ = side.stack.send_capacity(h);
                }
            }
            15 => {
                let pick = input.u8();
                let len = usize::from(input.u16()) % buf.len();
                if let Some(h) = side.handle(pick) {
                    let _ = side.stack.recv(h, &mut buf[..len]);
                    let _ = side.stack.at_eof(h);
                }
            }
            16 => {
                let pick = input.u8();
                let take = usize::from(input.u8());
                if let Some(h) = side.handle(pick) {
                    let _ = side.stack.recv_with(h, |d| take.min(d.len()));
                }
            }
            17 => {
                if let Some(h) = side.handle(input.u8()) {
                    let _ = side.stack.shutdown(h);
                }
            }
            18 => {
                if let Some(h) = side.handle(input.u8()) {
                    let _ = side.stack.close(h);
                    side.handles.retain(|&x| x != h);
                }
            }
            19 => {
                if let Some(h) = side.handle(input.u8()) {
                    let _ = side.stack.abort(h);
                    side.handles.retain(|&x| x != h);
                }
            }
            20 => {
                if let Some(h) = side.handle(input.u8()) {
                    let _ = side.stack.set_nodelay(h, op & 0x40 != 0);
                    let _ = side.stack.stats(h);
                    let _ = side.stack.tuple(h);
                }
            }
            21 => {
                // A stale handle must be refused, not trusted.
                if let Some(h) = side.handle(input.u8()) {
                    let _ = side.stack.abort(h);
                    side.handles.retain(|&x| x != h);
                    assert!(side.stack.send(h, b"x").is_err(), "aborted handle accepted data");
                }
            }
            22 => {
                // Write in place, reporting any length (capped by the engine).
                let pick = input.u8();
                let min = usize::from(input.u16()) % 20_000;
                let report = usize::from(input.u16());
                if let Some(h) = side.handle(pick) {
                    let _ = side.stack.send_with(h, min, |b| {
                        b.fill(0x62);
                        report
                    });
                }
            }
            23 => {
                // A shared chunk, refused whole or queued whole.
                let pick = input.u8();
                let len = usize::from(input.u16()) % 20_000;
                if let Some(h) = side.handle(pick) {
                    let chunk = Bytes::from(vec![0x63; len]);
                    let before = side.stack.send_capacity(h).unwrap_or(0);
                    match side.stack.send_chunk(h, chunk.clone()) {
                        Ok(()) => assert!(len <= before, "chunk over the free space accepted"),
                        Err(r) => assert_eq!(r.chunk, chunk, "refused chunk not given back"),
                    }
                }
            }
            _ => {
                // Time passes: small steps mostly, sometimes minutes.
                let step = u64::from(input.u8());
                now += if op & 0x40 == 0 {
                    Duration::from_millis(step * 4)
                } else {
                    Duration::from_secs(step)
                };
                for s in sides.iter_mut() {
                    if s.stack.poll_timeout().is_some_and(|t| t <= now) {
                        s.stack.handle_timeout(now);
                    }
                }
            }
        }
        for (i, s) in sides.iter_mut().enumerate() {
            s.events();
            s.stack.poll_transmit(now, &mut s.tx);
            while let Some(f) = s.tx.frames.pop_front() {
                assert!(f.len() <= 14 + 1500, "oversized frame {}", f.len());
                let q = &mut wire[1 - i];
                if q.len() >= WIRE_CAP {
                    q.pop_front();
                }
                q.push_back(f);
            }
        }
    }
    for s in &sides {
        assert!(s.stack.connection_count() <= 64);
    }
});
