//! The sender's SACK scoreboard (RFC 6675 section 4): every range of the send sequence
//! space above SND.UNA that the peer reported received (RFC 2018), and the RFC 6675
//! routines computed from it: `IsLost()`, `SetPipe()` and `NextSeg()` rules 1 and 3.
//!
//! RFC 6675 section 3: "The scoreboard ... stores SACK information ... a data sender
//! MUST maintain ... a data structure to store incoming selective acknowledgment
//! information on a per connection basis." Ranges are kept sorted, disjoint and
//! non-adjacent (touching or overlapping blocks merge), so a hole is exactly the gap
//! between two neighbours, and "discontiguous SACKed sequences" in `IsLost()` is a count
//! of ranges.
//!
//! Memory: the ranges live in a `Vec` that is only allocated when the first SACK block
//! arrives and is freed when the scoreboard empties (everything cumulatively ACKed, an
//! RTO, the connection closing), so an idle connection pays only the empty `Vec` header.
//! The number of ranges is bounded by the caller's limit ([`Scoreboard::range_limit`]:
//! what the outstanding window holds at one SMSS per range, never more than
//! [`MAX_RANGES`]): a block that would open a range beyond it is ignored and reported
//! (a peer cannot make the scoreboard grow without bound with tiny SACK blocks).
//! Ignoring a block only makes the sender more conservative: bytes it does not know to
//! be SACKed count in `pipe` and may be retransmitted, never the reverse.
//!
//! Cost per ACK: inserting one block is two binary searches plus, when it opens or
//! closes a range, one `memmove` of the ranges above it; the common case (extending the
//! highest range) moves nothing. `SetPipe()` and `NextSeg()` walk the ranges once
//! (O(ranges)), and only during recovery; outside recovery the sender needs only the
//! cached count of SACKed bytes.

use crate::seq::SeqNumber;
use crate::wire::tcp::SackBlock;

/// RFC 6675 section 2 DupThresh: "The number of duplicate acknowledgments required to
/// trigger a fast retransmission ... the current value of DupThresh is 3" (RFC 5681).
pub(crate) const DUP_THRESH: u32 = 3;

/// Hard cap on the ranges one connection's scoreboard holds (8 bytes each: at most
/// 4 KiB). Alternate segments lost from a full default 256 KiB send buffer at the smallest
/// IPv4 MSS (536) make ~245 ranges, well below it.
pub const MAX_RANGES: usize = 512;

/// What became of one SACK block offered to [`Scoreboard::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// It opened a new range.
    Added,
    /// It overlapped or touched existing ranges and was merged with them.
    Merged,
    /// It would have opened a range beyond the limit: ignored, nothing changed.
    Full,
}

/// An un-SACKed range `[start, end)` of the send sequence space between SND.UNA and
/// SND.MAX (a "hole" in the scoreboard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hole {
    /// First un-SACKed sequence number.
    pub start: SeqNumber,
    /// One past the last.
    pub end: SeqNumber,
    /// RFC 6675 `IsLost()` holds for every octet of it (the SACKed ranges above an octet
    /// are the same for the whole hole).
    pub lost: bool,
    /// Above the highest SACKed octet: never "lost", and outside `NextSeg()` rules 1
    /// and 3 (RFC 6675 4 (1.b): "S2 < the highest octet covered by any received SACK").
    pub tail: bool,
}

/// The SACKed ranges above SND.UNA: sorted, disjoint, non-adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scoreboard {
    ranges: Vec<SackBlock>,
    /// Sum of the ranges' lengths (kept so that `FlightSize - SACKed` costs nothing).
    bytes: u32,
}

impl Scoreboard {
    /// An empty scoreboard (no allocation).
    pub const fn new() -> Scoreboard {
        Scoreboard {
            ranges: Vec::new(),
            bytes: 0,
        }
    }

