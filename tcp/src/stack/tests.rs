//! Stack tests: two stacks wired back to back, frames moved by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::iface::VecTxQueue;
use crate::wire::EthernetAddress;

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

fn mk(addr: Ipv4Addr, n: u8, tweak: impl FnOnce(&mut StackConfig)) -> Stack {
    let iface = InterfaceConfig::new(EthernetAddress([2, 0, 0, 0, 1, n]), addr, 24);
    let mut cfg = StackConfig::new(iface, [n; 16]);
    tweak(&mut cfg);
    Stack::new(cfg)
}

fn pair() -> (Stack, Stack) {
    (mk(A, 1, |_| {}), mk(B, 2, |_| {}))
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(1000 + ms)
}

/// Frames out of `s`.
fn out(s: &mut Stack, now: Instant) -> Vec<Vec<u8>> {
    let mut tx = VecTxQueue::new();
    s.poll_transmit(now, &mut tx);
    tx.frames.into_iter().collect()
}

/// Moves frames both ways until neither side sends anything.
fn exchange(a: &mut Stack, b: &mut Stack, now: Instant) {
    for _ in 0..10_000 {
        let fa = out(a, now);
        let fb = out(b, now);
        if fa.is_empty() && fb.is_empty() {
            return;
        }
        for mut f in fa {
            b.handle_frame(now, &mut f);
        }
        for mut f in fb {
            a.handle_frame(now, &mut f);
        }
    }
    panic!("exchange did not settle");
}

/// Runs `s`'s timers (and exchanges frames) until `done` or `limit`; returns the time.
fn run_until(
    a: &mut Stack,
    b: &mut Stack,
    from: Instant,
    limit: Instant,
    mut done: impl FnMut(&mut Stack, &mut Stack) -> bool,
) -> Instant {
    let mut now = from;
    while !done(a, b) {
        let next = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        now = now.max(next);
        assert!(now <= limit, "limit reached");
        a.handle_timeout(now);
        b.handle_timeout(now);
        exchange(a, b, now);
    }
    now
}

fn events(s: &mut Stack) -> Vec<Event> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

fn accepted(evs: &[Event]) -> Option<ConnHandle> {
    evs.iter().find_map(|e| match e {
        Event::Accepted { conn, .. } => Some(*conn),
        _ => None,
    })
}

fn connected() -> (Stack, Stack, ConnHandle, ConnHandle) {
    let (mut a, mut b) = pair();
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    assert!(events(&mut a).contains(&Event::Established(ha)));
    let hb = accepted(&events(&mut b)).expect("accepted");
    (a, b, ha, hb)
}

fn read_all(s: &mut Stack, h: ConnHandle) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.recv(h, &mut buf).unwrap();
        if n == 0 {
            return v;
        }
        v.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn stack_connect_accept_exchange_data_and_close() {
    let (mut a, mut b, ha, hb) = connected();
    assert_eq!(a.send(ha, b"ping").unwrap(), 4);
    exchange(&mut a, &mut b, t(1));
    assert!(events(&mut b).contains(&Event::Readable(hb)));
    assert_eq!(read_all(&mut b, hb), b"ping");
    b.send(hb, b"pong").unwrap();
    exchange(&mut a, &mut b, t(2));
    assert_eq!(read_all(&mut a, ha), b"pong");
    a.shutdown(ha).unwrap();
    exchange(&mut a, &mut b, t(3));
    assert!(events(&mut b).contains(&Event::PeerClosed(hb)));
    assert!(b.at_eof(hb).unwrap());
    b.close(hb).unwrap();
    exchange(&mut a, &mut b, t(4));
    assert!(events(&mut a).contains(&Event::Closed(ha)));
    assert_eq!(b.connection_count(), 0, "LAST-ACK side freed");
    assert_eq!(a.connection_count(), 1, "TIME-WAIT kept");
    assert_eq!(a.counters().time_wait, 1);
    let at = run_until(&mut a, &mut b, t(4), t(200_000), |a, _| {
        a.connection_count() == 0
    });
    assert!(at >= t(4) + Duration::from_secs(60), "2 MSL");
    assert_eq!(a.connection_count(), 0);
    assert_eq!(a.counters().time_wait, 0);
    assert_eq!(a.send(ha, b"x"), Err(SocketError::Closed), "stale handle");
}

#[test]
fn stack_closed_port_answered_with_rst_and_reset_event() {
    let (mut a, mut b) = pair();
    let ha = a.connect(t(0), B, 81).unwrap();
    exchange(&mut a, &mut b, t(0));
    assert_eq!(b.counters().no_listener, 1);
    assert!(events(&mut a).contains(&Event::Reset(ha)));
    assert_eq!(a.connection_count(), 0);
}

#[test]
fn stack_closed_port_policy_drop_sends_nothing() {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| c.iface.closed_port = ClosedPortPolicy::Drop);
    let ha = a.connect(t(0), B, 81).unwrap();
    exchange(&mut a, &mut b, t(0));
    assert_eq!(b.counters().no_listener, 1);
    assert_eq!(b.counters().conn.resets_sent, 0);
    assert!(events(&mut a).is_empty());
    assert_eq!(a.stats(ha).unwrap().state, State::SynSent);
}

