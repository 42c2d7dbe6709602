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
///
/// Compact (32 bytes): times are held as `u32` microseconds, so RTTs and RTO limits
/// saturate at about 71 minutes.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    /// `RttConfig` in microseconds: initial RTO, min RTO, max RTO, granularity.
    initial_rto: u32,
    min_rto: u32,
    max_rto: u32,
    granularity: u32,
    /// Smoothed RTT in microseconds; `NO_SAMPLE` before the first sample.
    srtt: u32,
    /// RTT variation in microseconds.
    rttvar: u32,
    /// RTO from the estimate, before backoff, in microseconds.
    base_rto: u32,
    /// Number of doublings applied by `backoff`.
    backoff: u32,
}

const NO_SAMPLE: u32 = u32::MAX;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1)
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new(RttConfig::default())
    }
}

impl RttEstimator {
    /// An estimator with no samples yet: RTO is `config.initial_rto`.
    pub fn new(config: RttConfig) -> Self {
        let max_rto = micros(config.max_rto);
        RttEstimator {
            initial_rto: micros(config.initial_rto).min(max_rto),
            min_rto: micros(config.min_rto).min(max_rto),
            max_rto,
            granularity: micros(config.granularity),
            srtt: NO_SAMPLE,
            rttvar: 0,
            base_rto: micros(config.initial_rto).min(max_rto),
            backoff: 0,
        }
    }

    /// The configuration in use (as stored, in whole microseconds).
    pub fn config(&self) -> RttConfig {
        RttConfig {
            initial_rto: Duration::from_micros(self.initial_rto.into()),
            min_rto: Duration::from_micros(self.min_rto.into()),
            max_rto: Duration::from_micros(self.max_rto.into()),
            granularity: Duration::from_micros(self.granularity.into()),
        }
    }

    /// Feeds one RTT measurement (see the module docs for Karn's rule).
    pub fn on_sample(&mut self, rtt: Duration) {
        let r = u64::from(micros(rtt));
        let (srtt, rttvar) = if self.srtt == NO_SAMPLE {
            // RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2.
            (r, r / 2)
        } else {
            // RFC 6298 2.3: RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|
            //               SRTT <- (1 - alpha) * SRTT + alpha * R'
            // with alpha = 1/8, beta = 1/4, RTTVAR updated first with the old SRTT.
            let srtt = u64::from(self.srtt);
            (
                (7 * srtt + r) / 8,
                (3 * u64::from(self.rttvar) + srtt.abs_diff(r)) / 4,
            )
        };
        // Both are at most max(R, old SRTT), below NO_SAMPLE.
        self.srtt = u32::try_from(srtt).unwrap_or(NO_SAMPLE - 1);
        self.rttvar = u32::try_from(rttvar).unwrap_or(NO_SAMPLE - 1);
        // RFC 6298 2.2/2.3: RTO <- SRTT + max(G, K * RTTVAR), K = 4.
        let rto = srtt + u64::from(self.granularity).max(4 * rttvar);
        // RFC 6298 2.4 (minimum, configurable) and 2.5 (maximum).
        let rto = rto.clamp(u64::from(self.min_rto), u64::from(self.max_rto));
        self.base_rto = u32::try_from(rto).unwrap_or(self.max_rto);
        // A fresh sample means the path answers again: drop backoff (as Linux does on
        // new ACKs).
        self.backoff = 0;
    }

    /// The current retransmission timeout, including backoff, capped at `max_rto`.
    pub fn rto(&self) -> Duration {
        let rto = u64::from(self.base_rto)
            .checked_shl(self.backoff)
            .filter(|r| r >> self.backoff == u64::from(self.base_rto))
            .unwrap_or(u64::MAX);
        Duration::from_micros(rto.min(u64::from(self.max_rto)))
    }

    /// Doubles the RTO after a retransmission timeout (RFC 6298 5.5), capped at
    /// `max_rto`.
    pub fn backoff(&mut self) {
        if self.rto() < Duration::from_micros(self.max_rto.into()) {
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
        (self.srtt != NO_SAMPLE).then(|| Duration::from_micros(self.srtt.into()))
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(self.rttvar.into())
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
    fn rtt_estimator_size_is_32_bytes() {
        assert_eq!(core::mem::size_of::<RttEstimator>(), 32);
    }

    #[test]
    fn rtt_huge_sample_capped_at_max() {
        let mut e = RttEstimator::default();
        e.on_sample(Duration::from_secs(500));
        assert_eq!(e.rto(), Duration::from_secs(120));
    }
}
