//! State machine unit tests, grouped by state: `<state>_<input>_<outcome>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const ISS_A: u32 = 1000;
const ISS_B: u32 = 5000;

fn cfg() -> ConnConfig {
    ConnConfig {
        delayed_ack: false,
        ..ConnConfig::default()
    }
}

fn t0() -> Instant {
    Instant::from_secs_for_test(1)
}

trait TestInstant {
    fn from_secs_for_test(s: u64) -> Instant;
}
impl TestInstant for Instant {
    fn from_secs_for_test(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }
}

fn seg(seq: u32, ack: u32, flags: TcpFlags) -> TcpRepr<'static> {
    TcpRepr {
        seq: SeqNumber(seq),
        ack: SeqNumber(ack),
        flags,
        window: 65_535,
        ..TcpRepr::default()
    }
}

fn data(seq: u32, ack: u32, payload: &'static [u8]) -> TcpRepr<'static> {
    TcpRepr {
        payload,
        ..seg(seq, ack, TcpFlags::ACK | TcpFlags::PSH)
    }
}

/// A segment that went out, with its payload.
#[derive(Debug, Clone)]
struct Sent {
    h: OutSegment,
    payload: Vec<u8>,
}

impl Sent {
    fn as_seg(&self) -> TcpRepr<'_> {
        TcpRepr {
            payload: &self.payload,
            ..self.h.repr
        }
    }
}

fn drain(t: &mut Tcb, c: &ConnConfig, now: Instant) -> Vec<Sent> {
    let mut ctr = Counters::default();
    let mut v = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(h) = t.dispatch(c, now, &mut buf, &mut ctr) {
        v.push(Sent {
            h,
            payload: buf[..h.payload_len].to_vec(),
        });
        assert!(v.len() < 10_000, "dispatch loops");
    }
    v
}

/// A challenge-ACK limiter that never limits (the limit has its own tests).
fn unlimited() -> TokenBucket {
    TokenBucket::new(RateLimit::UNLIMITED, 0)
}

fn feed(t: &mut Tcb, c: &ConnConfig, now: Instant, s: &TcpRepr<'_>) -> Option<OutSegment> {
    let mut ctr = Counters::default();
    t.on_segment(c, now, s, None, &mut unlimited(), &mut ctr)
}

/// Feeds `s` with a zero-copy sink that consumes at most `take` bytes of what it is
/// offered; returns what the sink consumed.
fn feed_sink(t: &mut Tcb, c: &ConnConfig, s: &TcpRepr<'_>, take: usize) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut sink = |d: &[u8]| {
        let k = take.min(d.len());
        seen.extend_from_slice(&d[..k]);
        k
    };
    let mut ctr = Counters::default();
    t.on_segment(c, t0(), s, Some(&mut sink), &mut unlimited(), &mut ctr);
    seen
}

fn feed_ctr(
    t: &mut Tcb,
    c: &ConnConfig,
    now: Instant,
    s: &TcpRepr<'_>,
) -> (Option<OutSegment>, Counters) {
    let mut ctr = Counters::default();
    let r = t.on_segment(c, now, s, None, &mut unlimited(), &mut ctr);
    (r, ctr)
}

/// Delivers everything each side sends to the other until both are quiet.
fn pump(a: &mut Tcb, b: &mut Tcb, c: &ConnConfig, now: Instant) {
    for _ in 0..1000 {
        let sa = drain(a, c, now);
        let sb = drain(b, c, now);
        if sa.is_empty() && sb.is_empty() {
            return;
        }
        for s in &sa {
            feed(b, c, now, &s.as_seg());
        }
        for s in &sb {
            feed(a, c, now, &s.as_seg());
        }
    }
    panic!("pump did not settle");
}

/// Client (active, ISS_A) and server (passive, ISS_B), both ESTABLISHED.
fn established(c: &ConnConfig) -> (Tcb, Tcb) {
    let now = t0();
    let mut a = Tcb::connect(c, now, SeqNumber(ISS_A));
    let syn = drain(&mut a, c, now);
    assert_eq!(syn.len(), 1);
    let mut b = Tcb::accept(c, now, SeqNumber(ISS_B), &syn[0].as_seg());
    pump(&mut a, &mut b, c, now);
    assert_eq!(a.state(), State::Established);
    assert_eq!(b.state(), State::Established);
    a.take_events();
    b.take_events();
    (a, b)
}

/// A server TCB established with a bare peer we script by hand (no options).
fn server_plain(c: &ConnConfig) -> Tcb {
    let now = t0();
    let mut t = Tcb::listen(c, now, SeqNumber(ISS_B));
    feed(&mut t, c, now, &seg(ISS_A, 0, TcpFlags::SYN));
    let out = drain(&mut t, c, now);
    assert_eq!(out[0].h.flags, TcpFlags::SYN | TcpFlags::ACK);
    feed(&mut t, c, now, &seg(ISS_A + 1, ISS_B + 1, TcpFlags::ACK));
    assert_eq!(t.state(), State::Established);
    t.take_events();
    t
}

fn read_all(t: &mut Tcb, c: &ConnConfig) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = t.recv(c, &mut buf);
        if n == 0 {
            return v;
        }
        v.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------- CLOSED

#[test]
fn closed_segment_without_ack_answered_with_rst_ack() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(1));
    t.shutdown(t0());
    assert_eq!(t.state(), State::Closed);
    let r = feed(&mut t, &c, t0(), &data(100, 0, b"abc").clone()).unwrap();
    // data() sets ACK; use a plain SYN instead for the no-ACK case.
    assert_eq!(r.flags, TcpFlags::RST);
    let r = feed(&mut t, &c, t0(), &seg(100, 0, TcpFlags::SYN)).unwrap();
    assert_eq!(r.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(r.seq, SeqNumber(0));
    assert_eq!(r.ack, SeqNumber(101));
}

#[test]
fn closed_segment_with_ack_answered_with_rst_at_seg_ack() {
    let r = reset_for(&seg(7, 4242, TcpFlags::ACK)).unwrap();
    assert_eq!(r.flags, TcpFlags::RST);
    assert_eq!(r.seq, SeqNumber(4242));
}

#[test]
fn closed_rst_ignored() {
    assert!(reset_for(&seg(7, 4242, TcpFlags::RST | TcpFlags::ACK)).is_none());
}

// ---------------------------------------------------------------- LISTEN

#[test]
fn listen_syn_moves_to_syn_received_and_sends_syn_ack() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(ISS_B));
    let mut syn = seg(ISS_A, 0, TcpFlags::SYN);
    syn.options.mss = Some(1000);
    assert!(feed(&mut t, &c, t0(), &syn).is_none());
    assert_eq!(t.state(), State::SynReceived);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].h.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(out[0].h.seq, SeqNumber(ISS_B));
    assert_eq!(out[0].h.ack, SeqNumber(ISS_A + 1));
    assert_eq!(out[0].h.options.mss, Some(1460));
    // The peer sent no window scale, SACK or timestamps: the SYN-ACK offers none.
    assert_eq!(out[0].h.options.window_scale, None);
    assert!(!out[0].h.options.sack_permitted);
    assert_eq!(out[0].h.options.timestamps, None);
    assert_eq!(t.stats(&c).mss, 1000);
}

#[test]
fn listen_ack_answered_with_rst() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(ISS_B));
    let r = feed(&mut t, &c, t0(), &seg(10, 777, TcpFlags::ACK)).unwrap();
    assert_eq!((r.seq, r.flags), (SeqNumber(777), TcpFlags::RST));
    assert_eq!(t.state(), State::Listen);
}

#[test]
fn listen_rst_ignored() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(ISS_B));
    assert!(feed(&mut t, &c, t0(), &seg(10, 0, TcpFlags::RST)).is_none());
    assert_eq!(t.state(), State::Listen);
}

#[test]
fn listen_segment_without_syn_dropped() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(ISS_B));
    assert!(feed(&mut t, &c, t0(), &seg(10, 0, TcpFlags::FIN)).is_none());
    assert_eq!(t.state(), State::Listen);
    assert!(drain(&mut t, &c, t0()).is_empty());
}