#[test]
fn stack_closed_port_policy_icmp_sends_port_unreachable() {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| {
        c.iface.closed_port = ClosedPortPolicy::IcmpUnreachable
    });
    a.connect(t(0), B, 81).unwrap();
    exchange(&mut a, &mut b, t(0));
    assert_eq!(b.iface_stats().icmp_unreachable_tx, 1);
    assert_eq!(a.counters().icmp_errors, 1);
}

/// `a` connects to five closed ports of `b`, whose closed-port replies (by `policy`)
/// are limited to a burst of 2 and 1 per second.
fn five_syns_to_closed_ports(policy: ClosedPortPolicy) -> (Stack, Stack) {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| {
        c.iface.closed_port = policy;
        c.closed_port_reply_limit = RateLimit {
            per_sec: 1,
            burst: 2,
            randomize: false,
        };
    });
    for port in 81..86 {
        a.connect(t(0), B, port).unwrap();
    }
    exchange(&mut a, &mut b, t(0));
    assert_eq!(b.counters().no_listener, 5);
    assert_eq!(b.counters().replies_rate_limited, 3);
    (a, b)
}

#[test]
fn stack_closed_port_rsts_beyond_reply_limit_dropped_and_counted() {
    let (mut a, mut b) = five_syns_to_closed_ports(ClosedPortPolicy::Rst);
    assert_eq!(b.counters().conn.resets_sent, 2);
    let resets = events(&mut a)
        .iter()
        .filter(|e| matches!(e, Event::Reset(_)))
        .count();
    assert_eq!(resets, 2);
    // A second later the bucket has one more token.
    a.connect(t(1000), B, 90).unwrap();
    exchange(&mut a, &mut b, t(1000));
    assert_eq!(b.counters().conn.resets_sent, 3);
}

#[test]
fn stack_closed_port_icmp_beyond_reply_limit_dropped_and_counted() {
    let (_, b) = five_syns_to_closed_ports(ClosedPortPolicy::IcmpUnreachable);
    assert_eq!(b.iface_stats().icmp_unreachable_tx, 2);
}

#[test]
fn stack_challenge_ack_limit_shared_by_connections() {
    let (mut a, mut b) = pair();
    b.cfg.challenge_ack_limit = RateLimit::per_second(1);
    b.challenge = TokenBucket::new(b.cfg.challenge_ack_limit, 0);
    b.listen(80, 0).unwrap();
    let h1 = a.connect(t(0), B, 80).unwrap();
    let h2 = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    // A SYN on each established tuple (RFC 5961 4.2) draws a challenge ACK; the second
    // one is over the stack-wide budget of 1.
    for h in [h1, h2] {
        let tuple = *a.table.tuple(h.0).unwrap();
        let snd_nxt = a.table.get(h.0).unwrap().tcb.snd_nxt();
        let syn = TcpRepr {
            src_port: tuple.local_port,
            dst_port: tuple.remote_port,
            // In window, so that it is the SYN rule and not the sequence check.
            seq: snd_nxt,
            flags: TcpFlags::SYN,
            window: 1000,
            ..TcpRepr::default()
        };
        let mut tx = VecTxQueue::new();
        a.iface
            .send_tcp(t(1), &mut tx, tuple.local_addr, tuple.remote_addr, &syn);
        for mut f in tx.frames {
            b.handle_frame(t(1), &mut f);
        }
    }
    assert_eq!(b.counters().conn.challenge_acks, 1);
    assert_eq!(b.counters().conn.challenge_acks_suppressed, 1);
}

#[test]
fn stack_listen_twice_in_use() {
    let (_, mut b) = pair();
    b.listen(80, 0).unwrap();
    assert_eq!(b.listen(80, 0), Err(ListenError::InUse));
    assert_eq!(b.listen(0, 0), Err(ListenError::InvalidPort));
}

#[test]
fn stack_syn_backlog_full_cookie_handshake_connects() {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| c.syn_backlog = 0);
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    assert_eq!(b.counters().syn_cookies_sent, 1);
    assert_eq!(b.counters().syn_cookies_validated, 1);
    assert!(events(&mut a).contains(&Event::Established(ha)));
    let hb = accepted(&events(&mut b)).expect("accepted from cookie");
    a.send(ha, &[1u8; 5000]).unwrap();
    exchange(&mut a, &mut b, t(1));
    assert_eq!(read_all(&mut b, hb).len(), 5000);
    b.send(hb, &[2u8; 5000]).unwrap();
    exchange(&mut a, &mut b, t(2));
    assert_eq!(read_all(&mut a, ha).len(), 5000);
    let st = b.stats(hb).unwrap();
    assert_eq!(st.state, State::Established);
}

#[test]
fn stack_forged_cookie_ack_answered_with_rst() {
    let (mut a, mut b) = pair();
    b.listen(80, 0).unwrap();
    // A bare ACK to the listener with a made-up cookie.
    let tuple = FourTuple {
        local_addr: B,
        local_port: 80,
        remote_addr: A,
        remote_port: 5555,
    };
    let seg = TcpRepr {
        seq: SeqNumber(100),
        ack: SeqNumber(12345),
        flags: TcpFlags::ACK,
        window: 1000,
        ..TcpRepr::default()
    };
    b.on_listener(t(0), tuple, &seg);
    assert_eq!(b.counters().syn_cookies_invalid, 1);
    assert_eq!(b.connection_count(), 0);
    let f = out(&mut b, t(0));
    assert_eq!(f.len(), 1, "ARP request (reply waits for resolution)");
    let _ = &mut a;
}

