//! Property tests: a TCB fed arbitrary segments, timeouts and socket calls never panics
//! and keeps its sequence-space invariants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Seg {
        dseq: i32,
        dack: i32,
        flags: u8,
        window: u16,
        len: usize,
        ts: Option<(i32, u32)>,
        sack: Vec<(i32, u32)>,
    },
    Tick(u32),
    Send(usize),
    Read(usize),
    Shutdown,
    Close,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            -70_000i32..70_000,
            -70_000i32..70_000,
            any::<u8>(),
            any::<u16>(),
            0usize..3000,
            proptest::option::of((-5i32..5, any::<u32>())),
            proptest::collection::vec((-70_000i32..70_000, 0u32..5000), 0..4),
        )
            .prop_map(|(dseq, dack, flags, window, len, ts, sack)| Op::Seg {
                dseq,
                dack,
                flags,
                window,
                len,
                ts,
                sack,
            }),
        2 => (0u32..5_000_000).prop_map(Op::Tick),
        2 => (0usize..100_000).prop_map(Op::Send),
        1 => (0usize..100_000).prop_map(Op::Read),
        1 => Just(Op::Shutdown),
        1 => Just(Op::Close),
        1 => Just(Op::Abort),
    ]
}

fn check(t: &Tcb, c: &ConnConfig) {
    assert!(
        t.snd_una <= t.snd_nxt || t.state == State::Closed,
        "una {:?} nxt {:?}",
        t.snd_una,
        t.snd_nxt
    );
    assert!(t.snd_nxt <= t.snd_max);
    assert!(t.rcv_buf.len() <= c.rcv_buf);
    assert!(t.snd_buf.len() <= c.snd_buf);
    // The SACK scoreboard only holds what is outstanding, within its limit, and holds
    // no memory once empty.
    if let (Some(first), Some(last)) = (t.sacked.ranges().first(), t.sacked.ranges().last()) {
        assert!(
            first.left >= t.snd_una && last.right <= t.snd_max,
            "{:?}",
            t.sacked
        );
    }
    assert!(t.sacked.len() <= scoreboard::MAX_RANGES);
    if t.sacked.is_empty() {
        assert_eq!(t.sacked.heap_bytes(), 0);
    }
}