#[test]
fn listen_close_moves_to_closed() {
    let c = cfg();
    let mut t = Tcb::listen(&c, t0(), SeqNumber(ISS_B));
    t.close(t0());
    assert_eq!(t.state(), State::Closed);
}

// ---------------------------------------------------------------- SYN-SENT

#[test]
fn syn_sent_dispatch_sends_syn_with_options() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    assert_eq!(t.state(), State::SynSent);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    let h = out[0].h;
    assert_eq!((h.seq, h.flags), (SeqNumber(ISS_A), TcpFlags::SYN));
    assert_eq!(h.options.mss, Some(1460));
    assert_eq!(h.options.window_scale, Some(our_wscale(&c)));
    assert!(h.options.sack_permitted);
    assert!(h.options.timestamps.is_some());
    assert!(t.poll_timeout(&c).is_some());
}

#[test]
fn syn_sent_syn_ack_moves_to_established() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_B, ISS_A + 1, TcpFlags::SYN | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::Established);
    assert!(t.take_events().contains(Events::ESTABLISHED));
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].h.flags, TcpFlags::ACK);
    assert_eq!(out[0].h.ack, SeqNumber(ISS_B + 1));
    assert_eq!(t.poll_timeout(&c), None);
}

#[test]
fn syn_sent_syn_moves_to_syn_received_simultaneous_open() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    feed(&mut t, &c, t0(), &seg(ISS_B, 0, TcpFlags::SYN));
    assert_eq!(t.state(), State::SynReceived);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out[0].h.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(out[0].h.seq, SeqNumber(ISS_A));
    assert_eq!(out[0].h.ack, SeqNumber(ISS_B + 1));
}

#[test]
fn syn_sent_simultaneous_open_both_established() {
    let c = cfg();
    let now = t0();
    let mut a = Tcb::connect(&c, now, SeqNumber(ISS_A));
    let mut b = Tcb::connect(&c, now, SeqNumber(ISS_B));
    let sa = drain(&mut a, &c, now);
    let sb = drain(&mut b, &c, now);
    feed(&mut b, &c, now, &sa[0].as_seg());
    feed(&mut a, &c, now, &sb[0].as_seg());
    assert_eq!(a.state(), State::SynReceived);
    assert_eq!(b.state(), State::SynReceived);
    pump(&mut a, &mut b, &c, now);
    assert_eq!(a.state(), State::Established);
    assert_eq!(b.state(), State::Established);
    a.send(&c, b"hi").unwrap();
    pump(&mut a, &mut b, &c, now);
    assert_eq!(read_all(&mut b, &c), b"hi");
}

#[test]
fn syn_sent_bad_ack_answered_with_rst() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    let r = feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_B, ISS_A + 50, TcpFlags::SYN | TcpFlags::ACK),
    )
    .unwrap();
    assert_eq!((r.seq, r.flags), (SeqNumber(ISS_A + 50), TcpFlags::RST));
    assert_eq!(t.state(), State::SynSent);
    let r = feed(&mut t, &c, t0(), &seg(ISS_B, ISS_A, TcpFlags::ACK)).unwrap();
    assert_eq!(r.flags, TcpFlags::RST);
}

#[test]
fn syn_sent_rst_with_acceptable_ack_refused() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    feed(
        &mut t,
        &c,
        t0(),
        &seg(0, ISS_A + 1, TcpFlags::RST | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Refused));
    assert!(t.take_events().contains(Events::CLOSED));
}

#[test]
fn syn_sent_rst_without_ack_ignored() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    assert!(feed(&mut t, &c, t0(), &seg(0, 0, TcpFlags::RST)).is_none());
    assert_eq!(t.state(), State::SynSent);
    // A RST with an unacceptable ACK is dropped too (no RST in reply to a RST).
    assert!(feed(
        &mut t,
        &c,
        t0(),
        &seg(0, ISS_A + 9, TcpFlags::RST | TcpFlags::ACK)
    )
    .is_none());
    assert_eq!(t.state(), State::SynSent);
}

#[test]
fn syn_sent_rto_retransmits_syn_with_backoff() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    let first = t.poll_timeout(&c).unwrap();
    assert_eq!(first - t0(), Duration::from_secs(1));
    let mut ctr = Counters::default();
    t.handle_timeout(&c, first, &mut ctr);
    let out = drain(&mut t, &c, first);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].h.seq, out[0].h.flags),
        (SeqNumber(ISS_A), TcpFlags::SYN)
    );
    let second = t.poll_timeout(&c).unwrap();
    assert_eq!(second - first, Duration::from_secs(2));
}

#[test]
fn syn_sent_retries_exhausted_times_out() {
    let c = ConnConfig {
        syn_retries: 2,
        ..cfg()
    };
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    let mut now = t0();
    drain(&mut t, &c, now);
    let mut ctr = Counters::default();
    for _ in 0..3 {
        now = t.poll_timeout(&c).unwrap();
        t.handle_timeout(&c, now, &mut ctr);
        drain(&mut t, &c, now);
    }
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::TimedOut));
    assert_eq!(ctr.timeouts, 1);
    assert_eq!(t.poll_timeout(&c), None);
}

#[test]
fn syn_sent_shutdown_with_queued_data_sends_fin_after_handshake() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    t.send(&c, b"early").unwrap();
    t.shutdown(t0());
    assert_eq!(t.state(), State::SynSent);
    drain(&mut t, &c, t0());
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_B, ISS_A + 1, TcpFlags::SYN | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::FinWait1);
    let out = drain(&mut t, &c, t0());
    assert!(
        out.iter().any(|s| s.payload == b"early" && s.h.flags.fin()),
        "{out:?}"
    );
}

#[test]
fn syn_sent_close_moves_to_closed() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    t.close(t0());
    assert_eq!(t.state(), State::Closed);
    assert!(drain(&mut t, &c, t0()).is_empty());
}

// ---------------------------------------------------------------- SYN-RECEIVED

fn syn_received(c: &ConnConfig) -> Tcb {
    let mut t = Tcb::listen(c, t0(), SeqNumber(ISS_B));
    feed(&mut t, c, t0(), &seg(ISS_A, 0, TcpFlags::SYN));
    drain(&mut t, c, t0());
    t
}

#[test]
fn syn_received_ack_moves_to_established() {
    let c = cfg();
    let mut t = syn_received(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 1, ISS_B + 1, TcpFlags::ACK));
    assert_eq!(t.state(), State::Established);
    assert!(t.take_events().contains(Events::ESTABLISHED));
    assert_eq!(t.poll_timeout(&c), None);
}

#[test]
fn syn_received_ack_with_data_delivers_it() {
    let c = cfg();
    let mut t = syn_received(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"hello"));
    assert_eq!(t.state(), State::Established);
    assert_eq!(read_all(&mut t, &c), b"hello");
}

#[test]
fn syn_received_bad_ack_answered_with_rst() {
    let c = cfg();
    let mut t = syn_received(&c);
    let r = feed(&mut t, &c, t0(), &seg(ISS_A + 1, ISS_B + 77, TcpFlags::ACK)).unwrap();
    assert_eq!((r.seq, r.flags), (SeqNumber(ISS_B + 77), TcpFlags::RST));
    assert_eq!(t.state(), State::SynReceived);
}

#[test]
fn syn_received_exact_rst_passive_returns_to_listen() {
    let c = cfg();
    let mut t = syn_received(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 1, 0, TcpFlags::RST));
    // The stack keeps its listener; this half-open TCB just goes away quietly.
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Reset));
}

#[test]
fn syn_received_exact_rst_active_refused() {
    let c = cfg();
    let mut t = Tcb::connect(&c, t0(), SeqNumber(ISS_A));
    drain(&mut t, &c, t0());
    feed(&mut t, &c, t0(), &seg(ISS_B, 0, TcpFlags::SYN));
    assert_eq!(t.state(), State::SynReceived);
    feed(&mut t, &c, t0(), &seg(ISS_B + 1, 0, TcpFlags::RST));
    assert_eq!(t.close_reason(), Some(CloseReason::Refused));
}