#[test]
fn stack_accept_backlog_full_resets_extra_connections() {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| c.syn_cookies = false);
    b.listen(80, 1).unwrap();
    let h1 = a.connect(t(0), B, 80).unwrap();
    let h2 = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    let ea = events(&mut a);
    assert!(ea.contains(&Event::Established(h1)) || ea.contains(&Event::Established(h2)));
    assert!(
        ea.contains(&Event::Reset(h1)) || ea.contains(&Event::Reset(h2)),
        "{ea:?}"
    );
    assert_eq!(b.counters().accept_backlog_drops, 1);
    let eb = events(&mut b);
    assert_eq!(
        eb.iter()
            .filter(|e| matches!(e, Event::Accepted { .. }))
            .count(),
        1
    );
}

#[test]
fn stack_accept_backlog_counts_each_connection_once() {
    let mut a = mk(A, 1, |_| {});
    let mut b = mk(B, 2, |c| c.syn_cookies = false);
    b.listen(80, 2).unwrap();
    let h1 = a.connect(t(0), B, 80).unwrap();
    let h2 = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    // Traffic on the unannounced connections must not use up the backlog.
    a.send(h1, b"one").unwrap();
    a.send(h2, b"two").unwrap();
    exchange(&mut a, &mut b, t(1));
    assert_eq!(b.listeners[&80].unannounced, 2);
    let eb = events(&mut b);
    assert_eq!(
        eb.iter()
            .filter(|e| matches!(e, Event::Accepted { .. }))
            .count(),
        2
    );
    assert_eq!(b.listeners[&80].unannounced, 0);
    assert_eq!(b.counters().accept_backlog_drops, 0);
    let h3 = a.connect(t(2), B, 80).unwrap();
    exchange(&mut a, &mut b, t(2));
    assert!(events(&mut a).contains(&Event::Established(h3)));
}

#[test]
fn stack_events_coalesced_per_connection() {
    let (mut a, mut b, ha, hb) = connected();
    a.set_nodelay(ha, true).unwrap();
    for i in 0..10u8 {
        a.send(ha, &[i]).unwrap();
        exchange(&mut a, &mut b, t(1));
    }
    let evs = events(&mut b);
    assert_eq!(evs, vec![Event::Readable(hb)], "ten arrivals, one event");
    assert_eq!(read_all(&mut b, hb), (0..10u8).collect::<Vec<_>>());
}

#[test]
fn stack_zero_copy_sink_consumes_from_frame() {
    let (mut a, mut b, ha, hb) = connected();
    a.send(ha, b"zero-copy payload").unwrap();
    let mut got = Vec::new();
    for mut f in out(&mut a, t(1)) {
        b.handle_frame_with(t(1), &mut f, &mut |h, d| {
            assert_eq!(h, hb);
            got.extend_from_slice(d);
            d.len()
        });
    }
    assert_eq!(got, b"zero-copy payload");
    assert_eq!(
        read_all(&mut b, hb),
        b"",
        "nothing was copied into the ring"
    );
}

#[test]
fn stack_lost_syn_retransmitted_by_timer() {
    let (mut a, mut b) = pair();
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    // Resolve ARP, then lose the SYN.
    let mut lost_syn = false;
    for _ in 0..4 {
        for mut f in out(&mut a, t(0)) {
            if f.len() > 60 && !lost_syn {
                lost_syn = true;
                continue;
            }
            b.handle_frame(t(0), &mut f);
        }
        for mut f in out(&mut b, t(0)) {
            a.handle_frame(t(0), &mut f);
        }
    }
    assert!(lost_syn);
    assert!(events(&mut a).is_empty());
    let mut est = false;
    let at = run_until(&mut a, &mut b, t(0), t(5000), |a, _| {
        est |= events(a).contains(&Event::Established(ha));
        est
    });
    assert!(at >= t(1000), "initial RTO is 1 s");
    assert_eq!(a.counters().conn.retransmits, 1);
}

#[test]
fn stack_time_wait_newer_syn_reuses_tuple() {
    let (mut a, mut b, ha, hb) = connected();
    let tuple = a.tuple(ha).unwrap();
    // b closes first, so b holds TIME_WAIT.
    b.close(hb).unwrap();
    exchange(&mut a, &mut b, t(1));
    a.close(ha).unwrap();
    exchange(&mut a, &mut b, t(2));
    assert_eq!(b.counters().time_wait, 1);
    assert_eq!(a.connection_count(), 0);
    a.listen(9, 0).unwrap(); // keep a's port chooser honest
    let h2 = a.connect_from(t(5000), tuple.local_port, B, 80).unwrap();
    exchange(&mut a, &mut b, t(5000));
    assert_eq!(b.counters().time_wait_reused, 1);
    assert!(events(&mut a).contains(&Event::Established(h2)));
}

