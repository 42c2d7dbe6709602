//! An in-memory [`Device`]: frames travel between two devices joined by a link, or are
//! injected and collected by a test directly. Used by unit tests and the deterministic
//! simulation; it behaves like AF_XDP where it matters to an engine (a fixed pool of
//! transmit buffers that comes back only through [`Device::reclaim`], a bounded receive
//! queue that drops and counts when full, nothing on the wire until [`Device::submit`]).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::device::{Device, DeviceError, DeviceStats, TxQueue};

/// Sizes of an in-memory device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemConfig {
    /// Transmit buffers in the pool (like the TX half of a UMEM).
    pub tx_buffers: usize,
    /// Frames the receive queue holds before it drops (like the RX ring).
    pub rx_capacity: usize,
    /// Bytes per buffer: the largest frame (like the UMEM frame size).
    pub frame_size: usize,
}

impl Default for MemConfig {
    fn default() -> Self {
        MemConfig {
            tx_buffers: 256,
            rx_capacity: 1024,
            frame_size: 2048,
        }
    }
}

/// One direction of a link: a bounded queue of frames.
#[derive(Debug)]
struct Port {
    frames: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    capacity: usize,
    dropped: Mutex<u64>,
}

impl Port {
    fn new(capacity: usize) -> Arc<Port> {
        Arc::new(Port {
            frames: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity,
            dropped: Mutex::new(0),
        })
    }

    /// A poisoned lock only means another thread panicked mid-push; the queue is still a
    /// valid queue, so carry on with it.
    fn frames(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, frame: Vec<u8>) -> bool {
        let mut frames = self.frames();
        if frames.len() >= self.capacity {
            drop(frames);
            *self.dropped.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            return false;
        }
        frames.push_back(frame);
        drop(frames);
        self.ready.notify_one();
        true
    }

    fn dropped(&self) -> u64 {
        *self.dropped.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The transmit half of a [`MemDevice`].
#[derive(Debug)]
pub struct MemTx {
    free: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
    completed: Vec<Vec<u8>>,
    frame_size: usize,
    no_buffer: u64,
    too_large: u64,
}

impl MemTx {
    fn new(config: &MemConfig) -> MemTx {
        MemTx {
            free: (0..config.tx_buffers)
                .map(|_| Vec::with_capacity(config.frame_size))
                .collect(),
            pending: Vec::new(),
            completed: Vec::new(),
            frame_size: config.frame_size,
            no_buffer: 0,
            too_large: 0,
        }
    }

    /// Buffers free to lend right now (not counting completions not yet reclaimed).
    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }

    /// Frames queued by `transmit` and not yet submitted.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl TxQueue for MemTx {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        if len > self.frame_size {
            self.too_large += 1;
            return false;
        }
        let Some(mut buf) = self.free.pop() else {
            self.no_buffer += 1;
            return false;
        };
        // Like a UMEM frame, a reused buffer keeps what it held: the filler writes every
        // byte it sends (only a longer frame than the buffer last held is zero-extended).
        buf.resize(len, 0);
        let used = fill(&mut buf).min(len);
        if used == 0 {
            self.free.push(buf);
        } else {
            buf.truncate(used);
            self.pending.push(buf);
        }
        true
    }

    fn capacity(&self) -> usize {
        self.frame_size
    }
}

/// A [`Device`] over memory. See the module documentation.
#[derive(Debug)]
pub struct MemDevice {
    rx: Arc<Port>,
    out: Arc<Port>,
    tx: MemTx,
    batch: Vec<Vec<u8>>,
    rx_frames: u64,
    tx_frames: u64,
}

impl MemDevice {
    /// A device on its own: frames it sends are collected for [`MemDevice::take_sent`], and
    /// frames to receive are put in with [`MemDevice::inject`].
    pub fn new(config: MemConfig) -> MemDevice {
        MemDevice::with_ports(config, Port::new(config.rx_capacity), Port::new(usize::MAX))
    }

    /// Two devices joined by a link: what one submits, the other receives.
    pub fn pair(config: MemConfig) -> (MemDevice, MemDevice) {
        let a_rx = Port::new(config.rx_capacity);
        let b_rx = Port::new(config.rx_capacity);
        let a = MemDevice::with_ports(config, Arc::clone(&a_rx), Arc::clone(&b_rx));
        let b = MemDevice::with_ports(config, b_rx, a_rx);
        (a, b)
    }

    fn with_ports(config: MemConfig, rx: Arc<Port>, out: Arc<Port>) -> MemDevice {
        MemDevice {
            rx,
            out,
            tx: MemTx::new(&config),
            batch: Vec::new(),
            rx_frames: 0,
            tx_frames: 0,
        }
    }

    /// Queues `frame` for this device to receive, as if it had arrived on the wire. Returns
    /// `false` (and counts a drop) when the receive queue is full.
    pub fn inject(&self, frame: &[u8]) -> bool {
        self.rx.push(frame.to_vec())
    }

    /// Takes every frame this device has put on the wire and nobody received yet. For a
    /// device from [`MemDevice::new`] that is everything it sent; for one of a pair it steals
    /// from the peer's receive queue.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.out.frames().drain(..).collect()
    }
}

impl Device for MemDevice {
    type Tx = MemTx;

    fn receive<F>(&mut self, budget: usize, mut on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut MemTx),
    {
        {
            let mut frames = self.rx.frames();
            let n = budget.min(frames.len());
            self.batch.extend(frames.drain(..n));
        }
        let n = self.batch.len();
        for mut frame in self.batch.drain(..) {
            on_frame(&mut frame, &mut self.tx);
        }
        self.rx_frames += n as u64;
        Ok(n)
    }

    fn tx(&mut self) -> &mut MemTx {
        &mut self.tx
    }

