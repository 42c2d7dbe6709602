//! Per-thread recycling of connection buffers, so that a busy worker stops allocating.
//!
//! A connection's rings are allocated on first use and given back when they drain (an
//! idle connection holds no buffer memory), and so is its send queue's extent list. On a
//! request/response connection that drains after every message, that would be a
//! `malloc`/`free` pair per message. Instead, first-size ring buffers
//! ([`super::ring::FIRST_ALLOC`] bytes) and small extent lists are kept in a bounded
//! per-thread free list and reused: after warm-up a worker's steady traffic allocates
//! nothing, idle connections still hold nothing, and the pool holds at most
//! [`MAX_BUFFERS`] buffers and [`MAX_EXTENT_LISTS`] lists per thread (a worker owns its
//! stack on one thread, so the pool is in effect per stack). Reused buffers are zeroed,
//! so no connection ever sees another's bytes: a buffer is zeroed when it is given back,
//! over the part its ring may have written (so a 64 B message costs zeroing about 64 B,
//! not the whole buffer), and every pooled buffer is all zeros.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::ring::FIRST_ALLOC;

/// Most ring buffers kept per thread (1 MiB of 4 KiB buffers).
pub const MAX_BUFFERS: usize = 256;
/// Most extent lists kept per thread.
pub const MAX_EXTENT_LISTS: usize = 256;
/// Extent lists that grew beyond this capacity are freed, not kept.
const MAX_KEPT_EXTENTS: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` bytes, recycled when `len` is the first-allocation size.
pub(crate) fn take_buffer(len: usize) -> Box<[u8]> {
    if len == FIRST_ALLOC {
        if let Some(b) = BUFFERS.with(|p| p.borrow_mut().pop()) {
            return b;
        }
    }
    vec![0u8; len].into_boxed_slice()
}

/// Gives a ring buffer back, of which only `..dirty` may be non-zero: kept (zeroed there)
/// if it has the first-allocation size and there is room; freed otherwise.
pub(crate) fn give_buffer(mut b: Box<[u8]>, dirty: usize) {
    if b.len() == FIRST_ALLOC {
        BUFFERS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < MAX_BUFFERS {
                if let Some(used) = b.get_mut(..dirty.min(FIRST_ALLOC)) {
                    used.fill(0);
                }
                p.push(b);
            }
        });
    }
}

/// Buffers in this thread's pool.
pub fn pooled_buffers() -> usize {
    BUFFERS.with(|p| p.borrow().len())
}

/// An empty extent list with some capacity, recycled if one is pooled.
pub(crate) fn take_list<T: 'static>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<VecDeque<T>>>>,
) -> VecDeque<T> {
    pool.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| VecDeque::with_capacity(4))
}

/// Gives an extent list back (cleared; kept if small and there is room).
pub(crate) fn give_list<T: 'static>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<VecDeque<T>>>>,
    mut list: VecDeque<T>,
) {
    let cap = list.capacity();
    if cap == 0 || cap > MAX_KEPT_EXTENTS {
        return;
    }
    list.clear();
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < MAX_EXTENT_LISTS {
            p.push(list);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_first_size_buffers_zeroed_and_is_bounded() {
        let mut b = take_buffer(FIRST_ALLOC);
        b[0] = 42;
        let ptr = b.as_ptr();
        let before = pooled_buffers();
        give_buffer(b, 1);
        assert_eq!(pooled_buffers(), before + 1);
        let again = take_buffer(FIRST_ALLOC);
        assert_eq!(again.as_ptr(), ptr, "the same memory came back");
        assert_eq!(again[0], 0, "zeroed");
        // Other sizes are not kept.
        give_buffer(vec![0u8; 100].into_boxed_slice(), 100);
        assert_eq!(pooled_buffers(), before);
        for _ in 0..MAX_BUFFERS + 10 {
            give_buffer(vec![0u8; FIRST_ALLOC].into_boxed_slice(), 0);
        }
        assert_eq!(pooled_buffers(), MAX_BUFFERS);
    }
}
