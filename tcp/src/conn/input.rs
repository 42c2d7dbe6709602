//! Segment arrival: RFC 9293 3.10.7 ("SEGMENT ARRIVES") with the RFC 5961 blind-attack
//! mitigations and RFC 7323 PAWS.

use super::*;
use crate::cc::CongestionControl;
use crate::iface::Predicted;

/// RFC 7323 5.5: TS.Recent is invalid after the connection was idle this long
/// (24 days, under the 2^31 ms it takes a 1 ms timestamp clock to wrap halfway).
const TS_RECENT_MAX_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// Zero-copy receive hook: offered in-order payload straight from the frame, returns
/// how many bytes the application consumed.
pub type Sink<'s> = Option<&'s mut dyn FnMut(&[u8]) -> usize>;

/// What [`Tcb::on_segment_offer`] made of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arrival {
    /// A segment to send at once (a RST per RFC 9293 3.10.7), as from
    /// [`Tcb::on_segment`].
    pub reply: Option<OutSegment>,
    /// In-order payload the TCB accepted (RCV.NXT already moved past it) but did not
    /// buffer, to be offered to the application straight from the frame. The caller
    /// must then call [`Tcb::finish_offer`] before any other call on this TCB. Only
    /// set when offering was asked for and the receive buffer held no in-order data
    /// (so order is kept).
    pub offer: Option<Offer>,
}

/// In-order payload of a segment lent to the application (see [`Arrival::offer`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// The bytes, as a range of the segment's payload.
    pub range: core::ops::Range<usize>,
    /// Out-of-order data was held: consumed bytes must be stepped over in the receive
    /// buffer so that the out-of-order bytes stay at their offsets.
    holes: bool,
    /// Out-of-order bytes that this payload joined to the stream: readable once the
    /// payload's unconsumed tail is buffered in front of them.
    joined: usize,
}

/// What [`Tcb::on_predicted`] made of a predicted segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prediction {
    /// In-order payload to offer the application (the caller, which only predicts for
    /// connections it may offer payload to, then calls [`Tcb::finish_offer`]).
    pub offer: Option<Offer>,
    /// The earliest deadline this segment set (a timer armed or moved), if any. The
    /// other deadlines only moved later or went away, so the caller's timer entry, if
    /// no later than every deadline before, needs a change only when it is later than
    /// this one: the same decision as recomputing [`Tcb::poll_timeout`], without it.
    pub armed: Option<Instant>,
}

impl Tcb {
    /// Processes one incoming segment. Returns a segment to send at once when the
    /// answer depends on the incoming segment rather than on the TCB (a RST per
    /// RFC 9293 3.10.7); everything else is produced by [`Tcb::dispatch`].
    ///
    /// `sink`, if given, is offered in-order payload before it is copied into the
    /// receive buffer (only while that buffer is empty and no out-of-order data is held,
    /// so order is kept). `challenge` is the stack-wide RFC 5961 7 challenge-ACK limiter.
    pub fn on_segment(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        sink: Sink<'_>,
        challenge: &mut TokenBucket,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        let offer = sink.is_some();
        let arrival = self.on_segment_offer(cfg, now, seg, offer, challenge, ctr);
        if let (Some(o), Some(f)) = (arrival.offer, sink) {
            let data = seg.payload.get(o.range.clone()).unwrap_or(&[]);
            let k = f(data);
            self.finish_offer(o, k, data);
        }
        arrival.reply
    }

    /// Like [`Tcb::on_segment`], but instead of calling a sink it reports the in-order
    /// payload it accepted without buffering ([`Arrival::offer`], only if `offer`), so
    /// that the caller can lend it to the application mutably, in the frame (the
    /// stack's zero-copy receive: WebSocket unmasking in place). The caller must finish
    /// with [`Tcb::finish_offer`].
    pub fn on_segment_offer(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        offer: bool,
        challenge: &mut TokenBucket,
        ctr: &mut Counters,
    ) -> Arrival {
        let mut offered = None;
        let reply = match self.state {
            State::Closed => {
                // RFC 9293 3.10.7.1
                let r = reset_for(seg);
                ctr.resets_sent += u64::from(r.is_some());
                r
            }
            State::Listen => self.on_listen(cfg, now, seg, ctr),
            State::SynSent => self.on_syn_sent(cfg, now, seg, ctr),
            _ => {
                let text = Text {
                    offer,
                    offered: &mut offered,
                };
                self.on_synchronized(cfg, now, seg, text, challenge, ctr)
            }
        };
        Arrival {
            reply,
            offer: offered,
        }
    }

    /// Completes an [`Arrival::offer`]: `payload` is the offered bytes (as the
    /// application left them), of which it consumed the first `consumed`; the rest is
    /// copied into the receive buffer (and the connection reported readable).
    pub fn finish_offer(&mut self, offer: Offer, consumed: usize, payload: &[u8]) {
        let k = consumed.min(payload.len());
        if offer.holes && k > 0 {
            // Consumed straight from the frame: step over those positions so the
            // out-of-order bytes stay at their offsets.
            self.rcv_buf.enqueue_unallocated(k);
            self.rcv_buf.dequeue_allocated(k);
        }
        if let Some(rest) = payload.get(k..).filter(|r| !r.is_empty()) {
            self.buffer_text(rest);
        }
        if offer.joined > 0 {
            // Out-of-order bytes that now continue the stream are already in place.
            self.rcv_buf.enqueue_unallocated(offer.joined);
        }
    }