#[test]
fn stack_time_wait_cap_drops_extra_entries() {
    let mut a = mk(A, 1, |c| c.time_wait_cap = 0);
    let mut b = mk(B, 2, |_| {});
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    let hb = accepted(&events(&mut b)).unwrap();
    a.close(ha).unwrap();
    exchange(&mut a, &mut b, t(1));
    b.close(hb).unwrap();
    exchange(&mut a, &mut b, t(2));
    assert_eq!(a.counters().time_wait_drops, 1);
    assert_eq!(a.connection_count(), 0);
}

#[test]
fn stack_port_filter_steers_local_port() {
    fn even(t: &FourTuple) -> bool {
        t.local_port & 1 == 0
    }
    let mut a = mk(A, 1, |c| {
        c.port_filter = Some(even);
        c.ephemeral_ports = (40_001, 40_010);
    });
    for _ in 0..5 {
        let h = a.connect(t(0), B, 80).unwrap();
        assert_eq!(a.tuple(h).unwrap().local_port & 1, 0);
    }
    assert_eq!(a.connect(t(0), B, 80), Err(ConnectError::NoFreePort));
}

#[test]
fn stack_abort_sends_rst_and_peer_gets_reset() {
    let (mut a, mut b, ha, hb) = connected();
    a.abort(ha).unwrap();
    exchange(&mut a, &mut b, t(1));
    assert!(events(&mut b).contains(&Event::Reset(hb)));
    assert_eq!(a.connection_count(), 0);
    assert_eq!(b.connection_count(), 0);
    assert!(events(&mut a).is_empty(), "no events after abort");
}

#[test]
fn stack_conn_stats_report_progress() {
    let (mut a, mut b, ha, hb) = connected();
    a.send(ha, &[0u8; 10_000]).unwrap();
    exchange(&mut a, &mut b, t(1));
    // The Nagle-held tail waits for the delayed ACK.
    run_until(&mut a, &mut b, t(1), t(1000), |a, _| {
        a.stats(ha).unwrap().bytes_out == 10_000
    });
    let sa = a.stats(ha).unwrap();
    let sb = b.stats(hb).unwrap();
    assert_eq!(sa.bytes_out, 10_000);
    assert_eq!(sb.bytes_in, 10_000);
    assert_eq!(sa.state, State::Established);
    assert!(sa.cwnd >= 10 * 1448);
    assert!(a.counters().segments_out >= 8);
}

#[test]
fn stack_small_mtu_connects() {
    let mut a = mk(A, 1, |c| c.iface.mtu = 576);
    let mut b = mk(B, 2, |c| c.iface.mtu = 576);
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    let ev = events(&mut a);
    assert!(
        ev.contains(&Event::Established(ha)),
        "{ev:?} {:?} {:?} {:?} {:?}",
        a.counters(),
        a.iface_stats(),
        b.counters(),
        b.iface_stats()
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A stack fed real frames with arbitrary bit flips, truncations and injected
        /// garbage, interleaved with timeouts and socket calls, never panics.
        #[test]
        fn stack_mangled_frames_never_panic(
            muts in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<bool>(), 0u16..2000), 1..40),
            junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..5),
        ) {
            let (mut a, mut b) = pair();
            b.listen(80, 0).unwrap();
            let ha = a.connect(t(0), B, 80).unwrap();
            let mut now = t(0);
            for (i, (pos, x, trunc, adv)) in muts.into_iter().enumerate() {
                let _ = a.send(ha, &[i as u8; 700]);
                for mut f in out(&mut a, now) {
                    let p = usize::from(pos) % f.len().max(1);
                    if let Some(byte) = f.get_mut(p) {
                        *byte ^= x;
                    }
                    if trunc {
                        f.truncate(p);
                    }
                    b.handle_frame(now, &mut f);
                }
                for mut f in out(&mut b, now) {
                    a.handle_frame(now, &mut f);
                }
                while let Some(ev) = b.poll_event() {
                    if let Event::Accepted { conn, .. } = ev {
                        let _ = b.send(conn, b"hello");
                    }
                }
                let _ = a.poll_event();
                now += Duration::from_millis(u64::from(adv));
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
            for mut j in junk {
                b.handle_frame(now, &mut j);
            }
            let _ = out(&mut b, now);
        }
    }
}

#[test]
fn stack_idle_connection_entry_under_one_kib() {
    let size = core::mem::size_of::<Entry>();
    println!("stack table entry: {size} bytes");
    assert!(size < 1024, "Entry is {size} bytes");
    // Idle: no buffers allocated after the data is read and acknowledged.
    let (mut a, mut b, ha, hb) = connected();
    a.send(ha, b"x").unwrap();
    exchange(&mut a, &mut b, t(1));
    assert_eq!(read_all(&mut b, hb), b"x");
    run_until(&mut a, &mut b, t(1), t(1000), |a, _| {
        a.stats(ha).unwrap().bytes_out == 1
    });
    let e = b.table.get(hb.0).unwrap();
    assert_eq!(e.tcb.recv_queue(), 0);
    assert_eq!(a.table.get(ha.0).unwrap().tcb.send_queue(), 0);
}

