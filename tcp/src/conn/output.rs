//! Segment generation (RFC 9293 3.8 / 3.10.2, RFC 5681, RFC 6675) and timers.

use super::*;
use crate::cc::CongestionControl;

impl Tcb {
    /// Produces the next segment this connection wants to send, if any, writing its
    /// payload into `buf` (whose length caps the payload). Call until it returns
    /// `None` after every [`Tcb::on_segment`], socket call or
    /// [`Tcb::handle_timeout`].
    pub fn dispatch(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        buf: &mut [u8],
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        let out = self.dispatch_header(cfg, now, buf.len(), ctr)?;
        self.write_payload(&out, buf);
        Some(out)
    }

    /// Like [`Tcb::dispatch`] but leaves the payload (at most `max_payload` bytes) in
    /// the send buffer: copy it with [`Tcb::write_payload`] straight into the TX frame.
    pub fn dispatch_header(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        max_payload: usize,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        if self.nothing_to_send() {
            // Checked against the full path wherever debug assertions are on (every test,
            // the simulations and the interop labs included).
            #[cfg(debug_assertions)]
            {
                let out = self.dispatch_synchronized(cfg, now, max_payload, ctr);
                debug_assert!(out.is_none(), "nothing_to_send, yet dispatch made {out:?}");
            }
            return None;
        }
        if self.pending & P_RST != 0 {
            self.pending &= !P_RST;
            ctr.resets_sent += 1;
            // RFC 9293 3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST> (SND.MAX if SND.NXT was rewound).
            return Some(OutSegment {
                repr: TcpRepr {
                    seq: self.snd_max,
                    ack: self.rcv_nxt,
                    flags: TcpFlags::RST | TcpFlags::ACK,
                    ..TcpRepr::default()
                },
                payload_len: 0,
            });
        }
        match self.state {
            State::Closed | State::Listen => None,
            State::SynSent | State::SynReceived => {
                if self.pending & P_SYN != 0 || self.snd_nxt == self.iss {
                    return Some(self.send_syn(cfg, now, ctr));
                }
                if self.pending & P_ACK != 0 && self.state == State::SynReceived {
                    return Some(self.build(cfg, now, self.snd_max, TcpFlags::ACK, 0));
                }
                None
            }
            State::TimeWait => (self.pending & P_ACK != 0)
                .then(|| self.build(cfg, now, self.snd_max, TcpFlags::ACK, 0)),
            _ => self.dispatch_synchronized(cfg, now, max_payload, ctr),
        }
    }

    /// A synchronized connection with nothing to send and nothing that could make it
    /// send: no control pending (ACK, RST, probe, retransmission), no FIN, no recovery,
    /// nothing rewound and every queued byte already sent. `dispatch_synchronized` would
    /// return `None` and change nothing; this says so without working it out (the call
    /// after each segment, which finds the connection done, is on every round trip).
    fn nothing_to_send(&self) -> bool {
        self.pending == 0
            && matches!(self.state, State::Established | State::CloseWait)
            && !self.fin_queued
            && !self.in_recovery
            && self.snd_nxt == self.snd_max
            && self.snd_nxt.distance(self.snd_buf_seq).max(0) as usize >= self.snd_buf.len()
    }