    /// No SACK information held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint SACKed ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes of heap the scoreboard holds (0 when empty).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * core::mem::size_of::<SackBlock>()
    }

    /// The ranges, lowest first.
    #[cfg(test)]
    pub fn ranges(&self) -> &[SackBlock] {
        &self.ranges
    }

    /// Total SACKed bytes.
    #[inline]
    pub fn sacked_bytes(&self) -> u32 {
        self.bytes
    }

    /// The most ranges worth keeping for the outstanding data `[una, max)`: one per SMSS
    /// of it (plus one, for a partial segment), capped by [`MAX_RANGES`].
    pub fn range_limit(una: SeqNumber, max: SeqNumber, mss: u16) -> usize {
        let out = max.distance(una).max(0) as usize;
        (out / usize::from(mss.max(1)) + 1).min(MAX_RANGES)
    }

    /// RFC 6675 4 `Update()`: records that `[b.left, b.right)` was SACKed, merging it
    /// with the ranges it overlaps or touches. A block that would open a range when
    /// `limit` ranges are already held is ignored ([`Inserted::Full`]). The caller
    /// checks that the block is non-empty and inside `[SND.UNA, SND.MAX]`.
    pub fn insert(&mut self, b: SackBlock, limit: usize) -> Inserted {
        if b.left >= b.right {
            return Inserted::Merged;
        }
        // First range that ends at or after `b.left` (touching counts: adjacency merges),
        // and one past the last range that starts at or before `b.right`.
        let first = self.ranges.partition_point(|r| r.right < b.left);
        let last = self.ranges.partition_point(|r| r.left <= b.right);
        if first == last {
            if self.ranges.len() >= limit {
                return Inserted::Full;
            }
            self.ranges.insert(first, b);
            self.bytes = self.bytes.saturating_add(len(&b));
            return Inserted::Added;
        }
        let merged = SackBlock {
            left: b.left.min(self.ranges[first].left),
            right: b.right.max(self.ranges[last - 1].right),
        };
        let removed: u32 = self.ranges[first..last].iter().map(len).sum();
        self.bytes = self
            .bytes
            .saturating_sub(removed)
            .saturating_add(len(&merged));
        self.ranges[first] = merged;
        if last > first + 1 {
            self.ranges.drain(first + 1..last);
        }
        Inserted::Merged
    }

    /// Forgets everything below `una` (cumulatively acknowledged); frees the
    /// allocation once nothing is left, and gives back most of it when it is mostly
    /// unused.
    #[inline]
    pub fn trim(&mut self, una: SeqNumber) {
        if !self.ranges.is_empty() {
            self.trim_held(una);
        }
    }

    /// [`Scoreboard::trim`] with ranges held (kept out of line: the no-SACK fast path
    /// pays only the emptiness test).
    #[inline(never)]
    fn trim_held(&mut self, una: SeqNumber) {
        let gone = self.ranges.partition_point(|r| r.right <= una);
        if gone > 0 {
            let removed: u32 = self.ranges[..gone].iter().map(len).sum();
            self.bytes = self.bytes.saturating_sub(removed);
            self.ranges.drain(..gone);
        }
        if let Some(r) = self.ranges.first_mut() {
            if r.left < una {
                self.bytes = self.bytes.saturating_sub(una.distance(r.left) as u32);
                r.left = una;
            }
        }
        if self.ranges.is_empty() {
            self.clear();
        } else if self.ranges.capacity() > 16 && self.ranges.len() * 4 < self.ranges.capacity() {
            self.ranges.shrink_to(self.ranges.len() * 2);
        }
    }

    /// Forgets all ranges and frees the allocation (RFC 2018 8 after an RTO; closing).
    pub fn clear(&mut self) {
        self.ranges = Vec::new();
        self.bytes = 0;
    }

    /// The octet `seq` has been SACKed.
    #[cfg(test)]
    pub fn is_sacked(&self, seq: SeqNumber) -> bool {
        let i = self.ranges.partition_point(|r| r.right <= seq);
        self.ranges.get(i).is_some_and(|r| r.left <= seq)
    }

    /// If `seq` has been SACKed, one past the end of its range; otherwise `seq`.
    pub fn skip_sacked(&self, seq: SeqNumber) -> SeqNumber {
        let i = self.ranges.partition_point(|r| r.right <= seq);
        match self.ranges.get(i) {
            Some(r) if r.left <= seq => r.right,
            _ => seq,
        }
    }

    /// SACKed bytes below `seq`.
    pub fn sacked_below(&self, seq: SeqNumber) -> u32 {
        self.ranges
            .iter()
            .take_while(|r| r.left < seq)
            .map(|r| r.right.min(seq).distance(r.left).max(0) as u32)
            .sum()
    }

    /// The lowest SACKed octet above `seq`, if any.
    pub fn next_sacked(&self, seq: SeqNumber) -> Option<SeqNumber> {
        let i = self.ranges.partition_point(|r| r.left <= seq);
        self.ranges.get(i).map(|r| r.left)
    }

    /// RFC 6675 4 `IsLost(SeqNum)`: "This routine returns whether the given sequence
    /// number is considered to be lost. The routine returns true when either DupThresh
    /// discontiguous SACKed sequences have arrived above 'SeqNum' or more than
    /// (DupThresh - 1) * SMSS bytes with sequence numbers greater than 'SeqNum' have
    /// been SACKed. Otherwise, the routine returns false."
    pub fn is_lost(&self, seq: SeqNumber, smss: u16) -> bool {
        // Ranges lying wholly above `seq`, then the SACKed bytes above it.
        let i = self.ranges.partition_point(|r| r.left <= seq);
        let count = self.ranges.len() - i;
        if count as u32 >= DUP_THRESH {
            return true;
        }
        let mut above: u32 = self.ranges[i..].iter().map(len).sum();
        if i > 0 {
            // A range holding `seq` contributes its part above it.
            let r = self.ranges[i - 1];
            if r.right > seq + 1u32 {
                above += r.right.distance(seq + 1u32) as u32;
            }
        }
        above > (DUP_THRESH - 1) * u32::from(smss)
    }

    /// The holes between `una` (SND.UNA) and `max` (SND.MAX), lowest first; the last
    /// one may be the tail above the highest SACKed octet.
    pub fn holes(&self, una: SeqNumber, max: SeqNumber, smss: u16) -> Holes<'_> {
        Holes {
            ranges: &self.ranges,
            i: 0,
            start: una,
            max,
            above: self.bytes,
            lost_bytes: (DUP_THRESH - 1) * u32::from(smss),
        }
    }

    /// RFC 6675 4 `SetPipe()`: "the sender MUST ... for each octet in the sequence space
    /// between HighACK and HighData that has not been SACKed: (a) If IsLost (S1)
    /// returns false: Pipe is incremented by 1 octet. (b) If S1 <= HighRxt: Pipe is
    /// incremented by 1 octet." `high_rxt` is one past the highest octet retransmitted
    /// in this recovery (`None` outside recovery: nothing counts as retransmitted).
    pub fn pipe(
        &self,
        una: SeqNumber,
        max: SeqNumber,
        smss: u16,
        high_rxt: Option<SeqNumber>,
    ) -> u32 {
        let mut pipe = 0u32;
        for h in self.holes(una, max, smss) {
            if !h.lost {
                pipe = pipe.saturating_add(h.end.distance(h.start) as u32);
            }
            if let Some(rxt) = high_rxt.filter(|&r| r > h.start) {
                pipe = pipe.saturating_add(rxt.min(h.end).distance(h.start) as u32);
            }
        }
        pipe
    }

    /// RFC 6675 4 `NextSeg()` rules 1 and 3: the range starting at the smallest
    /// un-SACKed octet S2 that is (1.a) above HighRxt (`from`: the larger of SND.UNA and
    /// one past the highest octet retransmitted), (1.b) below the highest SACKed octet
    /// and, when `lost_only` (rule 1), (1.c) `IsLost(S2)`. Rule 3 drops (1.c). Returns
    /// `[S2, end of its hole)`; the caller sends at most one SMSS of it.
    pub fn next_seg(
        &self,
        una: SeqNumber,
        from: SeqNumber,
        smss: u16,
        lost_only: bool,
    ) -> Option<(SeqNumber, SeqNumber)> {
        // (The tail hole's end is SND.MAX; it is excluded, so `una` stands in for it.)
        self.holes(una, una, smss)
            .find(|h| !h.tail && h.end > from && (h.lost || !lost_only))
            .map(|h| (h.start.max(from), h.end))
    }
}

