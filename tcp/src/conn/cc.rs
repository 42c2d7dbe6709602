//! Congestion window bookkeeping for one connection: NewReno (RFC 5681, RFC 6582)
//! and CUBIC (RFC 9438). The TCB detects loss and recovery; this module only says how
//! the window reacts.

use crate::time::Instant;
use core::time::Duration;

/// Congestion control algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RFC 5681 / RFC 6582.
    NewReno,
    /// RFC 9438 (the default, as in Linux).
    Cubic,
}

/// RFC 9438 4.6: multiplicative decrease factor.
const BETA_CUBIC: f64 = 0.7;
/// RFC 9438 5: C.
const C_CUBIC: f64 = 0.4;

/// Window state.
#[derive(Debug, Clone, Copy)]
pub struct Cc {
    alg: Algorithm,
    mss: u32,
    iw: u32,
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acked in congestion avoidance not yet turned into window (NewReno).
    acc: u32,
    /// CUBIC: window before the last reduction, in bytes.
    w_max: f64,
    /// CUBIC: start of the current avoidance epoch.
    epoch: Option<Instant>,
    /// CUBIC: Reno-friendly estimate (RFC 9438 4.3), bytes.
    w_est: f64,
}

impl Cc {
    /// Initial window `iw` segments of `mss` bytes (RFC 6928 / RFC 5681 3.1).
    pub fn new(alg: Algorithm, mss: u32, iw: u32) -> Cc {
        let mss = mss.max(1);
        Cc {
            alg,
            mss,
            iw: iw.max(1),
            cwnd: mss.saturating_mul(iw.max(1)),
            ssthresh: u32::MAX,
            acc: 0,
            w_max: 0.0,
            epoch: None,
            w_est: 0.0,
        }
    }

    /// Congestion window in bytes.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Slow-start threshold in bytes.
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// `acked` new bytes were acknowledged outside recovery.
    pub fn on_ack(&mut self, acked: u32, now: Instant, srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            // RFC 5681 3.1 slow start (with RFC 3465 L = 2*SMSS).
            self.cwnd = self
                .cwnd
                .saturating_add(acked.min(2 * self.mss))
                .min(self.ssthresh.max(self.cwnd));
            if self.cwnd >= self.ssthresh {
                self.epoch = None;
            }
            return;
        }
        match self.alg {
            Algorithm::NewReno => self.reno_ca(acked),
            Algorithm::Cubic => self.cubic_ca(acked, now, srtt),
        }
    }

    fn reno_ca(&mut self, acked: u32) {
        // RFC 5681 3.1 congestion avoidance: about one SMSS per RTT.
        self.acc = self.acc.saturating_add(acked);
        if self.acc >= self.cwnd {
            self.acc -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.mss);
        }
    }

    fn cubic_ca(&mut self, acked: u32, now: Instant, srtt: Option<Duration>) {
        let mss = f64::from(self.mss);
        let epoch = *self.epoch.get_or_insert_with(|| {
            self.w_est = f64::from(self.cwnd);
            if self.w_max < f64::from(self.cwnd) {
                self.w_max = f64::from(self.cwnd);
            }
            now
        });
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let t = now.saturating_since(epoch).as_secs_f64() + rtt;
        let w_max_seg = self.w_max / mss;
        // RFC 9438 4.2, eq. 2.
        let k = (w_max_seg * (1.0 - BETA_CUBIC) / C_CUBIC).cbrt();
        let target = (C_CUBIC * (t - k).powi(3) + w_max_seg) * mss;
        // RFC 9438 4.3: Reno-friendly region.
        let alpha = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC);
        self.w_est += alpha * f64::from(acked) * mss / f64::from(self.cwnd).max(1.0);
        let cwnd = f64::from(self.cwnd);
        let goal = target.max(self.w_est).min(cwnd * 1.5);
        if goal > cwnd {
            let inc = (goal - cwnd) / cwnd * f64::from(acked);
            self.acc = self.acc.saturating_add(inc as u32);
            let step = self.acc;
            self.acc = 0;
            self.cwnd = self.cwnd.saturating_add(step.max(1));
        }
    }

    /// Loss detected by duplicate ACKs or SACK (RFC 5681 3.2 step 2, RFC 9438 4.6);
    /// `flight` is the data outstanding. Returns the new ssthresh.
    pub fn on_loss(&mut self, flight: u32) -> u32 {
        self.ssthresh = match self.alg {
            Algorithm::NewReno => (flight / 2).max(2 * self.mss),
            Algorithm::Cubic => {
                self.w_max = f64::from(self.cwnd);
                ((f64::from(self.cwnd) * BETA_CUBIC) as u32).max(2 * self.mss)
            }
        };
        self.epoch = None;
        self.acc = 0;
        self.ssthresh
    }

    /// Sets the window during or at the end of fast recovery.
    pub fn set_cwnd(&mut self, cwnd: u32) {
        self.cwnd = cwnd.max(self.mss);
    }

    /// Retransmission timeout (RFC 5681 3.1 eq. 4; cwnd = loss window = 1 SMSS).
    pub fn on_rto(&mut self, flight: u32) {
        if self.alg == Algorithm::Cubic {
            self.w_max = f64::from(self.cwnd);
        }
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.mss;
        self.epoch = None;
        self.acc = 0;
    }

    /// RFC 5681 4.1: after an idle period longer than the RTO, restart from at most
    /// the initial window.
    pub fn on_idle_restart(&mut self) {
        self.cwnd = self.cwnd.min(self.mss.saturating_mul(self.iw));
        self.epoch = None;
    }

    /// Maximum segment size in use.
    pub fn mss(&self) -> u32 {
        self.mss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_slow_start_doubles_then_reno_grows_linearly() {
        let mut c = Cc::new(Algorithm::NewReno, 1000, 2);
        c.on_ack(1000, Instant::ZERO, None);
        c.on_ack(1000, Instant::ZERO, None);
        assert_eq!(c.cwnd(), 4000);
        assert_eq!(c.on_loss(4000), 2000);
        c.set_cwnd(2000);
        for _ in 0..2 {
            c.on_ack(1000, Instant::ZERO, None);
        }
        assert_eq!(c.cwnd(), 3000);
    }

    #[test]
    fn cc_rto_collapses_to_one_segment() {
        let mut c = Cc::new(Algorithm::Cubic, 1000, 10);
        c.on_rto(10_000);
        assert_eq!(c.cwnd(), 1000);
        assert_eq!(c.ssthresh(), 5000);
    }

    #[test]
    fn cc_cubic_grows_after_loss() {
        let mut c = Cc::new(Algorithm::Cubic, 1000, 10);
        c.on_loss(10_000);
        c.set_cwnd(c.ssthresh());
        let before = c.cwnd();
        let mut now = Instant::ZERO;
        for _ in 0..200 {
            now += Duration::from_millis(10);
            c.on_ack(1000, now, Some(Duration::from_millis(10)));
        }
        assert!(c.cwnd() > before);
    }
}
