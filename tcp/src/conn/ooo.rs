//! Out-of-order segment store: a short, sorted list of disjoint byte runs above
//! RCV.NXT. Overlaps and duplicates are merged on insert; the number of runs (holes)
//! is bounded so a peer cannot make us keep an unbounded index.

use crate::seq::SeqNumber;

/// Largest number of disjoint runs kept.
pub const MAX_RUNS: usize = 8;

/// Disjoint, sorted runs of received bytes beyond RCV.NXT.
#[derive(Debug, Default)]
pub struct Ooo {
    runs: Vec<(SeqNumber, Vec<u8>)>,
    /// Start of the run that most recently received data (RFC 2018 4: first block).
    last: Option<SeqNumber>,
}

impl Ooo {
    /// No data stored.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes stored.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.runs.iter().map(|(_, d)| d.len()).sum()
    }

    /// Drops everything (and frees the memory).
    pub fn clear(&mut self) {
        self.runs = Vec::new();
        self.last = None;
    }

    /// Stores `data` at `seq`; merges with touching or overlapping runs. Returns false
    /// (storing nothing) when it would need more than [`MAX_RUNS`] runs.
    pub fn insert(&mut self, seq: SeqNumber, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        let end = seq + data.len();
        // Runs that overlap or touch [seq, end).
        let first = self.runs.iter().position(|(s, d)| *s + d.len() >= seq);
        let Some(first) = first else {
            if self.runs.len() >= MAX_RUNS {
                return false;
            }
            self.runs.push((seq, data.to_vec()));
            self.last = Some(seq);
            return true;
        };
        let mut last = first;
        while last < self.runs.len() && self.runs[last].0 <= end {
            last += 1;
        }
        if first == last {
            // Disjoint: insert before `first`.
            if self.runs.len() >= MAX_RUNS {
                return false;
            }
            self.runs.insert(first, (seq, data.to_vec()));
            self.last = Some(seq);
            return true;
        }
        let start = seq.min(self.runs[first].0);
        let tail = &self.runs[last - 1];
        let new_end = end.max(tail.0 + tail.1.len());
        let total = usize::try_from(new_end - start).unwrap_or(0);
        let mut merged = vec![0u8; total];
        for (s, d) in &self.runs[first..last] {
            let off = usize::try_from(*s - start).unwrap_or(0);
            merged[off..off + d.len()].copy_from_slice(d);
        }
        let off = usize::try_from(seq - start).unwrap_or(0);
        merged[off..off + data.len()].copy_from_slice(data);
        self.runs.drain(first..last);
        self.runs.insert(first, (start, merged));
        self.last = Some(start);
        true
    }

    /// Removes and returns the bytes that now continue `rcv_nxt`, if any; data wholly
    /// below `rcv_nxt` is discarded.
    pub fn pop_contiguous(&mut self, rcv_nxt: SeqNumber) -> Option<Vec<u8>> {
        while let Some((s, d)) = self.runs.first() {
            let end = *s + d.len();
            if *s > rcv_nxt {
                return None;
            }
            let (s, mut d) = self.runs.remove(0);
            if end <= rcv_nxt {
                continue;
            }
            let skip = usize::try_from(rcv_nxt - s).unwrap_or(0);
            d.drain(..skip);
            if self.last == Some(s) {
                self.last = None;
            }
            return Some(d);
        }
        None
    }

    /// The runs as SACK blocks `[left, right)`, the most recently changed first
    /// (RFC 2018 4), at most `max`.
    pub fn sack_blocks(&self, max: usize) -> impl Iterator<Item = (SeqNumber, SeqNumber)> + '_ {
        let recent = self
            .last
            .and_then(|l| self.runs.iter().find(|(s, _)| *s == l))
            .map(|(s, d)| (*s, *s + d.len()));
        let rest = self
            .runs
            .iter()
            .rev()
            .map(|(s, d)| (*s, *s + d.len()))
            .filter(move |b| Some(*b) != recent);
        recent.into_iter().chain(rest).take(max)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ooo_overlapping_inserts_merge() {
        let mut o = Ooo::default();
        assert!(o.insert(SeqNumber(10), b"cde"));
        assert!(o.insert(SeqNumber(20), b"xy"));
        assert!(o.insert(SeqNumber(12), b"efghijklmnopq"));
        assert_eq!(o.runs.len(), 1);
        assert_eq!(o.pop_contiguous(SeqNumber(9)), None);
        assert_eq!(
            o.pop_contiguous(SeqNumber(11)).unwrap(),
            b"defghijklmnopq".to_vec()
        );
        assert!(o.is_empty());
    }

    #[test]
    fn ooo_too_many_runs_refused() {
        let mut o = Ooo::default();
        for i in 0..MAX_RUNS as u32 {
            assert!(o.insert(SeqNumber(100 + i * 10), b"a"));
        }
        assert!(!o.insert(SeqNumber(1000), b"a"));
        assert!(o.insert(SeqNumber(101), b"b"));
    }

    proptest! {
        // Oracle: a byte map of what was inserted.
        #[test]
        fn ooo_matches_byte_model(ops in proptest::collection::vec((0u32..200, 1usize..40), 1..30)) {
            let mut o = Ooo::default();
            let base = SeqNumber(u32::MAX - 50);
            let mut model = vec![None; 300];
            let stream: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
            for (off, len) in ops {
                let off = off as usize;
                let len = len.min(300 - off);
                if o.insert(base + off, &stream[off..off + len]) {
                    for m in &mut model[off..off + len] { *m = Some(()); }
                }
            }
            let first_gap = model.iter().position(|m| m.is_none()).unwrap_or(300);
            let mut got = Vec::new();
            if first_gap == 0 {
                if let Some(d) = o.pop_contiguous(base) { got = d; }
                let n = model.iter().position(|m| m.is_none()).unwrap_or(300);
                prop_assert_eq!(&got[..], &stream[..n]);
            }
            let stored: usize = model.iter().filter(|m| m.is_some()).count();
            prop_assert_eq!(o.bytes() + got.len(), stored);
        }
    }
}
