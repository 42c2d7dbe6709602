//! CUBIC congestion control (RFC 9438), the default.
//!
//! Window growth in congestion avoidance follows the cubic function of the real time
//! elapsed since the congestion-avoidance stage began, taken from the `now` the caller
//! passes in (the engine reads no clock):
//!
//! `W_cubic(t) = C * (t - K)^3 + W_max`, with `K = cbrt((W_max - cwnd_epoch) / C)`
//! (RFC 9438 4.2), in segments and seconds. Below `W_est`, the Reno-friendly estimate
//! (RFC 9438 4.3), the window follows `W_est` instead. Slow start, fast recovery and the
//! loss window are shared with NewReno (see the `cc` module docs).

use super::{CongestionControl, Window};
use crate::time::Instant;

/// RFC 9438 4.1: C = 0.4.
pub const C: f64 = 0.4;
/// RFC 9438 4.1: beta_cubic = 0.7.
pub const BETA: f64 = 0.7;
/// RFC 9438 4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta) while W_est < W_max.
const ALPHA_RENO: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// RFC 9438 CUBIC with fast convergence (4.7).
#[derive(Debug, Clone)]
pub struct Cubic {
    w: Window,
    /// Window before the last reduction, in segments (RFC 9438 4.6, 4.7).
    w_max: f64,
    /// Start of the current congestion-avoidance epoch; `None` until its first ACK.
    epoch_start: Option<Instant>,
    /// Time for `W_cubic` to reach the origin, in seconds.
    k: f64,
    /// The plateau of the current epoch's curve, in segments.
    origin: f64,
    /// Reno-friendly window estimate, in segments.
    w_est: f64,
    /// Fraction of a byte of cwnd growth not yet applied.
    frac: f64,
    /// Last smoothed RTT the caller supplied, in microseconds (0: none yet).
    rtt_us: u32,
    /// The next epoch follows a timeout (RFC 9438 4.8: K = 0, W_max = cwnd_epoch).
    after_timeout: bool,
}

impl Cubic {
    /// A controller with the RFC 6928 initial window for `mss`.
    pub fn new(mss: u32) -> Self {
        Cubic {
            w: Window::new(mss),
            w_max: 0.0,
            epoch_start: None,
            k: 0.0,
            origin: 0.0,
            w_est: 0.0,
            frac: 0.0,
            rtt_us: 0,
            after_timeout: false,
        }
    }

    /// `W_max` in segments (RFC 9438 4.1).
    pub fn w_max(&self) -> f64 {
        self.w_max
    }

    /// `K` of the current epoch in seconds (0 before the first epoch).
    pub fn k(&self) -> f64 {
        self.k
    }

    /// RFC 9438 4.2 equation (1), in segments at `t` seconds into the epoch.
    fn w_cubic(&self, t: f64) -> f64 {
        C * (t - self.k).powi(3) + self.origin
    }

    fn segments(&self) -> f64 {
        (f64::from(self.w.cwnd) + self.frac) / f64::from(self.w.mss)
    }

    fn set_segments(&mut self, cwnd: f64) {
        let bytes = (cwnd * f64::from(self.w.mss)).min(f64::from(u32::MAX));
        let whole = bytes.floor();
        self.w.cwnd = whole as u32;
        self.frac = bytes - whole;
    }