#[test]
fn syn_received_retransmitted_syn_resends_syn_ack() {
    let c = cfg();
    let mut t = syn_received(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A, 0, TcpFlags::SYN));
    assert_eq!(t.state(), State::SynReceived);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].h.flags, TcpFlags::SYN | TcpFlags::ACK);
}

#[test]
fn syn_received_new_syn_passive_returns_to_listen() {
    let c = cfg();
    let mut t = syn_received(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 10, 0, TcpFlags::SYN));
    assert_eq!(t.state(), State::Closed);
}

#[test]
fn syn_received_rto_resends_syn_ack() {
    let c = cfg();
    let mut t = syn_received(&c);
    let at = t.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    t.handle_timeout(&c, at, &mut ctr);
    let out = drain(&mut t, &c, at);
    assert_eq!(out[0].h.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(t.stats(&c).retransmits, 1);
}

#[test]
fn syn_received_close_moves_to_fin_wait_1() {
    let c = cfg();
    let mut t = syn_received(&c);
    t.close(t0());
    // RFC 9293 3.10.4: the FIN is queued until the handshake completes.
    assert_eq!(t.state(), State::SynReceived);
    feed(&mut t, &c, t0(), &seg(ISS_A + 1, ISS_B + 1, TcpFlags::ACK));
    assert_eq!(t.state(), State::FinWait1);
    let out = drain(&mut t, &c, t0());
    assert!(out
        .iter()
        .any(|s| s.h.flags.fin() && s.h.seq == SeqNumber(ISS_B + 1)));
}

// ---------------------------------------------------------------- ESTABLISHED

#[test]
fn established_data_delivered_and_acked() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    assert_eq!(a.send(&c, b"hello world").unwrap(), 11);
    pump(&mut a, &mut b, &c, t0());
    assert!(b.take_events().contains(Events::READABLE));
    assert_eq!(read_all(&mut b, &c), b"hello world");
    assert_eq!(a.send_queue(), 0);
    assert_eq!(a.stats(&c).bytes_out, 11);
    assert_eq!(b.stats(&c).bytes_in, 11);
    // Only the drained send buffer's keep time is left; then it goes back to the pool.
    let keep = t0() + SEND_BUFFER_KEEP;
    assert_eq!(a.poll_timeout(&c), Some(keep));
    assert!(a.snd_buf.is_allocated());
    let mut ctr = Counters::default();
    a.handle_timeout(&c, keep, &mut ctr);
    assert!(!a.snd_buf.is_allocated(), "idle connections hold no buffer");
    assert_eq!(a.poll_timeout(&c), None);
}

#[test]
fn drained_send_buffer_reused_by_the_next_write_within_its_keep_time() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    assert_eq!(a.send(&c, b"one").unwrap(), 3);
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(a.send_queue(), 0);
    let half = t0() + SEND_BUFFER_KEEP / 2;
    let mut ctr = Counters::default();
    a.handle_timeout(&c, half, &mut ctr);
    assert!(a.snd_buf.is_allocated(), "kept for the next write");
    assert_eq!(a.send(&c, b"two").unwrap(), 3);
    // Due while bytes are queued: the buffer stays.
    a.handle_timeout(&c, t0() + SEND_BUFFER_KEEP, &mut ctr);
    assert!(a.snd_buf.is_allocated());
    pump(&mut a, &mut b, &c, half);
    assert_eq!(read_all(&mut b, &c), b"onetwo");
    let keep = half + SEND_BUFFER_KEEP;
    assert_eq!(a.poll_timeout(&c), Some(keep));
    a.handle_timeout(&c, keep, &mut ctr);
    assert!(!a.snd_buf.is_allocated());
}

#[test]
fn established_zero_copy_sink_consumes_in_place() {
    let c = cfg();
    let mut t = server_plain(&c);
    let seen = feed_sink(&mut t, &c, &data(ISS_A + 1, ISS_B + 1, b"abcdef"), 3);
    assert_eq!(seen, b"abc");
    assert_eq!(read_all(&mut t, &c), b"def");
    assert_eq!(t.rcv_nxt(), SeqNumber(ISS_A + 7));
}

#[test]
fn established_out_of_order_data_quick_acked_and_reassembled() {
    let c = ConnConfig {
        delayed_ack: true,
        ..cfg()
    };
    let mut t = server_plain(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 4, ISS_B + 1, b"def"));
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1, "out-of-order data is ACKed at once");
    assert_eq!(out[0].h.ack, SeqNumber(ISS_A + 1));
    assert_eq!(read_all(&mut t, &c), b"");
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"abc"));
    assert_eq!(read_all(&mut t, &c), b"abcdef");
    let out = drain(&mut t, &c, t0());
    assert_eq!(
        out[0].h.ack,
        SeqNumber(ISS_A + 7),
        "hole filled: ACK at once"
    );
}

#[test]
fn established_sink_consumes_in_order_data_out_of_order_bytes_kept() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 7, ISS_B + 1, b"ghi"));
    feed(&mut t, &c, t0(), &data(ISS_A + 4, ISS_B + 1, b"def"));
    let seen = feed_sink(&mut t, &c, &data(ISS_A + 1, ISS_B + 1, b"abc"), 2);
    assert_eq!(seen, b"ab");
    assert_eq!(t.rcv_nxt(), SeqNumber(ISS_A + 10));
    assert_eq!(read_all(&mut t, &c), b"cdefghi");
}

#[test]
fn established_read_to_empty_releases_receive_buffer() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"abc"));
    assert!(t.rcv_buf.is_allocated());
    assert_eq!(read_all(&mut t, &c), b"abc");
    assert!(!t.rcv_buf.is_allocated(), "idle connections hold no buffer");
}

proptest::proptest! {
    // Oracle: the byte stream itself. Segments (overlapping, duplicated) arrive in any
    // order, pass after pass, until the receiver has it all; what it reads must be the
    // stream, byte-exact, whatever the assembler had to refuse (too many holes).
    #[test]
    fn established_reordered_overlapping_segments_reassemble_byte_exact(
        cuts in proptest::collection::vec((0usize..3000, 1usize..400), 1..40),
        order in proptest::collection::vec(proptest::num::usize::ANY, 1..40),
    ) {
        let c = cfg();
        let mut t = server_plain(&c);
        let stream: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        // Segments: the random cuts plus a tiling so that the stream is covered.
        let mut segs: Vec<(usize, usize)> = cuts
            .iter()
            .map(|&(o, l)| (o, (o + l).min(stream.len())))
            .collect();
        segs.extend((0..stream.len()).step_by(500).map(|o| (o, (o + 500).min(stream.len()))));
        for (i, k) in order.iter().enumerate() {
            let j = k % segs.len();
            let i = i % segs.len();
            segs.swap(i, j);
        }
        let mut got = Vec::new();
        for _pass in 0..20 {
            for &(a, b) in &segs {
                let s = TcpRepr {
                    payload: &stream[a..b],
                    ..seg(ISS_A + 1 + a as u32, ISS_B + 1, TcpFlags::ACK)
                };
                feed(&mut t, &c, t0(), &s);
                drain(&mut t, &c, t0());
            }
            got.extend(read_all(&mut t, &c));
            if got.len() == stream.len() {
                break;
            }
        }
        proptest::prop_assert_eq!(&got[..], &stream[..]);
        proptest::prop_assert_eq!(t.rcv_nxt(), SeqNumber(ISS_A + 1 + stream.len() as u32));
    }
}

#[test]
fn established_duplicate_and_overlapping_data_trimmed() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"abcd"));
    feed(&mut t, &c, t0(), &data(ISS_A + 3, ISS_B + 1, b"cdef"));
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"ab"));
    assert_eq!(read_all(&mut t, &c), b"abcdef");
}

#[test]
fn established_sack_blocks_sent_for_holes() {
    let c = cfg();
    let (_a, mut b) = established(&c);
    let base = b.rcv_nxt().0;
    let mut s = data(base + 10, ISS_A + 1, b"xyz");
    s.options.timestamps = b.ts_recent().map(|r| TcpTimestamps { tsval: r, tsecr: 0 });
    feed(&mut b, &c, t0(), &s);
    let out = drain(&mut b, &c, t0());
    let sack = out[0].h.options.sack_blocks;
    assert_eq!(
        sack.as_slice(),
        &[SackBlock {
            left: SeqNumber(base + 10),
            right: SeqNumber(base + 13)
        }]
    );
}