    /// RFC 9293 3.10.7.2 (LISTEN).
    fn on_listen(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        if seg.flags.rst() {
            // First: an incoming RST should be ignored.
            return None;
        }
        if seg.flags.ack() {
            // Second: any acknowledgment is bad: <SEQ=SEG.ACK><CTL=RST>.
            ctr.resets_sent += 1;
            return reset_for(seg);
        }
        if !seg.flags.syn() {
            // Fourth: other control or text-bearing segments: drop.
            return None;
        }
        // Third: SYN.
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.snd_una = self.iss;
        self.snd_nxt = self.iss;
        self.snd_max = self.iss;
        self.negotiate(cfg, seg);
        self.snd_wnd = u32::from(seg.window); // never scaled in a SYN (RFC 7323 2.2)
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = self.iss;
        self.rcv_adv = self.rcv_nxt + self.window_space(cfg).min(65_535);
        self.state = State::SynReceived;
        self.pending |= P_SYN;
        self.last_recv = now;
        None
    }

    /// Option negotiation from the peer's SYN (RFC 9293 3.7.1, RFC 7323, RFC 2018).
    fn negotiate(&mut self, cfg: &ConnConfig, seg: &TcpRepr<'_>) {
        // RFC 9293 3.7.1: without an MSS option assume 536 (IPv4).
        let peer_mss = seg.options.mss.unwrap_or(536);
        self.mss = peer_mss.min(cfg.mss).max(64);
        // RFC 7323 2.2: scaling only if both sides sent the option.
        match (cfg.window_scaling, seg.options.window_scale) {
            (true, Some(ws)) => {
                self.ws_ok = true;
                // RFC 7323 2.3: a shift above 14 is treated as 14.
                self.snd_wscale = ws.min(14);
                self.rcv_wscale = our_wscale(cfg);
            }
            _ => {
                self.ws_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack_on = cfg.sack && seg.options.sack_permitted;
        if let (true, Some(ts)) = (cfg.timestamps, seg.options.timestamps) {
            self.ts_on = true;
            self.ts_recent = ts.tsval;
        } else {
            self.ts_on = false;
        }
        self.cc = Congestion::new(cfg.congestion, u32::from(self.mss));
    }

    /// RFC 9293 3.10.7.3 (SYN-SENT).
    fn on_syn_sent(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        let mut ack_ok = false;
        // First: check the ACK bit.
        if seg.flags.ack() {
            // If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless RST).
            if seg.ack <= self.iss || seg.ack > self.snd_max {
                if seg.flags.rst() {
                    return None;
                }
                ctr.resets_sent += 1;
                return reset_for(seg);
            }
            ack_ok = seg.ack > self.snd_una;
        }
        // Second: check the RST bit.
        if seg.flags.rst() {
            // RFC 5961 3.2 / RFC 9293: acceptable only if it acknowledges the SYN.
            if ack_ok {
                ctr.resets_received += 1;
                self.enter_closed(now, CloseReason::Refused);
            }
            return None;
        }
        // Fourth: check the SYN bit (third, security, is not implemented).
        if !seg.flags.syn() {
            return None;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.negotiate(cfg, seg);
        self.last_recv = now;
        if ack_ok {
            self.snd_una = seg.ack;
            self.snd_buf_seq = self.snd_una;
            self.rtt_sample_syn(cfg, now, seg);
            // RFC 7323 2.2: the window in a SYN is never scaled.
            self.snd_wnd = u32::from(seg.window);
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.rcv_adv = self.rcv_nxt + self.window_space(cfg);
            self.state = State::Established;
            self.rto_at = None;
            self.retries = 0;
            self.backoff = 0;
            self.pending &= !P_SYN;
            self.pending |= P_ACK;
            self.add_event(Events::ESTABLISHED.union(Events::WRITABLE));
            if self.fin_queued {
                self.state = State::FinWait1;
            }
        } else {
            // Simultaneous open: SYN-RECEIVED, send <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
            self.state = State::SynReceived;
            self.snd_wnd = u32::from(seg.window);
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = self.snd_una;
            self.rcv_adv = self.rcv_nxt + self.window_space(cfg).min(65_535);
            self.snd_nxt = self.iss;
            self.pending |= P_SYN;
        }
        None
    }

    fn rtt_sample_syn(&mut self, cfg: &ConnConfig, now: Instant, seg: &TcpRepr<'_>) {
        // Karn: only a SYN that was not retransmitted gives a sample.
        if self.retries == 0 {
            if let Some((_, sent)) = self.rtt_probe.take() {
                self.rtt.sample(now - sent, cfg.rto_min, cfg.rto_max);
                return;
            }
        }
        if let (true, Some(ts)) = (self.ts_on, seg.options.timestamps) {
            if ts.tsecr != 0 && self.retries == 0 {
                let ms = self.ts_now(now).wrapping_sub(ts.tsecr);
                self.rtt.sample(
                    Duration::from_millis(u64::from(ms)),
                    cfg.rto_min,
                    cfg.rto_max,
                );
            }
        }
        self.rtt_probe = None;
    }

    /// Receive window for the acceptability test: what we advertised.
    fn rcv_wnd(&self) -> u32 {
        self.rcv_adv.distance(self.rcv_nxt).max(0) as u32
    }

    /// RFC 9293 3.10.7.4 first check: the segment acceptability table.
    pub(super) fn acceptable(&self, seg: &TcpRepr<'_>) -> bool {
        let wnd = self.rcv_wnd();
        let len = seg.seq_len();
        match (len, wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            (0, _) => seg.seq.in_window(self.rcv_nxt, wnd),
            (_, 0) => false,
            (_, _) => {
                seg.seq.in_window(self.rcv_nxt, wnd)
                    || (seg.seq + (len - 1)).in_window(self.rcv_nxt, wnd)
            }
        }
    }

    /// RFC 5961 7: challenge ACKs are rate limited (stack-wide, like Linux).
    fn challenge_ack(&mut self, now: Instant, challenge: &mut TokenBucket, ctr: &mut Counters) {
        if challenge.allow(now) {
            self.pending |= P_ACK;
            ctr.challenge_acks += 1;
        } else {
            ctr.challenge_acks_suppressed += 1;
        }
    }

    /// RFC 9293 3.10.7.4: SYN-RECEIVED and every synchronized state.
    fn on_synchronized(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        text: Text<'_>,
        challenge: &mut TokenBucket,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        // RFC 7323 5.3 (PAWS), before the sequence check: R1) if TSval < TS.Recent the
        // segment is an old duplicate: ACK it (unless RST) and drop it.
        if self.ts_on && !seg.flags.rst() && self.state != State::SynReceived {
            if let Some(ts) = seg.options.timestamps {
                if (ts.tsval.wrapping_sub(self.ts_recent) as i32) < 0 {
                    // RFC 7323 5.5: after more than 24 days idle the peer's clock may
                    // have wrapped past TS.Recent: it is invalid, so the segment is not
                    // judged by it (R3 below then takes the new value).
                    if now.saturating_since(self.last_recv) > TS_RECENT_MAX_IDLE {
                        ctr.ts_recent_expired += 1;
                        self.ts_recent = ts.tsval;
                    } else {
                        ctr.unacceptable += 1;
                        self.pending |= P_ACK;
                        return None;
                    }
                }
            }
        }

        // A retransmitted SYN in a passive SYN-RECEIVED: send the SYN-ACK again.
        if self.state == State::SynReceived
            && self.passive
            && seg.flags.syn()
            && !seg.flags.rst()
            && seg.seq + 1u32 == self.rcv_nxt
        {
            self.pending |= P_SYN;
            self.snd_nxt = self.iss;
            return None;
        }

        // First: check the sequence number.
        let mut accepted = self.acceptable(seg);
        let mut zero_window_probe = false;
        if !accepted && self.rcv_wnd() == 0 && seg.seq == self.rcv_nxt {
            // RFC 9293 3.10.7.4: with a zero window, still process valid ACKs and RSTs
            // (the text is dropped below and an ACK is sent).
            accepted = true;
            zero_window_probe = true;
        }
        if !accepted {
            ctr.unacceptable += 1;
            // If an incoming segment is not acceptable, an acknowledgment should be sent
            // in reply (unless the RST bit is set).
            if !seg.flags.rst() {
                self.pending |= P_ACK;
                // RFC 9293 3.10.7.4 TIME-WAIT: a retransmitted FIN restarts 2 MSL.
                if self.state == State::TimeWait
                    && seg.flags.fin()
                    && seg.seq + seg.seq_len() == self.rcv_nxt
                {
                    self.close_at = Some(now + cfg.msl * 2);
                }
            }
            return None;
        }

        // Second: check the RST bit (RFC 5961 3.2).
        if seg.flags.rst() {
            if seg.seq != self.rcv_nxt {
                // In window but not exact: challenge ACK.
                self.challenge_ack(now, challenge, ctr);
                return None;
            }
            ctr.resets_received += 1;
            match self.state {
                State::SynReceived if self.passive => {
                    // Return to LISTEN: for the stack, the half-open TCB just goes away.
                    self.enter_closed(now, CloseReason::Reset);
                }
                State::SynReceived => self.enter_closed(now, CloseReason::Refused),
                State::Closing | State::LastAck | State::TimeWait => {
                    self.enter_closed(now, CloseReason::Normal)
                }
                _ => self.enter_closed(now, CloseReason::Reset),
            }
            return None;
        }

        // Fourth: check the SYN bit (third, security, is not implemented).
        if seg.flags.syn() {
            if self.state == State::SynReceived && self.passive {
                // RFC 9293: a passive-open SYN-RECEIVED returns to LISTEN on a new SYN;
                // a retransmitted SYN (same ISN) just gets the SYN-ACK again.
                if seg.seq + 1u32 == self.rcv_nxt {
                    self.pending |= P_SYN;
                    self.snd_nxt = self.iss;
                    return None;
                }
                self.enter_closed(now, CloseReason::Reset);
                return None;
            }
            // RFC 5961 4.2: any SYN in a synchronized state gets a challenge ACK.
            self.challenge_ack(now, challenge, ctr);
            return None;
        }

        // Fifth: check the ACK field.
        if !seg.flags.ack() {
            return None;
        }
        if self.state == State::SynReceived {
            // If SND.UNA < SEG.ACK =< SND.NXT, enter ESTABLISHED; else send a reset.
            if seg.ack > self.snd_una && seg.ack <= self.snd_max {
                self.snd_una = seg.ack;
                self.snd_buf_seq = self.snd_una;
                self.rtt_sample_syn(cfg, now, seg);
                self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
                self.rto_at = None;
                self.retries = 0;
                self.backoff = 0;
                self.pending &= !P_SYN;
                self.state = if self.fin_queued {
                    State::FinWait1
                } else {
                    State::Established
                };
                self.add_event(Events::ESTABLISHED.union(Events::WRITABLE));
            } else {
                ctr.resets_sent += 1;
                return reset_for(seg);
            }
        }

        // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
        let max_wnd = self.max_snd_wnd.max(1);
        if seg.ack > self.snd_max || seg.ack < self.snd_una - max_wnd {
            ctr.unacceptable += 1;
            self.pending |= P_ACK;
            return None;
        }
        self.last_recv = now;
        self.keepalive_probes = 0;

        // RFC 7323 4.3 (R3): update TS.Recent if SEG.SEQ =< Last.ACK.sent (taken as
        // RCV.NXT, which is what our last ACK carried or will carry).
        if self.ts_on {
            if let Some(ts) = seg.options.timestamps {
                if seg.seq <= self.rcv_nxt {
                    self.ts_recent = ts.tsval;
                }
            }
        }

        let fin_before = self.fin_acked();
        self.process_ack(cfg, now, seg, ctr);
        let fin_acked = self.fin_acked();
        match self.state {
            State::FinWait1 if fin_acked => {
                self.state = State::FinWait2;
                if self.rd_closed() {
                    self.close_at = Some(now + cfg.fin_wait_2_timeout);
                }
            }
            State::Closing if fin_acked => {
                self.enter_time_wait(cfg, now);
                return None;
            }
            State::LastAck if fin_acked => {
                self.enter_closed(now, CloseReason::Normal);
                return None;
            }
            State::TimeWait => {
                // The only thing that can arrive is a retransmitted FIN: ACK it and
                // restart the 2 MSL timeout (handled in the FIN step).
            }
            _ => {}
        }
        let _ = fin_before;

        // Sixth: URG is not supported (RFC 6093: urgent data is deprecated); the urgent
        // pointer is ignored and the bytes are delivered in line.

        // Seventh: process the segment text.
        let mut fin = seg.flags.fin();
        if !seg.payload.is_empty() || fin {
            if zero_window_probe {
                self.pending |= P_ACK;
                return None;
            }
            match self.state {
                State::Established | State::FinWait1 | State::FinWait2 => {
                    if self.rd_closed() && !seg.payload.is_empty() {
                        // Data after close: the application will never read it.
                        self.pending = P_RST;
                        ctr.resets_sent += 1;
                        self.enter_closed(now, CloseReason::Aborted);
                        return None;
                    }
                    fin = self.process_text(cfg, now, seg, text, ctr);
                }
                _ => {
                    // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent
                    // FIN; ignore the text. A retransmitted FIN still needs an ACK.
                    fin = fin && seg.seq + seg.payload.len() + 1u32 == self.rcv_nxt;
                    if fin {
                        self.pending |= P_ACK;
                        if self.state == State::TimeWait {
                            self.close_at = Some(now + cfg.msl * 2);
                        }
                    }
                    return None;
                }
            }
        }

        // Eighth: check the FIN bit (only once it is in order).
        if fin {
            self.rcv_nxt += 1u32;
            self.fin_received = true;
            self.pending |= P_ACK;
            self.add_event(Events::PEER_CLOSED.union(Events::READABLE));
            match self.state {
                State::SynReceived | State::Established => self.state = State::CloseWait,
                State::FinWait1 => {
                    if self.fin_acked() {
                        self.enter_time_wait(cfg, now);
                    } else {
                        self.state = State::Closing;
                    }
                }
                State::FinWait2 => self.enter_time_wait(cfg, now),
                _ => {}
            }
        }
        None
    }

    /// Our FIN was sent and acknowledged.
    pub(super) fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una > self.fin_seq()
    }

    /// Sequence number of our FIN (valid once `fin_queued`).
    pub(super) fn fin_seq(&self) -> SeqNumber {
        self.snd_buf_seq + self.snd_buf.len()
    }

    /// RFC 9293 3.10.7.4 fifth step for ESTABLISHED and later: SND.UNA, the send
    /// window, RTT, congestion control, duplicate ACKs and SACK.
    fn process_ack(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        ctr: &mut Counters,
    ) {
        let wnd = u32::from(seg.window) << self.snd_wscale;
        if self.sack_on && !seg.options.sack_blocks.is_empty() {
            self.update_scoreboard(seg, ctr);
        }
        if seg.ack > self.snd_una {
            let bounds = RtoBounds::of(cfg);
            let _ = self.ack_advance(bounds, now, seg.ack, seg.options.timestamps);
        } else if seg.ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.fin()
            && wnd == self.snd_wnd
            && self.snd_max > self.snd_una
        {
            // RFC 5681 2: a duplicate acknowledgment.
            self.dupacks = self.dupacks.saturating_add(1);
            if self.in_recovery {
                if !self.sack_on {
                    // RFC 5681 3.2 step 4: inflate.
                    self.cc.on_dup_acks_in_recovery(1);
                }
                // With SACK (RFC 6675 5 (C)) the updated scoreboard and `pipe` decide
                // what `dispatch` sends; cwnd is not inflated.
            } else if self.dupacks >= 3
                || (self.sack_on && self.sacked.is_lost(self.snd_una, self.mss))
            {
                // RFC 6675 5: "(1) If DupAcks >= DupThresh, go to step (4). ... (2) If
                // DupAcks < DupThresh but IsLost (HighACK + 1) returns true --
                // indicating at least three segments have arrived above the current
                // cumulative acknowledgment point, which is taken to indicate loss --
                // go to step (4)."
                self.enter_recovery(now, ctr);
            }
        }
        self.update_send_window(seg.seq, seg.ack, wnd);
    }

    /// The fifth step's new acknowledgment (SND.UNA < SEG.ACK =< SND.MAX), shared by the
    /// general path and header prediction: SND.UNA, the send buffer, RTT (RFC 7323 4
    /// RTTM, else one timed segment, Karn), the RTO, congestion control and recovery.
    ///
    /// Returns the earliest deadline it set (see [`Prediction::armed`]).
    #[inline]
    fn ack_advance(
        &mut self,
        bounds: RtoBounds,
        now: Instant,
        ack: SeqNumber,
        ts: Option<TcpTimestamps>,
    ) -> Option<Instant> {
        self.ack_advance_in::<false>(bounds, now, ack, ts, 1)
    }

    /// [`Tcb::ack_advance`]; `PREDICTED` for [`Tcb::on_predicted`] and
    /// [`Tcb::settle_acks`], which call it only outside recovery with an empty SACK
    /// scoreboard: the scoreboard trim and the recovery branch compile away there.
    /// `acks`: how many ACKs the advance stands for (1 but for coalesced ACKs).
    #[inline]
    fn ack_advance_in<const PREDICTED: bool>(
        &mut self,
        bounds: RtoBounds,
        now: Instant,
        ack: SeqNumber,
        ts: Option<TcpTimestamps>,
        acks: u32,
    ) -> Option<Instant> {
        debug_assert!(!PREDICTED || (!self.in_recovery && self.sacked.is_empty()));
        debug_assert!(!PREDICTED || self.ts_on || ts.is_none());
        let mut armed = None;
        let acked = ack.distance(self.snd_una) as u32;
        self.snd_una = ack;
        if self.snd_nxt < self.snd_una {
            self.snd_nxt = self.snd_una;
        }
        // Drop acknowledged bytes from the send buffer.
        let data_acked = ack.distance(self.snd_buf_seq).max(0) as usize;
        let data_acked = data_acked.min(self.snd_buf.len());
        if data_acked > 0 {
            self.snd_buf.dequeue_allocated(data_acked);
            self.snd_buf_seq += data_acked;
            self.bytes_out += data_acked as u64;
            if self.write_blocked {
                self.write_blocked = false;
                self.add_event(Events::WRITABLE);
            }
            if self.snd_buf.is_empty() {
                // Kept for the next write a while; `handle_timeout` gives it back.
                let at = now + SEND_BUFFER_KEEP;
                self.snd_release_at = Some(at);
                armed = Some(at);
            }
        }
        if !PREDICTED {
            self.trim_scoreboard();
        }
        // RTT measurement (RFC 7323 4 RTTM, else one timed segment, Karn), in integer
        // microseconds.
        let (rto_min, rto_max) = (bounds.min, bounds.max);
        let mut sampled = false;
        // (Predicted: `ts` is `Some` only with timestamps on.)
        if let (true, Some(ts)) = (PREDICTED || self.ts_on, ts) {
            if ts.tsecr != 0 {
                let ms = self.ts_now(now).wrapping_sub(ts.tsecr);
                if ms < 60_000 {
                    self.rtt.sample_us(ms * 1000, rto_min, rto_max);
                    sampled = true;
                }
            }
        }
        if let Some((s, sent)) = self.rtt_probe {
            if ack > s {
                if !sampled {
                    let us = u32::try_from(now.micros_since(sent)).unwrap_or(u32::MAX);
                    self.rtt.sample_us(us, rto_min, rto_max);
                }
                self.rtt_probe = None;
            }
        }
        self.backoff = 0;
        self.retries = 0;
        // RFC 6298 5.2 / 5.3.
        if self.snd_una >= self.snd_max {
            self.rto_at = None;
        } else {
            let at = now.add_micros(self.rtt.rto_us(self.backoff, rto_max));
            self.rto_at = Some(at);
            armed = Some(armed.map_or(at, |a: Instant| a.min(at)));
        }
        // Congestion control.
        if !PREDICTED && self.in_recovery {
            if ack >= self.recover {
                // RFC 6582 3.2 step 3: full acknowledgment, leave recovery.
                self.in_recovery = false;
                let flight = self.flight();
                self.cc.on_recovery_exit(now, flight);
                self.dupacks = 0;
            } else if !self.sack_on {
                // RFC 6582 3.2 step 5: partial acknowledgment, retransmit the first
                // unacknowledged segment and deflate.
                self.pending |= P_RTX;
                self.cc.on_partial_ack(acked);
            } else if self.sacked.is_empty() {
                // SACK recovery without SACK information: the next segment is the
                // only candidate (RFC 6675 NextSeg() has nothing to go on).
                self.pending |= P_RTX;
            }
            // Otherwise RFC 6675 5 (C): `dispatch` sends what `pipe` allows.
        } else {
            self.dupacks = 0;
            let before = (self.snd_max.distance(self.snd_una).max(0) as u32).saturating_add(acked);
            self.cc.on_ack(now, acked, acks, before, self.rtt.srtt_us());
        }
        armed
    }

    /// RFC 9293 3.10.7.4: update the send window if the segment is newer (SND.WL1,
    /// SND.WL2), shared by the general path and header prediction.
    #[inline(always)]
    fn update_send_window(&mut self, seq: SeqNumber, ack: SeqNumber, wnd: u32) {
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            let opened = wnd > self.snd_wnd;
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            if wnd > 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
            if opened && self.write_blocked && !self.snd_buf.is_empty() {
                self.write_blocked = false;
                self.add_event(Events::WRITABLE);
            }
        }
    }

    /// [`Tcb::update_send_window`] for a predicted segment, whose window is SND.WND
    /// already (checked by [`Tcb::on_predicted`]): the window cannot have opened, so the
    /// window store and the "opened" test go, and so does the maximum's update (every
    /// store of SND.WND keeps the maximum at or above it).
    #[inline(always)]
    fn update_send_window_predicted(&mut self, seq: SeqNumber, ack: SeqNumber, wnd: u32) {
        debug_assert_eq!(wnd, self.snd_wnd);
        debug_assert!(self.max_snd_wnd >= wnd);
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            if wnd > 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
        }
    }

