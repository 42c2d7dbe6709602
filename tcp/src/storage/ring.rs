//! A fixed-capacity byte ring whose memory is allocated on first use and grown on demand.
//!
//! A connection's send and receive buffers are `RingBuffer`s. An idle connection holds
//! none of the backing memory: it is allocated when the first byte is written (a small
//! first allocation, doubled as the data needs it, never beyond the capacity) and can be
//! given back with [`RingBuffer::release_if_empty`], so a million idle connections cost
//! only the 40-byte headers and a connection exchanging small messages never holds the
//! whole configured buffer. First-size buffers are recycled through a bounded per-thread
//! pool (`storage::pool`), so draining and refilling does not allocate.
//!
//! Positions are counted from the read position:
//! - `0 .. len()` are the *allocated* (readable) bytes;
//! - `len() .. capacity()` is the *unallocated* space (the window). The receive path
//!   places out-of-order data there with [`RingBuffer::write_unallocated`] and makes it
//!   readable with [`RingBuffer::enqueue_unallocated`] once the hole before it is filled.

/// First allocation, in bytes, unless the capacity or the first write is smaller/larger.
pub const FIRST_ALLOC: usize = 4096;

/// A byte ring with a fixed capacity and lazily allocated, growable storage.
#[derive(Debug, Clone, Default)]
pub struct RingBuffer {
    /// Backing memory: empty until first written, then between the first allocation and
    /// `capacity` bytes. Positions wrap at its length.
    storage: Box<[u8]>,
    /// The configured capacity in bytes.
    capacity: u32,
    /// Size of the first allocation.
    first_alloc: u32,
    /// Index in `storage` of the first readable byte.
    read_at: u32,
    /// Number of readable bytes.
    length: u32,
    /// Storage indices `dirty..` have never been written since the storage was taken
    /// (still zero), so giving it back zeroes only `..dirty` (`storage::pool`).
    dirty: u32,
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // Recycled through the per-thread pool (see `storage::pool`).
        super::pool::give_buffer(core::mem::take(&mut self.storage), self.dirty as usize);
    }
}

impl RingBuffer {
    /// A ring of `capacity` bytes (capped at `u32::MAX`) with no memory allocated yet.
    pub fn new(capacity: usize) -> RingBuffer {
        RingBuffer::with_first_alloc(capacity, FIRST_ALLOC)
    }

