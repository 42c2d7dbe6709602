//! Retransmission timeout estimation (RFC 6298).
//!
//! Karn's algorithm (RFC 6298 3) is the caller's job: feed [`RttEstimator::on_sample`]
//! only with RTT measurements from segments that were not retransmitted, or from
//! timestamp echoes (RFC 7323 4), never from an ACK of a retransmitted segment.

use core::time::Duration;

/// Limits and granularity of the estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttConfig {
    /// RTO before any sample (RFC 6298 2.1: 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the RTO. RFC 6298 2.4 says 1 s; like Linux we default to 200 ms,
    /// which the RFC allows as a configuration choice.
    pub min_rto: Duration,
    /// Upper bound of the RTO, also capping backoff (RFC 6298 2.5: at least 60 s).
    pub max_rto: Duration,
    /// Clock granularity G (RFC 6298 2.2).
    pub granularity: Duration,
}

impl Default for RttConfig {
    fn default() -> Self {
        RttConfig {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            granularity: Duration::from_millis(1),
        }
    }
}

/// RFC 6298 round-trip and RTO estimator (SRTT, RTTVAR, exponential backoff).
#[derive(Debug, Clone)]
pub struct RttEstimator {
    config: RttConfig,
    /// Smoothed RTT in microseconds; `None` before the first sample.
    srtt: Option<u64>,
    /// RTT variation in microseconds.
    rttvar: u64,
    /// RTO from the estimate, before backoff, in microseconds.
    base_rto: u64,
    /// Number of doublings applied by `backoff`.
    backoff: u32,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new(RttConfig::default())
    }
}

impl RttEstimator {
    /// An estimator with no samples yet: RTO is `config.initial_rto`.
    pub fn new(config: RttConfig) -> Self {
        RttEstimator {
            config,
            srtt: None,
            rttvar: 0,
            base_rto: micros(config.initial_rto),
            backoff: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RttConfig {
        &self.config
    }

    /// Feeds one RTT measurement (see the module docs for Karn's rule).
    pub fn on_sample(&mut self, rtt: Duration) {
        let r = micros(rtt);
        match self.srtt {
            None => {
                // RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2.
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                // RFC 6298 2.3: RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|
                //               SRTT <- (1 - alpha) * SRTT + alpha * R'
                // with alpha = 1/8, beta = 1/4, RTTVAR updated first with the old SRTT.
                self.rttvar = (3 * self.rttvar + srtt.abs_diff(r)) / 4;
                self.srtt = Some((7 * srtt + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        // RFC 6298 2.2/2.3: RTO <- SRTT + max(G, K * RTTVAR), K = 4.
        let rto = srtt.saturating_add(micros(self.config.granularity).max(4 * self.rttvar));
        // RFC 6298 2.4 (minimum, configurable) and 2.5 (maximum).
        self.base_rto = rto.clamp(micros(self.config.min_rto), micros(self.config.max_rto));
        // A fresh sample means the path answers again: drop backoff (RFC 6298 5.7 spirit;
        // Linux does the same on new ACKs).
        self.backoff = 0;
    }

    /// The current retransmission timeout, including backoff, capped at `max_rto`.
    pub fn rto(&self) -> Duration {
        let max = micros(self.config.max_rto);
        let rto = self
            .base_rto
            .checked_shl(self.backoff)
            .filter(|r| r >> self.backoff == self.base_rto)
            .unwrap_or(max);
        Duration::from_micros(rto.min(max))
    }

    /// Doubles the RTO after a retransmission timeout (RFC 6298 5.5), capped at
    /// `max_rto`.
    pub fn backoff(&mut self) {
        if self.rto() < self.config.max_rto {
            self.backoff += 1;
        }
    }

    /// Number of backoff doublings since the last sample or reset.
    pub fn backoff_count(&self) -> u32 {
        self.backoff
    }

    /// Clears backoff (e.g. when an ACK for new data arrives without a usable sample).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// Smoothed RTT, `None` before the first sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_micros)
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(self.rttvar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rtt_no_sample_rto_is_one_second() {
        let e = RttEstimator::default();
        assert_eq!(e.rto(), ms(1000));
        assert_eq!(e.srtt(), None);
    }

    #[test]
    fn rtt_first_sample_sets_srtt_and_half_var() {
        let mut e = RttEstimator::default();
        e.on_sample(ms(100));
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), ms(50));
        // 100 + 4 * 50
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn rtt_second_sample_smooths_per_rfc6298() {
        let mut e = RttEstimator::default();
        e.on_sample(ms(100));
        e.on_sample(ms(200));
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        // RTO = 112.5 + 4 * 62.5 = 362.5 ms
        assert_eq!(e.rto(), Duration::from_micros(362_500));
    }

    #[test]
    fn rtt_small_samples_rto_clamped_to_min() {
        let mut e = RttEstimator::default();
        for _ in 0..50 {
            e.on_sample(Duration::from_micros(50));
        }
        assert_eq!(e.rto(), ms(200));
        let mut strict = RttEstimator::new(RttConfig {
            min_rto: ms(1000),
            ..RttConfig::default()
        });
        strict.on_sample(ms(10));
        assert_eq!(strict.rto(), ms(1000));
    }

    #[test]
    fn rtt_zero_variance_uses_granularity() {
        let mut e = RttEstimator::new(RttConfig {
            min_rto: Duration::ZERO,
            granularity: ms(10),
            ..RttConfig::default()
        });
        for _ in 0..200 {
            e.on_sample(ms(300));
        }
        assert_eq!(e.rttvar(), Duration::ZERO);
        assert_eq!(e.rto(), ms(310));
    }

    #[test]
    fn rtt_backoff_doubles_capped_and_resets() {
        let mut e = RttEstimator::default();
        e.on_sample(ms(100));
        e.backoff();
        assert_eq!(e.rto(), ms(600));
        e.backoff();
        assert_eq!(e.rto(), ms(1200));
        for _ in 0..100 {
            e.backoff();
        }
        assert_eq!(e.rto(), ms(120_000));
        e.reset_backoff();
        assert_eq!(e.rto(), ms(300));
        e.backoff();
        e.on_sample(ms(100));
        assert_eq!(e.backoff_count(), 0);
    }

    #[test]
    fn rtt_huge_sample_capped_at_max() {
        let mut e = RttEstimator::default();
        e.on_sample(Duration::from_secs(500));
        assert_eq!(e.rto(), Duration::from_secs(120));
    }
}
