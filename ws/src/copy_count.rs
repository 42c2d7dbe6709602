//! Test-only payload copy counting (cargo feature `copy-count`, off by default).
//!
//! Every place where the codec copies payload bytes calls [`record`] with its [`Site`]:
//! into a message or control-frame assembly buffer ([`Site::Message`]: fragmented,
//! compressed, split-across-reads and control payloads; a whole message handed out
//! borrowed by [`crate::Connection::read_with`] is not copied), into the output buffer
//! ([`Site::Output`]: every frame queued by `send`, `ping`, `close`, pong answers), and out
//! of it ([`Site::Transmit`]: [`crate::Connection::poll_transmit`]).
//!
//! With the feature on, the counts live in a thread-local; `snapshot` reads them and
//! `reset` zeroes them. With the feature off, [`record`] is an empty inline function and
//! the reading API does not exist, so a test relying on the counts cannot silently pass.

/// Where payload bytes were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Into a message (or control payload) assembly buffer.
    Message,
    /// Into the connection's output buffer (a queued frame).
    Output,
    /// Out of the output buffer into the caller's buffer (`poll_transmit`).
    Transmit,
}

/// Copies counted so far on this thread: operations (one per copy with at least one
/// byte) and bytes, per site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copies {
    /// Copies into assembly buffers.
    pub message: u64,
    /// Bytes copied into assembly buffers.
    pub message_bytes: u64,
    /// Copies into the output buffer.
    pub output: u64,
    /// Bytes copied into the output buffer.
    pub output_bytes: u64,
    /// Copies out of the output buffer.
    pub transmit: u64,
    /// Bytes copied out of the output buffer.
    pub transmit_bytes: u64,
}

impl Copies {
    /// All copy operations, every site.
    pub fn total(&self) -> u64 {
        self.message + self.output + self.transmit
    }
}

#[cfg(feature = "copy-count")]
thread_local! {
    static COUNTS: core::cell::Cell<Copies> = const { core::cell::Cell::new(Copies {
        message: 0,
        message_bytes: 0,
        output: 0,
        output_bytes: 0,
        transmit: 0,
        transmit_bytes: 0,
    }) };
}

/// Counts one copy of `bytes` payload bytes at `site` (nothing when `bytes` is 0, and
/// nothing at all without the `copy-count` feature).
#[inline(always)]
pub fn record(site: Site, bytes: usize) {
    #[cfg(feature = "copy-count")]
    if bytes > 0 {
        COUNTS.with(|c| {
            let mut v = c.get();
            let b = bytes as u64;
            match site {
                Site::Message => {
                    v.message += 1;
                    v.message_bytes += b;
                }
                Site::Output => {
                    v.output += 1;
                    v.output_bytes += b;
                }
                Site::Transmit => {
                    v.transmit += 1;
                    v.transmit_bytes += b;
                }
            }
            c.set(v);
        });
    }
    #[cfg(not(feature = "copy-count"))]
    let _ = (site, bytes);
}

/// The counts on this thread since the last [`reset`].
#[cfg(feature = "copy-count")]
pub fn snapshot() -> Copies {
    COUNTS.with(|c| c.get())
}

/// Zeroes this thread's counts.
#[cfg(feature = "copy-count")]
pub fn reset() {
    COUNTS.with(|c| c.set(Copies::default()));
}