#[test]
fn stack_mutable_sink_edits_payload_in_frame_unconsumed_tail_buffered_as_left() {
    let (mut a, mut b, ha, hb) = connected();
    a.send(ha, b"hello world").unwrap();
    let mut seen = Vec::new();
    for mut f in out(&mut a, t(1)) {
        let frame_range = f.as_ptr_range();
        b.handle_frame_with(t(1), &mut f, &mut |h, d| {
            assert_eq!(h, hb);
            // The payload is lent inside the RX frame itself, mutably.
            let r = d.as_ptr_range();
            assert!(frame_range.start <= r.start && r.end <= frame_range.end);
            // Consume (and edit, like WebSocket unmasking) the first word only.
            d[..5].make_ascii_uppercase();
            seen.extend_from_slice(&d[..5]);
            5
        });
    }
    assert_eq!(seen, b"HELLO");
    assert!(events(&mut b).contains(&Event::Readable(hb)));
    assert_eq!(read_all(&mut b, hb), b" world", "the tail was buffered");
}

#[test]
fn stack_sink_not_offered_while_receive_buffer_holds_data_order_kept() {
    let (mut a, mut b, ha, hb) = connected();
    a.set_nodelay(ha, true).unwrap();
    a.send(ha, b"first").unwrap();
    for mut f in out(&mut a, t(1)) {
        b.handle_frame_with(t(1), &mut f, &mut |_, _| 0);
    }
    a.send(ha, b"second").unwrap();
    let mut offered = 0;
    for mut f in out(&mut a, t(2)) {
        b.handle_frame_with(t(2), &mut f, &mut |_, d| {
            offered += d.len();
            d.len()
        });
    }
    assert_eq!(offered, 0, "buffered data first: nothing offered");
    assert_eq!(read_all(&mut b, hb), b"firstsecond");
}

#[test]
fn stack_send_with_writes_in_place_and_refuses_below_min() {
    let (mut a, mut b, ha, hb) = connected();
    let n = a
        .send_with(ha, 4, |buf| {
            assert!(buf.len() >= 4);
            buf[..4].copy_from_slice(b"abcd");
            4
        })
        .unwrap();
    assert_eq!(n, 4);
    let cap = a.send_capacity(ha).unwrap();
    let called = a
        .send_with(ha, cap + 1, |_| panic!("must not be called"))
        .unwrap();
    assert_eq!(called, 0);
    exchange(&mut a, &mut b, t(1));
    assert_eq!(read_all(&mut b, hb), b"abcd");
    // After shutdown the send side refuses.
    a.shutdown(ha).unwrap();
    assert_eq!(a.send_with(ha, 1, |_| 1), Err(SocketError::InvalidState));
}

#[test]
fn stack_send_chunk_interleaves_with_owned_bytes_and_refuses_whole() {
    let (mut a, mut b) = (mk(A, 1, |c| c.conn.snd_buf = 64), mk(B, 2, |_| {}));
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    let hb = accepted(&events(&mut b)).unwrap();
    a.send(ha, b"<").unwrap();
    let chunk = Bytes::from(vec![b'x'; 40]);
    a.send_chunk(ha, chunk.clone()).unwrap();
    a.send(ha, b">").unwrap();
    // 42 queued, 22 free: a 30-byte chunk is refused whole and given back.
    let big = Bytes::from(vec![b'y'; 30]);
    let refused = a.send_chunk(ha, big.clone()).unwrap_err();
    assert_eq!(refused.reason, SocketError::NoRoom);
    assert_eq!(refused.chunk, big);
    assert_eq!(a.send_capacity(ha).unwrap(), 22);
    exchange(&mut a, &mut b, t(1));
    let mut want = b"<".to_vec();
    want.extend_from_slice(&chunk);
    want.push(b'>');
    assert_eq!(read_all(&mut b, hb), want);
    // Acknowledged (after the delayed ACK): the queue let go of the chunk.
    run_until(&mut a, &mut b, t(1), t(1000), |a, _| {
        a.send_capacity(ha).unwrap() == 64
    });
    let e = a.table.get(ha.0).unwrap();
    assert_eq!(e.tcb.send_queue(), 0);
    // A stale handle gives the chunk back too.
    a.abort(ha).unwrap();
    let r = a.send_chunk(ha, big.clone()).unwrap_err();
    assert_eq!((r.reason, r.chunk), (SocketError::Closed, big));
}

#[test]
fn stack_send_chunk_lost_segment_retransmitted_from_chunk_byte_exact() {
    let (mut a, mut b, ha, hb) = connected();
    let msg: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let chunk = Bytes::from(msg.clone());
    a.send_chunk(ha, chunk.clone()).unwrap();
    // Lose the first data segment; the rest arrive out of order.
    let mut frames = out(&mut a, t(1));
    assert!(
        frames.len() >= 3,
        "5000 bytes take several segments: {}",
        frames.len()
    );
    frames.remove(0);
    for mut f in frames {
        b.handle_frame(t(1), &mut f);
    }
    let mut got = Vec::new();
    run_until(&mut a, &mut b, t(1), t(60_000), |a, b| {
        got.extend(read_all(b, hb));
        got.len() == 5000 && a.send_capacity(ha).unwrap() == a.config().conn.snd_buf
    });
    assert!(a.stats(ha).unwrap().retransmits > 0);
    assert_eq!(got, msg);
}