    /// Like [`new`](Self::new), with the size of the first allocation given.
    pub fn with_first_alloc(capacity: usize, first_alloc: usize) -> RingBuffer {
        RingBuffer {
            storage: Box::default(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            first_alloc: u32::try_from(first_alloc.max(1)).unwrap_or(u32::MAX),
            read_at: 0,
            length: 0,
            dirty: 0,
        }
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Bytes of backing memory currently allocated.
    pub fn allocated(&self) -> usize {
        self.storage.len()
    }

    /// Number of readable bytes.
    pub fn len(&self) -> usize {
        self.length as usize
    }

    /// Free space after the readable bytes (`capacity - len`).
    pub fn window(&self) -> usize {
        (self.capacity - self.length) as usize
    }

    /// No readable bytes.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// No free space.
    pub fn is_full(&self) -> bool {
        self.length == self.capacity
    }

    /// The backing memory is currently allocated.
    pub fn is_allocated(&self) -> bool {
        !self.storage.is_empty()
    }

    /// Frees the backing memory if there are no readable bytes; returns whether the ring
    /// now holds no memory. Bytes written past the end with
    /// [`write_unallocated`](Self::write_unallocated) are discarded too, so the receive
    /// path calls this only when its assembler is empty.
    pub fn release_if_empty(&mut self) -> bool {
        if self.length == 0 {
            super::pool::give_buffer(core::mem::take(&mut self.storage), self.dirty as usize);
            self.read_at = 0;
            self.dirty = 0;
        }
        self.storage.is_empty()
    }

    /// Discards all readable bytes, keeping the memory.
    pub fn clear(&mut self) {
        self.read_at = 0;
        self.length = 0;
    }

    /// Makes the storage cover positions `0 .. end` past the read position
    /// (`end <= capacity`), growing it (doubling, at least the first allocation, at most
    /// the capacity) and keeping every byte at its position.
    fn reserve(&mut self, end: usize) {
        let phys = self.storage.len();
        if end <= phys {
            return;
        }
        let cap = self.capacity as usize;
        let size = end
            .max(phys.saturating_mul(2))
            .max(self.first_alloc as usize)
            .min(cap);
        let mut grown = super::pool::take_buffer(size);
        if phys > 0 {
            // Relinearise: position p moves from storage[(read_at + p) % phys] to grown[p].
            let start = self.read_at as usize;
            let first = phys - start;
            grown[..first].copy_from_slice(&self.storage[start..]);
            grown[first..phys].copy_from_slice(&self.storage[..start]);
        }
        super::pool::give_buffer(
            core::mem::replace(&mut self.storage, grown),
            self.dirty as usize,
        );
        self.read_at = 0;
        self.dirty = phys as u32;
    }

    /// Records that storage indices `..end` may have been written.
    fn touch(&mut self, end: usize) {
        self.dirty = self.dirty.max(end as u32);
    }

    /// Storage index of the position `offset` bytes past the read position
    /// (`offset <= storage.len()`).
    fn index(&self, offset: usize) -> usize {
        let phys = self.storage.len();
        let i = self.read_at as usize + offset;
        if i >= phys {
            i - phys
        } else {
            i
        }
    }

    /// Copies `data` into the ring starting `offset` bytes past the read position; the
    /// caller guarantees `offset + data.len() <= capacity`.
    fn copy_in(&mut self, offset: usize, data: &[u8]) {
        self.reserve(offset + data.len());
        let phys = self.storage.len();
        let start = self.index(offset);
        let first = data.len().min(phys - start);
        // A wrapped write's second part lands below `start`.
        self.touch(start + first);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        self.storage[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// Appends as much of `data` as fits; returns the number of bytes appended.
    pub fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let n = self.write_unallocated(0, data);
        self.enqueue_unallocated(n)
    }

    /// Moves up to `buf.len()` readable bytes into `buf`; returns the number moved.
    pub fn dequeue_slice(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len());
        if n == 0 {
            return 0;
        }
        let first = self.get_allocated(0, n).len();
        buf[..first].copy_from_slice(self.get_allocated(0, first));
        let rest = n - first;
        buf[first..n].copy_from_slice(self.get_allocated(first, rest));
        self.dequeue_allocated(n)
    }

    /// Moves the read position back to the start of the storage when nothing is
    /// readable, so the next writes are contiguous from there. Only for a ring that holds
    /// nothing past its readable bytes (a send ring; never a receive ring, which keeps
    /// out-of-order data there).
    #[inline]
    pub fn rewind_if_empty(&mut self) {
        if self.length == 0 {
            self.read_at = 0;
        }
    }

    /// Drops up to `n` readable bytes from the front; returns the number dropped.
    #[inline]
    pub fn dequeue_allocated(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        if n > 0 {
            self.read_at = self.index(n) as u32;
            self.length -= n as u32;
        }
        n
    }

    /// The readable bytes starting `offset` past the read position, at most `max_len` of
    /// them, up to the end of the storage (shorter at the wrap; call again for the rest).
    /// Empty if `offset >= len()`.
    pub fn get_allocated(&self, offset: usize, max_len: usize) -> &[u8] {
        if offset >= self.len() {
            return &[];
        }
        let start = self.index(offset);
        let phys = self.storage.len();
        let n = max_len.min(self.len() - offset).min(phys - start);
        &self.storage[start..start + n]
    }

    /// The readable bytes from the read position up to the wrap, for zero-copy reads
    /// (consume them with [`dequeue_allocated`](Self::dequeue_allocated)).
    pub fn peek_contiguous(&self) -> &[u8] {
        self.get_allocated(0, self.len())
    }

    /// Copies `data` into the free space starting `offset` bytes past the readable bytes,
    /// without making it readable; returns how many bytes fit (0 if `offset >= window()`).
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let window = self.window();
        if offset >= window || data.is_empty() {
            return 0;
        }
        let n = data.len().min(window - offset);
        self.copy_in(self.len() + offset, &data[..n]);
        n
    }

    /// Makes up to `n` bytes of free space readable (data placed earlier with
    /// [`write_unallocated`](Self::write_unallocated) or
    /// [`get_unallocated`](Self::get_unallocated)); returns the number made readable.
    pub fn enqueue_unallocated(&mut self, n: usize) -> usize {
        let n = n.min(self.window());
        if n > 0 {
            self.reserve(self.len() + n);
        }
        self.length += n as u32;
        n
    }

    /// Arranges for at least `need` bytes of free space (capped at the window) to be
    /// contiguous right after the readable bytes, without growing the storage (a later
    /// growth relinearises anyway): an empty ring restarts at the beginning of its
    /// storage, a wrapped one has its readable bytes rotated there. Returns how many
    /// bytes moved (0 in the common case).
    pub fn make_contiguous_free(&mut self, need: usize) -> usize {
        let need = need.min(self.window());
        let phys = self.storage.len();
        let len = self.len();
        if need == 0 || len + need > phys {
            return 0;
        }
        if len == 0 {
            self.read_at = 0;
            return 0;
        }
        if self.contiguous_free() >= need {
            return 0;
        }
        self.storage.rotate_left(self.read_at as usize);
        self.touch(phys);
        self.read_at = 0;
        len
    }

    /// Free bytes contiguous in the storage right after the readable bytes.
    fn contiguous_free(&self) -> usize {
        let phys = self.storage.len();
        let len = self.len();
        if len >= phys {
            return 0;
        }
        let r = self.read_at as usize;
        let t = self.index(len);
        if t >= r {
            phys - t
        } else {
            r - t
        }
    }

    /// Contiguous free space right after the readable bytes: at least `min_len` bytes
    /// (capped at `max_len` and the window; the storage grows if needed) provided
    /// [`make_contiguous_free`](Self::make_contiguous_free)`(min_len)` was called first,
    /// and as much more as the storage already has contiguous, up to `max_len`. Follow
    /// with [`enqueue_unallocated`](Self::enqueue_unallocated).
    pub fn get_unallocated_contiguous(&mut self, min_len: usize, max_len: usize) -> &mut [u8] {
        let max_len = max_len.min(self.window());
        let min_len = min_len.min(max_len);
        if max_len == 0 {
            return &mut [];
        }
        self.reserve(self.len() + min_len);
        let n = self.contiguous_free().min(max_len);
        let start = self.index(self.len());
        self.touch(start + n);
        match self.storage.get_mut(start..start + n) {
            Some(s) => s,
            None => &mut [],
        }
    }

    /// The fast case of a write in place: `len` bytes of free space right after the
    /// readable bytes, when the storage has them contiguous there (allocating a first
    /// buffer if there is none; no other growth, no move); `None` otherwise (take the
    /// general path). Follow with [`commit_tail`](Self::commit_tail).
    pub fn tail_free(&mut self, len: usize) -> Option<&mut [u8]> {
        let used = self.length as usize;
        if len == 0 || used + len > self.capacity as usize {
            return None;
        }
        if self.storage.is_empty() {
            self.reserve(len);
        }
        let phys = self.storage.len();
        if used + len > phys {
            return None;
        }
        let r = self.read_at as usize;
        let t = r + used;
        // Not wrapped and room before the end of the storage.
        if t + len > phys {
            return None;
        }
        self.touch(t + len);
        self.storage.get_mut(t..t + len)
    }

    /// Makes `n` bytes lent by [`tail_free`](Self::tail_free) readable.
    pub fn commit_tail(&mut self, n: usize) {
        self.length += n as u32;
    }

    /// Contiguous free space starting `offset` bytes past the readable bytes, at most
    /// `max_len` long (shorter at the wrap), for writing in place; follow with
    /// [`enqueue_unallocated`](Self::enqueue_unallocated). Allocates the storage.
    pub fn get_unallocated(&mut self, offset: usize, max_len: usize) -> &mut [u8] {
        let window = self.window();
        if offset >= window || max_len == 0 {
            return &mut [];
        }
        let n = max_len.min(window - offset);
        self.reserve(self.len() + offset + n);
        let start = self.index(self.len() + offset);
        let phys = self.storage.len();
        let n = n.min(phys - start);
        self.touch(start + n);
        &mut self.storage[start..start + n]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    #[test]
    fn ring_header_size_is_40_bytes() {
        assert_eq!(core::mem::size_of::<RingBuffer>(), 40);
    }

    #[test]
    fn tail_free_lends_the_contiguous_tail_or_defers_to_the_general_path() {
        let mut r = RingBuffer::with_first_alloc(64, 16);
        // No storage yet: the first buffer is taken.
        r.tail_free(10).unwrap().copy_from_slice(&[1; 10]);
        r.commit_tail(10);
        assert_eq!(r.allocated(), 16);
        // 6 bytes left before the end of the storage: 7 would need growth.
        assert!(r.tail_free(7).is_none());
        r.tail_free(6).unwrap().copy_from_slice(&[2; 6]);
        r.commit_tail(6);
        assert_eq!(r.len(), 16);
        let mut out = [0u8; 16];
        assert_eq!(r.dequeue_slice(&mut out[..12]), 12);
        // Free space only by wrapping: the general path's job.
        assert!(r.tail_free(4).is_none());
        assert_eq!(r.dequeue_slice(&mut out[12..]), 4);
        assert_eq!(out, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        // Beyond the capacity: never.
        assert!(RingBuffer::new(8).tail_free(9).is_none());
    }

    #[test]
    fn released_storage_comes_back_zeroed_wherever_it_was_written() {
        let mut r = RingBuffer::new(FIRST_ALLOC);
        assert_eq!(r.enqueue_slice(&[1; 3000]), 3000);
        assert_eq!(r.dequeue_allocated(3000), 3000);
        // Wraps: 1096 bytes at the end, 904 at the start.
        assert_eq!(r.enqueue_slice(&[2; 2000]), 2000);
        r.make_contiguous_free(3000);
        assert_eq!(r.dequeue_allocated(2000), 2000);
        // Lent in place but never made readable.
        r.get_unallocated(10, 50).fill(3);
        assert!(r.release_if_empty());
        let mut again = RingBuffer::new(FIRST_ALLOC);
        let storage = again.get_unallocated(0, FIRST_ALLOC);
        assert_eq!(storage.len(), FIRST_ALLOC, "the recycled buffer, whole");
        assert!(
            storage.iter().all(|&b| b == 0),
            "a byte survived the release"
        );
    }

    #[test]
    fn ring_new_holds_no_memory() {
        let mut r = RingBuffer::new(64);
        assert!(!r.is_allocated());
        assert_eq!(r.window(), 64);
        assert_eq!(r.dequeue_allocated(3), 0);
        assert_eq!(r.enqueue_slice(&[]), 0);
        assert!(!r.is_allocated());
        assert_eq!(r.enqueue_slice(b"abc"), 3);
        assert!(r.is_allocated());
        assert!(!r.release_if_empty());
        assert_eq!(r.dequeue_allocated(3), 3);
        assert!(r.release_if_empty());
        assert!(!r.is_allocated());
    }

    #[test]
    fn ring_grows_by_doubling_up_to_capacity_keeping_bytes() {
        let mut r = RingBuffer::with_first_alloc(20, 4);
        assert_eq!(r.enqueue_slice(b"abc"), 3);
        assert_eq!(r.allocated(), 4);
        r.dequeue_allocated(2);
        // Wrapped, then grown: the readable byte and the out-of-order bytes keep
        // their positions.
        assert_eq!(r.write_unallocated(4, b"xyz"), 3);
        assert_eq!(r.allocated(), 8);
        assert_eq!(r.enqueue_slice(b"defg"), 4);
        assert_eq!(r.enqueue_unallocated(3), 3);
        let mut buf = [0u8; 8];
        assert_eq!(r.dequeue_slice(&mut buf), 8);
        assert_eq!(&buf, b"cdefgxyz");
        assert_eq!(r.enqueue_slice(&[7u8; 30]), 20);
        assert_eq!(r.allocated(), 20);
    }

    #[test]
    fn ring_enqueue_full_truncates() {
        let mut r = RingBuffer::new(4);
        assert_eq!(r.enqueue_slice(b"abcdef"), 4);
        assert!(r.is_full());
        assert_eq!(r.enqueue_slice(b"x"), 0);
        let mut buf = [0u8; 8];
        assert_eq!(r.dequeue_slice(&mut buf), 4);
        assert_eq!(&buf[..4], b"abcd");
    }

    #[test]
    fn ring_wrapped_get_allocated_splits_at_wrap() {
        let mut r = RingBuffer::new(8);
        r.enqueue_slice(b"123456");
        r.dequeue_allocated(5);
        r.enqueue_slice(b"abcde");
        assert_eq!(r.peek_contiguous(), b"6ab");
        assert_eq!(r.get_allocated(3, 10), b"cde");
        assert_eq!(r.get_allocated(1, 1), b"a");
        assert_eq!(r.get_allocated(6, 1), b"");
    }

    #[test]
    fn ring_out_of_order_write_becomes_readable() {
        let mut r = RingBuffer::new(8);
        assert_eq!(r.write_unallocated(3, b"def"), 3);
        assert!(r.is_empty());
        assert_eq!(r.write_unallocated(0, b"abc"), 3);
        assert_eq!(r.enqueue_unallocated(6), 6);
        let mut buf = [0u8; 6];
        r.dequeue_slice(&mut buf);
        assert_eq!(&buf, b"abcdef");
        assert_eq!(r.write_unallocated(8, b"z"), 0);
    }

    #[test]
    fn ring_zero_capacity_accepts_nothing() {
        let mut r = RingBuffer::new(0);
        assert_eq!(r.enqueue_slice(b"a"), 0);
        assert_eq!(r.enqueue_unallocated(1), 0);
        assert!(r.get_unallocated(0, 4).is_empty());
        assert!(r.is_full() && r.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(Vec<u8>),
        Dequeue(usize),
        DequeueAllocated(usize),
        GetAllocated(usize, usize),
        WriteUnallocated(usize, Vec<u8>),
        EnqueueUnallocated(usize),
        GetUnallocated(usize, usize, u8),
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        let data = proptest::collection::vec(any::<u8>(), 0..24);
        prop_oneof![
            data.clone().prop_map(Op::Enqueue),
            (0usize..24).prop_map(Op::Dequeue),
            (0usize..24).prop_map(Op::DequeueAllocated),
            (0usize..24, 0usize..24).prop_map(|(o, m)| Op::GetAllocated(o, m)),
            (0usize..24, data).prop_map(|(o, d)| Op::WriteUnallocated(o, d)),
            (0usize..24).prop_map(Op::EnqueueUnallocated),
            (0usize..24, 0usize..24, any::<u8>()).prop_map(|(o, m, b)| Op::GetUnallocated(o, m, b)),
            Just(Op::Release),
        ]
    }

    /// Model: readable bytes in a VecDeque (`None` = never written, content unspecified)
    /// and bytes placed past the end keyed by absolute stream position.
    struct Model {
        cap: usize,
        readable: VecDeque<Option<u8>>,
        head: usize,
        future: BTreeMap<usize, u8>,
    }

    impl Model {
        fn place(&mut self, offset: usize, data: &[u8]) -> usize {
            let window = self.cap - self.readable.len();
            if offset >= window {
                return 0;
            }
            let n = data.len().min(window - offset);
            let end = self.head + self.readable.len();
            for (i, b) in data[..n].iter().enumerate() {
                self.future.insert(end + offset + i, *b);
            }
            n
        }

        fn enqueue_unallocated(&mut self, n: usize) -> usize {
            let n = n.min(self.cap - self.readable.len());
            for _ in 0..n {
                let pos = self.head + self.readable.len();
                self.readable.push_back(self.future.remove(&pos));
            }
            n
        }

        fn dequeue(&mut self, n: usize) -> Vec<Option<u8>> {
            let n = n.min(self.readable.len());
            self.head += n;
            self.readable.drain(..n).collect()
        }
    }

    fn matches(real: &[u8], model: impl IntoIterator<Item = Option<u8>>) -> bool {
        let model: Vec<Option<u8>> = model.into_iter().collect();
        real.len() == model.len()
            && real
                .iter()
                .zip(&model)
                .all(|(r, m)| m.is_none_or(|m| m == *r))
    }

    proptest! {
        // Oracle: the ring against a VecDeque model under arbitrary operation sequences.
        #[test]
        fn ring_ops_match_vecdeque_model(cap in 0usize..20, first in 1usize..8, ops in proptest::collection::vec(op(), 0..60)) {
            let mut r = RingBuffer::with_first_alloc(cap, first);
            let mut m = Model { cap, readable: VecDeque::new(), head: 0, future: BTreeMap::new() };
            for op in ops {
                match op {
                    Op::Enqueue(d) => {
                        let n = m.place(0, &d);
                        prop_assert_eq!(m.enqueue_unallocated(n), n);
                        prop_assert_eq!(r.enqueue_slice(&d), n);
                    }
                    Op::Dequeue(n) => {
                        let mut buf = vec![0u8; n];
                        let got = r.dequeue_slice(&mut buf);
                        let want = m.dequeue(n);
                        prop_assert!(matches(&buf[..got], want));
                    }
                    Op::DequeueAllocated(n) => {
                        prop_assert_eq!(r.dequeue_allocated(n), m.dequeue(n).len());
                    }
                    Op::GetAllocated(o, max) => {
                        let got = r.get_allocated(o, max);
                        let want = m.readable.iter().skip(o).take(max).copied();
                        let want: Vec<_> = want.collect();
                        prop_assert!(want.len() >= got.len());
                        prop_assert!(matches(got, want[..got.len()].iter().copied()));
                        // Shorter only at the wrap.
                        if !want.is_empty() {
                            prop_assert!(!got.is_empty());
                        }
                    }
                    Op::WriteUnallocated(o, d) => {
                        prop_assert_eq!(r.write_unallocated(o, &d), m.place(o, &d));
                    }
                    Op::EnqueueUnallocated(n) => {
                        prop_assert_eq!(r.enqueue_unallocated(n), m.enqueue_unallocated(n));
                    }
                    Op::GetUnallocated(o, max, b) => {
                        let slice = r.get_unallocated(o, max);
                        slice.fill(b);
                        let len = slice.len();
                        prop_assert!(len <= max);
                        prop_assert_eq!(m.place(o, &vec![b; len]), len);
                    }
                    Op::Release => {
                        if m.readable.is_empty() {
                            m.future.clear();
                            m.head = 0;
                        }
                        prop_assert_eq!(r.release_if_empty(), !r.is_allocated());
                    }
                }
                prop_assert_eq!(r.len(), m.readable.len());
                prop_assert_eq!(r.window(), cap - m.readable.len());
                let contiguous = r.peek_contiguous();
                prop_assert!(matches(contiguous, m.readable.iter().take(contiguous.len()).copied()));
                prop_assert_eq!(contiguous.is_empty(), m.readable.is_empty());
            }
        }
    }
}