    fn submit(&mut self) -> Result<usize, DeviceError> {
        let n = self.tx.pending.len();
        for frame in self.tx.pending.drain(..) {
            // A full peer queue drops the frame, like a wire would; the buffer completes
            // either way.
            self.out.push(frame.clone());
            self.tx.completed.push(frame);
        }
        self.tx_frames += n as u64;
        Ok(n)
    }

    fn pending_frames<F: FnMut(&[u8])>(&mut self, mut f: F) {
        for frame in &self.tx.pending {
            f(frame);
        }
    }

    fn reclaim(&mut self) -> usize {
        let n = self.tx.completed.len();
        self.tx.free.append(&mut self.tx.completed);
        n
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError> {
        let frames = self.rx.frames();
        let (frames, _) = self
            .rx
            .ready
            .wait_timeout_while(frames, timeout, |f| f.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        Ok(!frames.is_empty())
    }

    fn stats(&self) -> DeviceStats {
        DeviceStats {
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            tx_no_buffer: self.tx.no_buffer,
            tx_too_large: self.tx.too_large,
            rx_dropped: self.rx.dropped(),
            kicks: 0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn small() -> MemConfig {
        MemConfig {
            tx_buffers: 2,
            rx_capacity: 2,
            frame_size: 64,
        }
    }

    fn send(dev: &mut MemDevice, bytes: &[u8]) -> bool {
        dev.tx().transmit(bytes.len(), |buf| {
            buf.copy_from_slice(bytes);
            bytes.len()
        })
    }

    #[test]
    fn pair_submitted_frame_received_by_peer() {
        let (mut a, mut b) = MemDevice::pair(MemConfig::default());
        assert!(send(&mut a, b"hello"));
        assert_eq!(a.submit().unwrap(), 1);
        let mut got = Vec::new();
        let n = b.receive(8, |f, _| got.push(f.to_vec())).unwrap();
        assert_eq!(n, 1);
        assert_eq!(got, vec![b"hello".to_vec()]);
        assert_eq!(a.stats().tx_frames, 1);
        assert_eq!(b.stats().rx_frames, 1);
    }

    #[test]
    fn transmit_before_submit_nothing_on_wire() {
        let (mut a, mut b) = MemDevice::pair(MemConfig::default());
        assert!(send(&mut a, b"x"));
        assert_eq!(b.receive(8, |_, _| {}).unwrap(), 0);
        assert_eq!(a.tx().pending(), 1);
    }

    #[test]
    fn pool_exhausted_transmit_refused_until_reclaim() {
        let mut dev = MemDevice::new(small());
        assert!(send(&mut dev, b"1"));
        assert!(send(&mut dev, b"2"));
        assert!(!send(&mut dev, b"3"));
        assert_eq!(dev.stats().tx_no_buffer, 1);
        assert_eq!(dev.submit().unwrap(), 2);
        assert!(
            !send(&mut dev, b"3"),
            "completions come back only through reclaim"
        );
        assert_eq!(dev.reclaim(), 2);
        assert!(send(&mut dev, b"3"));
        assert_eq!(dev.take_sent(), vec![b"1".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn transmit_oversized_refused_without_calling_fill() {
        let mut dev = MemDevice::new(small());
        let mut called = false;
        assert!(!dev.tx().transmit(65, |_| {
            called = true;
            0
        }));
        assert!(!called);
        assert_eq!(dev.stats().tx_too_large, 1);
    }

    #[test]
    fn transmit_fill_returns_zero_buffer_returned() {
        let mut dev = MemDevice::new(small());
        assert!(dev.tx().transmit(10, |_| 0));
        assert_eq!(dev.tx().free_buffers(), 2);
        assert_eq!(dev.submit().unwrap(), 0);
    }

    #[test]
    fn transmit_fill_returns_less_frame_truncated() {
        let mut dev = MemDevice::new(small());
        assert!(dev.tx().transmit(10, |buf| {
            buf[..3].copy_from_slice(b"abc");
            3
        }));
        dev.submit().unwrap();
        assert_eq!(dev.take_sent(), vec![b"abc".to_vec()]);
    }

    #[test]
    fn rx_queue_full_frame_dropped_and_counted() {
        let dev = MemDevice::new(small());
        assert!(dev.inject(b"a"));
        assert!(dev.inject(b"b"));
        assert!(!dev.inject(b"c"));
        assert_eq!(dev.stats().rx_dropped, 1);
    }

    #[test]
    fn receive_budget_limits_batch() {
        let mut dev = MemDevice::new(MemConfig::default());
        for i in 0..5u8 {
            dev.inject(&[i]);
        }
        let mut seen = Vec::new();
        assert_eq!(dev.receive(3, |f, _| seen.push(f[0])).unwrap(), 3);
        assert_eq!(dev.receive(3, |f, _| seen.push(f[0])).unwrap(), 2);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn receive_answer_built_while_request_borrowed() {
        let mut dev = MemDevice::new(MemConfig::default());
        dev.inject(b"ping");
        dev.receive(8, |frame, tx| {
            frame[1] = b'o';
            let len = frame.len();
            assert!(tx.transmit(len, |buf| {
                buf.copy_from_slice(frame);
                len
            }));
        })
        .unwrap();
        dev.submit().unwrap();
        assert_eq!(dev.take_sent(), vec![b"pong".to_vec()]);
    }

    #[test]
    fn wait_frame_already_queued_returns_true() {
        let mut dev = MemDevice::new(MemConfig::default());
        dev.inject(b"x");
        assert!(dev.wait(Duration::ZERO).unwrap());
    }

    #[test]
    fn wait_nothing_queued_returns_false() {
        let mut dev = MemDevice::new(MemConfig::default());
        assert!(!dev.wait(Duration::ZERO).unwrap());
    }
}