    /// RFC 6582 3.2 step 2 / RFC 6675 5 (4): enter fast recovery.
    fn enter_recovery(&mut self, now: Instant, ctr: &mut Counters) {
        // RFC 6582 4.1: only if the cumulative ACK covers the previous recovery point.
        if self.snd_una < self.recover && self.recover != self.iss {
            return;
        }
        let flight = self.snd_max.distance(self.snd_una).max(0) as u32;
        // RFC 5681 3.2 step 2 (ssthresh, cwnd = ssthresh) and step 3 (+3 SMSS).
        self.cc.on_congestion_event(now, flight);
        if !self.sack_on {
            // RFC 5681 3.2 step 3 (NewReno): cwnd = ssthresh + 3*SMSS. RFC 6675 does
            // not inflate: `pipe` counts what has left the network instead.
            self.cc.on_dup_acks_in_recovery(3);
        }
        self.in_recovery = true;
        self.recover = self.snd_max;
        self.high_rxt = self.snd_una;
        // RFC 5681 3.2 step 2 / RFC 6675 5 (4.3): retransmit the first segment at once.
        self.pending |= P_RTX;
        self.rtt_probe = None;
        self.fast_retransmits = self.fast_retransmits.saturating_add(1);
        ctr.fast_retransmits += 1;
        if self.sack_on {
            self.sack_recoveries = self.sack_recoveries.saturating_add(1);
            ctr.sack_recoveries += 1;
        }
    }