    fn send_syn(&mut self, cfg: &ConnConfig, now: Instant, ctr: &mut Counters) -> OutSegment {
        self.pending &= !(P_SYN | P_ACK);
        let mut opts = TcpOptions {
            // RFC 9293 3.7.1: announce our MSS (from the MTU).
            mss: Some(cfg.mss),
            ..TcpOptions::default()
        };
        let syn_ack = self.state == State::SynReceived;
        // RFC 7323 2.2: a SYN-ACK carries the option only if the SYN did.
        if cfg.window_scaling && (!syn_ack || self.ws_ok) {
            opts.window_scale = Some(if syn_ack {
                self.rcv_wscale
            } else {
                our_wscale(cfg)
            });
        }
        if cfg.sack && (!syn_ack || self.sack_on) {
            opts.sack_permitted = true;
        }
        if cfg.timestamps && (!syn_ack || self.ts_on) {
            opts.timestamps = Some(TcpTimestamps {
                tsval: self.ts_now(now),
                tsecr: if syn_ack { self.ts_recent } else { 0 },
            });
        }
        if self.retries > 0 {
            self.retransmits += 1;
            ctr.retransmits += 1;
        } else if self.rtt_probe.is_none() {
            self.rtt_probe = Some((self.iss, now));
        }
        self.snd_nxt = self.iss + 1u32;
        self.snd_max = self.snd_max.max(self.snd_nxt);
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.current_rto(cfg));
        }
        let window = u16::try_from(self.window_space(cfg).min(65_535)).unwrap_or(u16::MAX);
        self.last_send = now;
        OutSegment {
            repr: TcpRepr {
                seq: self.iss,
                ack: if syn_ack { self.rcv_nxt } else { SeqNumber(0) },
                flags: if syn_ack {
                    TcpFlags::SYN | TcpFlags::ACK
                } else {
                    TcpFlags::SYN
                },
                window,
                options: opts,
                ..TcpRepr::default()
            },
            payload_len: 0,
        }
    }

    /// Options for a non-SYN segment: timestamps and SACK blocks.
    fn data_options(&self, now: Instant) -> TcpOptions {
        let mut o = TcpOptions::default();
        if self.ts_on {
            o.timestamps = Some(TcpTimestamps {
                tsval: self.ts_now(now),
                tsecr: self.ts_recent,
            });
        }
        if self.sack_on && !self.ooo.is_empty() {
            // RFC 2018 3: at most 3 blocks fit beside timestamps.
            let max = if self.ts_on { 3 } else { 4 };
            for (l, r) in self.ooo.iter_sack().take(max) {
                o.sack_blocks.push(SackBlock {
                    left: self.rcv_nxt + l,
                    right: self.rcv_nxt + r,
                });
            }
        }
        o
    }

    /// Builds a segment at `seq` carrying `len` payload bytes (already in the
    /// caller's buffer) and the current ACK and window.
    fn build(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        seq: SeqNumber,
        flags: TcpFlags,
        len: usize,
    ) -> OutSegment {
        let options = self.data_options(now);
        self.build_with(cfg, seq, flags, len, options)
    }

    /// [`Tcb::build`] with the options already made (by the caller, at the same `now`).
    fn build_with(
        &mut self,
        cfg: &ConnConfig,
        seq: SeqNumber,
        flags: TcpFlags,
        len: usize,
        options: TcpOptions,
    ) -> OutSegment {
        let window = self.advertise(cfg);
        self.pending &= !P_ACK;
        self.delack_at = None;
        self.rcv_unacked = 0;
        OutSegment {
            repr: TcpRepr {
                seq,
                ack: self.rcv_nxt,
                flags: flags | TcpFlags::ACK,
                window,
                options,
                ..TcpRepr::default()
            },
            payload_len: len,
        }
    }

    /// The window field to send, moving the right edge only by useful amounts
    /// (RFC 9293 3.8.6.2.2, receiver-side SWS avoidance) and never to the left
    /// (RFC 9293 3.8.6: the window should not shrink).
    fn advertise(&mut self, cfg: &ConnConfig) -> u16 {
        let candidate = self.rcv_nxt + self.window_space(cfg);
        if candidate > self.rcv_adv {
            // Eff.snd.MSS (RFC 9293 3.7.1): the MSS less the timestamps option every
            // segment carries with them on, so that each full-sized segment read moves
            // the edge and the window field stays put (ACKs the peer can predict).
            let eff_mss = u32::from(self.mss) - if self.ts_on { 12 } else { 0 };
            let threshold = (cfg.rcv_buf as u32 / 2).min(eff_mss).max(1);
            let grow = candidate.distance(self.rcv_adv) as u32;
            if grow >= threshold {
                self.rcv_adv = candidate;
            }
        }
        if self.rcv_adv < self.rcv_nxt {
            self.rcv_adv = self.rcv_nxt;
        }
        let wnd = self.rcv_adv.distance(self.rcv_nxt).max(0) as u32;
        u16::try_from(wnd >> self.rcv_wscale).unwrap_or(u16::MAX)
    }

    /// Writes the payload of `seg` (just produced by [`Tcb::dispatch_header`]) into
    /// `buf`; returns the bytes written (`seg.payload_len`, capped by `buf`).
    pub fn write_payload(&self, seg: &OutSegment, buf: &mut [u8]) -> usize {
        let len = seg.payload_len.min(buf.len());
        let off = seg.seq.distance(self.snd_buf_seq).max(0) as usize;
        let mut done = 0;
        while done < len {
            let src = self.snd_buf.get_allocated(off + done, len - done);
            if src.is_empty() {
                break;
            }
            buf[done..done + src.len()].copy_from_slice(src);
            done += src.len();
        }
        crate::copy_count::record(crate::copy_count::Site::TxFrame, done);
        done
    }

    /// Largest payload per segment given the options carried.
    fn payload_mss(&self, opts: &TcpOptions) -> usize {
        usize::from(self.mss)
            .saturating_sub(opts.emitted_len())
            .max(1)
    }

    fn dispatch_synchronized(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        max_payload: usize,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        let opts = self.data_options(now);
        let pmss = self.payload_mss(&opts).min(max_payload.max(1));
        let fin_seq = self.fin_seq();
        let fin_pending = self.fin_queued && !self.fin_acked();

        // 1. Fast retransmit / recovery (RFC 5681 3.2, RFC 6582, RFC 6675 5 (C)).
        let sack_recovery = self.in_recovery && self.sack_on;
        let pipe_room = |t: &Tcb| t.cc.cwnd().saturating_sub(t.pipe()) as usize >= pmss;
        let forced = self.pending & P_RTX != 0;
        self.pending &= !P_RTX;
        let hole = if forced {
            // The first retransmission of a recovery, or a NewReno partial ACK.
            self.next_hole(false)
        } else if sack_recovery && pipe_room(self) {
            // NextSeg() rule 1: the first lost octet above HighRxt.
            self.next_hole(true)
        } else {
            None
        };
        if let Some((start, end)) = hole {
            if let Some(out) = self.retransmit(cfg, now, start, end, pmss, ctr) {
                return Some(out);
            }
        }

        // 2. New data (or go-back-N retransmission after an RTO) and FIN.
        if self.snd_nxt < self.snd_max && !self.sacked.is_empty() {
            self.skip_sacked();
        }
        let off = self.snd_nxt.distance(self.snd_buf_seq).max(0) as usize;
        let unsent = self.snd_buf.len().saturating_sub(off);
        let flight = self.flight();
        if self.snd_max == self.snd_una
            && unsent > 0
            && now.saturating_since(self.last_send) > self.current_rto(cfg)
        {
            self.cc.on_idle_restart(now);
        }
        let wnd_end = self.snd_una + self.snd_wnd;
        let usable = wnd_end.distance(self.snd_nxt).max(0) as usize;
        let cwnd_room = self.cc.cwnd().saturating_sub(flight) as usize;
        let retransmitting = self.snd_nxt < self.snd_max;
        let mut n = unsent.min(usable).min(pmss);
        if retransmitting {
            // Up to the next SACKed range only (RFC 6675 5.1, see `skip_sacked`).
            if let Some(next) = self.sacked.next_sacked(self.snd_nxt) {
                n = n.min(next.distance(self.snd_nxt).max(0) as usize);
            }
        }
        if !retransmitting || self.in_recovery {
            n = n.min(cwnd_room);
        } else {
            // After an RTO: go-back-N, one congestion window at a time (what the peer
            // SACKed since, and was skipped, is not in flight).
            let out = (self.snd_nxt.distance(self.snd_una).max(0) as u32)
                .saturating_sub(self.sacked.sacked_below(self.snd_nxt));
            let room = self.cc.cwnd().saturating_sub(out);
            n = n.min(room as usize);
        }
        let fin_now = fin_pending && self.snd_nxt <= fin_seq && n == unsent;
        // A persist expiry with a small but open window forces out what fits
        // (RFC 9293 3.8.6.2.1 override timeout).
        let force = n > 0 && self.pending & P_PROBE != 0;
        if force {
            self.pending &= !P_PROBE;
        }
        let send_data = n > 0
            && (force
                || n >= pmss
                || retransmitting
                // RFC 9293 3.7.4 Nagle: a short segment only when nothing is
                // unacknowledged (or Nagle is off); 3.8.6.2.1: or when it is all there
                // is to send, or at least half the largest window the peer offered.
                || (n == unsent && (self.nodelay || self.snd_max == self.snd_una || fin_now))
                || n as u32 >= self.max_snd_wnd / 2);
        if send_data || (fin_now && n == 0 && (cwnd_room > 0 || retransmitting || flight == 0)) {
            let seq = self.snd_nxt;
            let mut flags = if n > 0 {
                TcpFlags::PSH
            } else {
                TcpFlags::empty()
            };
            if fin_now {
                flags |= TcpFlags::FIN;
            }
            let seg_len = n + usize::from(fin_now);
            if seq < self.snd_max {
                self.retransmits += 1;
                ctr.retransmits += 1;
            } else if self.rtt_probe.is_none() && !self.ts_on {
                self.rtt_probe = Some((seq, now));
            }
            self.snd_nxt = seq + seg_len;
            self.snd_max = self.snd_max.max(self.snd_nxt);
            if self.rto_at.is_none() {
                // RFC 6298 5.1
                self.rto_at = Some(now + self.current_rto(cfg));
            }
            self.persist_at = None;
            self.last_send = now;
            return Some(self.build_with(cfg, seq, flags, n, opts));
        }

        // NextSeg() rule 3: no lost octet and no new data, but room in the pipe: the
        // first un-SACKed octet above HighRxt and below HighACK.
        if sack_recovery && pipe_room(self) {
            // (With SACK information, `next_hole` never returns the tail above HighACK.)
            let hole = self.next_hole(false).filter(|_| !self.sacked.is_empty());
            if let Some((start, end)) = hole {
                if let Some(out) = self.retransmit(cfg, now, start, end, pmss, ctr) {
                    return Some(out);
                }
            }
        }

        // 3. Zero-window persist (RFC 9293 3.8.6.1): probe timer when data waits on a
        //    closed window and nothing is in flight to bring an update.
        if unsent > 0
            && usable < pmss.min(unsent)
            && self.snd_max == self.snd_una
            && self.persist_at.is_none()
            && self.rto_at.is_none()
        {
            let d = self
                .rtt
                .rto(self.persist_backoff, cfg.rto_max)
                .max(cfg.rto_min);
            self.persist_at = Some(now + d);
        }

        // 4. Probes (zero window, keepalive): <SEQ=SND.UNA-1><ACK=RCV.NXT>, no data,
        //    which the peer must answer with an ACK (RFC 9293 3.8.4, 3.10.7.4).
        if self.pending & P_PROBE != 0 {
            self.pending &= !P_PROBE;
            let seq = self.snd_una - 1u32;
            return Some(self.build(cfg, now, seq, TcpFlags::empty(), 0));
        }

        // 5. A pure ACK (window update, delayed ACK expiry, duplicate, challenge).
        if self.pending & P_ACK != 0 {
            // SND.MAX, not a rewound SND.NXT: the peer may already hold what we are
            // resending, and an ACK below its RCV.NXT would fail its acceptability test.
            let seq = self.snd_max;
            return Some(self.build(cfg, now, seq, TcpFlags::empty(), 0));
        }
        None
    }

    /// Go-back-N after an RTO: RFC 6675 5.1, "a SACK TCP sender SHOULD utilize all SACK
    /// information made available during the loss recovery following an RTO". The
    /// scoreboard was emptied at the RTO (RFC 2018 8); what the peer SACKs afterwards is
    /// not sent again: SND.NXT jumps over a SACKed range (never past the end of the
    /// data, so a FIN is still resent).
    fn skip_sacked(&mut self) {
        let to = self.sacked.skip_sacked(self.snd_nxt).min(self.fin_seq());
        if to > self.snd_nxt {
            self.snd_nxt = to.min(self.snd_max);
        }
    }

    /// Retransmits up to one segment of `[start, end)` (with the FIN if it ends
    /// there) and moves HighRxt past it. `None` if there is nothing to send.
    fn retransmit(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        start: SeqNumber,
        end: SeqNumber,
        pmss: usize,
        ctr: &mut Counters,
    ) -> Option<OutSegment> {
        let fin_seq = self.fin_seq();
        let fin_pending = self.fin_queued && !self.fin_acked();
        let data_end = fin_seq.min(end);
        let n = (data_end.distance(start).max(0) as usize).min(pmss);
        let fin = fin_pending && start + n == fin_seq && end > fin_seq;
        if n == 0 && !fin {
            return None;
        }
        self.high_rxt = start + n + u32::from(fin);
        self.retransmits += 1;
        ctr.retransmits += 1;
        self.rtt_probe = None;
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.current_rto(cfg));
        }
        let flags = if fin { TcpFlags::FIN } else { TcpFlags::PSH };
        Some(self.build(cfg, now, start, flags, n))
    }

    /// The next range to retransmit during recovery: without SACK (or without SACK
    /// information yet) the segment at SND.UNA (RFC 6582); with SACK the first hole
    /// above HighRxt below the highest SACKed byte (RFC 6675 NextSeg()), only a lost
    /// one if `lost_only` (rule 1).
    pub(super) fn next_hole(&self, lost_only: bool) -> Option<(SeqNumber, SeqNumber)> {
        if !self.sack_on || self.sacked.is_empty() {
            if lost_only {
                return None;
            }
            return (self.snd_max > self.snd_una).then_some((self.snd_una, self.snd_max));
        }
        let from = self.snd_una.max(self.high_rxt);
        self.sacked
            .next_seg(self.snd_una, from, self.mss, lost_only)
    }

    /// Runs expired timers. Call when `now` reaches [`Tcb::poll_timeout`].
    pub fn handle_timeout(&mut self, cfg: &ConnConfig, now: Instant, ctr: &mut Counters) {
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.on_rto(cfg, now, ctr);
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.pending |= P_ACK;
        }
        if self.snd_release_at.is_some_and(|t| t <= now) {
            self.snd_release_at = None;
            self.snd_buf.release_if_empty();
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            self.pending |= P_PROBE;
            self.persist_backoff = self.persist_backoff.saturating_add(1).min(16);
        }
        if self.close_at.is_some_and(|t| t <= now) {
            self.close_at = None;
            match self.state {
                State::TimeWait => self.enter_closed(now, CloseReason::Normal),
                State::FinWait2 => {
                    ctr.timeouts += 1;
                    self.enter_closed(now, CloseReason::TimedOut);
                }
                _ => {}
            }
        }
        if self.keepalive_deadline(cfg).is_some_and(|t| t <= now) {
            if self.keepalive_probes >= cfg.keepalive_count {
                ctr.timeouts += 1;
                self.enter_closed(now, CloseReason::TimedOut);
            } else {
                self.keepalive_probes += 1;
                self.pending |= P_PROBE;
            }
        }
    }

    /// RFC 6298 5.4-5.7: retransmission timer expiry.
    fn on_rto(&mut self, cfg: &ConnConfig, now: Instant, ctr: &mut Counters) {
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.retries >= cfg.syn_retries {
                    ctr.timeouts += 1;
                    self.enter_closed(now, CloseReason::TimedOut);
                    return;
                }
                self.retries += 1;
                self.backoff = self.backoff.saturating_add(1);
                self.rtt_probe = None;
                self.snd_nxt = self.iss;
                self.pending |= P_SYN;
            }
            State::Established
            | State::FinWait1
            | State::CloseWait
            | State::Closing
            | State::LastAck => {
                if self.snd_max <= self.snd_una {
                    return;
                }
                if self.retries >= cfg.max_retries {
                    ctr.timeouts += 1;
                    // Tell the peer, as Linux does, so it does not wait forever.
                    self.pending = P_RST;
                    self.enter_closed(now, CloseReason::TimedOut);
                    return;
                }
                self.retries += 1;
                self.backoff = self.backoff.saturating_add(1);
                let flight = self.snd_max.distance(self.snd_una).max(0) as u32;
                self.cc.on_rto(now, flight);
                // RFC 6582 4.1 / RFC 6675 5.1: recovery ends; remember the high mark.
                self.in_recovery = false;
                self.recover = self.snd_max;
                self.dupacks = 0;
                // RFC 2018 8: after a timeout, SACK information is not trusted
                // (RFC 6675 5.1 keeps this); the scoreboard's memory is freed.
                self.sacked.clear();
                self.high_rxt = self.snd_una;
                // Karn: no RTT sample from retransmitted data.
                self.rtt_probe = None;
                self.snd_nxt = self.snd_una;
            }
            _ => {}
        }
    }
}
