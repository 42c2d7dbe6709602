//! The batched packet-I/O abstraction every worker runs over.
//!
//! A [`Device`] hands received frames out as `&mut [u8]` borrowed from its own memory (UMEM
//! for AF_XDP), lends free transmit buffers through its [`TxQueue`] half, puts the frames
//! queued since the last call on the wire with one [`Device::submit`] (one kernel kick per
//! batch), and recycles transmit buffers with [`Device::reclaim`]. The protocol engine never
//! learns which implementation it runs on.

use std::io;
use std::time::Duration;

/// Lends free transmit buffers to whoever builds outgoing frames: the one transmit trait,
/// owned by `tcp` (so a device's transmit half goes straight to `Stack::poll_transmit`) and
/// implemented here by [`crate::XskTx`] and [`crate::MemTx`]. See
/// `docs/decisions/0002-device-trait.md`.
pub use tcp::iface::TxQueue;

/// Counters kept by every device. They only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames handed to a receive callback.
    pub rx_frames: u64,
    /// Frames put on the wire (on the TX ring, for AF_XDP).
    pub tx_frames: u64,
    /// `transmit` calls refused because no buffer was free.
    pub tx_no_buffer: u64,
    /// `transmit` calls refused because the frame was larger than a buffer.
    pub tx_too_large: u64,
    /// Frames dropped on the way in because the receive queue was full (in-memory device),
    /// or reported dropped by the kernel (AF_XDP `rx_dropped` + `rx_ring_full`).
    pub rx_dropped: u64,
    /// Kernel wake-ups issued (`sendto` for TX, `poll`/`recvfrom` for the fill ring).
    pub kicks: u64,
}

/// What can fail on the packet path of a running device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The kick (`sendto`) or wait (`poll`) system call failed with an unexpected error.
    #[error("device system call failed: {0}")]
    Io(#[from] io::Error),
}

/// Batched packet I/O for one queue of one interface.
///
/// Call order in a poll loop (see `worker`): [`Device::reclaim`], [`Device::receive`] (which
/// may transmit answers through the `TxQueue` it passes along), any other transmits through
/// [`Device::tx`], then one [`Device::submit`] for the whole batch; [`Device::wait`] only when
/// idle.
pub trait Device {
    /// The transmit half, lent to receive callbacks and to [`Device::tx`].
    type Tx: TxQueue;

    /// Takes up to `budget` received frames and calls `on_frame` with each, in arrival
    /// order, as a mutable slice of the device's memory together with the transmit half
    /// (so an answer can be built while the request is still borrowed). A frame goes back to
    /// the device when its callback returns. Returns how many frames were handed out; 0 when
    /// nothing was waiting. Never blocks.
    fn receive<F>(&mut self, budget: usize, on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut Self::Tx);

    /// The transmit half, for frames not triggered by a received one (timers, application
    /// writes).
    fn tx(&mut self) -> &mut Self::Tx;

    /// Puts every frame queued by `transmit` since the last call on the wire, as one batch,
    /// and kicks the kernel at most once (only when it asked for a wake-up). Frames that did
    /// not fit the ring stay queued for the next call. Returns how many frames went out.
    fn submit(&mut self) -> Result<usize, DeviceError>;

    /// Recycles the buffers of frames the kernel has finished sending. Returns how many.
    fn reclaim(&mut self) -> usize;

    /// Blocks until a frame may be waiting or `timeout` has passed; used by the idle backoff
    /// only. Returns `true` when the device reported readiness.
    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError>;

    /// The counters so far.
    fn stats(&self) -> DeviceStats;

    /// Calls `f` with each frame queued by `transmit` and not yet on the wire, oldest
    /// first (the order `submit` sends them in; `submit` takes from the front). For taps
    /// such as [`crate::pcap::PcapDevice`]; the default has no frames to show.
    fn pending_frames<F: FnMut(&[u8])>(&mut self, f: F) {
        let _ = f;
    }
}