#[test]
fn stack_errors_display_and_are_std_errors() {
    fn is_error<E: std::error::Error>(e: E) -> String {
        e.to_string()
    }
    assert_eq!(is_error(SocketError::Closed), "connection closed");
    assert!(!is_error(ConnectError::NoFreePort).is_empty());
    assert!(!is_error(ListenError::InUse).is_empty());
    let r = ChunkRefused {
        chunk: Bytes::from_static(b"abc"),
        reason: SocketError::NoRoom,
    };
    assert!(is_error(r).contains("3 bytes"));
}

#[cfg(feature = "copy-count")]
#[test]
fn stack_copy_count_chunk_copied_once_per_frame_owned_bytes_twice_sink_none() {
    use crate::copy_count::{reset, snapshot};
    let (mut a, mut b, ha, hb) = connected();
    a.set_nodelay(ha, true).unwrap();
    // A shared 64-byte chunk: no copy until the TX frame, one copy into it.
    reset();
    a.send_chunk(ha, Bytes::from(vec![7u8; 64])).unwrap();
    let frames = out(&mut a, t(1));
    let c = snapshot();
    assert_eq!((c.send_buffer, c.tx_frame, c.tx_frame_bytes), (0, 1, 64));
    // Consumed whole by the sink in the RX frame: no copy on the receive side.
    reset();
    for mut f in frames {
        b.handle_frame_with(t(1), &mut f, &mut |_, d| d.len());
    }
    assert_eq!(snapshot().total(), 0);
    // Owned bytes written in place: the write into the send buffer, then the TX frame.
    reset();
    b.send_with(hb, 64, |buf| {
        buf[..64].fill(1);
        64
    })
    .unwrap();
    let frames = out(&mut b, t(2));
    let c = snapshot();
    assert_eq!((c.send_buffer, c.tx_frame), (1, 1));
    // `send` copies into the ring; a sink that leaves bytes makes a receive copy.
    reset();
    for mut f in frames {
        a.handle_frame_with(t(2), &mut f, &mut |_, _| 0);
    }
    let c = snapshot();
    assert_eq!((c.recv_buffer, c.recv_buffer_bytes), (1, 64));
    a.send(ha, &[2u8; 10]).unwrap();
    assert_eq!(snapshot().send_buffer, 1);
}

#[test]
fn stack_sink_answers_through_conn_tx_while_payload_is_lent() {
    let (mut a, mut b, ha, hb) = connected();
    a.set_nodelay(ha, true).unwrap();
    b.set_nodelay(hb, true).unwrap();
    a.send(ha, b"echo me").unwrap();
    for mut f in out(&mut a, t(1)) {
        b.handle_frame_with_tx(t(1), &mut f, &mut |h, d, tx| {
            assert_eq!(h, hb);
            let free = tx.send_capacity();
            let n = tx
                .send_with(d.len(), |buf| {
                    buf[..d.len()].copy_from_slice(d);
                    d.len()
                })
                .unwrap();
            assert_eq!(tx.send_capacity(), free - n);
            tx.send_chunk(Bytes::from_static(b"!")).unwrap();
            d.len()
        });
    }
    exchange(&mut a, &mut b, t(2));
    assert_eq!(read_all(&mut a, ha), b"echo me!");
}

#[cfg(feature = "copy-count")]
#[test]
fn stack_copy_count_echo_from_sink_two_copies_rx_frame_send_buffer_tx_frame() {
    use crate::copy_count::{reset, snapshot};
    let (mut a, mut b, ha, hb) = connected();
    a.set_nodelay(ha, true).unwrap();
    b.set_nodelay(hb, true).unwrap();
    a.send(ha, &[9u8; 64]).unwrap();
    let frames = out(&mut a, t(1));
    reset();
    for mut f in frames {
        b.handle_frame_with_tx(t(1), &mut f, &mut |_, d, tx| {
            tx.send_with(d.len(), |buf| {
                buf[..d.len()].copy_from_slice(d);
                d.len()
            })
            .unwrap();
            d.len()
        });
    }
    let _ = out(&mut b, t(1));
    let c = snapshot();
    assert_eq!(c.total(), 2, "{c:?}");
    assert_eq!((c.send_buffer_bytes, c.tx_frame_bytes), (64, 64));
}