fn run(start: State, ops: Vec<Op>) {
    let c = ConnConfig {
        rcv_buf: 16 * 1024,
        snd_buf: 16 * 1024,
        ..ConnConfig::default()
    };
    let mut now = Instant::from_millis(10_000);
    let mut ctr = Counters::default();
    let mut unlimited = TokenBucket::new(RateLimit::UNLIMITED, 0);
    let mut t = match start {
        State::Listen => Tcb::listen(&c, now, SeqNumber(7)),
        _ => Tcb::connect(&c, now, SeqNumber(u32::MAX - 1000)),
    };
    let mut buf = vec![0u8; 1500];
    let payload = vec![0xabu8; 3000];
    let mut peer_ts = 1000u32;
    // Give the connect side a peer: complete the handshake when asked.
    if start == State::Established {
        t.dispatch(&c, now, &mut buf, &mut ctr);
        let mut synack = TcpRepr {
            seq: SeqNumber(u32::MAX - 50),
            ack: t.iss + 1u32,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 1000,
            ..TcpRepr::default()
        };
        synack.options.timestamps = Some(TcpTimestamps {
            tsval: peer_ts,
            tsecr: 0,
        });
        synack.options.window_scale = Some(3);
        synack.options.sack_permitted = true;
        t.on_segment(&c, now, &synack, None, &mut unlimited, &mut ctr);
        assert_eq!(t.state, State::Established);
    }
    for op in ops {
        match op {
            Op::Seg {
                dseq,
                dack,
                flags,
                window,
                len,
                ts,
                sack,
            } => {
                let base = if t.rcv_nxt.0 == 0 {
                    SeqNumber(5000)
                } else {
                    t.rcv_nxt
                };
                let mut s = TcpRepr {
                    seq: SeqNumber(base.0.wrapping_add(dseq as u32)),
                    ack: SeqNumber(t.snd_una.0.wrapping_add(dack as u32)),
                    flags: TcpFlags::from_bits(flags & 0x3f),
                    window,
                    payload: &payload[..len],
                    ..TcpRepr::default()
                };
                if let Some((d, ecr)) = ts {
                    peer_ts = peer_ts.wrapping_add(d as u32);
                    s.options.timestamps = Some(TcpTimestamps {
                        tsval: peer_ts,
                        tsecr: ecr,
                    });
                }
                for (l, n) in sack {
                    let left = SeqNumber(t.snd_una.0.wrapping_add(l as u32));
                    s.options.sack_blocks.push(SackBlock {
                        left,
                        right: left + n,
                    });
                }
                let mut sink = |d: &[u8]| d.len() / 2;
                let _ = t.on_segment(&c, now, &s, Some(&mut sink), &mut unlimited, &mut ctr);
            }
            Op::Tick(us) => {
                now += Duration::from_micros(u64::from(us));
                if t.poll_timeout(&c).is_some_and(|d| d <= now) {
                    t.handle_timeout(&c, now, &mut ctr);
                }
            }
            Op::Send(n) => {
                let _ = t.send(&c, &vec![1u8; n]);
            }
            Op::Read(n) => {
                let mut b = vec![0u8; n];
                let _ = t.recv(&c, &mut b);
            }
            Op::Shutdown => t.shutdown(now),
            Op::Close => t.close(now),
            Op::Abort => t.abort(now),
        }
        let mut k = 0;
        while let Some(o) = t.dispatch(&c, now, &mut buf, &mut ctr) {
            assert!(o.payload_len <= buf.len());
            assert!(o.options.emitted_len() <= 40);
            k += 1;
            assert!(k < 10_000, "dispatch never ends");
        }
        check(&t, &c);
        let _ = t.take_events();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tcb_established_arbitrary_input_never_panics(ops in proptest::collection::vec(op(), 1..60)) {
        run(State::Established, ops);
    }

    #[test]
    fn tcb_listen_arbitrary_input_never_panics(ops in proptest::collection::vec(op(), 1..40)) {
        run(State::Listen, ops);
    }

    #[test]
    fn tcb_syn_sent_arbitrary_input_never_panics(ops in proptest::collection::vec(op(), 1..40)) {
        run(State::SynSent, ops);
    }
}

// Path MTU (kept here: tests.rs is near the module size limit).

fn established_pair() -> (Tcb, ConnConfig) {
    let c = ConnConfig::default();
    let now = Instant::from_millis(1000);
    let mut ctr = Counters::default();
    let mut unlimited = TokenBucket::new(RateLimit::UNLIMITED, 0);
    let mut a = Tcb::connect(&c, now, SeqNumber(100));
    let mut buf = vec![0u8; 1500];
    a.dispatch(&c, now, &mut buf, &mut ctr);
    let synack = TcpRepr {
        seq: SeqNumber(9000),
        ack: SeqNumber(101),
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: 65_535,
        options: TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        },
        ..TcpRepr::default()
    };
    a.on_segment(&c, now, &synack, None, &mut unlimited, &mut ctr);
    while a.dispatch(&c, now, &mut buf, &mut ctr).is_some() {}
    (a, c)
}

#[test]
fn established_icmp_frag_needed_shrinks_mss_and_resends() {
    let (mut a, c) = established_pair();
    let now = Instant::from_millis(1000);
    let mut ctr = Counters::default();
    let mut buf = vec![0u8; 1500];
    a.set_nodelay(true);
    a.send(&c, &[7u8; 3000]).unwrap();
    let first = a.dispatch(&c, now, &mut buf, &mut ctr).unwrap();
    assert_eq!(first.payload_len, 1460);
    while a.dispatch(&c, now, &mut buf, &mut ctr).is_some() {}
    assert!(
        !a.on_path_mtu(1000, SeqNumber(5)),
        "sequence not in flight: ignored"
    );
    assert!(a.on_path_mtu(1000, first.seq));
    assert_eq!(a.stats(&c).mss, 960);
    let again = a.dispatch(&c, now, &mut buf, &mut ctr).unwrap();
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.payload_len, 960);
    assert!(!a.on_path_mtu(1400, first.seq), "never grows");
}
