//! Test-only payload copy counting (cargo feature `copy-count`, off by default).
//!
//! Every place where the engine copies payload bytes calls [`record`] with its [`Site`]:
//! into the send ring ([`Site::SendBuffer`]: `Stack::send`, and the bytes an application
//! writes in place through `Stack::send_with` / `ConnTx::send_with`; a shared chunk
//! (`send_chunk`) is not copied there), into the receive buffer
//! ([`Site::RecvBuffer`]: in-order data the application did not consume from the frame,
//! and out-of-order data), and into a TX frame ([`Site::TxFrame`]: every data segment,
//! first transmissions and retransmissions alike, from the send ring or a shared chunk).
//! Reading received data out of the receive buffer (`Stack::recv`) copies into the
//! caller's memory and counts as [`Site::RecvRead`].
//!
//! With the feature on, the counts live in a thread-local (a worker's stack runs on one
//! thread); `snapshot` reads them and `reset` zeroes them. With the feature off,
//! [`record`] is an empty inline function and the reading API does not exist, so a test
//! that relies on the counts cannot silently pass without them.

/// Where payload bytes were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Application bytes into a connection's send ring (`send`, `send_with`).
    SendBuffer,
    /// Received payload into a connection's receive buffer.
    RecvBuffer,
    /// Payload into an outgoing frame (send ring or shared chunk -> TX buffer).
    TxFrame,
    /// Buffered received data out to the application (`Stack::recv`).
    RecvRead,
}

/// Copies counted so far on this thread: operations (one per copy call with at least
/// one byte) and bytes, per site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copies {
    /// Copies into send rings.
    pub send_buffer: u64,
    /// Bytes copied into send rings.
    pub send_buffer_bytes: u64,
    /// Copies into receive buffers.
    pub recv_buffer: u64,
    /// Bytes copied into receive buffers.
    pub recv_buffer_bytes: u64,
    /// Copies of payload into TX frames.
    pub tx_frame: u64,
    /// Payload bytes copied into TX frames.
    pub tx_frame_bytes: u64,
    /// Copies out of receive buffers.
    pub recv_read: u64,
    /// Bytes copied out of receive buffers.
    pub recv_read_bytes: u64,
}

impl Copies {
    /// All copy operations, every site.
    pub fn total(&self) -> u64 {
        self.send_buffer + self.recv_buffer + self.tx_frame + self.recv_read
    }
}

#[cfg(feature = "copy-count")]
thread_local! {
    static COUNTS: core::cell::Cell<Copies> = const { core::cell::Cell::new(Copies {
        send_buffer: 0,
        send_buffer_bytes: 0,
        recv_buffer: 0,
        recv_buffer_bytes: 0,
        tx_frame: 0,
        tx_frame_bytes: 0,
        recv_read: 0,
        recv_read_bytes: 0,
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
                Site::SendBuffer => {
                    v.send_buffer += 1;
                    v.send_buffer_bytes += b;
                }
                Site::RecvBuffer => {
                    v.recv_buffer += 1;
                    v.recv_buffer_bytes += b;
                }
                Site::TxFrame => {
                    v.tx_frame += 1;
                    v.tx_frame_bytes += b;
                }
                Site::RecvRead => {
                    v.recv_read += 1;
                    v.recv_read_bytes += b;
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

#[cfg(all(test, feature = "copy-count"))]
mod tests {
    use super::*;

    #[test]
    fn record_counts_operations_and_bytes_per_site_and_reset_zeroes() {
        reset();
        record(Site::TxFrame, 64);
        record(Site::TxFrame, 0);
        record(Site::SendBuffer, 10);
        let c = snapshot();
        assert_eq!((c.tx_frame, c.tx_frame_bytes), (1, 64));
        assert_eq!((c.send_buffer, c.send_buffer_bytes), (1, 10));
        assert_eq!(c.total(), 2);
        reset();
        assert_eq!(snapshot(), Copies::default());
    }
}