/// Batch-aware ACKs: a burst of in-order full-sized segments, handed over back to back
/// as a worker does with an RX batch, is answered by one ACK at the end of the burst
/// (RFC 1122 4.2.3.2 allows one ACK for every second full segment or more) carrying the
/// final acknowledgment number: taken by header prediction or by the general path alike.
#[test]
fn stack_burst_of_segments_gets_one_ack() {
    for prediction in [true, false] {
        let mut a = mk(A, 1, |c| c.header_prediction = prediction);
        let mut b = mk(B, 2, |c| c.header_prediction = prediction);
        b.listen(80, 0).unwrap();
        let ha = a.connect(t(0), B, 80).unwrap();
        exchange(&mut a, &mut b, t(0));
        let hb = accepted(&events(&mut b)).expect("accepted");
        let _ = events(&mut a);
        // Full-sized segments: the MSS less the timestamps option.
        let mss = usize::from(b.config().conn.mss) - 12;
        assert_eq!(a.send(ha, &vec![7u8; 8 * mss]).unwrap(), 8 * mss);
        let burst = out(&mut a, t(1));
        assert_eq!(burst.len(), 8, "eight full segments in the initial window");
        for mut f in burst {
            b.handle_frame(t(1), &mut f);
        }
        let acks = out(&mut b, t(1));
        assert_eq!(
            acks.len(),
            1,
            "one ACK for the burst (prediction {prediction})"
        );
        let tcp = &acks[0][34..];
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let snd_nxt = a.table.get(ha.0).unwrap().tcb.snd_nxt();
        assert_eq!(ack, snd_nxt.0, "the final ACK");
        assert_eq!(read_all(&mut b, hb).len(), 8 * mss);
        assert_eq!(
            b.counters().header_predicted > 0,
            prediction,
            "prediction {prediction}"
        );
    }
}

/// A connection from `a` (ACK coalescing `coalesce`) to `b` (delayed ACK off, so one
/// pure ACK per segment), established, with `b`'s application consuming what it is
/// offered (so its window stays put and its ACKs are predicted at `a`).
fn coalescing_pair(coalesce: bool, tweak: impl Fn(&mut StackConfig)) -> (Stack, Stack, ConnHandle) {
    let mut a = mk(A, 1, |c| {
        c.conn.coalesce_acks = coalesce;
        tweak(c);
    });
    let mut b = mk(B, 2, |c| c.conn.delayed_ack = false);
    b.listen(80, 0).unwrap();
    let ha = a.connect(t(0), B, 80).unwrap();
    exchange(&mut a, &mut b, t(0));
    accepted(&events(&mut b)).expect("accepted");
    let _ = events(&mut a);
    a.set_nodelay(ha, true).unwrap();
    // One segment and its ACK first: the window field of b's ACKs is scaled from now on
    // (the SYN-ACK's was not), so the next ACKs leave the send window as it is.
    assert_eq!(a.send(ha, b"hello").unwrap(), 5);
    for mut f in acks_of(&mut a, &mut b, t(0)) {
        a.handle_frame(t(0), &mut f);
    }
    a.end_burst();
    (a, b, ha)
}

/// `b`'s pure ACK of each segment `a` sends now, one ACK per segment.
fn acks_of(a: &mut Stack, b: &mut Stack, now: Instant) -> Vec<Vec<u8>> {
    let mut acks = Vec::new();
    for mut f in out(a, now) {
        b.handle_frame_with(now, &mut f, &mut |_, d| d.len());
        acks.extend(out(b, now));
    }
    acks
}

/// ACK coalescing (`ConnConfig::coalesce_acks`): a burst of pure ACKs of one connection
/// (one `now`) leaves its TCB exactly as, without coalescing, the first of them (taken
/// whole) and the last alone leave it: send buffer, SND.UNA, RTT sample, RTO, window,
/// congestion control (not cwnd-limited here); and the same frames go out next. The
/// ACKs after the first are counted.
#[test]
fn stack_coalesced_pure_acks_end_as_the_last_ack_alone() {
    for prediction in [true, false] {
        let tweak = |c: &mut StackConfig| c.header_prediction = prediction;
        let (mut x, mut bx, hx) = coalescing_pair(true, tweak);
        let (mut y, mut by, hy) = coalescing_pair(false, tweak);
        let mut burst_x = Vec::new();
        let mut burst_y = Vec::new();
        // Full-sized segments (the MSS less the timestamps option), four: less than
        // half of the initial window in flight, so congestion control leaves cwnd as it
        // is in both worlds (not cwnd-limited).
        let seg = usize::from(x.config().conn.mss) - 12;
        for i in 0..4u8 {
            assert_eq!(x.send(hx, &vec![i; seg]).unwrap(), seg);
            assert_eq!(y.send(hy, &vec![i; seg]).unwrap(), seg);
            burst_x.extend(acks_of(&mut x, &mut bx, t(1)));
            burst_y.extend(acks_of(&mut y, &mut by, t(1)));
        }
        assert_eq!(burst_x, burst_y, "the same ACKs in both worlds");
        assert_eq!(burst_x.len(), 4);
        for mut f in burst_x {
            x.handle_frame(t(2), &mut f);
        }
        let mut last = burst_y.pop().unwrap();
        y.handle_frame(t(2), &mut burst_y[0]);
        y.handle_frame(t(2), &mut last);
        assert_eq!(x.counters().acks_coalesced, 3, "prediction {prediction}");
        assert!(
            x.poll_timeout().is_some_and(|at| at <= t(2)),
            "settling is due at once"
        );
        x.end_burst();
        assert_eq!(y.counters().acks_coalesced, 0);
        let tcb = |s: &Stack, h: ConnHandle| format!("{:?}", s.table.get(h.0).unwrap().tcb);
        assert_eq!(tcb(&x, hx), tcb(&y, hy), "prediction {prediction}");
        assert_eq!(x.stats(hx).unwrap().bytes_out, 5 + 4 * seg as u64);
        assert_eq!(events(&mut x), events(&mut y));
        assert_eq!(x.poll_timeout(), y.poll_timeout());
        assert_eq!(x.send(hx, b"next").unwrap(), 4);
        assert_eq!(y.send(hy, b"next").unwrap(), 4);
        assert_eq!(out(&mut x, t(3)), out(&mut y, t(3)));
    }
}

