//! Out-of-order reassembly bookkeeping: which byte ranges past the receive point have
//! arrived.
//!
//! The bytes themselves live in the receive [`RingBuffer`](super::RingBuffer) (placed
//! with `write_unallocated`); the `Assembler` only remembers where they are. It holds at
//! most `N` disjoint ranges inline (no allocation), so a peer cannot make a connection
//! grow without bound by sending scattered segments: a segment that would create an
//! `N+1`th range is rejected with [`TooManyHoles`] and changes nothing.
//!
//! Offsets are relative to the receive point (RCV.NXT): offset 0 is the next byte the
//! application is waiting for.

use core::fmt;

/// Adding a range would need more than `N` disjoint ranges; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyHoles;

impl fmt::Display for TooManyHoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many holes in the out-of-order data")
    }
}

impl std::error::Error for TooManyHoles {}

/// A half-open byte range `[start, end)` relative to the receive point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Range {
    start: u32,
    end: u32,
}

/// Marks "no range was updated most recently".
const NONE: u8 = u8::MAX;

/// Up to `N` disjoint, non-adjacent, sorted byte ranges received past the receive point.
#[derive(Debug, Clone)]
pub struct Assembler<const N: usize = 8> {
    ranges: [Range; N],
    count: u8,
    /// Index in `ranges` of the range most recently created or extended (RFC 2018 4).
    recent: u8,
}

impl<const N: usize> Default for Assembler<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Assembler<N> {
    /// An empty assembler. `N` must be below 255.
    pub const fn new() -> Self {
        assert!(N < NONE as usize, "Assembler holds fewer than 255 ranges");
        Assembler {
            ranges: [Range { start: 0, end: 0 }; N],
            count: 0,
            recent: NONE,
        }
    }

    /// No out-of-order data is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of disjoint ranges held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Forgets all ranges.
    pub fn clear(&mut self) {
        self.count = 0;
        self.recent = NONE;
    }

    fn live(&self) -> &[Range] {
        &self.ranges[..self.count as usize]
    }

    /// Records that bytes `[offset, offset + len)` have arrived, merging with overlapping
    /// or adjacent ranges. A zero-length add changes nothing. Fails, changing nothing, if
    /// the result would need more than `N` ranges.
    pub fn add(&mut self, offset: u32, len: u32) -> Result<(), TooManyHoles> {
        if len == 0 {
            return Ok(());
        }
        let start = offset;
        let end = offset.saturating_add(len);
        let live = self.live();
        // First range that ends at or after `start` (touching counts: adjacency merges).
        let first = live.partition_point(|r| r.end < start);
        // One past the last range that starts at or before `end`.
        let last = live.partition_point(|r| r.start <= end);
        let count = self.count as usize;
        if first == last {
            // No range touches: insert a new one at `first`.
            if count == N {
                return Err(TooManyHoles);
            }
            self.ranges.copy_within(first..count, first + 1);
            self.ranges[first] = Range { start, end };
            self.count += 1;
        } else {
            // Ranges first..last touch the new bytes: merge them into `first`.
            let merged = Range {
                start: start.min(self.ranges[first].start),
                end: end.max(self.ranges[last - 1].end),
            };
            self.ranges[first] = merged;
            self.ranges.copy_within(last..count, first + 1);
            self.count -= (last - first - 1) as u8;
        }
        self.recent = first as u8;
        Ok(())
    }

    /// If a range starts at offset 0, removes it, moves the receive point past it
    /// (shifting the remaining ranges down) and returns its length; otherwise returns 0.
    /// The returned bytes are now contiguous with the data already delivered.
    pub fn remove_front(&mut self) -> usize {
        match self.live().first() {
            Some(r) if r.start == 0 => {
                let n = r.end;
                self.drop_first_and_shift(1, n);
                n as usize
            }
            _ => 0,
        }
    }

    /// The receive point moved forward by `n` bytes (in-order data was accepted):
    /// ranges below it are dropped or trimmed and the rest shift down. Never fails.
    /// Follow with [`remove_front`](Self::remove_front) to collect bytes that became
    /// contiguous.
    pub fn advance(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let covered = self.live().partition_point(|r| r.end <= n);
        self.drop_first_and_shift(covered, n);
    }

    /// Removes the first `k` ranges and moves the rest down by `shift` bytes; the caller
    /// guarantees every remaining range ends beyond `shift` (only the first may start
    /// before it, and is trimmed to start at 0).
    fn drop_first_and_shift(&mut self, k: usize, shift: u32) {
        let count = self.count as usize;
        self.ranges.copy_within(k..count, 0);
        self.count -= k as u8;
        self.recent = match self.recent {
            r if r == NONE || (r as usize) < k => NONE,
            r => r - k as u8,
        };
        let count = self.count as usize;
        for r in &mut self.ranges[..count] {
            r.start = r.start.saturating_sub(shift);
            r.end -= shift;
        }
        debug_assert!(self.live().windows(2).all(|w| w[0].end < w[1].start));
    }