    fn congestion_avoidance(&mut self, now: Instant, acked: u32) {
        let cwnd = self.segments();
        let epoch_start = match self.epoch_start {
            Some(t) => t,
            None => {
                // RFC 9438 4.2: a new epoch begins with the congestion-avoidance stage.
                if self.after_timeout {
                    // RFC 9438 4.8: after a timeout, K = 0 and W_max = cwnd_epoch.
                    self.w_max = cwnd;
                    self.after_timeout = false;
                }
                if self.w_max > cwnd {
                    self.k = ((self.w_max - cwnd) / C).cbrt();
                    self.origin = self.w_max;
                } else {
                    // Above the old maximum (or none yet): probe from here (as Linux).
                    self.k = 0.0;
                    self.origin = cwnd;
                }
                // RFC 9438 4.3: W_est starts at cwnd_epoch.
                self.w_est = cwnd;
                self.epoch_start = Some(now);
                now
            }
        };
        let t = now.micros_since(epoch_start) as f64 / 1e6;
        let acked_segments = f64::from(acked) / f64::from(self.w.mss);
        // RFC 9438 4.3: W_est += alpha_cubic * segments_acked / cwnd, alpha_cubic = 1
        // once W_est reaches W_max.
        let alpha = if self.w_est >= self.w_max {
            1.0
        } else {
            ALPHA_RENO
        };
        self.w_est += alpha * acked_segments / cwnd;
        let next = if self.w_cubic(t) < self.w_est {
            // RFC 9438 4.3: Reno-friendly region, cwnd = W_est.
            self.w_est
        } else {
            // RFC 9438 4.4/4.5: concave and convex regions; target = W_cubic(t + RTT)
            // bounded to [cwnd, 1.5 * cwnd], cwnd += (target - cwnd) / cwnd per segment.
            let rtt = f64::from(self.rtt_us) / 1e6;
            let target = self.w_cubic(t + rtt).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) / cwnd * acked_segments
        };
        self.set_segments(next.max(cwnd));
    }

    /// `on_ack`'s window growth once the window is in use: slow start, then congestion
    /// avoidance. Out of line: an ACK to a sender that is not cwnd-limited stops before.
    #[inline(never)]
    fn grow(&mut self, now: Instant, acked: u32, acks: u32) {
        let mut acked = acked;
        if self.w.in_slow_start() {
            acked = self.w.slow_start(acked, acks);
        }
        if acked > 0 && !self.w.in_slow_start() {
            self.congestion_avoidance(now, acked);
        }
    }

    /// RFC 9438 4.6/4.7: remember W_max (reduced further under fast convergence) and
    /// return the new ssthresh in bytes.
    fn reduce_w_max(&mut self) -> u32 {
        let cwnd = self.segments();
        // RFC 9438 4.7: fast convergence when the window shrank since the last event.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.epoch_start = None;
        self.frac = 0.0;
        // RFC 9438 4.6: ssthresh = cwnd * beta_cubic (cwnd rather than flight size, as
        // Linux), at least 2 SMSS (enforced by Window::reduce).
        (f64::from(self.w.cwnd) * BETA).round() as u32
    }
}

impl CongestionControl for Cubic {
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
    fn on_ack(&mut self, now: Instant, acked: u32, acks: u32, in_flight_before: u32, srtt_us: u32) {
        self.w.pristine = false;
        self.w.in_loss = false;
        if srtt_us != 0 {
            self.rtt_us = srtt_us;
        }
        if !self.w.cwnd_limited(in_flight_before) {
            return;
        }
        self.grow(now, acked, acks);
    }

    fn on_congestion_event(&mut self, _now: Instant, _in_flight: u32) {
        let ssthresh = self.reduce_w_max();
        self.w.reduce(ssthresh, ssthresh.max(2 * self.w.mss));
        self.after_timeout = false;
    }

    fn on_dup_acks_in_recovery(&mut self, count: u32) {
        self.w.inflate(count);
    }

    fn on_partial_ack(&mut self, acked: u32) {
        self.w.partial_ack(acked);
    }

    fn on_recovery_exit(&mut self, _now: Instant, in_flight: u32) {
        self.w.recovery_exit(in_flight);
        self.epoch_start = None;
        self.frac = 0.0;
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: u32) {
        // RFC 9438 4.8: ssthresh as on a congestion event, cwnd = 1 SMSS (RFC 5681);
        // a repeated timeout keeps ssthresh and W_max (as Linux).
        let ssthresh = if self.w.in_loss {
            self.w.ssthresh
        } else {
            self.reduce_w_max()
        };
        self.w.reduce(ssthresh, self.w.mss);
        self.w.in_loss = true;
        self.epoch_start = None;
        self.frac = 0.0;
        self.after_timeout = true;
    }

