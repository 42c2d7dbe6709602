//! A connection's send queue: owned bytes in a [`RingBuffer`] plus shared immutable chunks
//! ([`Bytes`]), in sequence order.
//!
//! Most data is owned: the application copies it in ([`SendQueue::enqueue_slice`]) or
//! writes it in place ([`SendQueue::lend`]) into the ring. A fan-out message is encoded
//! once into a [`Bytes`] and queued on many connections with
//! [`SendQueue::enqueue_chunk`], without a copy: the queue keeps a reference, and
//! transmissions and retransmissions read the chunk straight into each TX frame.
//!
//! Layout: while only owned bytes are queued, everything is in the ring and the extent
//! list is empty (and unallocated). Once a chunk is queued, `extents` describes every
//! queued byte in order as `Ring(len)` runs (the next `len` bytes of the ring) and
//! `Shared(chunk, off)` entries (the chunk from `off` on). Acknowledged bytes are dropped
//! from the front ([`SendQueue::dequeue_allocated`]), releasing the chunk references. The
//! extent list is given back together with the ring's memory
//! ([`SendQueue::release_if_empty`], when the queue drained; both are recycled through the
//! per-thread `storage::pool`), so an idle connection costs only this header and steady
//! traffic does not allocate.

use std::collections::VecDeque;

use bytes::Bytes;

use super::RingBuffer;

/// One run of queued bytes (only used while a shared chunk is queued).
#[derive(Debug, Clone)]
enum Extent {
    /// The next `len` bytes of the ring.
    Ring(usize),
    /// `chunk[off..]`.
    Shared(Bytes, usize),
}

impl Extent {
    fn len(&self) -> usize {
        match self {
            Extent::Ring(n) => *n,
            Extent::Shared(b, off) => b.len().saturating_sub(*off),
        }
    }
}

/// Most bytes [`SendQueue::lend`] lends to a caller that asks for at least 1.
pub const LEND_CHUNK: usize = 1024;

thread_local! {
    static EXTENT_LISTS: std::cell::RefCell<Vec<VecDeque<Extent>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The send queue of one connection: see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct SendQueue {
    ring: RingBuffer,
    /// Empty while only ring bytes are queued; else covers every queued byte, in order.
    extents: VecDeque<Extent>,
    /// Bytes queued in shared chunks (not in the ring).
    shared: usize,
    /// Most bytes queued (ring and chunks together).
    capacity: usize,
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        super::pool::give_list(&EXTENT_LISTS, core::mem::take(&mut self.extents));
    }
}

impl SendQueue {
    /// A queue of at most `capacity` bytes, holding no memory yet.
    pub fn new(capacity: usize) -> SendQueue {
        SendQueue {
            ring: RingBuffer::new(capacity),
            extents: VecDeque::new(),
            shared: 0,
            capacity: capacity.min(u32::MAX as usize),
        }
    }

    /// Queued bytes (ring and chunks).
    pub fn len(&self) -> usize {
        self.ring.len() + self.shared
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free space: bytes that may still be queued.
    pub fn window(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// The ring's backing memory or the extent list is allocated.
    pub fn is_allocated(&self) -> bool {
        self.ring.is_allocated() || self.extents.capacity() > 0
    }

    /// Shared chunks (or parts of them) still queued.
    pub fn chunks(&self) -> usize {
        self.extents
            .iter()
            .filter(|e| matches!(e, Extent::Shared(..)))
            .count()
    }

    /// Records `n` new ring bytes at the end of the extent list (if it is in use).
    fn push_ring(&mut self, n: usize) {
        if n == 0 || self.extents.is_empty() {
            return;
        }
        match self.extents.back_mut() {
            Some(Extent::Ring(len)) => *len += n,
            _ => self.extents.push_back(Extent::Ring(n)),
        }
    }

    /// Copies as much of `data` as fits into the ring; returns the bytes queued.
    pub fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.window());
        let n = self.ring.enqueue_slice(&data[..take]);
        self.push_ring(n);
        n
    }