#[test]
fn established_unacceptable_segment_acked_and_dropped() {
    let c = cfg();
    let mut t = server_plain(&c);
    let (_, ctr) = feed_ctr(
        &mut t,
        &c,
        t0(),
        &data(ISS_A + 1 + 10_000_000, ISS_B + 1, b"zz"),
    );
    assert_eq!(ctr.unacceptable, 1);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].h.ack, SeqNumber(ISS_A + 1));
    assert_eq!(read_all(&mut t, &c), b"");
}

#[test]
fn established_exact_rst_resets() {
    let c = cfg();
    let mut t = server_plain(&c);
    let (_, ctr) = feed_ctr(&mut t, &c, t0(), &seg(ISS_A + 1, 0, TcpFlags::RST));
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Reset));
    assert_eq!(ctr.resets_received, 1);
    assert!(drain(&mut t, &c, t0()).is_empty());
}

#[test]
fn established_in_window_rst_challenge_acked() {
    let c = cfg();
    let mut t = server_plain(&c);
    let (_, ctr) = feed_ctr(&mut t, &c, t0(), &seg(ISS_A + 100, 0, TcpFlags::RST));
    assert_eq!(t.state(), State::Established);
    assert_eq!(ctr.challenge_acks, 1);
    let out = drain(&mut t, &c, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].h.seq, out[0].h.ack),
        (SeqNumber(ISS_B + 1), SeqNumber(ISS_A + 1))
    );
}

#[test]
fn established_out_of_window_rst_dropped_silently() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 100_000_000, 0, TcpFlags::RST),
    );
    assert_eq!(t.state(), State::Established);
    assert!(drain(&mut t, &c, t0()).is_empty());
}

#[test]
fn established_syn_challenge_acked() {
    let c = cfg();
    let mut t = server_plain(&c);
    let (r, ctr) = feed_ctr(&mut t, &c, t0(), &seg(ISS_A + 5, 0, TcpFlags::SYN));
    assert!(r.is_none());
    assert_eq!(t.state(), State::Established);
    assert_eq!(ctr.challenge_acks, 1);
    assert_eq!(drain(&mut t, &c, t0()).len(), 1);
}

#[test]
fn established_challenge_acks_rate_limited_across_connections() {
    let c = cfg();
    // One limiter shared by two connections, as the stack shares it.
    let mut limit = TokenBucket::new(RateLimit::per_second(3), 0);
    let mut t = server_plain(&c);
    let mut u = server_plain(&c);
    let mut ctr = Counters::default();
    for i in 0..5 {
        let rst = seg(ISS_A + 10 + i, 0, TcpFlags::RST);
        t.on_segment(&c, t0(), &rst, None, &mut limit, &mut ctr);
        u.on_segment(&c, t0(), &rst, None, &mut limit, &mut ctr);
    }
    assert_eq!(ctr.challenge_acks, 3);
    assert_eq!(ctr.challenge_acks_suppressed, 7);
    // A second later the budget is back.
    let later = t0() + Duration::from_secs(1);
    let mut ctr = Counters::default();
    let rst = seg(ISS_A + 10, 0, TcpFlags::RST);
    t.on_segment(&c, later, &rst, None, &mut limit, &mut ctr);
    assert_eq!(ctr.challenge_acks, 1);
}

#[test]
fn established_ack_above_snd_nxt_acked_and_dropped() {
    let c = cfg();
    let mut t = server_plain(&c);
    let (_, ctr) = feed_ctr(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 500, b"x"));
    assert_eq!(ctr.unacceptable, 1);
    assert_eq!(
        read_all(&mut t, &c),
        b"",
        "the text of a bad-ACK segment is dropped"
    );
    assert_eq!(drain(&mut t, &c, t0()).len(), 1);
}

#[test]
fn established_ack_below_max_window_acked_and_dropped() {
    let c = cfg();
    let mut t = server_plain(&c);
    // RFC 5961 5.2: SEG.ACK < SND.UNA - MAX.SND.WND is unacceptable.
    let (_, ctr) = feed_ctr(
        &mut t,
        &c,
        t0(),
        &data(ISS_A + 1, ISS_B.wrapping_sub(100_000), b"x"),
    );
    assert_eq!(ctr.unacceptable, 1);
    assert_eq!(read_all(&mut t, &c), b"");
    // An old but plausible ACK is fine and the data is taken.
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B - 10, b"y"));
    assert_eq!(read_all(&mut t, &c), b"y");
}

#[test]
fn established_without_ack_bit_dropped() {
    let c = cfg();
    let mut t = server_plain(&c);
    let mut s = data(ISS_A + 1, 0, b"x");
    s.flags = TcpFlags::PSH;
    feed(&mut t, &c, t0(), &s);
    assert_eq!(read_all(&mut t, &c), b"");
}

#[test]
fn established_fin_moves_to_close_wait() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::CloseWait);
    assert!(t.take_events().contains(Events::PEER_CLOSED));
    assert!(t.at_eof());
    let out = drain(&mut t, &c, t0());
    assert_eq!(out[0].h.ack, SeqNumber(ISS_A + 2));
}

#[test]
fn established_out_of_order_fin_waits_for_data() {
    let c = cfg();
    let mut t = server_plain(&c);
    let mut s = data(ISS_A + 3, ISS_B + 1, b"cd");
    s.flags |= TcpFlags::FIN;
    feed(&mut t, &c, t0(), &s);
    assert_eq!(t.state(), State::Established);
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"ab"));
    assert_eq!(t.state(), State::CloseWait);
    assert_eq!(read_all(&mut t, &c), b"abcd");
}

#[test]
fn established_close_moves_to_fin_wait_1_and_sends_fin() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    a.close(t0());
    assert_eq!(a.state(), State::FinWait1);
    let out = drain(&mut a, &c, t0());
    assert_eq!(out.len(), 1);
    assert!(out[0].h.flags.fin());
    assert_eq!(out[0].h.seq, SeqNumber(ISS_A + 1));
}

#[test]
fn established_close_with_unread_data_sends_rst() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(&mut t, &c, t0(), &data(ISS_A + 1, ISS_B + 1, b"unread"));
    t.close(t0());
    assert_eq!(t.state(), State::Closed);
    let out = drain(&mut t, &c, t0());
    assert!(out[0].h.flags.rst());
}

#[test]
fn established_abort_sends_rst() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.abort(t0());
    assert_eq!(a.close_reason(), Some(CloseReason::Aborted));
    let out = drain(&mut a, &c, t0());
    assert_eq!(out.len(), 1);
    assert!(out[0].h.flags.rst());
    feed(&mut b, &c, t0(), &out[0].as_seg());
    assert_eq!(b.close_reason(), Some(CloseReason::Reset));
}

#[test]
fn established_rto_retransmits_and_backs_off() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.send(&c, b"lost").unwrap();
    let lost = drain(&mut a, &c, t0());
    assert_eq!(lost.len(), 1);
    let at = a.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    a.handle_timeout(&c, at, &mut ctr);
    let again = drain(&mut a, &c, at);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].payload, b"lost");
    assert_eq!(again[0].h.seq, lost[0].h.seq);
    assert_eq!(a.stats(&c).retransmits, 1);
    let next = a.poll_timeout(&c).unwrap();
    assert_eq!(next - at, (at - t0()) * 2, "RFC 6298 5.5 backoff");
    feed(&mut b, &c, at, &again[0].as_seg());
    pump(&mut a, &mut b, &c, at);
    assert_eq!(read_all(&mut b, &c), b"lost");
    assert_eq!(a.stats(&c).retransmits, 1);
}