/// Slow start counts every coalesced ACK (RFC 3465's limit L applies per ACK): a burst
/// of one ACK per full segment of the initial window (the first taken whole, the rest
/// coalesced) grows cwnd by every acknowledged byte, as the same ACKs one by one would
/// from a sender that refills the window between them; the last ACK alone, a stretch
/// ACK, grows it by at most L = 2 SMSS.
#[test]
fn stack_coalesced_acks_grow_slow_start_per_ack() {
    let (mut x, mut bx, hx) = coalescing_pair(true, |_| {});
    let (mut y, mut by, hy) = coalescing_pair(false, |_| {});
    let cwnd0 = x.stats(hx).unwrap().cwnd;
    assert_eq!(cwnd0, y.stats(hy).unwrap().cwnd);
    let data = vec![5u8; 64 * 1024];
    let _ = x.send(hx, &data).unwrap();
    let _ = y.send(hy, &data).unwrap();
    let mut burst = acks_of(&mut x, &mut bx, t(1));
    let burst_y = acks_of(&mut y, &mut by, t(1));
    assert_eq!(burst, burst_y);
    assert!(
        burst.len() >= 8,
        "one ACK per segment of the initial window"
    );
    let acked = x.stats(hx).unwrap().bytes_out;
    for f in &mut burst {
        x.handle_frame(t(2), f);
    }
    let mut last = burst.pop().unwrap();
    y.handle_frame(t(2), &mut last);
    x.end_burst();
    y.end_burst();
    let sent = x.stats(hx).unwrap().bytes_out - acked;
    assert_eq!(sent, y.stats(hy).unwrap().bytes_out - acked);
    assert!(sent > 8 * 1000);
    let mss = u32::from(x.stats(hx).unwrap().mss);
    assert_eq!(
        x.stats(hx).unwrap().cwnd - cwnd0,
        sent as u32,
        "every byte counted"
    );
    assert_eq!(
        y.stats(hy).unwrap().cwnd - cwnd0,
        2 * mss,
        "a stretch ACK: L = 2 SMSS"
    );
}

/// Coalesced ACKs are settled before anything else touches the connection: a write
/// finds the send buffer space they freed, the WRITABLE they raise is the next event,
/// and a data segment after them in the same burst is taken after them.
#[test]
fn stack_coalesced_acks_settle_before_any_other_use() {
    let small = |c: &mut StackConfig| c.conn.snd_buf = 4096;
    let (mut x, mut bx, hx) = coalescing_pair(true, small);
    let (mut y, mut by, hy) = coalescing_pair(false, small);
    for (s, h) in [(&mut x, hx), (&mut y, hy)] {
        // Fill the send buffer: the writer is blocked.
        assert_eq!(s.send(h, &[1u8; 5000]).unwrap(), 4096);
        assert_eq!(s.send(h, &[1u8; 10]).unwrap(), 0);
    }
    let mut burst_x = acks_of(&mut x, &mut bx, t(1));
    let burst_y = acks_of(&mut y, &mut by, t(1));
    assert!(burst_x.len() >= 2);
    // Data from b after its ACKs, in the same burst: taken after them.
    let hbx = x_peer(&mut bx);
    let hby = x_peer(&mut by);
    assert_eq!(bx.send(hbx, b"reply").unwrap(), 5);
    assert_eq!(by.send(hby, b"reply").unwrap(), 5);
    burst_x.extend(out(&mut bx, t(1)));
    let mut burst_y = burst_y;
    burst_y.extend(out(&mut by, t(1)));
    assert_eq!(burst_x, burst_y);
    for mut f in burst_x {
        x.handle_frame(t(2), &mut f);
    }
    for mut f in burst_y {
        y.handle_frame(t(2), &mut f);
    }
    assert!(x.counters().acks_coalesced >= 1);
    assert_eq!(events(&mut x), events(&mut y));
    assert_eq!(
        x.send(hx, &[2u8; 4096]).unwrap(),
        y.send(hy, &[2u8; 4096]).unwrap()
    );
    assert_eq!(read_all(&mut x, hx), b"reply");
    let (sx, sy) = (x.stats(hx).unwrap(), y.stats(hy).unwrap());
    assert_eq!(
        (sx.state, sx.bytes_out, sx.bytes_in, sx.cwnd, sx.snd_wnd),
        (sy.state, sy.bytes_out, sy.bytes_in, sy.cwnd, sy.snd_wnd)
    );
    assert_eq!(out(&mut x, t(3)), out(&mut y, t(3)));
}

/// The accepted connection of `b` (its only one).
fn x_peer(b: &mut Stack) -> ConnHandle {
    b.table
        .iter()
        .map(|(id, _, _)| ConnHandle(id))
        .next()
        .expect("one connection")
}