    /// RFC 6675 4 Update(): "Given the information provided in an ACK, each octet
    /// that is cumulatively ACKed or SACKed should be marked accordingly in the
    /// scoreboard data structure". Every block is merged into the scoreboard (however
    /// many ranges that makes, up to its limit); a block that would open a range beyond
    /// the limit is ignored and counted in `sack_blocks_ignored`. Out of line, so that
    /// segments without SACK blocks do not pay for it.
    #[inline(never)]
    pub(super) fn update_scoreboard(&mut self, seg: &TcpRepr<'_>, ctr: &mut Counters) {
        let limit = Scoreboard::range_limit(self.snd_una, self.snd_max, self.mss);
        for &b in seg.options.sack_blocks.iter() {
            // RFC 5961-style sanity: ignore blocks outside what we sent (and D-SACKs,
            // RFC 2883, which report data below SND.UNA).
            if b.left >= b.right || b.left < self.snd_una || b.right > self.snd_max {
                continue;
            }
            if self.sacked.insert(b, limit) == scoreboard::Inserted::Full {
                ctr.sack_blocks_ignored += 1;
            }
        }
    }

    /// Drops what the cumulative ACK covers from the scoreboard (freed once empty).
    fn trim_scoreboard(&mut self) {
        self.sacked.trim(self.snd_una);
    }

