//! TCP sequence-number arithmetic modulo 2^32 (RFC 9293 3.4).
//!
//! Comparisons are only meaningful between numbers less than 2^31 apart, which the
//! protocol guarantees for any two numbers inside a window.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence (or acknowledgment) number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `other` to `self`, in bytes (`self - other`).
    pub fn distance(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self` lies in `[start, end)` (RFC 9293 3.4 "<= ... <").
    pub fn in_window(self, start: SeqNumber, len: u32) -> bool {
        self.0.wrapping_sub(start.0) < len
    }

    /// The later of two numbers.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self >= other {
            self
        } else {
            other
        }
    }

    /// The earlier of two numbers.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self <= other {
            self
        } else {
            other
        }
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    /// Adds a byte count; lengths are bounded by the window (< 2^31), so the
    /// truncation to u32 is exact.
    fn add(self, rhs: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<u32> for SeqNumber {
    fn add_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, rhs: usize) {
        self.0 = self.0.wrapping_add(rhs as u32);
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs))
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = i32;
    /// Signed distance `self - rhs`.
    fn sub(self, rhs: SeqNumber) -> i32 {
        self.distance(rhs)
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Serial-number order (RFC 1982 style). Not a total order over all of u32, but a
/// consistent one for any set of numbers spanning less than 2^31.
impl Ord for SeqNumber {
    fn cmp(&self, other: &SeqNumber) -> Ordering {
        self.distance(*other).cmp(&0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_wraps_around() {
        let a = SeqNumber(u32::MAX - 1);
        let b = a + 4u32;
        assert_eq!(b.0, 2);
        assert!(b > a);
        assert_eq!(b - a, 4);
        assert!(b.in_window(a, 5));
        assert!(!b.in_window(a, 4));
    }

    proptest! {
        // Oracle: sequence arithmetic against i64 arithmetic on unwrapped numbers.
        #[test]
        fn seq_order_matches_i64(base in any::<u32>(), x in -(1i64 << 30)..(1i64 << 30), y in -(1i64 << 30)..(1i64 << 30)) {
            let a = SeqNumber((i64::from(base) + x).rem_euclid(1 << 32) as u32);
            let b = SeqNumber((i64::from(base) + y).rem_euclid(1 << 32) as u32);
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
            prop_assert_eq!(i64::from(a - b), x - y);
        }

        #[test]
        fn seq_in_window_matches_i64(base in any::<u32>(), off in -(1i64 << 30)..(1i64 << 30), len in 0u32..(1 << 30)) {
            let start = SeqNumber(base);
            let s = SeqNumber((i64::from(base) + off).rem_euclid(1 << 32) as u32);
            prop_assert_eq!(s.in_window(start, len), off >= 0 && off < i64::from(len));
        }
    }
}