fn len(b: &SackBlock) -> u32 {
    b.right.distance(b.left).max(0) as u32
}

/// Iterator over the holes of a [`Scoreboard`] (see [`Scoreboard::holes`]).
#[derive(Debug, Clone)]
pub(crate) struct Holes<'a> {
    ranges: &'a [SackBlock],
    /// Index of the range that ends the next hole (`ranges.len()`: the tail).
    i: usize,
    start: SeqNumber,
    max: SeqNumber,
    /// SACKed bytes at or above `ranges[i]`.
    above: u32,
    lost_bytes: u32,
}

impl Iterator for Holes<'_> {
    type Item = Hole;

    fn next(&mut self) -> Option<Hole> {
        while self.i <= self.ranges.len() {
            let i = self.i;
            let next = self.ranges.get(i);
            let start = self.start;
            let end = next.map_or(self.max, |b| b.left);
            // IsLost() for every octet of the hole: the ranges above it are ranges[i..].
            let lost = (self.ranges.len() - i) as u32 >= DUP_THRESH || self.above > self.lost_bytes;
            self.i += 1;
            if let Some(b) = next {
                self.start = start.max(b.right);
                self.above = self.above.saturating_sub(len(b));
            }
            if end > start {
                return Some(Hole {
                    start,
                    end,
                    lost,
                    tail: next.is_none(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    const UNA: u32 = 0xffff_f000; // the window wraps around 2^32
    const WND: u32 = 2_000;
    const SMSS: u16 = 50;

    fn s(off: u32) -> SeqNumber {
        SeqNumber(UNA.wrapping_add(off))
    }

    fn blk(l: u32, r: u32) -> SackBlock {
        SackBlock {
            left: s(l),
            right: s(r),
        }
    }

    /// The reference: one bit per octet of the window, set when SACKed.
    struct Model {
        una: u32,
        sacked: Vec<bool>,
    }

    impl Model {
        fn new() -> Model {
            Model {
                una: 0,
                sacked: vec![false; WND as usize],
            }
        }
        fn sack(&mut self, l: u32, r: u32) {
            for o in l..r {
                self.sacked[o as usize] = true;
            }
        }
        fn ack(&mut self, una: u32) {
            for o in self.una..una {
                self.sacked[o as usize] = false;
            }
            self.una = self.una.max(una);
        }
        fn ranges(&self) -> Vec<(u32, u32)> {
            let mut out = Vec::new();
            let mut o = self.una;
            while o < WND {
                if self.sacked[o as usize] {
                    let l = o;
                    while o < WND && self.sacked[o as usize] {
                        o += 1;
                    }
                    out.push((l, o));
                } else {
                    o += 1;
                }
            }
            out
        }
        /// IsLost() octet by octet, straight from the RFC's words.
        fn is_lost(&self, seq: u32) -> bool {
            let above = self.ranges().iter().filter(|r| r.0 > seq).count() as u32;
            let bytes = ((seq + 1)..WND)
                .filter(|&o| self.sacked[o as usize])
                .count() as u32;
            above >= DUP_THRESH || bytes > (DUP_THRESH - 1) * u32::from(SMSS)
        }
        fn high_sacked(&self) -> Option<u32> {
            self.ranges().last().map(|r| r.1)
        }
        /// SetPipe() octet by octet over [una, max).
        fn pipe(&self, max: u32, high_rxt: Option<u32>) -> u32 {
            let mut pipe = 0;
            for o in self.una..max {
                if self.sacked[o as usize] {
                    continue;
                }
                if !self.is_lost(o) {
                    pipe += 1;
                }
                if high_rxt.is_some_and(|h| o < h) {
                    pipe += 1;
                }
            }
            pipe
        }
        /// NextSeg() rules 1 / 3, octet by octet: the smallest un-SACKed octet at or
        /// above `from`, below the highest SACKed octet, lost if `lost_only`.
        fn next_seg(&self, from: u32, lost_only: bool) -> Option<u32> {
            let high = self.high_sacked()?;
            (from.max(self.una)..high)
                .find(|&o| !self.sacked[o as usize] && (!lost_only || self.is_lost(o)))
        }
    }

    fn check_invariants(sb: &Scoreboard, una: u32) {
        let r = sb.ranges();
        for w in r.windows(2) {
            assert!(
                w[0].right < w[1].left,
                "sorted, disjoint, non-adjacent: {r:?}"
            );
        }
        for b in r {
            assert!(
                b.left < b.right && b.left >= s(una),
                "{b:?} below una {una}"
            );
        }
        let bytes: u32 = r.iter().map(len).sum();
        assert_eq!(sb.sacked_bytes(), bytes);
        if r.is_empty() {
            assert_eq!(sb.heap_bytes(), 0, "an empty scoreboard holds no memory");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sack(u32, u32),
        Ack(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..WND, 1..120u32).prop_map(|(l, n)| Op::Sack(l, (l + n).min(WND))),
            1 => (0..WND).prop_map(Op::Ack),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random SACK blocks and cumulative ACKs: the scoreboard holds exactly the
        /// model's SACKed octets, and IsLost(), SetPipe() and NextSeg() agree with the
        /// RFC's octet-by-octet definitions.
        #[test]
        fn scoreboard_matches_octet_model(
            ops in proptest::collection::vec(op(), 1..80),
            high_rxt in proptest::option::of(0..WND),
        ) {
            let mut sb = Scoreboard::new();
            let mut m = Model::new();
            for o in ops {
                match o {
                    Op::Sack(l, r) => {
                        let l = l.max(m.una);
                        if l < r {
                            let got = sb.insert(blk(l, r), MAX_RANGES);
                            prop_assert_ne!(got, Inserted::Full);
                            m.sack(l, r);
                        }
                    }
                    Op::Ack(a) => {
                        let a = a.max(m.una);
                        sb.trim(s(a));
                        m.ack(a);
                    }
                }
                check_invariants(&sb, m.una);
                let want: Vec<_> = m.ranges().iter().map(|&(l, r)| blk(l, r)).collect();
                prop_assert_eq!(sb.ranges(), &want[..]);
            }
            for o in (m.una..WND).step_by(7) {
                prop_assert_eq!(sb.is_sacked(s(o)), m.sacked[o as usize]);
                if !m.sacked[o as usize] {
                    prop_assert_eq!(sb.is_lost(s(o), SMSS), m.is_lost(o), "IsLost({})", o);
                }
            }
            for h in sb.holes(s(m.una), s(WND), SMSS) {
                let (a, b) = (h.start.distance(s(0)) as u32, h.end.distance(s(0)) as u32);
                for o in a..b {
                    prop_assert!(!m.sacked[o as usize]);
                    prop_assert_eq!(h.lost, m.is_lost(o));
                    prop_assert_eq!(h.tail, m.high_sacked().is_none_or(|hs| o >= hs));
                }
            }
            for o in (m.una..WND).step_by(5) {
                let below = (m.una..o).filter(|&p| m.sacked[p as usize]).count() as u32;
                prop_assert_eq!(sb.sacked_below(s(o)), below, "sacked_below({})", o);
                let skip = sb.skip_sacked(s(o)).distance(s(0)) as u32;
                let want = (o..WND).find(|&p| !m.sacked[p as usize]).unwrap_or(WND);
                prop_assert_eq!(skip, want, "skip_sacked({})", o);
                let next = sb.next_sacked(s(o)).map(|n| n.distance(s(0)) as u32);
                let want = ((o + 1)..WND).find(|&p| m.sacked[p as usize] && !m.sacked[p as usize - 1]);
                prop_assert_eq!(next, want, "next_sacked({})", o);
            }
            let rxt = high_rxt.map(|h| h.max(m.una));
            prop_assert_eq!(
                sb.pipe(s(m.una), s(WND), SMSS, rxt.map(s)),
                m.pipe(WND, rxt)
            );
            let from = rxt.unwrap_or(m.una);
            for lost_only in [true, false] {
                let got = sb.next_seg(s(m.una), s(from), SMSS, lost_only);
                let want = m.next_seg(from, lost_only);
                prop_assert_eq!(got.map(|g| g.0), want.map(s), "rule {}", if lost_only { 1 } else { 3 });
                if let Some((a, b)) = got {
                    // The returned range is all un-SACKed and ends at SACKed data.
                    let (a, b) = (a.distance(s(0)) as u32, b.distance(s(0)) as u32);
                    prop_assert!((a..b).all(|o| !m.sacked[o as usize]));
                    prop_assert!(m.sacked[b as usize]);
                }
            }
        }

        /// A limit is never exceeded; what is held is a subset of what was SACKed; a
        /// block is refused (reported, nothing changed) only when the limit is reached.
        #[test]
        fn scoreboard_limit_bounds_ranges(
            blocks in proptest::collection::vec((0..WND, 1..20u32), 1..200),
            limit in 1usize..12,
        ) {
            let mut sb = Scoreboard::new();
            let mut m = Model::new();
            for (l, n) in blocks {
                let r = (l + n).min(WND);
                let before = sb.clone();
                match sb.insert(blk(l, r), limit) {
                    Inserted::Full => {
                        // Refused only when full, and then nothing changed.
                        prop_assert_eq!(sb.len(), limit);
                        prop_assert_eq!(&sb, &before);
                    }
                    _ => m.sack(l, r),
                }
                prop_assert!(sb.len() <= limit);
                check_invariants(&sb, 0);
            }
            for b in sb.ranges() {
                let (l, r) = (b.left.distance(s(0)) as u32, b.right.distance(s(0)) as u32);
                prop_assert!((l..r).all(|o| m.sacked[o as usize]));
            }
        }
    }

    #[test]
    fn scoreboard_merges_touching_and_overlapping_blocks() {
        let mut sb = Scoreboard::new();
        assert_eq!(sb.insert(blk(10, 20), 8), Inserted::Added);
        assert_eq!(sb.insert(blk(30, 40), 8), Inserted::Added);
        assert_eq!(sb.insert(blk(20, 25), 8), Inserted::Merged);
        assert_eq!(sb.ranges(), &[blk(10, 25), blk(30, 40)]);
        assert_eq!(sb.insert(blk(5, 35), 8), Inserted::Merged);
        assert_eq!(sb.ranges(), &[blk(5, 40)]);
        assert_eq!(sb.sacked_bytes(), 35);
    }

    #[test]
    fn scoreboard_allocates_lazily_and_frees_when_empty() {
        let mut sb = Scoreboard::new();
        assert_eq!(sb.heap_bytes(), 0);
        sb.insert(blk(10, 20), 8);
        sb.insert(blk(30, 40), 8);
        assert!(sb.heap_bytes() > 0);
        sb.trim(s(35));
        assert_eq!(sb.ranges(), &[blk(35, 40)]);
        assert_eq!(sb.sacked_bytes(), 5);
        sb.trim(s(40));
        assert!(sb.is_empty());
        assert_eq!(sb.heap_bytes(), 0, "freed once empty");
    }

    #[test]
    fn scoreboard_shrinks_when_mostly_acknowledged() {
        let mut sb = Scoreboard::new();
        for k in 0..200 {
            sb.insert(blk(k * 3, k * 3 + 1), MAX_RANGES);
        }
        assert_eq!(sb.len(), 200);
        let big = sb.heap_bytes();
        sb.trim(s(590));
        assert!(sb.len() <= 4);
        assert!(sb.heap_bytes() < big / 4, "{} of {big}", sb.heap_bytes());
    }

    #[test]
    fn scoreboard_range_limit_is_one_per_smss_and_capped() {
        assert_eq!(Scoreboard::range_limit(s(0), s(0), 1460), 1);
        assert_eq!(Scoreboard::range_limit(s(0), s(14_600), 1460), 11);
        assert_eq!(
            Scoreboard::range_limit(s(0), s(1 << 30), 536),
            MAX_RANGES,
            "hard cap"
        );
        assert_eq!(
            Scoreboard::range_limit(s(10), s(0), 1460),
            1,
            "una past max"
        );
    }

    #[test]
    fn scoreboard_twenty_holes_all_tracked() {
        // Segments of 50 octets, every odd one SACKed: 20 ranges, 20 holes below them.
        let mut sb = Scoreboard::new();
        let limit = Scoreboard::range_limit(s(0), s(41 * 50), SMSS);
        for k in 0..20 {
            let l = (2 * k + 1) * 50;
            assert_eq!(sb.insert(blk(l, l + 50), limit), Inserted::Added);
        }
        assert_eq!(sb.len(), 20);
        let holes: Vec<_> = sb.holes(s(0), s(41 * 50), SMSS).collect();
        assert_eq!(holes.len(), 21);
        // Every hole with three ranges above is lost; the last two holes below the
        // highest range have only 2 ranges (100 octets) / 1 range above: not lost.
        let lost: Vec<_> = holes.iter().map(|h| h.lost).collect();
        let mut want = vec![true; 18];
        want.extend([false, false, false]);
        assert_eq!(lost, want);
        assert!(holes[20].tail && !holes[19].tail);
        // pipe: the two not-lost holes and the tail, nothing retransmitted yet.
        assert_eq!(sb.pipe(s(0), s(41 * 50), SMSS, Some(s(0))), 3 * 50);
        assert_eq!(
            sb.next_seg(s(0), s(17 * 2 * 50 + 1), SMSS, true),
            Some((s(17 * 2 * 50 + 1), s(17 * 2 * 50 + 50)))
        );
        assert_eq!(sb.next_seg(s(0), s(18 * 2 * 50), SMSS, true), None);
        assert_eq!(
            sb.next_seg(s(0), s(18 * 2 * 50), SMSS, false),
            Some((s(18 * 2 * 50), s(18 * 2 * 50 + 50)))
        );
    }
}
