//! Header prediction against the general path: two worlds, each a pair of stacks
//! wired back to back with two connections, one with [`StackConfig::header_prediction`]
//! on and one with it off, get the same random operations (application writes, reads
//! and closes, bursts of frames delivered, dropped, duplicated, reordered or corrupted,
//! time passing). ACK coalescing (`ConnConfig::coalesce_acks`, on in both) decides
//! the same on both paths, so a burst's pure ACKs are coalesced alike. After every
//! burst both worlds must agree on everything: each
//! connection's whole TCB (state, sequence space, buffers, timers, RTT, congestion
//! window) and timer-wheel entry, the events, the bytes delivered to the application,
//! every counter, and the frames the next `poll_transmit` sends (so the same ACKs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::iface::VecTxQueue;
use crate::wire::EthernetAddress;
use proptest::prelude::*;

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const PORT: u16 = 7000;

/// What happens to one frame of a burst.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver,
    Drop,
    /// Delivered twice (the copy at once).
    Duplicate,
    /// Delivered after the next frame.
    Swap,
    /// One payload or header byte flipped (a bad checksum).
    Corrupt,
    /// Kept back and delivered with the next burst (an old segment by then).
    Delay,
}

#[derive(Debug, Clone, Copy)]
enum Sink {
    All,
    None,
    Half,
}

#[derive(Debug, Clone)]
enum Op {
    /// The application on side `a` (else b) writes `len` bytes on connection `conn`.
    Send {
        a: bool,
        conn: usize,
        len: usize,
    },
    /// The application reads up to `len` buffered bytes.
    Read {
        a: bool,
        conn: usize,
        len: usize,
    },
    /// One burst of what is queued towards side `a` (else b).
    Burst {
        to_a: bool,
        fates: Vec<Fate>,
        sink: Sink,
    },
    /// Time passes: timers run.
    Tick(u32),
    Shutdown {
        a: bool,
        conn: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let fate = prop_oneof![
        20 => Just(Fate::Deliver),
        1 => Just(Fate::Drop),
        1 => Just(Fate::Duplicate),
        1 => Just(Fate::Swap),
        1 => Just(Fate::Corrupt),
        1 => Just(Fate::Delay),
    ];
    let sink = prop_oneof![
        3 => Just(Sink::All),
        1 => Just(Sink::None),
        1 => Just(Sink::Half),
    ];
    prop_oneof![
        4 => (any::<bool>(), 0usize..2, 0usize..6000)
            .prop_map(|(a, conn, len)| Op::Send { a, conn, len }),
        1 => (any::<bool>(), 0usize..2, 0usize..20_000)
            .prop_map(|(a, conn, len)| Op::Read { a, conn, len }),
        8 => (any::<bool>(), proptest::collection::vec(fate, 0..40), sink)
            .prop_map(|(to_a, fates, sink)| Op::Burst { to_a, fates, sink }),
        2 => prop_oneof![0u32..5, 5u32..300, 300u32..3000].prop_map(Op::Tick),
        1 => (any::<bool>(), 0usize..2).prop_map(|(a, conn)| Op::Shutdown { a, conn }),
    ]
}

/// Connection settings the worlds share.
#[derive(Debug, Clone)]
struct Setup {
    timestamps: bool,
    sack: bool,
    delayed_ack: bool,
    window_scaling: bool,
    cubic: bool,
    rcv_buf: usize,
    mss: u16,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![2_000usize..8_000, 60_000usize..300_000],
        prop_oneof![Just(1460u16), 100u16..600],
    )
        .prop_map(
            |(timestamps, sack, delayed_ack, window_scaling, cubic, rcv_buf, mss)| Setup {
                timestamps,
                sack,
                delayed_ack,
                window_scaling,
                cubic,
                rcv_buf,
                mss,
            },
        )
}

struct World {
    a: Stack,
    b: Stack,
    now: Instant,
    to_a: Vec<Vec<u8>>,
    to_b: Vec<Vec<u8>>,
    late_a: Vec<Vec<u8>>,
    late_b: Vec<Vec<u8>>,
    conns_a: Vec<ConnHandle>,
    conns_b: Vec<ConnHandle>,
    /// Bytes the application got, per side and connection, through the sink or reads.
    got_a: [Vec<u8>; 2],
    got_b: [Vec<u8>; 2],
    events: Vec<(bool, Event)>,
    sent: u8,
}