    /// Seventh step for states that accept text. Returns whether an in-order FIN was
    /// reached (the eighth step then processes it).
    fn process_text(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seg: &TcpRepr<'_>,
        text: Text<'_>,
        ctr: &mut Counters,
    ) -> bool {
        let mut seq = seg.seq;
        let mut data = seg.payload;
        // Where `data` starts in the payload (after trimming old bytes).
        let mut start = 0usize;
        let mut fin = seg.flags.fin();
        // Trim what we already have.
        let dup = self.rcv_nxt.distance(seq);
        if dup > 0 {
            let dup = dup as usize;
            if dup >= data.len() {
                // Entirely old data (possibly with a FIN already processed or not).
                let fin_seq = seq + data.len();
                data = &[];
                seq = self.rcv_nxt;
                if fin && fin_seq != self.rcv_nxt {
                    fin = false;
                }
                if fin_seq < self.rcv_nxt || !seg.payload.is_empty() {
                    self.pending |= P_ACK;
                }
            } else {
                data = &data[dup..];
                start = dup;
                seq = self.rcv_nxt;
            }
        }
        // Trim to the window.
        let wnd = self.rcv_wnd() as usize;
        let off = seq.distance(self.rcv_nxt).max(0) as usize;
        if off + data.len() > wnd {
            let keep = wnd.saturating_sub(off);
            data = &data[..keep.min(data.len())];
            fin = false;
        }
        if data.len() > self.rcv_mss as usize {
            self.set_rcv_mss(cfg, data.len());
        }
        if seq != self.rcv_nxt {
            // Out of order: keep it, quick-ACK (RFC 5681 4.2: immediately ACK an
            // out-of-order segment).
            if !data.is_empty() {
                // The bytes go into the receive buffer's free space at their offset;
                // the assembler remembers which ranges are there (bounded holes).
                let off = seq.distance(self.rcv_nxt) as usize;
                let n = self.rcv_buf.write_unallocated(off, data);
                crate::copy_count::record(crate::copy_count::Site::RecvBuffer, n);
                if self.ooo.add(off as u32, n as u32).is_err() {
                    ctr.ooo_dropped += 1;
                }
            }
            if fin {
                self.ooo_fin = Some(seq + data.len());
            }
            self.pending |= P_ACK;
            return false;
        }
        let had_holes = !self.ooo.is_empty();
        if !data.is_empty() {
            if text.offer && self.rcv_buf.is_empty() {
                // The zero-copy path: the caller lends these bytes to the application
                // in the frame and buffers only what it leaves (`finish_offer`).
                *text.offered = Some(Offer {
                    range: start..start + data.len(),
                    holes: had_holes,
                    joined: 0,
                });
            } else {
                self.buffer_text(data);
            }
            let n = data.len();
            self.rcv_nxt += n;
            self.bytes_in += n as u64;
            self.rcv_unacked += n as u32;
            if had_holes {
                // Out-of-order bytes that now continue the stream are already in
                // place: make them readable.
                self.ooo.advance(n as u32);
                let k = self.ooo.remove_front();
                if k > 0 {
                    match text.offered.as_mut() {
                        // Made readable once the offered tail is buffered in front.
                        Some(o) => o.joined = k,
                        None => {
                            self.rcv_buf.enqueue_unallocated(k);
                        }
                    }
                    self.rcv_nxt += k;
                    self.bytes_in += k as u64;
                    self.add_event(Events::READABLE);
                }
            }
            if self.ooo_fin == Some(self.rcv_nxt) {
                fin = true;
                self.ooo_fin = None;
            }
            if had_holes {
                // RFC 5681 4.2: ACK at once when a segment fills a hole.
                self.pending |= P_ACK;
            }
            let _ = self.schedule_data_ack(cfg, now);
        }
        fin
    }