    /// Lends contiguous free ring space of exactly `min_len` bytes, or, for `min_len` 0 or
    /// 1, as much as the ring has contiguous up to [`LEND_CHUNK`] (never more than the
    /// window)
    /// to `fill`, which writes bytes from the start and returns how many; those are
    /// queued (capped at the slice). Returns `None`, without calling `fill`, when fewer
    /// than `min_len` bytes are free. May move queued ring bytes once to make the space
    /// contiguous (counted as a copy).
    ///
    /// The lend is bounded because every lent byte counts as written for the zeroing of
    /// the ring's memory when it goes back to the pool (`storage::pool`): a 66-byte
    /// message lent the whole 4 KiB ring would cost zeroing 4 KiB per message.
    pub fn lend(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Option<usize> {
        let min_len = min_len.max(1);
        if self.window() < min_len {
            return None;
        }
        // The common case of an exact size: already contiguous at the ring's tail.
        if min_len > 1 {
            if let Some(buf) = self.ring.tail_free(min_len) {
                let n = fill(buf).min(min_len);
                self.ring.commit_tail(n);
                self.push_ring(n);
                return Some(n);
            }
        }
        let moved = self.ring.make_contiguous_free(min_len);
        crate::copy_count::record(crate::copy_count::Site::SendBuffer, moved);
        // An exact size is lent exactly; "anything" (1) gets up to a chunk.
        let max_len = self
            .window()
            .min(if min_len > 1 { min_len } else { LEND_CHUNK });
        let buf = self.ring.get_unallocated_contiguous(min_len, max_len);
        let len = buf.len();
        let n = fill(buf).min(len);
        let n = self.ring.enqueue_unallocated(n);
        self.push_ring(n);
        Some(n)
    }

    /// Queues a shared chunk whole, without copying it, or gives it back when it does not
    /// fit in the window (a message is never split by refusal). An empty chunk is
    /// accepted and dropped.
    pub fn enqueue_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        if chunk.len() > self.window() {
            return Err(chunk);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.extents.capacity() == 0 {
            self.extents = super::pool::take_list(&EXTENT_LISTS);
        }
        if self.extents.is_empty() && !self.ring.is_empty() {
            self.extents.push_back(Extent::Ring(self.ring.len()));
        }
        self.shared += chunk.len();
        self.extents.push_back(Extent::Shared(chunk, 0));
        Ok(())
    }

    /// Drops up to `n` bytes from the front (acknowledged); returns the number dropped.
    #[inline]
    pub fn dequeue_allocated(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        if self.extents.is_empty() {
            let n = self.ring.dequeue_allocated(n);
            // Nothing is ever written past a send ring's readable bytes between calls:
            // drained, it starts over at the front, so the next writes are contiguous.
            self.ring.rewind_if_empty();
            return n;
        }
        self.dequeue_extents(n)
    }

    /// [`SendQueue::dequeue_allocated`] with shared chunks queued.
    fn dequeue_extents(&mut self, n: usize) -> usize {
        let mut left = n;
        while left > 0 {
            let Some(front) = self.extents.front_mut() else {
                break;
            };
            let len = front.len();
            let k = left.min(len);
            match front {
                Extent::Ring(r) => {
                    self.ring.dequeue_allocated(k);
                    *r -= k;
                }
                Extent::Shared(_, off) => {
                    *off += k;
                    self.shared -= k;
                }
            }
            left -= k;
            if k == len {
                self.extents.pop_front();
            }
        }
        if self.shared == 0 {
            // Only ring bytes remain: back to the plain ring.
            self.extents.clear();
        }
        n - left
    }

    /// The queued bytes starting `offset` from the front, at most `max_len` of them, up
    /// to the end of one contiguous run (a ring wrap or an extent boundary; call again
    /// for the rest). Empty if `offset >= len()`.
    pub fn get_allocated(&self, offset: usize, max_len: usize) -> &[u8] {
        if self.extents.is_empty() {
            return self.ring.get_allocated(offset, max_len);
        }
        let mut skip = offset;
        let mut ring_off = 0;
        for e in &self.extents {
            let len = e.len();
            if skip < len {
                let want = max_len.min(len - skip);
                return match e {
                    Extent::Ring(_) => self.ring.get_allocated(ring_off + skip, want),
                    Extent::Shared(b, off) => b.get(off + skip..off + skip + want).unwrap_or(&[]),
                };
            }
            skip -= len;
            if let Extent::Ring(r) = e {
                ring_off += r;
            }
        }
        &[]
    }

    /// Discards everything queued, keeping the ring's memory.
    pub fn clear(&mut self) {
        self.ring.clear();
        self.extents.clear();
        self.shared = 0;
    }

    /// Frees the ring's memory and the extent list if nothing is queued; returns whether
    /// the queue now holds no memory.
    pub fn release_if_empty(&mut self) -> bool {
        if self.is_empty() {
            super::pool::give_list(&EXTENT_LISTS, core::mem::take(&mut self.extents));
        }
        self.ring.release_if_empty() && self.extents.capacity() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(q: &SendQueue) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let s = q.get_allocated(out.len(), usize::MAX);
            if s.is_empty() {
                return out;
            }
            out.extend_from_slice(s);
        }
    }

