//! Round-trip time estimation and retransmission timeout (RFC 6298).
//!
//! Karn's algorithm (RFC 6298 3) is the caller's job: feed [`Rtt::sample`] only with
//! measurements from segments that were not retransmitted, or from timestamp echoes
//! (RFC 7323 4), never from an ACK of a retransmitted segment. The backoff count lives
//! in the connection (it also drives retry limits), and is passed to [`Rtt::rto`].

use core::time::Duration;

/// RFC 6298 state: SRTT, RTTVAR and the base RTO (before backoff), in microseconds.
///
/// Compact (12 bytes), because every TCB holds one: times saturate at about 71 minutes,
/// and `srtt == 0` means "no sample yet" (samples are at least 1 µs).
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    srtt: u32,
    rttvar: u32,
    rto: u32,
}

/// Clock granularity G assumed for the RTO formula (RFC 6298 2.2).
const GRANULARITY_US: u32 = 1_000;

impl Rtt {
    /// Before any sample the RTO is `initial` (RFC 6298 2.1: 1 second).
    pub fn new(initial: Duration) -> Rtt {
        Rtt {
            srtt: 0,
            rttvar: 0,
            rto: dur_us(initial),
        }
    }

    /// Folds in one measurement (RFC 6298 2.2, 2.3); the RTO is clamped to
    /// `[min, max]`.
    pub fn sample(&mut self, r: Duration, min: Duration, max: Duration) {
        self.sample_us(dur_us(r), dur_us(min), dur_us(max));
    }

    /// [`Rtt::sample`] in microseconds (the receive path's unit: no `Duration`
    /// arithmetic per ACK).
    #[inline]
    pub fn sample_us(&mut self, r: u32, min: u32, max: u32) {
        let r = r.max(1);
        if self.srtt != 0 {
            // RTTVAR <- (1 - 1/4) * RTTVAR + 1/4 * |SRTT - R'|
            // SRTT <- (1 - 1/8) * SRTT + 1/8 * R'
            let diff = self.srtt.abs_diff(r);
            self.rttvar = self.rttvar - self.rttvar / 4 + diff / 4;
            self.srtt = (self.srtt - self.srtt / 8 + r / 8).max(1);
        } else {
            // RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2.
            self.srtt = r;
            self.rttvar = r / 2;
        }
        // RTO <- SRTT + max(G, K*RTTVAR), K = 4.
        let rto = self
            .srtt
            .saturating_add(GRANULARITY_US.max(self.rttvar.saturating_mul(4)));
        // RFC 6298 2.4 (minimum; Linux-like 200 ms by default) and 2.5 (maximum).
        self.rto = rto.clamp(min, max.max(min));
    }

    /// The RTO after `backoff` doublings (RFC 6298 5.5), capped at `max`.
    pub fn rto(&self, backoff: u8, max: Duration) -> Duration {
        Duration::from_micros(self.rto_us(backoff, dur_us(max)))
    }

    /// [`Rtt::rto`] in microseconds.
    #[inline]
    pub fn rto_us(&self, backoff: u8, max: u32) -> u64 {
        let base = u64::from(self.rto);
        let shifted = base.checked_shl(u32::from(backoff)).unwrap_or(u64::MAX);
        shifted.min(u64::from(max))
    }

    /// The smoothed RTT in microseconds, 0 before the first sample.
    #[inline]
    pub fn srtt_us(&self) -> u32 {
        self.srtt
    }

    /// The smoothed RTT, `None` before the first sample.
    pub fn srtt(&self) -> Option<Duration> {
        (self.srtt != 0).then(|| Duration::from_micros(u64::from(self.srtt)))
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(u64::from(self.rttvar))
    }
}

fn dur_us(d: Duration) -> u32 {
    crate::time::duration_micros_u32(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn rtt_no_sample_rto_is_initial() {
        let r = Rtt::new(ms(1000));
        assert_eq!(r.rto(0, MAX), ms(1000));
        assert_eq!(r.srtt(), None);
    }

    #[test]
    fn rtt_first_sample_sets_srtt_and_rto() {
        let mut r = Rtt::new(ms(1000));
        r.sample(ms(100), MIN, MAX);
        assert_eq!(r.srtt(), Some(ms(100)));
        assert_eq!(r.rttvar(), ms(50));
        // 100 + 4 * 50 = 300 ms
        assert_eq!(r.rto(0, MAX), ms(300));
        assert_eq!(r.rto(2, MAX), ms(1200));
        assert_eq!(r.rto(40, MAX), MAX);
    }

    #[test]
    fn rtt_second_sample_smooths_per_rfc6298() {
        let mut r = Rtt::new(ms(1000));
        r.sample(ms(100), MIN, MAX);
        r.sample(ms(200), MIN, MAX);
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5
        assert_eq!(r.rttvar(), Duration::from_micros(62_500));
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        // RTO = 112.5 + 4 * 62.5 = 362.5 ms
        assert_eq!(r.rto(0, MAX), Duration::from_micros(362_500));
    }

    #[test]
    fn rtt_small_samples_clamp_to_min() {
        let mut r = Rtt::new(ms(1000));
        for _ in 0..50 {
            r.sample(Duration::from_micros(50), MIN, MAX);
        }
        assert_eq!(r.rto(0, MAX), MIN);
        let mut strict = Rtt::new(ms(1000));
        strict.sample(ms(10), ms(1000), MAX);
        assert_eq!(strict.rto(0, MAX), ms(1000));
    }

    #[test]
    fn rtt_zero_variance_uses_granularity() {
        let mut r = Rtt::new(ms(1000));
        for _ in 0..200 {
            r.sample(ms(300), Duration::ZERO, MAX);
        }
        // Integer smoothing leaves a few microseconds; the G term dominates.
        assert!(r.rttvar() < Duration::from_micros(10));
        assert_eq!(r.rto(0, MAX), ms(301));
    }

    #[test]
    fn rtt_huge_sample_capped_at_max() {
        let mut r = Rtt::new(ms(1000));
        r.sample(Duration::from_secs(500), MIN, Duration::from_secs(120));
        assert_eq!(r.rto(0, Duration::from_secs(120)), Duration::from_secs(120));
    }

    #[test]
    fn rtt_size_is_12_bytes() {
        assert_eq!(core::mem::size_of::<Rtt>(), 12);
    }
}