    /// Header prediction's second half (RFC 9293 3.10.7.4 as BSD's and Linux's receive
    /// fast path): a segment from [`Interface::receive_predicted`] on an ESTABLISHED
    /// connection that is exactly the next in sequence, passes PAWS, leaves the send
    /// window as it is, and either acknowledges new data (outside recovery, with an
    /// empty SACK scoreboard) or carries in-window data with nothing out of order held,
    /// is processed here without the general path's checks: the same steps (TS.Recent,
    /// [`Tcb::ack_advance`], [`Tcb::update_send_window`], in-order text) and the same
    /// result, which the `fast_path_matches_general_path` property test checks.
    ///
    /// `None`, with nothing changed, when the prediction fails: the caller then runs the
    /// general path on the same segment.
    ///
    /// [`Interface::receive_predicted`]: crate::iface::Interface
    #[inline(always)]
    pub(crate) fn on_predicted(
        &mut self,
        cfg: &ConnConfig,
        bounds: RtoBounds,
        now: Instant,
        seg: &Predicted,
        payload: &[u8],
        coalesced: &mut u64,
    ) -> Option<Prediction> {
        if self.state != State::Established || seg.seq != self.rcv_nxt {
            return None;
        }
        // RFC 7323 5.3 (PAWS): an older TSval goes the general way (and is dropped).
        let ts = match (self.ts_on, seg.ts) {
            (false, _) => None,
            (true, Some(ts)) if ts.tsval.wrapping_sub(self.ts_recent) as i32 >= 0 => Some(ts),
            (true, _) => return None,
        };
        let wnd = u32::from(seg.window) << self.snd_wscale;
        if wnd != self.snd_wnd {
            return None;
        }
        let len = payload.len();
        // `len` is below 2^17 (the payload ends within an IPv4 datagram): above the
        // receive window (`rcv_wnd`, 0 when RCV.ADV is behind RCV.NXT) is one signed
        // compare with RCV.ADV - RCV.NXT.
        debug_assert!(len <= usize::from(u16::MAX));
        if len > 0
            && (len as i32 > self.rcv_adv.distance(self.rcv_nxt)
                || self.rd_block != 0
                || !self.ooo.is_empty()
                || self.ooo_fin.is_some())
        {
            return None;
        }
        let new_ack = seg.ack > self.snd_una;
        if new_ack {
            if seg.ack > self.snd_max || self.in_recovery || !self.sacked.is_empty() {
                return None;
            }
            if len == 0 && cfg.coalesce_acks && self.last_recv == now {
                // Not the connection's first segment of this burst (a burst's frames
                // share one `now`): coalesced. The first is taken whole, below, so an
                // ACK alone in its burst pays nothing for coalescing.
                self.take_coalesced(now, seg, ts, wnd, coalesced);
                return Some(Prediction {
                    offer: None,
                    armed: None,
                });
            }
        } else if seg.ack != self.snd_una || len == 0 {
            // Old ACKs, duplicate ACKs and window updates: the general path.
            return None;
        }
        // Predicted. The general path's steps for this segment, in its order.
        self.last_recv = now;
        self.keepalive_probes = 0;
        if let Some(ts) = ts {
            // RFC 7323 4.3 (R3): SEG.SEQ = RCV.NXT.
            self.ts_recent = ts.tsval;
        }
        let mut armed = None;
        if new_ack {
            armed = self.ack_advance_in::<true>(bounds, now, seg.ack, ts, 1);
        }
        self.update_send_window_predicted(seg.seq, seg.ack, wnd);
        if len == 0 {
            return Some(Prediction { offer: None, armed });
        }
        if len > self.rcv_mss as usize {
            self.set_rcv_mss(cfg, len);
        }
        let offer = if self.rcv_buf.is_empty() {
            Some(Offer {
                range: 0..len,
                holes: false,
                joined: 0,
            })
        } else {
            self.buffer_text(payload);
            None
        };
        self.rcv_nxt += len;
        self.bytes_in += len as u64;
        self.rcv_unacked += len as u32;
        if let Some(at) = self.schedule_data_ack(cfg, now) {
            armed = Some(armed.map_or(at, |a: Instant| a.min(at)));
        }
        Some(Prediction { offer, armed })
    }

