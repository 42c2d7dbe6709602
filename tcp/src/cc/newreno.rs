//! NewReno congestion control: RFC 5681 slow start and congestion avoidance with RFC 3465
//! appropriate byte counting, RFC 6582 fast recovery.

use super::{CongestionControl, Window};
use crate::time::Instant;

/// RFC 5681 / RFC 6582 NewReno.
#[derive(Debug, Clone)]
pub struct NewReno {
    w: Window,
}

impl NewReno {
    /// `on_ack`'s window growth once the window is in use. Out of line: an ACK to a
    /// sender that is not cwnd-limited stops before.
    #[inline(never)]
    fn grow(&mut self, acked: u32, acks: u32) {
        let mut acked = acked;
        if self.w.in_slow_start() {
            acked = self.w.slow_start(acked, acks);
        }
        if acked > 0 && !self.w.in_slow_start() {
            // RFC 5681 3.1 / RFC 3465 2.1: one SMSS per cwnd's worth of bytes acknowledged.
            self.w.bytes_acked = self.w.bytes_acked.saturating_add(acked);
            if self.w.bytes_acked >= self.w.cwnd {
                self.w.bytes_acked -= self.w.cwnd;
                self.w.cwnd = self.w.cwnd.saturating_add(self.w.mss);
            }
        }
    }

    /// A controller with the RFC 6928 initial window for `mss`.
    pub fn new(mss: u32) -> Self {
        NewReno {
            w: Window::new(mss),
        }
    }

    /// RFC 5681 3.1 equation (4): ssthresh = max(FlightSize / 2, 2*SMSS).
    fn halve(&self, in_flight: u32) -> u32 {
        (in_flight / 2).max(2 * self.w.mss)
    }
}

impl CongestionControl for NewReno {
    fn cwnd(&self) -> u32 {
        self.w.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.w.ssthresh
    }

    fn mss(&self) -> u32 {
        self.w.mss
    }

    fn set_mss(&mut self, mss: u32) {
        self.w.set_mss(mss);
    }

    #[inline]
    fn on_ack(
        &mut self,
        _now: Instant,
        acked: u32,
        acks: u32,
        in_flight_before: u32,
        _srtt_us: u32,
    ) {
        self.w.pristine = false;
        self.w.in_loss = false;
        if !self.w.cwnd_limited(in_flight_before) {
            return;
        }
        self.grow(acked, acks);
    }

    fn on_congestion_event(&mut self, _now: Instant, in_flight: u32) {
        // RFC 5681 3.2 step 2 / RFC 6675 5 step 4.2: ssthresh per equation (4), cwnd = ssthresh.
        let ssthresh = self.halve(in_flight);
        self.w.reduce(ssthresh, ssthresh.max(2 * self.w.mss));
    }

    fn on_dup_acks_in_recovery(&mut self, count: u32) {
        self.w.inflate(count);
    }

    fn on_partial_ack(&mut self, acked: u32) {
        self.w.partial_ack(acked);
    }

    fn on_recovery_exit(&mut self, _now: Instant, in_flight: u32) {
        self.w.recovery_exit(in_flight);
    }

    fn on_rto(&mut self, _now: Instant, in_flight: u32) {
        // RFC 5681 3.1: ssthresh per equation (4) (kept on a repeated timeout, as Linux
        // does), cwnd = loss window of 1 SMSS.
        let ssthresh = if self.w.in_loss {
            self.w.ssthresh
        } else {
            self.halve(in_flight)
        };
        self.w.reduce(ssthresh, self.w.mss);
        self.w.in_loss = true;
    }