fn stack(addr: Ipv4Addr, n: u8, s: &Setup, prediction: bool) -> Stack {
    let iface = InterfaceConfig::new(EthernetAddress([2, 0, 0, 0, 2, n]), addr, 24);
    let mut cfg = StackConfig::new(iface, [n; 16]);
    cfg.header_prediction = prediction;
    cfg.conn.timestamps = s.timestamps;
    cfg.conn.sack = s.sack;
    cfg.conn.delayed_ack = s.delayed_ack;
    cfg.conn.window_scaling = s.window_scaling;
    cfg.conn.congestion = if s.cubic {
        crate::cc::Algorithm::Cubic
    } else {
        crate::cc::Algorithm::NewReno
    };
    cfg.conn.rcv_buf = s.rcv_buf;
    cfg.conn.mss = s.mss;
    Stack::new(cfg)
}

impl World {
    fn new(s: &Setup, prediction: bool) -> World {
        let now = Instant::from_millis(5_000);
        let mut w = World {
            a: stack(A, 1, s, prediction),
            b: stack(B, 2, s, prediction),
            now,
            to_a: Vec::new(),
            to_b: Vec::new(),
            late_a: Vec::new(),
            late_b: Vec::new(),
            conns_a: Vec::new(),
            conns_b: Vec::new(),
            got_a: [Vec::new(), Vec::new()],
            got_b: [Vec::new(), Vec::new()],
            events: Vec::new(),
            sent: 0,
        };
        w.a.iface_mut()
            .insert_neighbor(now, B, EthernetAddress([2, 0, 0, 0, 2, 2]));
        w.b.iface_mut()
            .insert_neighbor(now, A, EthernetAddress([2, 0, 0, 0, 2, 1]));
        w.b.listen(PORT, 0).unwrap();
        for _ in 0..2 {
            let h = w.a.connect(now, B, PORT).unwrap();
            w.conns_a.push(h);
        }
        // Handshakes: everything delivered.
        for _ in 0..4 {
            w.flush();
            w.deliver(false, &[], Sink::All);
            w.flush();
            w.deliver(true, &[], Sink::All);
        }
        w.flush();
        assert_eq!(w.conns_b.len(), 2, "both connections accepted");
        w
    }

    /// Both stacks' `poll_transmit` (the end of a burst), and their events.
    fn flush(&mut self) {
        let mut tx = VecTxQueue::new();
        self.a.poll_transmit(self.now, &mut tx);
        self.to_b.extend(tx.frames.drain(..));
        self.b.poll_transmit(self.now, &mut tx);
        self.to_a.extend(tx.frames.drain(..));
        while let Some(ev) = self.a.poll_event() {
            self.events.push((true, ev));
        }
        while let Some(ev) = self.b.poll_event() {
            if let Event::Accepted { conn, .. } = ev {
                self.conns_b.push(conn);
            }
            self.events.push((false, ev));
        }
    }

    fn deliver(&mut self, to_a: bool, fates: &[Fate], sink: Sink) {
        let (queue, late) = if to_a {
            (&mut self.to_a, &mut self.late_a)
        } else {
            (&mut self.to_b, &mut self.late_b)
        };
        let mut frames: Vec<Vec<u8>> = core::mem::take(late);
        frames.append(queue);
        let mut burst = Vec::new();
        let mut i = 0;
        while i < frames.len() {
            let fate = fates.get(i).copied().unwrap_or(Fate::Deliver);
            let f = frames[i].clone();
            match fate {
                Fate::Deliver => burst.push(f),
                Fate::Drop => {}
                Fate::Duplicate => {
                    burst.push(f.clone());
                    burst.push(f);
                }
                Fate::Swap if i + 1 < frames.len() => {
                    burst.push(frames[i + 1].clone());
                    burst.push(f);
                    i += 1;
                }
                Fate::Swap => burst.push(f),
                Fate::Corrupt => {
                    let mut f = f;
                    let at = f.len() - 1 - (i * 7) % 20;
                    f[at] ^= 0x41;
                    burst.push(f);
                }
                Fate::Delay => late.push(f),
            }
            i += 1;
        }
        let (stack, handles, got) = if to_a {
            (&mut self.a, &self.conns_a, &mut self.got_a)
        } else {
            (&mut self.b, &self.conns_b, &mut self.got_b)
        };
        for mut f in burst {
            stack.handle_frame_with(self.now, &mut f, &mut |h, data| {
                let k = match sink {
                    Sink::All => data.len(),
                    Sink::None => 0,
                    Sink::Half => data.len() / 2,
                };
                if let Some(c) = handles.iter().position(|&x| x == h) {
                    got[c].extend_from_slice(&data[..k]);
                }
                k
            });
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Send { a, conn, len } => {
                self.sent = self.sent.wrapping_add(1);
                let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ self.sent).collect();
                let (s, hs) = if a {
                    (&mut self.a, &self.conns_a)
                } else {
                    (&mut self.b, &self.conns_b)
                };
                if let Some(&h) = hs.get(conn) {
                    let _ = s.send(h, &data);
                }
            }
            Op::Read { a, conn, len } => {
                let (s, hs, got) = if a {
                    (&mut self.a, &self.conns_a, &mut self.got_a)
                } else {
                    (&mut self.b, &self.conns_b, &mut self.got_b)
                };
                if let Some(&h) = hs.get(conn) {
                    let mut buf = vec![0u8; len];
                    if let Ok(n) = s.recv(h, &mut buf) {
                        got[conn].extend_from_slice(&buf[..n]);
                    }
                }
            }
            Op::Burst {
                to_a,
                ref fates,
                sink,
            } => self.deliver(to_a, fates, sink),
            Op::Tick(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
            Op::Shutdown { a, conn } => {
                let (s, hs) = if a {
                    (&mut self.a, &self.conns_a)
                } else {
                    (&mut self.b, &self.conns_b)
                };
                if let Some(&h) = hs.get(conn) {
                    let _ = s.shutdown(h);
                }
            }
        }
        self.flush();
    }
}