#[test]
fn established_retries_exhausted_times_out_with_rst() {
    let c = ConnConfig {
        max_retries: 3,
        ..cfg()
    };
    let (mut a, _b) = established(&c);
    a.send(&c, b"x").unwrap();
    drain(&mut a, &c, t0());
    let mut ctr = Counters::default();
    let mut last = Vec::new();
    while let Some(at) = a.poll_timeout(&c) {
        a.handle_timeout(&c, at, &mut ctr);
        last = drain(&mut a, &c, at);
    }
    assert_eq!(a.close_reason(), Some(CloseReason::TimedOut));
    assert!(a.take_events().contains(Events::CLOSED));
    assert!(last[0].h.flags.rst());
    assert_eq!(a.stats(&c).retransmits, 3);
}

#[test]
fn established_paws_old_timestamp_dropped() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.send(&c, b"new").unwrap();
    let s = drain(&mut a, &c, t0() + Duration::from_secs(5));
    let mut old = s[0].clone();
    let ts = old.h.options.timestamps.unwrap();
    feed(&mut b, &c, t0() + Duration::from_secs(5), &s[0].as_seg());
    drain(&mut b, &c, t0());
    old.h.repr.options.timestamps = Some(TcpTimestamps {
        tsval: ts.tsval.wrapping_sub(1000),
        ..ts
    });
    old.h.repr.seq += 3u32;
    old.payload = b"old".to_vec();
    let (_, ctr) = feed_ctr(&mut b, &c, t0(), &old.as_seg());
    assert_eq!(ctr.unacceptable, 1);
    assert_eq!(read_all(&mut b, &c), b"new");
}

/// `b` ESTABLISHED with TS.Recent set by a segment at `t0()`, and a next segment from
/// `a` whose TSval is older than TS.Recent (the peer's clock wrapped).
fn paws_after_idle(c: &ConnConfig) -> (Tcb, Sent) {
    let (mut a, mut b) = established(c);
    a.send(c, b"new").unwrap();
    let s = drain(&mut a, c, t0());
    feed(&mut b, c, t0(), &s[0].as_seg());
    drain(&mut b, c, t0());
    assert_eq!(read_all(&mut b, c), b"new");
    let mut old = s[0].clone();
    let ts = old.h.options.timestamps.unwrap();
    old.h.repr.options.timestamps = Some(TcpTimestamps {
        tsval: ts.tsval.wrapping_sub(1 << 31),
        ..ts
    });
    old.h.repr.seq += 3u32;
    old.payload = b"old".to_vec();
    (b, old)
}

#[test]
fn established_old_timestamp_within_24_days_idle_dropped() {
    let c = cfg();
    let (mut b, old) = paws_after_idle(&c);
    let at = t0() + Duration::from_secs(23 * 24 * 3600);
    let (_, ctr) = feed_ctr(&mut b, &c, at, &old.as_seg());
    assert_eq!((ctr.unacceptable, ctr.ts_recent_expired), (1, 0));
    assert_eq!(read_all(&mut b, &c), b"");
}

#[test]
fn established_old_timestamp_after_24_days_idle_accepted() {
    let c = cfg();
    let (mut b, old) = paws_after_idle(&c);
    let at = t0() + Duration::from_secs(25 * 24 * 3600);
    let (_, ctr) = feed_ctr(&mut b, &c, at, &old.as_seg());
    assert_eq!((ctr.unacceptable, ctr.ts_recent_expired), (0, 1));
    assert_eq!(read_all(&mut b, &c), b"old");
    let tsval = old.h.options.timestamps.unwrap().tsval;
    assert_eq!(
        b.ts_recent(),
        Some(tsval),
        "TS.Recent restarts from the segment"
    );
}

#[test]
fn established_nagle_holds_small_segment_until_ack() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.send(&c, b"a").unwrap();
    let first = drain(&mut a, &c, t0());
    assert_eq!(first.len(), 1);
    a.send(&c, b"b").unwrap();
    assert!(
        drain(&mut a, &c, t0()).is_empty(),
        "Nagle holds the second small segment"
    );
    feed(&mut b, &c, t0(), &first[0].as_seg());
    let ack = drain(&mut b, &c, t0());
    feed(&mut a, &c, t0(), &ack[0].as_seg());
    assert_eq!(drain(&mut a, &c, t0()).len(), 1);
}

#[test]
fn established_nodelay_sends_small_segments_at_once() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    a.set_nodelay(true);
    a.send(&c, b"a").unwrap();
    drain(&mut a, &c, t0());
    a.send(&c, b"b").unwrap();
    assert_eq!(drain(&mut a, &c, t0()).len(), 1);
}