    /// ACK coalescing, for a pure ACK (no payload, ACK and maybe PSH its only flags, no
    /// SACK block) that header prediction would take, that acknowledges new data and
    /// that is not the connection's first segment of the burst (the one before it
    /// arrived at the same `now`), on either path (so that both give the same result):
    /// takes it now (TS.Recent, the send window's WL1/WL2, SND.UNA) and leaves the rest
    /// of [`Tcb::ack_advance`] (the send buffer, RTT, RTO, congestion control) to
    /// [`Tcb::settle_acks`], which the stack runs at the end of the burst: a run of
    /// such ACKs then costs one advance, the last one's. Counts the ACK in
    /// `*coalesced`. Returns whether it took the segment (else nothing changed).
    #[inline]
    pub(crate) fn coalesce_ack(
        &mut self,
        cfg: &ConnConfig,
        bounds: RtoBounds,
        now: Instant,
        seg: &Predicted,
        coalesced: &mut u64,
    ) -> bool {
        // Without payload, and not first in its burst, `on_predicted` takes a segment
        // only to coalesce it.
        cfg.coalesce_acks
            && self.last_recv == now
            && self
                .on_predicted(cfg, bounds, now, seg, &[], coalesced)
                .is_some()
    }

    /// [`Tcb::coalesce_ack`]'s work once the segment qualified.
    #[inline(always)]
    fn take_coalesced(
        &mut self,
        now: Instant,
        seg: &Predicted,
        ts: Option<TcpTimestamps>,
        wnd: u32,
        coalesced: &mut u64,
    ) {
        self.last_recv = now;
        self.keepalive_probes = 0;
        if self.acks_coalesced == 0 {
            self.coalesced_una = self.snd_una;
            // Text after them takes the general path, which settles them first (a
            // pure segment is predicted only as another ACK to coalesce).
            self.rd_block |= RD_ACKS_COALESCED;
        }
        *coalesced += 1;
        self.acks_coalesced = self.acks_coalesced.saturating_add(1);
        self.coalesced_tsecr = 0;
        if let Some(ts) = ts {
            // RFC 7323 4.3 (R3): SEG.SEQ = RCV.NXT.
            self.ts_recent = ts.tsval;
            self.coalesced_tsecr = ts.tsecr;
        }
        self.snd_una = seg.ack;
        self.update_send_window_predicted(seg.seq, seg.ack, wnd);
    }