    fn on_idle_restart(&mut self, _now: Instant) {
        self.w.idle_restart();
        // The curve restarts from the current window at the next ACK.
        self.epoch_start = None;
        self.frac = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    /// Puts a controller in congestion avoidance right after a loss at `w_max` segments.
    fn after_loss(w_max: u32) -> Cubic {
        let mut cc = Cubic::new(MSS);
        cc.w.cwnd = w_max * MSS;
        cc.on_congestion_event(Instant::ZERO, w_max * MSS);
        cc.on_recovery_exit(Instant::ZERO, w_max * MSS);
        cc
    }

    /// Acknowledges one window in MSS-sized ACKs spread over one RTT starting at `t`
    /// (microseconds); returns the time at the end of the round.
    fn ack_round(cc: &mut Cubic, t: u64, rtt_us: u64) -> u64 {
        let acks = (cc.cwnd() / MSS).max(1);
        for i in 0..acks {
            let now = Instant::from_micros(t + rtt_us * u64::from(i) / u64::from(acks));
            cc.on_ack(now, MSS, 1, cc.cwnd(), rtt_us as u32);
        }
        t + rtt_us
    }

    /// Runs rounds from the epoch start until `until` seconds; returns cwnd in segments.
    fn run_until(cc: &mut Cubic, until: f64, rtt_us: u64) -> f64 {
        let mut t = 0;
        while (t as f64) / 1e6 < until {
            t = ack_round(cc, t, rtt_us);
        }
        f64::from(cc.cwnd()) / f64::from(MSS)
    }

    fn w_cubic(t: f64, k: f64, w_max: f64) -> f64 {
        C * (t - k).powi(3) + w_max
    }

    #[test]
    fn cubic_congestion_event_reduces_by_beta() {
        let mut cc = Cubic::new(MSS);
        cc.w.cwnd = 100 * MSS;
        cc.on_congestion_event(Instant::ZERO, 100 * MSS);
        assert_eq!(cc.ssthresh(), 70 * MSS);
        assert_eq!(cc.cwnd(), 70 * MSS);
        assert_eq!(cc.w_max(), 100.0);
    }

    #[test]
    fn cubic_second_loss_below_w_max_fast_convergence() {
        let mut cc = after_loss(100);
        cc.w.cwnd = 90 * MSS;
        cc.on_congestion_event(Instant::ZERO, 90 * MSS);
        // RFC 9438 4.7: W_max = cwnd * (1 + beta) / 2.
        assert!((cc.w_max() - 76.5).abs() < 1e-9);
        assert_eq!(cc.ssthresh(), 63 * MSS);
    }

    #[test]
    fn cubic_epoch_start_k_matches_rfc() {
        let mut cc = after_loss(100);
        ack_round(&mut cc, 0, 100_000);
        // K = cbrt(W_max * (1 - beta) / C) = cbrt(75)
        assert!((cc.k() - 75f64.cbrt()).abs() < 1e-9);
    }

    #[test]
    fn cubic_concave_region_follows_curve() {
        let mut cc = after_loss(100);
        let k = 75f64.cbrt();
        for &t in &[1.0, 2.0, k] {
            let mut c = cc.clone();
            let got = run_until(&mut c, t, 100_000);
            let want = w_cubic(t, k, 100.0);
            assert!(
                (got - want).abs() < 1.5,
                "t={t}: cwnd {got} vs W_cubic {want}"
            );
        }
        // At K the window is back at W_max.
        let got = run_until(&mut cc, k, 100_000);
        assert!((got - 100.0).abs() < 1.5);
    }

    #[test]
    fn cubic_convex_region_follows_curve() {
        let k = 75f64.cbrt();
        for &t in &[k + 2.0, k + 4.0] {
            let mut cc = after_loss(100);
            let got = run_until(&mut cc, t, 100_000);
            let want = w_cubic(t, k, 100.0);
            assert!(
                (got - want).abs() / want < 0.03,
                "t={t}: cwnd {got} vs W_cubic {want}"
            );
        }
    }

    #[test]
    fn cubic_short_rtt_small_window_reno_friendly() {
        // W_max = 10, RTT 10 ms: after 0.5 s W_cubic is still below W_max but the
        // Reno-friendly estimate has grown by alpha per RTT (1 once past W_max).
        let mut cc = after_loss(10);
        let got = run_until(&mut cc, 0.5, 10_000);
        let k = 3f64.cbrt() * (1.0f64 / 0.4).cbrt();
        assert!(w_cubic(0.5, k, 10.0) < 10.0);
        let rtts_to_w_max = 3.0 / ALPHA_RENO;
        let want = 10.0 + (50.0 - rtts_to_w_max);
        // cwnd tracks W_est; W_est grew about alpha per RTT (less the whole-segment
        // rounding of the ACK count per round).
        assert!(
            (got - cc.w_est).abs() < 0.01,
            "cwnd {got} vs W_est {}",
            cc.w_est
        );
        assert!((got - want).abs() < 3.0, "cwnd {got} vs W_est model {want}");
    }

    #[test]
    fn cubic_rto_restart_k_zero_from_cwnd_epoch() {
        let mut cc = Cubic::new(MSS);
        cc.w.cwnd = 40 * MSS;
        cc.on_rto(Instant::ZERO, 40 * MSS);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 28 * MSS);
        cc.on_rto(Instant::ZERO, MSS);
        assert_eq!(cc.ssthresh(), 28 * MSS);
        // Slow start back to ssthresh, then the first CA epoch has K = 0.
        let mut t = 0;
        while cc.cwnd() < cc.ssthresh() {
            t = ack_round(&mut cc, t, 100_000);
        }
        ack_round(&mut cc, t, 100_000);
        assert_eq!(cc.k(), 0.0);
        assert!((cc.w_max() - 28.0).abs() < 1.0);
    }

    #[test]
    fn cubic_growth_per_rtt_bounded_by_half_cwnd() {
        // Far into the convex region the target is clamped to 1.5 * cwnd per RTT.
        let mut cc = after_loss(100);
        run_until(&mut cc, 30.0, 100_000);
        let before = f64::from(cc.cwnd());
        ack_round(&mut cc, 30_000_000, 100_000);
        assert!(f64::from(cc.cwnd()) <= before * 1.5 + f64::from(MSS));
    }
}