#[test]
fn established_delayed_ack_every_second_full_segment() {
    let c = ConnConfig {
        delayed_ack: true,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    let big = vec![7u8; 4 * 1448];
    a.send(&c, &big).unwrap();
    let segs = drain(&mut a, &c, t0());
    assert_eq!(segs.len(), 4);
    feed(&mut b, &c, t0(), &segs[0].as_seg());
    assert!(
        drain(&mut b, &c, t0()).is_empty(),
        "first full segment: ACK delayed"
    );
    feed(&mut b, &c, t0(), &segs[1].as_seg());
    assert_eq!(
        drain(&mut b, &c, t0()).len(),
        1,
        "second full segment: ACK now"
    );
    feed(&mut b, &c, t0(), &segs[2].as_seg());
    let at = b.poll_timeout(&c).unwrap();
    assert_eq!(at - t0(), Duration::from_millis(40));
    let mut ctr = Counters::default();
    b.handle_timeout(&c, at, &mut ctr);
    assert_eq!(drain(&mut b, &c, at).len(), 1, "delayed ACK timer fires");
}

#[test]
fn established_window_scale_and_mss_negotiated() {
    let c = ConnConfig {
        rcv_buf: 1 << 20,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    b.send(&c, b"x").unwrap();
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(a.snd_wscale, our_wscale(&c));
    assert_eq!(a.rcv_wscale, our_wscale(&c));
    assert!(a.ts_on && b.ts_on && a.sack_on && b.sack_on);
    assert_eq!(a.stats(&c).snd_wnd, 1 << 20);
    assert_eq!(a.stats(&c).mss, 1460);
}

#[test]
fn established_peer_without_options_gets_none() {
    let c = cfg();
    let t = server_plain(&c);
    assert_eq!((t.snd_wscale, t.rcv_wscale), (0, 0));
    assert!(!t.ts_on && !t.sack_on);
    assert_eq!(t.stats(&c).mss, 536);
}

#[test]
fn established_zero_window_persist_probes_until_open() {
    let c = ConnConfig {
        rcv_buf: 4096,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    let blob = vec![1u8; 10_000];
    let mut sent = a.send(&c, &blob).unwrap();
    pump(&mut a, &mut b, &c, t0());
    // Sender SWS avoidance holds the small tail until the persist/override timer.
    let mut ctr = Counters::default();
    let mut at = t0();
    for _ in 0..4 {
        if b.recv_queue() == 4096 {
            break;
        }
        at = a.poll_timeout(&c).unwrap();
        a.handle_timeout(&c, at, &mut ctr);
        pump(&mut a, &mut b, &c, at);
    }
    assert_eq!(b.recv_queue(), 4096);
    assert_eq!(a.stats(&c).snd_wnd, 0);
    // Persist timer, not RTO.
    let t1 = at;
    let at = a.poll_timeout(&c).unwrap();
    a.handle_timeout(&c, at, &mut ctr);
    let probe = drain(&mut a, &c, at);
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].payload.len(), 0);
    feed(&mut b, &c, at, &probe[0].as_seg());
    let reply = drain(&mut b, &c, at);
    assert_eq!(reply.len(), 1, "probe answered");
    feed(&mut a, &c, at, &reply[0].as_seg());
    let next = a.poll_timeout(&c).unwrap();
    assert!(next - at > at - t1, "persist backs off");
    // The application reads: a window update reopens the flow.
    let mut got = read_all(&mut b, &c);
    let mut now = at;
    while got.len() < blob.len() {
        if sent < blob.len() {
            sent += a.send(&c, &blob[sent..]).unwrap();
        }
        pump(&mut a, &mut b, &c, now);
        got.extend(read_all(&mut b, &c));
        now += Duration::from_millis(1);
    }
    assert_eq!(got, blob);
}

#[test]
fn established_window_update_sent_when_app_reads() {
    let c = ConnConfig {
        rcv_buf: 8192,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    a.send(&c, &[3u8; 8192]).unwrap();
    pump(&mut a, &mut b, &c, t0());
    assert!(drain(&mut b, &c, t0()).is_empty());
    let mut buf = [0u8; 8192];
    assert_eq!(b.recv(&c, &mut buf), 8192);
    let upd = drain(&mut b, &c, t0());
    assert_eq!(upd.len(), 1);
    assert!(upd[0].h.window > 0);
}

#[test]
fn established_receiver_sws_small_read_no_update() {
    let c = ConnConfig {
        rcv_buf: 8192,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    a.send(&c, &[3u8; 8192]).unwrap();
    pump(&mut a, &mut b, &c, t0());
    let mut buf = [0u8; 10];
    assert_eq!(b.recv(&c, &mut buf), 10);
    assert!(
        drain(&mut b, &c, t0()).is_empty(),
        "10 bytes is not worth a window update"
    );
}

#[test]
fn established_fast_retransmit_after_three_dupacks() {
    let c = ConnConfig {
        sack: false,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    a.send(&c, &[9u8; 6 * 1448]).unwrap();
    let segs = drain(&mut a, &c, t0());
    assert_eq!(segs.len(), 6);
    // Lose the first; deliver the rest, each making a duplicate ACK.
    let mut dup = Vec::new();
    for s in &segs[1..] {
        feed(&mut b, &c, t0(), &s.as_seg());
        dup.extend(drain(&mut b, &c, t0()));
    }
    assert!(dup.len() >= 3);
    let mut ctr = Counters::default();
    let mut rtx = Vec::new();
    // The first ACK from b also updates the window (not a duplicate); feed them all.
    for d in &dup {
        a.on_segment(&c, t0(), &d.as_seg(), None, &mut unlimited(), &mut ctr);
        rtx.extend(drain(&mut a, &c, t0()));
    }
    assert_eq!(rtx.len(), 1);
    assert_eq!(rtx[0].h.seq, segs[0].h.seq);
    assert_eq!(a.stats(&c).retransmits, 1);
    feed(&mut b, &c, t0(), &rtx[0].as_seg());
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(read_all(&mut b, &c).len(), 6 * 1448);
}

#[test]
fn established_sack_recovery_retransmits_only_holes() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.set_nodelay(true);
    a.send(&c, &[5u8; 8 * 1436]).unwrap();
    let segs = drain(&mut a, &c, t0());
    assert_eq!(segs.len(), 8);
    // Lose segments 1 and 4.
    let mut acks = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if i == 1 || i == 4 {
            continue;
        }
        feed(&mut b, &c, t0(), &s.as_seg());
        acks.extend(drain(&mut b, &c, t0()));
    }
    let mut rtx = Vec::new();
    for ack in &acks {
        feed(&mut a, &c, t0(), &ack.as_seg());
        rtx.extend(drain(&mut a, &c, t0()));
    }
    let seqs: Vec<_> = rtx.iter().map(|s| s.h.seq).collect();
    assert!(seqs.contains(&segs[1].h.seq), "{seqs:?}");
    for s in &rtx {
        feed(&mut b, &c, t0(), &s.as_seg());
    }
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(read_all(&mut b, &c).len(), 8 * 1436);
    assert!(a.stats(&c).retransmits <= 3);
}

/// Sends `n` full segments from `a` (nodelay), delivers all but `lost` to `b` and
/// returns what `a` sent and the ACKs `b` produced, in order.
fn send_with_losses(
    a: &mut Tcb,
    b: &mut Tcb,
    c: &ConnConfig,
    n: usize,
    lost: &[usize],
) -> (Vec<Sent>, Vec<Sent>) {
    a.set_nodelay(true);
    a.send(c, &vec![5u8; n * 1448]).unwrap();
    let segs = drain(a, c, t0());
    assert!(segs.len() >= n, "cwnd let {} of {n} out", segs.len());
    let mut acks = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if !lost.contains(&i) {
            feed(b, c, t0(), &s.as_seg());
            acks.extend(drain(b, c, t0()));
        }
    }
    (segs, acks)
}

#[test]
fn established_sack_recovery_pipe_releases_several_lost_segments_per_ack() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    // 10 segments (the initial window), 1..=4 lost: one ACK for 0, then dupACKs
    // SACKing 5.., 5..=6, 5..=7, ...
    let (segs, acks) = send_with_losses(&mut a, &mut b, &c, 10, &[1, 2, 3, 4]);
    let mut per_ack = Vec::new();
    for ack in &acks {
        feed(&mut a, &c, t0(), &ack.as_seg());
        per_ack.push(drain(&mut a, &c, t0()));
    }
    // The third dupACK (4th ACK) starts recovery. Once the first retransmission is
    // out, RFC 6675 pipe (outstanding - SACKed - lost + retransmitted) is below cwnd:
    // more of the lost segments follow on the same ACK, not one hole per ACK.
    let rtx: Vec<_> = per_ack[3].iter().map(|s| s.h.seq).collect();
    assert!(rtx.len() >= 2, "{rtx:?}");
    assert_eq!(rtx[0], segs[1].h.seq);
    assert_eq!(rtx[1], segs[2].h.seq);
    for s in per_ack.iter().flatten() {
        feed(&mut b, &c, t0(), &s.as_seg());
    }
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(read_all(&mut b, &c).len(), 10 * 1448);
    let st = a.stats(&c);
    assert_eq!((st.fast_retransmits, st.sack_recoveries), (1, 1));
    assert_eq!(st.retransmits, 4, "each lost segment once");
}

#[test]
fn established_dupacks_without_sack_count_fast_retransmit_not_sack_recovery() {
    let c = ConnConfig {
        sack: false,
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    let (_, acks) = send_with_losses(&mut a, &mut b, &c, 8, &[1]);
    let mut ctr = Counters::default();
    for ack in &acks {
        a.on_segment(&c, t0(), &ack.as_seg(), None, &mut unlimited(), &mut ctr);
        drain(&mut a, &c, t0());
    }
    assert_eq!((ctr.fast_retransmits, ctr.sack_recoveries), (1, 0));
    let st = a.stats(&c);
    assert_eq!((st.fast_retransmits, st.sack_recoveries), (1, 0));
}

#[test]
fn established_sack_blocks_merged_all_kept_bogus_ignored() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    let m = u32::from(a.mss);
    let una = a.snd_una;
    let at = |k: u32| una + k * m;
    a.snd_max = at(20);
    let blk = |l: u32, r: u32| SackBlock {
        left: at(l),
        right: at(r),
    };
    let mut ctr = Counters::default();
    let mut ack = seg(ISS_B + 1, una.0, TcpFlags::ACK);
    for b in [blk(2, 3), blk(3, 4), blk(6, 7), blk(25, 26)] {
        ack.options.sack_blocks.push(b);
    }
    a.update_scoreboard(&ack, &mut ctr);
    // [2,3) and [3,4) touch: merged. [25,26) is beyond SND.MAX: ignored.
    assert_eq!(a.sacked.ranges(), &[blk(2, 4), blk(6, 7)]);
    let mut ack = seg(ISS_B + 1, una.0, TcpFlags::ACK);
    for b in [blk(8, 9), blk(10, 11), blk(12, 13), blk(5, 6)] {
        ack.options.sack_blocks.push(b);
    }
    a.update_scoreboard(&ack, &mut ctr);
    // Five ranges ([5,6) and [6,7) merge): all are kept (RFC 6675 scoreboard, not
    // the four blocks one option carries).
    assert_eq!(
        a.sacked.ranges(),
        &[blk(2, 4), blk(5, 7), blk(8, 9), blk(10, 11), blk(12, 13)]
    );
    assert_eq!(a.sacked_bytes(), 7 * m);
    assert_eq!(ctr.sack_blocks_ignored, 0);
}

