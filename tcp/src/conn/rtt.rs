//! Round-trip time estimation and retransmission timeout (RFC 6298).

use core::time::Duration;

/// RFC 6298 state: SRTT, RTTVAR and the base RTO (before backoff), in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    srtt: u32,
    rttvar: u32,
    rto: u32,
    sampled: bool,
}

/// Clock granularity G assumed for the RTO formula.
const GRANULARITY_US: u32 = 1_000;

impl Rtt {
    /// Before any sample the RTO is `initial` (RFC 6298 2.1: 1 second).
    pub fn new(initial: Duration) -> Rtt {
        Rtt {
            srtt: 0,
            rttvar: 0,
            rto: dur_us(initial),
            sampled: false,
        }
    }

    /// Folds in one measurement (RFC 6298 2.2, 2.3).
    pub fn sample(&mut self, r: Duration, min: Duration, max: Duration) {
        let r = dur_us(r).max(1);
        if self.sampled {
            let diff = self.srtt.abs_diff(r);
            self.rttvar = self.rttvar - self.rttvar / 4 + diff / 4;
            self.srtt = self.srtt - self.srtt / 8 + r / 8;
        } else {
            self.srtt = r;
            self.rttvar = r / 2;
            self.sampled = true;
        }
        let rto = self
            .srtt
            .saturating_add(GRANULARITY_US.max(self.rttvar.saturating_mul(4)));
        // RFC 6298 2.4 (minimum; Linux-like 200 ms by default) and 2.5 (maximum).
        self.rto = rto.clamp(dur_us(min), dur_us(max));
    }

    /// The RTO after `backoff` doublings (RFC 6298 5.5), capped at `max`.
    pub fn rto(&self, backoff: u8, max: Duration) -> Duration {
        let base = u64::from(self.rto);
        let shifted = base.checked_shl(u32::from(backoff)).unwrap_or(u64::MAX);
        Duration::from_micros(shifted.min(u64::from(dur_us(max))))
    }

    /// Smoothed RTT, if sampled.
    pub fn srtt(&self) -> Option<Duration> {
        self.sampled
            .then(|| Duration::from_micros(u64::from(self.srtt)))
    }
}

fn dur_us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_first_sample_sets_srtt_and_rto() {
        let mut r = Rtt::new(Duration::from_secs(1));
        let max = Duration::from_secs(60);
        assert_eq!(r.rto(0, max), Duration::from_secs(1));
        r.sample(Duration::from_millis(100), Duration::from_millis(200), max);
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
        // 100 + 4 * 50 = 300 ms
        assert_eq!(r.rto(0, max), Duration::from_millis(300));
        assert_eq!(r.rto(2, max), Duration::from_millis(1200));
        assert_eq!(r.rto(40, max), max);
    }

    #[test]
    fn rtt_small_samples_clamp_to_min() {
        let mut r = Rtt::new(Duration::from_secs(1));
        r.sample(
            Duration::from_micros(50),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        assert_eq!(
            r.rto(0, Duration::from_secs(60)),
            Duration::from_millis(200)
        );
    }
}