/// Everything a stack's behaviour depends on, as text: each connection's entry (the
/// whole TCB, its wheel entry and flags), the queues and every counter.
fn snapshot(s: &Stack) -> String {
    let mut out = String::new();
    for (id, tuple, e) in s.table.iter() {
        out.push_str(&format!("{id:?} {tuple:?} {e:?}\n"));
    }
    out.push_str(&format!(
        "events {:?}\ntx {:?}\nreplies {:?}\nnext {:?}\n{:?}\n{:?}\n",
        s.events,
        s.tx_ready,
        s.replies,
        s.poll_timeout(),
        StackStats {
            header_predicted: 0,
            ..s.counters()
        },
        InterfaceStats {
            tcp_rx_predicted: 0,
            ..s.iface.stats()
        }
    ));
    out
}

fn same(f: &World, g: &World, step: usize, op: &Op) {
    let ctx = || format!("after step {step}: {op:?}");
    assert_eq!(snapshot(&f.a), snapshot(&g.a), "side a, {}", ctx());
    assert_eq!(snapshot(&f.b), snapshot(&g.b), "side b, {}", ctx());
    assert_eq!(f.to_a, g.to_a, "frames to a, {}", ctx());
    assert_eq!(f.to_b, g.to_b, "frames to b, {}", ctx());
    assert_eq!(f.got_a, g.got_a, "bytes at a, {}", ctx());
    assert_eq!(f.got_b, g.got_b, "bytes at b, {}", ctx());
    assert_eq!(f.events, g.events, "events, {}", ctx());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_matches_general_path(
        s in setup(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut fast = World::new(&s, true);
        let mut general = World::new(&s, false);
        same(&fast, &general, 0, &Op::Tick(0));
        for (i, op) in ops.iter().enumerate() {
            fast.apply(op);
            general.apply(op);
            same(&fast, &general, i + 1, op);
        }
    }
}

/// The predicted path really runs in these worlds (so the property above compares
/// something): a stream of in-order data and its ACKs is taken by prediction.
#[test]
fn prediction_is_exercised() {
    let s = Setup {
        timestamps: true,
        sack: true,
        delayed_ack: true,
        window_scaling: true,
        cubic: true,
        rcv_buf: 200_000,
        mss: 1460,
    };
    let mut fast = World::new(&s, true);
    let mut general = World::new(&s, false);
    for w in [&mut fast, &mut general] {
        for round in 0..24 {
            if round < 20 {
                // Nagle holds each write's short tail until the ACK: later rounds
                // deliver the last one.
                w.apply(&Op::Send {
                    a: true,
                    conn: 0,
                    len: 3000,
                });
            }
            w.apply(&Op::Burst {
                to_a: false,
                fates: Vec::new(),
                sink: Sink::All,
            });
            w.apply(&Op::Burst {
                to_a: true,
                fates: Vec::new(),
                sink: Sink::All,
            });
        }
    }
    assert_eq!(fast.got_b[0].len(), 60_000);
    assert_eq!(snapshot(&fast.b), snapshot(&general.b));
    assert_eq!(snapshot(&fast.a), snapshot(&general.a));
    assert!(
        fast.b.counters().header_predicted > 20,
        "data predicted at b"
    );
    assert!(
        fast.a.counters().header_predicted > 10,
        "ACKs predicted at a"
    );
    assert_eq!(general.b.counters().header_predicted, 0);
    // ACK coalescing decides the same on both paths: exercised, and equally.
    assert!(fast.a.counters().acks_coalesced > 10, "ACKs coalesced at a");
    assert_eq!(
        fast.a.counters().acks_coalesced,
        general.a.counters().acks_coalesced
    );
}