#[test]
fn established_sack_scoreboard_bounded_by_window_at_one_smss_per_range() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    let una = a.snd_una;
    // Ten segments outstanding: at most 11 ranges, however small the blocks.
    a.snd_max = una + 10 * u32::from(a.mss);
    let mut ctr = Counters::default();
    for k in 0..100u32 {
        let mut ack = seg(ISS_B + 1, una.0, TcpFlags::ACK);
        ack.options.sack_blocks.push(SackBlock {
            left: una + (2 * k + 1),
            right: una + (2 * k + 2),
        });
        a.update_scoreboard(&ack, &mut ctr);
    }
    assert_eq!(a.sacked.len(), 11);
    assert_eq!(ctr.sack_blocks_ignored, 89, "counted, not kept");
    // The cumulative ACK trims it; once everything is acknowledged, it is freed.
    let ack = seg(ISS_B + 1, a.snd_max.0, TcpFlags::ACK);
    a.snd_nxt = a.snd_max;
    feed(&mut a, &c, t0(), &ack);
    assert!(a.sacked.is_empty());
    assert_eq!(a.sacked.heap_bytes(), 0);
}

/// RFC 6675 5.1: after an RTO the scoreboard is emptied (RFC 2018 8), but what the
/// peer SACKs during the go-back-N that follows is not sent again.
#[test]
fn established_rto_go_back_n_skips_data_sacked_after_the_timeout() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    a.set_nodelay(true);
    a.send(&c, &vec![7u8; 6 * 1448]).unwrap();
    let segs = drain(&mut a, &c, t0());
    assert_eq!(segs.len(), 6);
    let at = |k: usize| segs[k].h.seq;
    // SACK information from before the timeout is expunged.
    let mut ack = seg(ISS_B + 1, at(0).0, TcpFlags::ACK);
    ack.options.sack_blocks.push(SackBlock {
        left: at(5),
        right: a.snd_max,
    });
    feed(&mut a, &c, t0(), &ack);
    assert_eq!(a.sack_ranges(), 1);
    let rto = a.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    a.handle_timeout(&c, rto, &mut ctr);
    assert_eq!(a.sack_ranges(), 0, "RFC 2018 8: expunged at the RTO");
    let first = drain(&mut a, &c, rto);
    assert_eq!(first[0].h.seq, at(0));
    // The ACK of segment 0 SACKs segments 2 and 3: the go-back-N resends 1, then 4.
    let mut ack = seg(ISS_B + 1, at(1).0, TcpFlags::ACK);
    ack.options.timestamps = first[0].h.options.timestamps.map(|t| TcpTimestamps {
        tsval: a.ts_recent().unwrap_or(0),
        tsecr: t.tsval,
    });
    ack.options.sack_blocks.push(SackBlock {
        left: at(2),
        right: at(4),
    });
    feed(&mut a, &c, rto, &ack);
    let sent: Vec<_> = first
        .iter()
        .chain(&drain(&mut a, &c, rto))
        .map(|s| (s.h.seq, s.h.seq + s.h.payload_len))
        .collect();
    // Segment 1 is resent, then segment 4; nothing of [2, 4) again.
    assert!(
        sent.iter().any(|&(l, r)| l <= at(1) && at(1) < r),
        "{sent:?}"
    );
    assert!(sent.iter().any(|&(l, _)| l == at(4)), "{sent:?}");
    assert!(
        sent.iter().all(|&(l, r)| r <= at(2) || l >= at(4)),
        "SACKed data resent: {sent:?}"
    );
}

#[test]
fn established_sack_scoreboard_pipe_counts_per_rfc6675() {
    let c = cfg();
    let (mut a, _b) = established(&c);
    let m = u32::from(a.mss);
    let una = a.snd_una;
    let at = |k: u32| una + k * m;
    a.snd_max = at(11);
    a.snd_nxt = at(11);
    // SACKed: [2,3), [5,6), [7,9) (in MSS units).
    for (l, r) in [(2, 3), (5, 6), (7, 9)] {
        a.sacked.insert(
            SackBlock {
                left: at(l),
                right: at(r),
            },
            usize::MAX,
        );
    }
    let got: Vec<_> = a
        .sacked
        .holes(a.snd_una, a.snd_max, a.mss)
        .map(|h| (h.lost, h.tail))
        .collect();
    // [0,2): 3 SACKed ranges above -> lost. [3,5): 3*SMSS SACKed above > 2*SMSS ->
    // lost. [6,7): 2*SMSS above -> not lost. [9,11): the tail above HighACK.
    assert_eq!(
        got,
        [(true, false), (true, false), (false, false), (false, true)]
    );
    a.in_recovery = true;
    a.sack_on = true;
    a.high_rxt = una;
    assert_eq!(a.pipe(), 3 * m, "[6,7) and the tail");
    a.high_rxt = at(1);
    assert_eq!(a.pipe(), 4 * m, "plus one retransmitted segment");
    assert_eq!(a.flight(), 4 * m);
    assert_eq!(a.next_hole(true), Some((at(1), at(2))));
    a.high_rxt = at(5);
    assert_eq!(a.next_hole(true), None, "[6,7) is not lost");
    assert_eq!(a.next_hole(false), Some((at(6), at(7))), "NextSeg() rule 3");
}

// ---------------------------------------------------------------- FIN-WAIT-1

fn fin_wait_1(c: &ConnConfig) -> (Tcb, Tcb, Sent) {
    let (mut a, b) = established(c);
    a.close(t0());
    let fin = drain(&mut a, c, t0()).remove(0);
    (a, b, fin)
}

#[test]
fn fin_wait_1_ack_of_fin_moves_to_fin_wait_2() {
    let c = cfg();
    let (mut a, mut b, fin) = fin_wait_1(&c);
    feed(&mut b, &c, t0(), &fin.as_seg());
    assert_eq!(b.state(), State::CloseWait);
    let ack = drain(&mut b, &c, t0());
    feed(&mut a, &c, t0(), &ack[0].as_seg());
    assert_eq!(a.state(), State::FinWait2);
}

#[test]
fn fin_wait_1_fin_moves_to_closing_simultaneous_close() {
    let c = cfg();
    let (mut a, mut b, fin_a) = fin_wait_1(&c);
    b.close(t0());
    let fin_b = drain(&mut b, &c, t0()).remove(0);
    feed(&mut a, &c, t0(), &fin_b.as_seg());
    feed(&mut b, &c, t0(), &fin_a.as_seg());
    assert_eq!(a.state(), State::Closing);
    assert_eq!(b.state(), State::Closing);
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(a.state(), State::TimeWait);
    assert_eq!(b.state(), State::TimeWait);
}

#[test]
fn fin_wait_1_fin_ack_moves_to_time_wait() {
    let c = cfg();
    let (mut a, _b, fin) = fin_wait_1(&c);
    let s = seg(ISS_B + 1, fin.h.seq.0 + 1, TcpFlags::FIN | TcpFlags::ACK);
    let mut s = s;
    s.options.timestamps = a.ts_recent().map(|r| TcpTimestamps { tsval: r, tsecr: 0 });
    feed(&mut a, &c, t0(), &s);
    assert_eq!(a.state(), State::TimeWait);
}

#[test]
fn fin_wait_1_rst_resets() {
    let c = cfg();
    let (mut a, _b, _) = fin_wait_1(&c);
    feed(&mut a, &c, t0(), &seg(ISS_B + 1, 0, TcpFlags::RST));
    assert_eq!(a.close_reason(), Some(CloseReason::Reset));
}

#[test]
fn fin_wait_1_rto_retransmits_fin() {
    let c = cfg();
    let (mut a, _b, fin) = fin_wait_1(&c);
    let at = a.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    a.handle_timeout(&c, at, &mut ctr);
    let again = drain(&mut a, &c, at);
    assert_eq!(again.len(), 1);
    assert!(again[0].h.flags.fin());
    assert_eq!(again[0].h.seq, fin.h.seq);
}

// ---------------------------------------------------------------- FIN-WAIT-2

fn fin_wait_2(c: &ConnConfig) -> (Tcb, Tcb) {
    let (mut a, mut b, fin) = fin_wait_1(c);
    feed(&mut b, c, t0(), &fin.as_seg());
    let ack = drain(&mut b, c, t0());
    feed(&mut a, c, t0(), &ack[0].as_seg());
    assert_eq!(a.state(), State::FinWait2);
    (a, b)
}