    /// Whether pure ACKs taken by [`Tcb::coalesce_ack`] wait for [`Tcb::settle_acks`].
    #[inline(always)]
    pub(crate) fn has_coalesced_acks(&self) -> bool {
        self.acks_coalesced != 0
    }

    /// Finishes the pure ACKs [`Tcb::coalesce_ack`] took since the last settle, as the
    /// general path finishes the last of them alone, at its arrival (`last_recv`): the
    /// send buffer released to it, one RTT sample (its TSecr; RFC 6298 asks for at
    /// least one per RTT), the RTO restarted, and congestion control told of every
    /// acknowledged byte and of how many ACKs there were (slow start's per-ACK limit,
    /// RFC 3465, applies to each). A no-op without any. Returns the earliest deadline it
    /// set (see [`Prediction::armed`]).
    #[inline(never)]
    pub(crate) fn settle_acks(&mut self, bounds: RtoBounds) -> Option<Instant> {
        let acks = core::mem::take(&mut self.acks_coalesced);
        if acks == 0 {
            return None;
        }
        self.rd_block &= !RD_ACKS_COALESCED;
        let ack = self.snd_una;
        self.snd_una = core::mem::take(&mut self.coalesced_una);
        let tsecr = core::mem::take(&mut self.coalesced_tsecr);
        let ts = (tsecr != 0).then_some(TcpTimestamps {
            tsval: self.ts_recent,
            tsecr,
        });
        self.ack_advance_in::<true>(bounds, self.last_recv, ack, ts, acks)
    }

    /// RFC 9293 3.8.6.3 / RFC 1122 4.2.3.2: after in-order data, ACK at least every
    /// second full-sized segment, else within the delayed-ACK timeout.
    /// Returns the deadline it set, if any.
    #[inline(always)]
    fn schedule_data_ack(&mut self, cfg: &ConnConfig, now: Instant) -> Option<Instant> {
        if self.rcv_unacked >= self.ack_after {
            self.pending |= P_ACK;
        } else if self.delack_at.is_none() {
            let at = now + cfg.delayed_ack_timeout;
            self.delack_at = Some(at);
            return Some(at);
        }
        None
    }

    /// A larger segment seen from the peer: the delayed-ACK "full segment" grows.
    #[cold]
    fn set_rcv_mss(&mut self, cfg: &ConnConfig, len: usize) {
        self.rcv_mss = u16::try_from(len).unwrap_or(u16::MAX);
        self.ack_after = ack_after(cfg, self.rcv_mss);
    }

    /// Appends in-order bytes to the receive buffer (one copy) and reports readable.
    fn buffer_text(&mut self, data: &[u8]) {
        let n = self.rcv_buf.enqueue_slice(data);
        crate::copy_count::record(crate::copy_count::Site::RecvBuffer, n);
        debug_assert_eq!(n, data.len(), "in-window data fits the receive buffer");
        self.add_event(Events::READABLE);
    }
}

/// How the seventh step hands in-order text on: offered (the range reported back) or
/// buffered.
pub(super) struct Text<'a> {
    offer: bool,
    offered: &'a mut Option<Offer>,
}

impl Events {
    /// Both sets.
    pub const fn union(self, other: Events) -> Events {
        Events(self.0 | other.0)
    }
}