    fn on_idle_restart(&mut self, _now: Instant) {
        self.w.idle_restart();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;
    const T: Instant = Instant::ZERO;

    /// Acknowledges one full window in MSS-sized ACKs with the window fully used.
    fn ack_round(cc: &mut NewReno) {
        let cwnd = cc.cwnd();
        let mut flight = cwnd;
        while flight >= MSS {
            cc.on_ack(T, MSS, 1, flight.max(cc.cwnd()), 0);
            flight -= MSS;
        }
    }

    #[test]
    fn newreno_slow_start_doubles_per_round() {
        let mut cc = NewReno::new(MSS);
        assert_eq!(cc.cwnd(), 10 * MSS);
        ack_round(&mut cc);
        assert_eq!(cc.cwnd(), 20 * MSS);
        ack_round(&mut cc);
        assert_eq!(cc.cwnd(), 40 * MSS);
    }

    #[test]
    fn newreno_stretch_ack_growth_limited_to_two_smss() {
        let mut cc = NewReno::new(MSS);
        cc.on_ack(T, 8 * MSS, 1, 10 * MSS, 0);
        // RFC 3465 2.2: L = 2*SMSS.
        assert_eq!(cc.cwnd(), 12 * MSS);
    }

    #[test]
    fn newreno_app_limited_ack_no_growth() {
        let mut cc = NewReno::new(MSS);
        cc.on_ack(T, MSS, 1, 2 * MSS, 0);
        assert_eq!(cc.cwnd(), 10 * MSS);
    }

    #[test]
    fn newreno_congestion_avoidance_one_mss_per_round() {
        let mut cc = NewReno::new(MSS);
        cc.on_congestion_event(T, 40 * MSS);
        assert_eq!(cc.ssthresh(), 20 * MSS);
        assert_eq!(cc.cwnd(), 20 * MSS);
        cc.on_recovery_exit(T, 30 * MSS);
        assert_eq!(cc.cwnd(), 20 * MSS);
        ack_round(&mut cc);
        assert_eq!(cc.cwnd(), 21 * MSS);
        ack_round(&mut cc);
        assert_eq!(cc.cwnd(), 22 * MSS);
    }

    #[test]
    fn newreno_fast_recovery_inflates_and_deflates() {
        let mut cc = NewReno::new(MSS);
        cc.on_congestion_event(T, 10 * MSS);
        assert_eq!(cc.ssthresh(), 5 * MSS);
        // Non-SACK: cwnd = ssthresh + 3*SMSS, then +1 SMSS per duplicate ACK.
        cc.on_dup_acks_in_recovery(3);
        cc.on_dup_acks_in_recovery(1);
        assert_eq!(cc.cwnd(), 9 * MSS);
        // Partial ACK of 3 segments: deflate by 3, add back 1.
        cc.on_partial_ack(3 * MSS);
        assert_eq!(cc.cwnd(), 7 * MSS);
        // Full ACK with 1 segment still in flight: min(ssthresh, 1 + 1) segments.
        cc.on_recovery_exit(T, MSS);
        assert_eq!(cc.cwnd(), 2 * MSS);
    }

    #[test]
    fn newreno_small_flight_ssthresh_floor_two_mss() {
        let mut cc = NewReno::new(MSS);
        cc.on_congestion_event(T, MSS);
        assert_eq!(cc.ssthresh(), 2 * MSS);
    }

    #[test]
    fn newreno_rto_loss_window_one_mss() {
        let mut cc = NewReno::new(MSS);
        cc.on_rto(T, 30 * MSS);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 15 * MSS);
        // A second timeout of the retransmission keeps ssthresh.
        cc.on_rto(T, MSS);
        assert_eq!(cc.ssthresh(), 15 * MSS);
        cc.on_ack(T, MSS, 1, MSS, 0);
        assert_eq!(cc.cwnd(), 2 * MSS);
    }

    #[test]
    fn newreno_idle_restart_caps_at_initial_window() {
        let mut cc = NewReno::new(MSS);
        ack_round(&mut cc);
        cc.on_idle_restart(T);
        assert_eq!(cc.cwnd(), 10 * MSS);
        cc.on_rto(T, 4 * MSS);
        cc.on_idle_restart(T);
        assert_eq!(cc.cwnd(), MSS);
    }
}