#[test]
fn fin_wait_2_fin_moves_to_time_wait() {
    let c = cfg();
    let (mut a, mut b) = fin_wait_2(&c);
    b.close(t0());
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(a.state(), State::TimeWait);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.close_reason(), Some(CloseReason::Normal));
}

#[test]
fn fin_wait_2_half_close_keeps_reading() {
    let c = cfg();
    let (mut a, mut b) = established(&c);
    a.shutdown(t0());
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(a.state(), State::FinWait2);
    assert_eq!(b.state(), State::CloseWait);
    // CLOSE-WAIT may still send; FIN-WAIT-2 still receives.
    b.send(&c, b"late reply").unwrap();
    pump(&mut a, &mut b, &c, t0());
    assert_eq!(read_all(&mut a, &c), b"late reply");
    assert_eq!(
        a.poll_timeout(&c),
        None,
        "no FIN_WAIT_2 timeout after shutdown only"
    );
}

#[test]
fn fin_wait_2_timeout_closes_after_close() {
    let c = cfg();
    let (mut a, _b) = fin_wait_2(&c);
    let at = a.poll_timeout(&c).unwrap();
    assert_eq!(at - t0(), c.fin_wait_2_timeout);
    let mut ctr = Counters::default();
    a.handle_timeout(&c, at, &mut ctr);
    assert_eq!(a.state(), State::Closed);
}

#[test]
fn fin_wait_2_data_after_close_answered_with_rst() {
    let c = cfg();
    let (mut a, mut b) = fin_wait_2(&c);
    b.send(&c, b"nobody reads this").unwrap();
    let s = drain(&mut b, &c, t0());
    feed(&mut a, &c, t0(), &s[0].as_seg());
    assert_eq!(a.state(), State::Closed);
    assert!(drain(&mut a, &c, t0())[0].h.flags.rst());
}

// ---------------------------------------------------------------- CLOSE-WAIT

#[test]
fn close_wait_close_moves_to_last_ack() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    drain(&mut t, &c, t0());
    t.close(t0());
    assert_eq!(t.state(), State::LastAck);
    let out = drain(&mut t, &c, t0());
    assert!(out[0].h.flags.fin());
}

#[test]
fn close_wait_rst_resets() {
    let c = cfg();
    let mut t = server_plain(&c);
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, 0, TcpFlags::RST));
    assert_eq!(t.close_reason(), Some(CloseReason::Reset));
}

// ---------------------------------------------------------------- CLOSING

#[test]
fn closing_ack_moves_to_time_wait() {
    let c = cfg();
    let mut t = server_plain(&c);
    t.close(t0());
    drain(&mut t, &c, t0()); // FIN at ISS_B+1
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::Closing);
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, ISS_B + 2, TcpFlags::ACK));
    assert_eq!(t.state(), State::TimeWait);
}

#[test]
fn closing_rst_closes() {
    let c = cfg();
    let mut t = server_plain(&c);
    t.close(t0());
    drain(&mut t, &c, t0());
    feed(
        &mut t,
        &c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, 0, TcpFlags::RST));
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Normal));
}

// ---------------------------------------------------------------- LAST-ACK

fn last_ack(c: &ConnConfig) -> Tcb {
    let mut t = server_plain(c);
    feed(
        &mut t,
        c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 1, TcpFlags::FIN | TcpFlags::ACK),
    );
    t.close(t0());
    drain(&mut t, c, t0());
    assert_eq!(t.state(), State::LastAck);
    t
}

#[test]
fn last_ack_ack_moves_to_closed() {
    let c = cfg();
    let mut t = last_ack(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, ISS_B + 2, TcpFlags::ACK));
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Normal));
}

#[test]
fn last_ack_rto_retransmits_fin() {
    let c = cfg();
    let mut t = last_ack(&c);
    let at = t.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    t.handle_timeout(&c, at, &mut ctr);
    let out = drain(&mut t, &c, at);
    assert!(out[0].h.flags.fin());
    assert_eq!(out[0].h.seq, SeqNumber(ISS_B + 1));
}

#[test]
fn last_ack_rst_closes() {
    let c = cfg();
    let mut t = last_ack(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, 0, TcpFlags::RST));
    assert_eq!(t.state(), State::Closed);
}

// ---------------------------------------------------------------- TIME-WAIT

fn time_wait(c: &ConnConfig) -> Tcb {
    let mut t = server_plain(c);
    t.close(t0());
    drain(&mut t, c, t0());
    feed(
        &mut t,
        c,
        t0(),
        &seg(ISS_A + 1, ISS_B + 2, TcpFlags::FIN | TcpFlags::ACK),
    );
    assert_eq!(t.state(), State::TimeWait);
    drain(&mut t, c, t0());
    t
}

#[test]
fn time_wait_retransmitted_fin_acked_and_timer_restarted() {
    let c = cfg();
    let mut t = time_wait(&c);
    let later = t0() + Duration::from_secs(10);
    feed(
        &mut t,
        &c,
        later,
        &seg(ISS_A + 1, ISS_B + 2, TcpFlags::FIN | TcpFlags::ACK),
    );
    let out = drain(&mut t, &c, later);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].h.ack, SeqNumber(ISS_A + 2));
    assert_eq!(t.poll_timeout(&c).unwrap(), later + c.msl * 2);
}

#[test]
fn time_wait_2msl_expiry_closes() {
    let c = cfg();
    let mut t = time_wait(&c);
    let at = t.poll_timeout(&c).unwrap();
    assert_eq!(at, t0() + Duration::from_secs(60));
    let mut ctr = Counters::default();
    t.handle_timeout(&c, at, &mut ctr);
    assert_eq!(t.state(), State::Closed);
    assert_eq!(t.close_reason(), Some(CloseReason::Normal));
}

#[test]
fn time_wait_rst_closes() {
    let c = cfg();
    let mut t = time_wait(&c);
    feed(&mut t, &c, t0(), &seg(ISS_A + 2, 0, TcpFlags::RST));
    assert_eq!(t.state(), State::Closed);
}

#[test]
fn time_wait_syn_challenge_acked() {
    let c = cfg();
    let mut t = time_wait(&c);
    let (_, ctr) = feed_ctr(&mut t, &c, t0(), &seg(ISS_A + 2, 0, TcpFlags::SYN));
    assert_eq!(ctr.challenge_acks, 1);
    assert_eq!(t.state(), State::TimeWait);
}

// ---------------------------------------------------------------- keepalive, size

#[test]
fn established_keepalive_probes_then_times_out() {
    let c = ConnConfig {
        keepalive_idle: Some(Duration::from_secs(10)),
        keepalive_interval: Duration::from_secs(1),
        keepalive_count: 2,
        ..cfg()
    };
    let (mut a, _b) = established(&c);
    let mut ctr = Counters::default();
    let mut probes = 0;
    while let Some(at) = a.poll_timeout(&c) {
        a.handle_timeout(&c, at, &mut ctr);
        probes += drain(&mut a, &c, at).len();
    }
    assert_eq!(probes, 2);
    assert_eq!(a.close_reason(), Some(CloseReason::TimedOut));
}

#[test]
fn established_keepalive_answered_stays_open() {
    let c = ConnConfig {
        keepalive_idle: Some(Duration::from_secs(10)),
        ..cfg()
    };
    let (mut a, mut b) = established(&c);
    let at = a.poll_timeout(&c).unwrap();
    let mut ctr = Counters::default();
    a.handle_timeout(&c, at, &mut ctr);
    let probe = drain(&mut a, &c, at);
    assert_eq!(probe[0].h.seq, SeqNumber(ISS_A));
    feed(&mut b, &c, at, &probe[0].as_seg());
    let reply = drain(&mut b, &c, at);
    feed(&mut a, &c, at, &reply[0].as_seg());
    assert_eq!(a.poll_timeout(&c).unwrap(), at + Duration::from_secs(10));
}

#[test]
fn tcb_idle_size_under_one_kib() {
    let size = core::mem::size_of::<Tcb>();
    println!("idle Tcb: {size} bytes");
    assert!(size < 1024, "Tcb is {size} bytes");
}
