//! Time as the engine sees it: a monotonic instant handed in by the caller.
//!
//! The engine never reads a clock. The worker reads one once per batch and passes it to
//! every call; tests and the simulation pass a virtual clock.

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point on the caller's monotonic clock, in microseconds since an arbitrary epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The epoch of the caller's clock.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the epoch.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds since the epoch (truncated).
    pub const fn total_millis(self) -> u64 {
        self.micros / 1000
    }

    /// `self` plus `us` microseconds (saturating).
    #[inline]
    pub const fn add_micros(self, us: u64) -> Instant {
        Instant {
            micros: self.micros.saturating_add(us),
        }
    }

    /// Microseconds from `earlier` to `self`, 0 if `earlier` is later.
    #[inline]
    pub const fn micros_since(self, earlier: Instant) -> u64 {
        self.micros.saturating_sub(earlier.micros)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

/// `d` in whole microseconds, saturating at `u64::MAX` (as `d.as_micros()` would be,
/// without its 128-bit arithmetic).
#[inline]
pub(crate) fn duration_micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// `d` in whole microseconds, saturating at `u32::MAX` (about 71 minutes): the unit of
/// the RTT estimator and the RTO bounds.
#[inline]
pub(crate) fn duration_micros_u32(d: Duration) -> u32 {
    u32::try_from(duration_micros(d)).unwrap_or(u32::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_add(duration_micros(rhs)),
        }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_sub(duration_micros(rhs)),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an earlier `self` gives zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_add_and_sub_saturate() {
        let t = Instant::from_millis(5);
        assert_eq!((t + Duration::from_millis(2)).total_millis(), 7);
        assert_eq!(t - Instant::from_millis(9), Duration::ZERO);
        assert_eq!((t - Duration::from_secs(1)), Instant::ZERO);
        assert_eq!(
            Instant::from_micros(u64::MAX) + Duration::from_secs(1),
            Instant::from_micros(u64::MAX)
        );
    }
}