    #[test]
    fn sendq_new_holds_no_memory_and_drained_queue_frees_it() {
        let mut q = SendQueue::new(1000);
        assert!(!q.is_allocated());
        q.enqueue_slice(b"ab");
        q.enqueue_chunk(Bytes::from_static(b"cd")).unwrap();
        assert!(q.is_allocated());
        assert_eq!(q.dequeue_allocated(4), 4);
        assert!(q.release_if_empty());
        assert!(!q.is_allocated());
    }

    #[test]
    fn sendq_chunk_refused_whole_when_over_window_and_given_back() {
        let mut q = SendQueue::new(10);
        assert_eq!(q.enqueue_slice(b"123456"), 6);
        let c = Bytes::from_static(b"abcde");
        let back = q.enqueue_chunk(c.clone()).unwrap_err();
        assert_eq!(back, c);
        assert_eq!(q.len(), 6);
        q.enqueue_chunk(Bytes::from_static(b"abcd")).unwrap();
        assert_eq!(q.window(), 0);
        assert_eq!(read_all(&q), b"123456abcd");
    }

    #[test]
    fn sendq_lend_refuses_below_min_and_queues_what_fill_reports() {
        let mut q = SendQueue::new(8);
        assert_eq!(q.lend(9, |_| unreachable!()), None);
        let n = q.lend(4, |b| {
            assert!(b.len() >= 4 && b.len() <= 8);
            b[..3].copy_from_slice(b"xyz");
            3
        });
        assert_eq!(n, Some(3));
        assert_eq!(read_all(&q), b"xyz");
    }

    #[test]
    fn sendq_lend_after_wrap_gets_contiguous_space_bytes_kept() {
        // Ring of 8 (first allocation capped at the capacity): fill 6, ack 5, then ask
        // for 6 contiguous bytes while one byte sits at position 5.
        let mut q = SendQueue::new(8);
        q.enqueue_slice(b"abcdef");
        q.dequeue_allocated(5);
        let n = q.lend(6, |b| {
            assert!(b.len() >= 6);
            b[..6].copy_from_slice(b"ghijkl");
            6
        });
        assert_eq!(n, Some(6));
        assert_eq!(read_all(&q), b"fghijkl");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Slice(Vec<u8>),
        Chunk(Vec<u8>),
        Lend(usize, usize),
        Ack(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Slice),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Chunk),
            (1usize..40, 0usize..40).prop_map(|(m, n)| Op::Lend(m, n)),
            (0usize..60).prop_map(Op::Ack),
        ]
    }

    proptest! {
        // Oracle: a plain byte deque with the same capacity rule.
        #[test]
        fn sendq_matches_byte_deque_model(ops in proptest::collection::vec(op(), 1..80)) {
            let cap = 100;
            let mut q = SendQueue::new(cap);
            let mut model: std::collections::VecDeque<u8> = Default::default();
            let mut next = 0u8;
            for o in ops {
                match o {
                    Op::Slice(d) => {
                        let n = q.enqueue_slice(&d);
                        prop_assert_eq!(n, d.len().min(cap - model.len()));
                        model.extend(&d[..n]);
                    }
                    Op::Chunk(d) => {
                        let fits = d.len() <= cap - model.len();
                        let r = q.enqueue_chunk(Bytes::from(d.clone()));
                        prop_assert_eq!(r.is_ok(), fits);
                        if fits { model.extend(&d); }
                    }
                    Op::Lend(min, n) => {
                        let free = cap - model.len();
                        let mut wrote = Vec::new();
                        let r = q.lend(min, |b| {
                            let k = n.min(b.len());
                            for x in &mut b[..k] { *x = next; next = next.wrapping_add(1); wrote.push(*x); }
                            k
                        });
                        prop_assert_eq!(r.is_some(), free >= min);
                        model.extend(&wrote);
                    }
                    Op::Ack(n) => {
                        let k = q.dequeue_allocated(n);
                        prop_assert_eq!(k, n.min(model.len()));
                        model.drain(..k);
                        q.release_if_empty();
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                let all: Vec<u8> = model.iter().copied().collect();
                prop_assert_eq!(read_all(&q), all);
            }
        }
    }
}