    /// The ranges as `(start, end)` offsets (end exclusive), in ascending order.
    pub fn iter_ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.live().iter().map(|r| (r.start, r.end))
    }

    /// The range that was most recently created or extended by [`add`](Self::add), if it
    /// is still held.
    pub fn most_recent(&self) -> Option<(u32, u32)> {
        self.live()
            .get(self.recent as usize)
            .map(|r| (r.start, r.end))
    }

    /// The ranges in SACK order: the most recently updated range first (RFC 2018 4:
    /// "the first SACK block ... MUST specify the contiguous block of data containing the
    /// segment which triggered this ACK"), then the others in ascending order.
    pub fn iter_sack(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let recent = self.recent as usize;
        self.most_recent().into_iter().chain(
            self.live()
                .iter()
                .enumerate()
                .filter(move |(i, _)| *i != recent)
                .map(|(_, r)| (r.start, r.end)),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ranges<const N: usize>(a: &Assembler<N>) -> Vec<(u32, u32)> {
        a.iter_ranges().collect()
    }

    #[test]
    fn assembler_default_size_is_68_bytes() {
        assert_eq!(core::mem::size_of::<Assembler>(), 68);
    }

    #[test]
    fn assembler_overlapping_adds_merge() {
        let mut a = Assembler::<8>::new();
        a.add(10, 5).unwrap();
        a.add(20, 5).unwrap();
        a.add(15, 5).unwrap();
        assert_eq!(ranges(&a), [(10, 25)]);
        a.add(5, 30).unwrap();
        assert_eq!(ranges(&a), [(5, 35)]);
    }

    #[test]
    fn assembler_full_add_rejected_unchanged() {
        let mut a = Assembler::<2>::new();
        a.add(10, 1).unwrap();
        a.add(20, 1).unwrap();
        assert_eq!(a.add(30, 1), Err(TooManyHoles));
        assert_eq!(a.add(0, 1), Err(TooManyHoles));
        assert_eq!(ranges(&a), [(10, 11), (20, 21)]);
        assert_eq!(a.most_recent(), Some((20, 21)));
        // Filling a hole reduces the count and is accepted.
        a.add(11, 9).unwrap();
        assert_eq!(ranges(&a), [(10, 21)]);
    }

    #[test]
    fn assembler_front_range_remove_front_shifts() {
        let mut a = Assembler::<8>::new();
        a.add(4, 4).unwrap();
        a.add(12, 2).unwrap();
        assert_eq!(a.remove_front(), 0);
        a.add(0, 4).unwrap();
        assert_eq!(a.remove_front(), 8);
        assert_eq!(ranges(&a), [(4, 6)]);
    }

    #[test]
    fn assembler_advance_trims_and_shifts() {
        let mut a = Assembler::<8>::new();
        a.add(4, 4).unwrap();
        a.add(12, 4).unwrap();
        a.advance(6);
        assert_eq!(ranges(&a), [(0, 2), (6, 10)]);
        assert_eq!(a.remove_front(), 2);
        assert_eq!(ranges(&a), [(4, 8)]);
        a.advance(100);
        assert!(a.is_empty());
    }

    #[test]
    fn assembler_sack_order_most_recent_first() {
        let mut a = Assembler::<8>::new();
        a.add(10, 2).unwrap();
        a.add(30, 2).unwrap();
        a.add(20, 2).unwrap();
        assert_eq!(
            a.iter_sack().collect::<Vec<_>>(),
            [(20, 22), (10, 12), (30, 32)]
        );
        a.add(12, 2).unwrap();
        assert_eq!(
            a.iter_sack().collect::<Vec<_>>(),
            [(10, 14), (20, 22), (30, 32)]
        );
        a.advance(16);
        assert_eq!(a.most_recent(), None);
        assert_eq!(a.iter_sack().collect::<Vec<_>>(), [(4, 6), (14, 16)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, u32),
        RemoveFront,
        Advance(u32),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..64, 0u32..12).prop_map(|(o, l)| Op::Add(o, l)),
            2 => Just(Op::RemoveFront),
            1 => (0u32..16).prop_map(Op::Advance),
            1 => Just(Op::Clear),
        ]
    }

    fn runs(set: &BTreeSet<u32>) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for &b in set {
            match out.last_mut() {
                Some(r) if r.1 == b => r.1 = b + 1,
                _ => out.push((b, b + 1)),
            }
        }
        out
    }

    fn shift(set: &BTreeSet<u32>, n: u32) -> BTreeSet<u32> {
        set.iter().filter(|&&b| b >= n).map(|&b| b - n).collect()
    }

    proptest! {
        // Oracle: the assembler against a BTreeSet of received byte offsets.
        #[test]
        fn assembler_ops_match_byte_set_model(ops in proptest::collection::vec(op(), 0..80)) {
            const N: usize = 4;
            let mut a = Assembler::<N>::new();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Add(o, l) => {
                        let mut next = model.clone();
                        next.extend(o..o + l);
                        let fits = runs(&next).len() <= N;
                        let res = a.add(o, l);
                        prop_assert_eq!(res.is_ok(), fits);
                        if fits {
                            model = next;
                            if l > 0 {
                                let (s, e) = a.most_recent().unwrap();
                                prop_assert!(s <= o && o + l <= e);
                                prop_assert_eq!(a.iter_sack().next(), Some((s, e)));
                            }
                        }
                    }
                    Op::RemoveFront => {
                        let n = runs(&model).first().filter(|r| r.0 == 0).map_or(0, |r| r.1);
                        prop_assert_eq!(a.remove_front(), n as usize);
                        model = shift(&model, n);
                    }
                    Op::Advance(n) => {
                        a.advance(n);
                        model = shift(&model, n);
                    }
                    Op::Clear => {
                        a.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(ranges(&a), runs(&model));
                prop_assert_eq!(a.is_empty(), model.is_empty());
                let mut sack: Vec<_> = a.iter_sack().collect();
                sack.sort_unstable();
                prop_assert_eq!(sack, runs(&model));
            }
        }
    }
}
